"""The one writer of the index: batches segment rows, gaps and camera states into few small commits.

Segment rows wait for `index_commit_seconds` (minutes; why: docs/architecture.md, "Commits are batched"):
their files are durable before they are announced and carry their own row, which the start-up reconcile
adopts if a batch is lost. Events and reference views have no second source, and a camera's state is
what `edgenvr status` shows: those are urgent and committed within a second.
Gaps are derived here, where the last indexed end of every camera is known even across restarts.
So are offline events: a camera that goes offline opens one, and closes it when it records again.
Events keep the video around them: segments and events of one batch are classified into retention tiers
(see retention_classes) in the same transaction that writes them.

Clock trust (docs/architecture.md): every segment and closed event gets its place on the recording timeline
(index.recording_timeline: boot-time clocks end to end), which the ring deletes by and the age rules count
with, and a segment its clock state (`clock_state`: recorded on a synchronised clock or not). A gap is
measured on the timeline too when both segments are of one boot: a hole in wall time that the boot-time
clock does not see is the clock moving, not the recorder stopping, and its reason says so ("clock jumped",
"clock not synchronised") instead of a multi-year "recorder was not running"; a wall clock that went back
makes no gap at all (the clock_jump event, runtime.periodic_work, records it).

Running totals for the metrics route (web.box_metrics; index migration 9), written with what already changes:
each camera's bytes of video indexed (`cameras.written_bytes`, in the camera's row that a new segment rewrites
anyway), and, in each commit's transaction, the `counters` rows COMMIT_COUNTERS: how many writer transactions
were timed and their total duration (each one's duration is known only once it is committed, so a commit carries
the figures of those before it), when this commit happened, and the bytes of the segments indexed. A few bytes
in a page the commit writes anyway cost it nothing measurable; nothing is written for them alone.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.records import (
    CameraState,
    EventKind,
    EventRecord,
    GapRecord,
    MotionStatus,
    RecorderState,
    ReferenceRecord,
    SegmentRecord,
)
from edgenvr.core.units import EARLIEST_DATE_MS, OPEN_END_MS
from edgenvr.index.recording_timeline import (
    CLOCK_SYNCHRONISED,
    CLOCK_UNSYNCHRONISED,
    RecordingTimeline,
    describe_step,
)
from edgenvr.index.retention_classes import CLASS_NAMES, LONGEST_SEGMENT_MS, classify
from edgenvr.index.schema import write_transaction

log = logging.getLogger(__name__)

# A hole between two segments shorter than this is timing jitter at a reconnect, not a gap.
GAP_THRESHOLD_MS = 500
MOTION_STATUS_EVERY_S = 300.0
# Gap reasons when the wall clock moved between two segments (index.reanchoring reads them back).
GAP_CLOCK_NOT_SYNCHRONISED = "clock not synchronised"
GAP_CLOCK_JUMPED = "clock jumped"
# Gap reasons of the index's own (any other reason is the recorder's report of its camera's problem):
GAP_RECORDER_NOT_RUNNING = "recorder was not running"   # a hole with no problem reported before it
GAP_RECORDING_STOPPED = "recording stopped"             # the recorder said it stopped the camera
GAP_FILE_MISSING = "segment file missing"               # index.reconcile dropped a row whose file is gone
GAP_FILE_DAMAGED = "segment file damaged"               # ... or whose file is not the size indexed
NO_VIDEO_LOST = "no video lost"
# How far the wall clock may part from the boot-time clock between two segments without being a step: the
# anchoring of segment times (~1 s) plus NTP's slewing (at most 0.5 ms/s; 1 ms/s allowed).
CLOCK_TOLERANCE_MS = 2000
# The `counters` rows each commit writes (see the module docstring), read by web.box_metrics.
COMMITS_TIMED = "index_commits_timed"
COMMIT_MICROSECONDS = "index_commit_us_total"
LAST_COMMIT_MS = "index_last_commit_ms"
INDEXED_BYTES = "index_segment_bytes"
COMMIT_COUNTERS = (COMMITS_TIMED, COMMIT_MICROSECONDS, LAST_COMMIT_MS, INDEXED_BYTES)


@dataclass(frozen=True)
class _Placed:
    """A pending segment's place on the recording timeline."""
    boot: int | None        # boots.id
    timeline_ms: int
    clock_state: int        # segments.clock_state


@dataclass
class _Camera:
    state: str = RecorderState.UNKNOWN
    since_ms: int | None = None
    reason: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    last_end_ms: int | None = None
    last_problem: str = ""   # why the camera last stopped recording, used as the reason of the next gap
    offline_since_ms: int | None = None  # start of the open offline event
    motion: dict[str, object] = field(default_factory=dict)  # the motion worker's last status
    motion_written: float = 0.0  # monotonic time the motion status was last queued for writing
    written_bytes: int = 0   # bytes of the camera's segments ever indexed (cameras.written_bytes; pending included)
    # the newest segment in recording order (whose end is last_end_ms) on the timeline: end, boot, clock state
    last_timeline_end_ms: int | None = None
    last_boot: int | None = None
    last_clock_state: int = CLOCK_SYNCHRONISED


class IndexWriter:
    def __init__(self, conn: sqlite3.Connection, on_disk_full: Callable[[], bool] | None = None,
                 event_padding_ms: tuple[int, int] = (10_000, 20_000), *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.conn = conn
        self.clock = clock
        self.on_disk_full = on_disk_full  # frees emergency space; returns whether it could
        self.event_padding_ms = event_padding_ms  # video kept (before, after) an event
        self._segments: list[SegmentRecord] = []
        self._placed: list[_Placed] = []   # where each of _segments is on the timeline
        self._gaps: list[GapRecord] = []
        self._events: dict[tuple[str, str, str, int], EventRecord] = {}  # latest announcement of each event
        self._event_timeline: dict[tuple[str, str, str, int], int | None] = {}  # its timeline_keep_to_ms
        self.timeline = RecordingTimeline(conn, clock)
        self._references: list[ReferenceRecord] = []
        self._dirty: set[str] = set()
        self._state_changed = False  # a camera's state (not just its counters) changed since the last commit
        # Rows of segments the ring deleted (file unlinked) and of those whose unlink failed (to unmark):
        # both wait for the next commit, a row marked `deleting` is invisible to readers meanwhile, and the
        # start-up reconcile finishes either if the batch is lost.
        self._forget: list[tuple[int]] = []
        self._unmark: list[tuple[int]] = []
        self._cameras: dict[str, _Camera] = {}
        self.last_commit = clock.monotonic()
        self.commits = 0  # write transactions committed (each costs the card tens of KB, see the module docstring)
        # Every writer transaction's duration, kept across restarts in `counters` (see the module docstring)
        stored = dict(conn.execute("SELECT name, value FROM counters WHERE name IN (?, ?, ?, ?)",
                                   COMMIT_COUNTERS).fetchall())
        self.commits_timed: int = stored.get(COMMITS_TIMED, 0)
        self.commit_microseconds: int = stored.get(COMMIT_MICROSECONDS, 0)
        # Bytes of the segment files the index knows (committed rows not marked `deleting`): the ring's size.
        # Changed only here: +commit, -note_deleted.
        self.indexed_bytes = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM segments WHERE deleting = 0").fetchone()[0]
        for row in conn.execute("SELECT id, state, state_since_ms, state_reason, dropped_json, last_end_ms, motion_json,"
                                " written_bytes FROM cameras"):
            self._cameras[row["id"]] = _Camera(row["state"], row["state_since_ms"], row["state_reason"],
                                               json.loads(row["dropped_json"]), row["last_end_ms"], row["state_reason"],
                                               motion=json.loads(row["motion_json"]), written_bytes=row["written_bytes"])
        for row in conn.execute("SELECT camera, start_ms FROM events WHERE kind = 'offline' AND end_ms IS NULL"):
            self._camera(row["camera"]).offline_since_ms = row["start_ms"]
        for camera_id, camera in self._cameras.items():
            newest = _newest_on_timeline(conn, camera_id)
            if newest is not None:
                camera.last_timeline_end_ms, camera.last_boot, camera.last_clock_state = newest

    def _camera(self, camera_id: str) -> _Camera:
        return self._cameras.setdefault(camera_id, _Camera())

    @property
    def pending_bytes(self) -> int:
        return sum(s.bytes for s in self._segments)

    def add_segment(self, segment: SegmentRecord) -> None:
        placed = self._place(segment)
        camera = self._camera(segment.camera)
        gap = self._gap_before(camera, segment, placed)
        if gap is not None:
            self._gaps.append(gap)
        camera.last_problem = ""
        camera.written_bytes += segment.bytes
        timeline_end = placed.timeline_ms + segment.duration_ms
        # The newest in recording order, which after the wall clock went back is not the one ending latest
        if camera.last_timeline_end_ms is None or timeline_end >= camera.last_timeline_end_ms:
            camera.last_end_ms = segment.end_ms
            camera.last_timeline_end_ms, camera.last_boot, camera.last_clock_state = \
                timeline_end, placed.boot, placed.clock_state
        self._segments.append(segment)
        self._placed.append(placed)
        self._dirty.add(segment.camera)

    def _place(self, segment: SegmentRecord) -> _Placed:
        """The segment's place on the timeline: from its boot-time clock if it has a clock record, else (an
        older file, a file probed without its attribute) from its wall-clock age (recording_timeline)."""
        # A segment of this boot cannot start after the boot-time clock's now: one that says so (a bug, a forged
        # message) would drag the timeline ahead and every age with it; its clock record is ignored.
        if segment.boot_id and segment.boot_ms >= 0 and not (
                segment.boot_id == self.clock.boot_id() and segment.boot_ms > self.clock.boot_ms() + CLOCK_TOLERANCE_MS):
            boot, at = self.timeline.position(segment.boot_id, segment.boot_ms, segment.duration_ms)
            state = CLOCK_SYNCHRONISED if segment.clock_synchronised else CLOCK_UNSYNCHRONISED
            return _Placed(boot, at, state)
        at = self.timeline.place_wall(segment.start_ms, segment.duration_ms)
        self.timeline.note_end(at + segment.duration_ms)
        # named before 2000: recorded before the clock was set, and nothing says when
        return _Placed(None, at, CLOCK_UNSYNCHRONISED if segment.start_ms < EARLIEST_DATE_MS else CLOCK_SYNCHRONISED)

    def _gap_before(self, camera: _Camera, segment: SegmentRecord, placed: _Placed) -> GapRecord | None:
        """The gap between the camera's newest segment and this one, with its reason; None if there is none."""
        if camera.last_end_ms is None:
            return None
        wall_gap = segment.start_ms - camera.last_end_ms
        problem = camera.last_problem or GAP_RECORDER_NOT_RUNNING
        unsynchronised = CLOCK_UNSYNCHRONISED in (placed.clock_state, camera.last_clock_state)
        if placed.boot is not None and placed.boot == camera.last_boot and camera.last_timeline_end_ms is not None:
            real_gap = placed.timeline_ms - camera.last_timeline_end_ms   # the boot-time clock: real time
            step = wall_gap - real_gap
            if abs(step) <= CLOCK_TOLERANCE_MS + abs(real_gap) // 1000:   # the wall clock did not move
                return GapRecord(segment.camera, camera.last_end_ms, segment.start_ms, problem) \
                    if wall_gap > GAP_THRESHOLD_MS else None
            if wall_gap <= GAP_THRESHOLD_MS:
                return None   # the wall clock went back: no stretch of wall time to mark
            clock = GAP_CLOCK_NOT_SYNCHRONISED if unsynchronised else GAP_CLOCK_JUMPED
            lost = NO_VIDEO_LOST if real_gap <= GAP_THRESHOLD_MS else f"{real_gap / 1000:.0f} s without video: {problem}"
            return GapRecord(segment.camera, camera.last_end_ms, segment.start_ms,
                             f"{clock} ({describe_step(step)}); {lost}")
        if wall_gap <= GAP_THRESHOLD_MS:
            return None
        if unsynchronised:   # across boots the wall clock is all there is, and it was not set: its span means nothing
            return GapRecord(segment.camera, camera.last_end_ms, segment.start_ms,
                             f"{GAP_CLOCK_NOT_SYNCHRONISED}; {problem}")
        return GapRecord(segment.camera, camera.last_end_ms, segment.start_ms, problem)

    def set_state(self, state: CameraState) -> None:
        camera = self._camera(state.camera)
        if state.state in (RecorderState.RECONNECTING, RecorderState.OFFLINE) and state.reason:
            camera.last_problem = state.reason
        elif state.state == RecorderState.STOPPED and not camera.last_problem:
            camera.last_problem = GAP_RECORDING_STOPPED
        self._state_changed |= camera.state != state.state
        before = (camera.state, camera.since_ms, camera.reason, camera.dropped)
        camera.state, camera.since_ms, camera.reason = state.state, state.since_ms, state.reason
        camera.dropped = dict(state.dropped)
        if (camera.state, camera.since_ms, camera.reason, camera.dropped) != before:
            self._dirty.add(state.camera)  # unchanged reports cost no index write
        if state.state == RecorderState.OFFLINE and camera.offline_since_ms is None:
            camera.offline_since_ms = state.since_ms
            self.add_event(EventRecord(state.camera, EventKind.OFFLINE, state.since_ms, detail=state.reason))
        elif state.state == RecorderState.RECORDING and camera.offline_since_ms is not None:
            start, camera.offline_since_ms = camera.offline_since_ms, None
            seconds = (state.since_ms - start) / 1000
            self.add_event(EventRecord(state.camera, EventKind.OFFLINE, start, state.since_ms,
                                       detail=f"back online after {seconds:.0f} s"))

    def moved_segment(self, camera: str, old_end_ms: int, new_end_ms: int) -> None:
        """A committed segment was re-anchored (index.reanchoring): if it was the camera's newest, the camera's
        last end (the next gap's start) moves with it."""
        state = self._cameras.get(camera)
        if state is not None and state.last_end_ms == old_end_ms:
            state.last_end_ms = new_end_ms
            self._dirty.add(camera)
        for index, gap in enumerate(self._gaps):   # a gap after it, waiting for its batch, moves too
            if gap.camera == camera and gap.start_ms == old_end_ms and gap.end_ms is not None:
                reason = reanchored_gap_reason(new_end_ms, gap.end_ms, gap.reason, end_moved=False)
                self._gaps[index] = replace(gap, start_ms=new_end_ms, reason=reason or "")
        self._gaps = [gap for gap in self._gaps if gap.reason]

    def last_end_ms(self, camera: str) -> int | None:
        """End of the camera's newest indexed (or pending) segment."""
        return self._camera(camera).last_end_ms

    def set_motion_status(self, status: MotionStatus) -> None:
        """Kept for `edgenvr status`; written when the worker's state changes or, for its counters, every
        MOTION_STATUS_EVERY_S: heartbeats come every 5 s and must not cost an index write each."""
        camera = self._camera(status.camera)
        changed = camera.motion.get("state") != status.state or camera.motion.get("reason") != status.reason
        camera.motion = {"state": status.state, "reason": status.reason, "analysed": status.analysed,
                         "dropped": status.dropped, "time_ms": status.time_ms}
        now = self.clock.monotonic()
        if changed or now - camera.motion_written >= MOTION_STATUS_EVERY_S:
            camera.motion_written = now
            self._dirty.add(status.camera)

    @property
    def has_urgent_changes(self) -> bool:
        """Something pending that has no other record than the index, or that status readers wait for."""
        return bool(self._events or self._references or self._state_changed)

    def commit_due(self, batch_seconds: float) -> bool:
        """Whether to commit now: urgent changes within a second, the rest per batch."""
        waited = self.clock.monotonic() - self.last_commit
        return waited >= (min(1.0, batch_seconds) if self.has_urgent_changes else batch_seconds)

    def add_event(self, event: EventRecord) -> None:
        """Queue an event announcement; a later announcement of the same event (its close) replaces it."""
        key = (event.camera, event.kind, event.subkind, event.start_ms)
        self._events[key] = event
        # Where its kept video (or, keeping none, the event itself) ends on the timeline, placed now by its
        # wall-clock age: workers send events within seconds, on a frame clock anchored like the recorder's.
        if event.end_ms is None:
            self._event_timeline[key] = None
        else:
            self._event_timeline[key] = self.timeline.place_wall(event.end_ms) + \
                (self.event_padding_ms[1] if event.keeps_video else 0)

    def close_open_events(self, cameras: list[str], end_ms: int, detail: str, keep_subkinds: tuple[str, ...] = ()) -> None:
        """Close the open motion/tamper events of cameras whose worker is gone (their real end is unknown)."""
        wanted = set(cameras)
        open_events = [EventRecord(r["camera"], r["kind"], r["start_ms"], None, r["subkind"], tuple(json.loads(r["zones"])),
                                   r["peak_score"], r["snapshot"], r["detail"])
                       for r in self.conn.execute("SELECT camera, kind, subkind, start_ms, zones, peak_score, snapshot,"
                                                  " detail FROM events WHERE end_ms IS NULL AND kind IN ('motion', 'tamper')")]
        # a pending announcement is newer than the row it will update
        open_events = [e for e in open_events if (e.camera, e.kind, e.subkind, e.start_ms) not in self._events]
        open_events += [e for e in self._events.values() if e.end_ms is None and e.keeps_video]
        for event in open_events:
            if event.camera in wanted and event.subkind not in keep_subkinds:
                self.add_event(replace(event, end_ms=max(end_ms, event.start_ms),
                                       detail=f"{event.detail}; {detail}".strip("; ")))

    def add_reference(self, reference: ReferenceRecord) -> None:
        self._references.append(reference)

    def forget_segments(self, ids: list[int]) -> None:
        """Drop these rows (marked `deleting`, their files unlinked) with the next commit."""
        self._forget += [(row_id,) for row_id in ids]

    def unmark_segments(self, ids: list[int]) -> None:
        """These marked segments could not be unlinked: the next commit makes them deletable again and
        reclassifies them (a hold added meanwhile covers them)."""
        self._unmark += [(row_id,) for row_id in ids]

    def note_deleted(self, size: int) -> None:
        """Indexed segment files of `size` bytes in all are gone from the disk (unlinked by the ring, or found
        missing): `indexed_bytes` stops counting them at once, whatever happens to their rows."""
        self.indexed_bytes -= size

    def transaction(self, work: Callable[[sqlite3.Connection], None]) -> None:
        """Run `work` in one write transaction. If the disk is full, give up the emergency reserve and
        try once more; a failure is raised with nothing half-written (the transaction rolls back)."""
        for attempt in (1, 2):
            try:
                # The disk's time, so the real clock: a simulated one does not move while SQLite waits on fsync
                started = time.perf_counter()
                with write_transaction(self.conn):  # anything raised inside `work` rolls back too
                    work(self.conn)
                self.commits += 1
                self.commits_timed += 1
                self.commit_microseconds += round((time.perf_counter() - started) * 1e6)
                return
            except sqlite3.OperationalError as exc:
                disk_full = "full" in str(exc)
                if not (attempt == 1 and disk_full and self.on_disk_full is not None and self.on_disk_full()):
                    raise

    def commit(self, also: Callable[[sqlite3.Connection], None] | None = None) -> int:
        """Write everything pending in one transaction, after `also` (the ring's deletions: sharing the
        commit saves a commit's worth of device writes). Returns the number of segments written.
        On failure the batch stays pending (nothing is lost: the files are on disk) and the error is raised."""
        segments, placed, gaps, dirty = self._segments, self._placed, self._gaps, self._dirty
        events, references = list(self._events.values()), self._references
        event_timeline = dict(self._event_timeline)
        forget, unmark = list(self._forget), list(self._unmark)
        boots = self.timeline.pending()
        self.last_commit = self.clock.monotonic()
        if not (segments or gaps or dirty or events or references or forget or unmark or also or boots):
            return 0
        before, after = self.event_padding_ms

        def write(conn: sqlite3.Connection) -> None:
            if also is not None:  # before the unmarking: a sweep must not choose again what it just failed to delete
                also(conn)
            conn.executemany("DELETE FROM segments WHERE id = ?", forget)
            conn.executemany("UPDATE segments SET deleting = 0 WHERE id = ?", unmark)
            # classify skips marked rows, so a hold or event added while these were marked did not reach them:
            # their class is recomputed here, in the transaction that makes them deletable again.
            for camera, start, end in _ranges_of(conn, unmark):
                classify(conn, camera, start, end)
            self.timeline.write(conn, boots)
            conn.executemany(
                "INSERT INTO segments (camera, start_ms, end_ms, bytes, sha256, codec, width, height, packets,"
                " wall_end_ms, origin, timeline_ms, boot, clock_state) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(s.camera, s.start_ms, s.end_ms, s.bytes, bytes.fromhex(s.sha256), s.codec, s.width, s.height,
                  s.packets, s.wall_end_ms, s.origin, p.timeline_ms, p.boot, p.clock_state)
                 for s, p in zip(segments, placed)])
            conn.executemany("INSERT INTO gaps (camera, start_ms, end_ms, reason) VALUES (?,?,?,?)",
                             [(g.camera, g.start_ms, g.end_ms, g.reason) for g in gaps])
            conn.executemany(
                "INSERT INTO cameras (id, state, state_since_ms, state_reason, dropped_json, last_end_ms, motion_json,"
                " written_bytes) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET state=excluded.state,"
                " state_since_ms=excluded.state_since_ms, state_reason=excluded.state_reason,"
                " dropped_json=excluded.dropped_json, last_end_ms=excluded.last_end_ms,"
                " motion_json=excluded.motion_json, written_bytes=excluded.written_bytes",
                [(cid, c.state, c.since_ms, c.reason, json.dumps(c.dropped, sort_keys=True), c.last_end_ms,
                  json.dumps(c.motion, sort_keys=True), c.written_bytes)
                 for cid in sorted(dirty) for c in [self._cameras[cid]]])
            conn.executemany(
                "INSERT INTO events (camera, kind, subkind, start_ms, end_ms, keep_from_ms, keep_to_ms, zones,"
                " peak_score, snapshot, detail, timeline_keep_to_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(camera, kind, subkind, start_ms) DO UPDATE SET end_ms=excluded.end_ms,"
                " keep_to_ms=excluded.keep_to_ms, zones=excluded.zones, peak_score=excluded.peak_score,"
                " snapshot=COALESCE(excluded.snapshot, snapshot), detail=excluded.detail,"
                " timeline_keep_to_ms=excluded.timeline_keep_to_ms",
                [(e.camera, e.kind, e.subkind, e.start_ms, e.end_ms,
                  e.start_ms - before if e.keeps_video else None,
                  (OPEN_END_MS if e.end_ms is None else e.end_ms + after) if e.keeps_video else None,
                  json.dumps(list(e.zones)), e.peak_score, e.snapshot, e.detail,
                  event_timeline.get((e.camera, e.kind, e.subkind, e.start_ms))) for e in events])
            conn.executemany("INSERT INTO reference_views (camera, approved_ms, image, approved_by) VALUES (?,?,?,?)",
                             [(r.camera, r.approved_ms, r.image, r.approved_by) for r in references])
            # Retention tiers of what this batch touched: new segments, and the video around each event
            # (an event that closed may give back video that its open form was keeping).
            ranges: dict[str, list[int]] = {}
            for camera, start, end in ([(s.camera, s.start_ms, s.end_ms) for s in segments]
                                       + [(e.camera, e.start_ms - before, OPEN_END_MS) for e in events if e.keeps_video]):
                span = ranges.setdefault(camera, [start, end])
                span[0], span[1] = min(span[0], start), max(span[1], end)
            for camera, (start, end) in ranges.items():
                classify(conn, camera, start, end)
            conn.executemany("INSERT INTO counters (name, value) VALUES (?, ?)"
                             " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                             [(COMMITS_TIMED, self.commits_timed), (COMMIT_MICROSECONDS, self.commit_microseconds),
                              (LAST_COMMIT_MS, self.clock.now_ms()),
                              (INDEXED_BYTES, self.indexed_bytes + sum(s.bytes for s in segments))])

        self.transaction(write)
        self._segments, self._gaps, self._dirty, self._events, self._references = [], [], set(), {}, []
        self._placed, self._event_timeline = [], {}
        self.timeline.written(boots)
        self._state_changed = False
        del self._forget[:len(forget)], self._unmark[:len(unmark)]  # `also` may have queued more
        self.indexed_bytes += sum(s.bytes for s in segments)
        return len(segments)


def _ranges_of(conn: sqlite3.Connection, ids: list[tuple[int]]) -> list[tuple[str, int, int]]:
    """(camera, from_ms, to_ms) covering these segments: one range per run of a camera's segments lying
    within a segment's length of each other (the ring fails them oldest first, so usually one per camera).
    A row that is gone (dropped meanwhile) is skipped."""
    found = sorted(tuple(row) for row_id, in ids for row in
                   conn.execute("SELECT camera, start_ms, end_ms FROM segments WHERE id = ?", (row_id,)))
    ranges: list[tuple[str, int, int]] = []
    for camera, start, end in found:
        if ranges and ranges[-1][0] == camera and start <= ranges[-1][2] + LONGEST_SEGMENT_MS:
            ranges[-1] = (camera, ranges[-1][1], max(ranges[-1][2], end))
        else:
            ranges.append((camera, start, end))
    return ranges


def reanchored_gap_reason(start_ms: int, end_ms: int, reason: str, *, end_moved: bool) -> str | None:
    """The reason a gap keeps once its start (and, if `end_moved`, its end) moved to the true time
    (index.reanchoring), None if it is no gap any more. The clock step that _gap_before's "<clock> (<step>);
    <what was lost>" names is undone by the move: what is left is what was lost, if anything."""
    if not end_moved and reason.startswith((f"{GAP_CLOCK_NOT_SYNCHRONISED} (", f"{GAP_CLOCK_JUMPED} (")):
        lost = reason.split("; ", 1)[1] if "; " in reason else NO_VIDEO_LOST
        if lost == NO_VIDEO_LOST:
            return None
        reason = lost.split(": ", 1)[1] if ": " in lost else lost
    return reason if end_ms - start_ms > GAP_THRESHOLD_MS else None


def _newest_on_timeline(conn: sqlite3.Connection, camera: str) -> tuple[int, int | None, int] | None:
    """(timeline end, boot, clock state) of the camera's newest segment, None if it has none. One seek per
    class at the end of segments_camera_age."""
    found = [conn.execute("SELECT timeline_ms + end_ms - start_ms, boot, clock_state FROM segments"
                          " INDEXED BY segments_camera_age WHERE camera = ? AND retention_class = ?"
                          " ORDER BY timeline_ms DESC LIMIT 1",
                          (camera, retention_class)).fetchone() for retention_class in CLASS_NAMES]
    rows = [tuple(row) for row in found if row is not None]
    return max(rows, key=lambda row: row[0]) if rows else None
