"""Retention: what video and which events are deleted, in what order, and how, crash-safely.

This module owns the deletion rules (the age rules of every tier, the disk ring's order) and the sweep
that carries them out. `retention_report` predicts the next sweep with the same rules and queries;
`index.retention_classes` says which tier (class) each segment is in.

A full sweep (see below for when), in this order:

1. Events whose kept video (end + post padding; for kinds that keep no video, the event itself) ended
   more than event_days ago, or more than retention_max_days ago, are deleted with their snapshots,
   unless a hold in force overlaps them. The video they kept is re-classified in the same transaction:
   usually back to continuous, i.e. ordinary ring video from then on. With no max_age_days that video
   stays as long as the disk allows, like the continuous video around it: an old event must not cut a
   hole in the continuous record. This is why events go first.
2. Age, per camera (`Config.retention_days`; a camera no longer in the config gets the [storage] ones):
   - continuous video (class 0) older than max_age_days;
   - event video (class 1) older than both event_days and max_age_days. After step 1 this is only the
     video of long or still-open events (a camera covered for weeks): it bounds what such an event keeps;
   - retention_max_days is a legal maximum: every class 0, 1 and 3 segment older than it. Held video (class
   2) is never deleted by age. Video awaiting upload (class 3: a clip queued for the city hub, sync.outbox)
   is kept by max_age_days and event_days (a clip's video goes by them once the hub has it, or it is given
   up), but not past the legal maximum: the law on personal data wins over sending it. Its clips are given
   up as the floor gives them up (below), with that reason.
   "Older" is by a segment's start on the recording timeline (index.recording_timeline: the boot-time clocks
   of the box's boots end to end), never by the wall clock: a clock stepped forward (NTP after a boot at 1970,
   a false NTP answer, a wrong RTC) or back can make no video due early. The timeline counts only the time the
   box was up, so video outlives its days by the time the box was off. Rows indexed before the timeline
   existed were put on it by index migration 4.
3. Disk pressure (quota, or free space under min_free, each with headroom for what recorders write
   before the next sweep): oldest first in recording order, (retention_class, timeline position): every
   continuous segment of every camera before any event video, and never held video. The free-space floor wins over event
   retention: event video deleted before its event_days is reported by one alert event per camera and
   sweep. Video awaiting upload is not deleted for the quota: like held video it may keep the ring over
   the quota (logged once, naming how much). Only the free-space floor deletes it, once every continuous and
   event segment is gone, oldest first, and only what the floor and its headroom need (not the extra room a
   full sweep frees of other video): a full filesystem would stop all recording. Each clip that loses
   video so is logged as an error, one ALERT event (unsent_video_deleted) per camera and sweep names them,
   and their outbox rows become `unavailable` with the reason, in the transaction that marks the video:
   that row is the record reported upstream. The rest of such a clip's video is ordinary again (it
   cannot be sent whole), so the floor takes it before the video of clips still whole. If only held video
   is left and free space is still under min_free, an ALERT is logged and indexed, once until free space
   recovers.

Every query runs on an index, (camera, retention_class, timeline_ms, start_ms), (retention_class,
timeline_ms, start_ms) and events (camera, timeline_keep_to_ms, keep_to_ms), so a sweep costs what it
deletes, not what is stored.

Deleting costs index writes, and on a full disk the ring deletes all the time (docs/architecture.md, "The
ring's deletions ride the batch's commit"). So the supervisor (runtime.periodic_work) sweeps fully once per
`index_commit_seconds`, and the sweep deletes everything due, plus for space what recorders write until
the next full sweep, in one transaction with the index's pending batch: in a full ring one commit every
few minutes carries both the new rows and the deletions, and expired video lives at most that much
longer. Every `sweep_seconds` in between, an urgent-only sweep checks that the quota and the floor will last until
the next one, and deletes at once (with commits of its own) if they will not.

Deleting segments: choose them (and give up the clips whose video they are) and mark them `deleting` in one
write transaction, then unlink (every file, snapshots and reference views too, through storage.deletion:
only files the layout names) and fsync the directories; the rows are dropped with the next commit.
Choosing inside the transaction matters: a hold added by the CLI (or a clip queued by the sync process) at
the same moment either commits first (its segments are class 2 or 3 and not chosen as ring video) or waits
for the mark. A crash after the mark is finished by the start-up reconcile (`index.reconcile`); a crash
before it leaves the clips queued and their video in class 3.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sqlite3
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from edgenvr.config.records import Config, StorageConfig
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.records import AlertKind, EventKind, EventRecord
from edgenvr.core.time_format import format_ms
from edgenvr.core.units import DAY_MS, OPEN_END_MS
from edgenvr.index.retention_classes import (
    AWAITING_UPLOAD,
    CONTINUOUS,
    DELETABLE_BELOW,
    EVENT,
    EVENT_HELD_SQL,
    HOLD,
    classify,
)
from edgenvr.index.writer import IndexWriter
from edgenvr.storage.deletion import DataFile, DeletionRefused, delete_data_file
from edgenvr.storage.durable_writes import fsync_dir
from edgenvr.storage.layout import StorageLayout

log = logging.getLogger(__name__)

# Rows chosen per write transaction: few enough that the CLI never waits long for the write lock (well under
# a second on a Pi), many enough that a full sweep of 32 cameras' 10 minutes (1,920 segments) is one commit.
BATCH = 5000
QUOTA = "quota reached"
FLOOR = "free space below min_free"

# The victim queries of the sweep's three steps. Run through the step functions below (expired_events,
# age_victims, pressure_victims), shared with retention.report, which counts what they select instead of deleting.
SEGMENT_COLUMNS = "id, camera, start_ms, end_ms, bytes, retention_class, timeline_ms"
# Age is measured on the recording timeline (index.recording_timeline: never more than the real age, whatever
# the wall clock did; every row has a place on it since index migration 4). Uses segments_camera_age (camera,
# retention_class, timeline_ms, start_ms), named so that the planner never walks segments_camera_class instead.
# Costs the rows it returns.
AGE_VICTIMS = ("FROM segments INDEXED BY segments_camera_age WHERE camera = ? AND retention_class = ?"
               " AND timeline_ms < ? AND deleting = 0 ORDER BY timeline_ms")
# The ring's order is recording order: the timeline. A wall clock that went back never makes new video look
# older than old video. Uses segments_ring for the filter and the order.
PRESSURE_VICTIMS = (f"FROM segments INDEXED BY segments_ring WHERE retention_class < {DELETABLE_BELOW} AND deleting = 0"
                    " ORDER BY retention_class, timeline_ms, start_ms")
# What the free-space floor deletes once PRESSURE_VICTIMS is exhausted: video awaiting upload, oldest first in
# recording order (segments_ring again). Never the quota, never the age rules.
UNSENT_VICTIMS = (f"FROM segments INDEXED BY segments_ring WHERE retention_class = {AWAITING_UPLOAD} AND deleting = 0"
                  " ORDER BY timeline_ms, start_ms")
# The outbox rows (sync.outbox owns them; retention sits below sync in the layers, so the SQL is here) whose
# clip overlaps a segment the floor deletes: given up in the same transaction, through outbox_waiting.
GIVE_UP_CLIPS = ("UPDATE outbox SET state = 'unavailable', last_error = :reason, done_ms = :now"
                 " WHERE camera = :camera AND state = 'queued' AND end_ms > :start_ms AND start_ms < :end_ms"
                 " RETURNING id, kind, camera, start_ms, end_ms, event_id")
# An event's age is its kept video's end (its own end if it keeps none) on the timeline (timeline_keep_to_ms,
# NULL while it is open). Uses events_expiry (camera, timeline_keep_to_ms, keep_to_ms): reads the expired events
# only (held ones among them are read and left alone at every sweep; a hold keeps few).
EVENT_COLUMNS = "id, camera, kind, subkind, start_ms, end_ms, keep_from_ms, keep_to_ms, snapshot"
EXPIRED_EVENT_WITH_VIDEO = f"e.timeline_keep_to_ms < :cutoff AND NOT {EVENT_HELD_SQL}"   # over `events e`
EXPIRED_EVENTS = (f"SELECT {EVENT_COLUMNS} FROM events e WHERE camera = :camera AND timeline_keep_to_ms < :cutoff"
                  f" AND NOT {EVENT_HELD_SQL}")


@dataclass(frozen=True)
class SweepResult:
    deleted: int
    freed_bytes: int
    reason: str   # "" when nothing was due
    events_deleted: int = 0
    deleted_early: int = 0   # event-video segments deleted before their event_days for lack of space
    unsent_deleted: int = 0  # segments awaiting upload to the hub deleted by the free-space floor


@dataclass(frozen=True)
class AgeRule:
    """Segments of one camera and class have outlived their retention if they are before `cutoff_ms` on the
    recording timeline (their age as the boot-time clock vouches for it)."""

    camera: str
    retention_class: int
    cutoff_ms: int        # on the timeline
    why: str   # the setting that makes them due: max_age_days | event_days | retention_max_days

    def applies(self, camera: str, retention_class: int, timeline_ms: int) -> bool:
        return camera == self.camera and retention_class == self.retention_class and timeline_ms < self.cutoff_ms


@dataclass(frozen=True)
class CameraRules:
    """A camera's retention resolved to cut-off times on the timeline at one moment."""

    camera: str
    segments: tuple[AgeRule, ...]
    events_cutoff_ms: int      # events whose kept video ended before this (timeline) are due
    events_why: str
    event_days_from_ms: int    # event video at or after this (timeline) is within its event_days

    def within_event_days(self, row: Any) -> bool:
        """Whether a segment row (SEGMENT_COLUMNS) is younger than its camera's event_days."""
        return bool(row["timeline_ms"] >= self.event_days_from_ms)


def camera_rules(config: Config, camera: str, at: int) -> CameraRules:
    """The rules when now is `at` on the recording timeline."""
    days = config.retention_days(camera)
    legal = (days.retention_max_days, "retention_max_days")
    rules = []
    continuous = _strictest(at, (days.max_age_days, "max_age_days"), legal)
    if continuous is not None:
        rules.append(AgeRule(camera, CONTINUOUS, *continuous))
    if days.retention_max_days is not None:   # the law wins over the hub: unsent video past it goes too
        rules.append(AgeRule(camera, AWAITING_UPLOAD, at - int(days.retention_max_days * DAY_MS), legal[1]))
    if days.max_age_days is not None and days.max_age_days > days.event_days:
        event_video: tuple[float | None, str] = (days.max_age_days, "max_age_days")
    else:
        event_video = (days.event_days, "event_days")
    video = _strictest(at, event_video, legal)
    assert video is not None  # event_days is always set
    rules.append(AgeRule(camera, EVENT, *video))
    events = _strictest(at, (days.event_days, "event_days"), legal)
    assert events is not None
    event_days_ms = int(days.event_days * DAY_MS)
    return CameraRules(camera, tuple(rules), *events, at - event_days_ms)


def _strictest(at: int, *limits: tuple[float | None, str]) -> tuple[int, str] | None:
    """(cut-off on the timeline, setting) of the shortest of the limits that are set (`at`: now on the
    timeline); None if none is."""
    set_limits = [(days, name) for days, name in limits if days is not None]
    if not set_limits:
        return None
    days, name = min(set_limits, key=lambda limit: limit[0])
    return at - int(days * DAY_MS), name


def expired_events(conn: sqlite3.Connection, rules: CameraRules, limit: int | None = None) -> list[sqlite3.Row]:
    """Step 1: the camera's events past their retention and not held (EVENT_COLUMNS), at most `limit`."""
    return conn.execute(EXPIRED_EVENTS + _limit(limit), expired_events_params(rules)).fetchall()


def expired_events_params(rules: CameraRules) -> dict[str, Any]:
    """The named parameters of EXPIRED_EVENTS and EXPIRED_EVENT_WITH_VIDEO for one camera."""
    return {"camera": rules.camera, "cutoff": rules.events_cutoff_ms}


def age_victims(conn: sqlite3.Connection, age: AgeRule, limit: int | None = None) -> list[sqlite3.Row]:
    """Step 2: the segments (SEGMENT_COLUMNS) one age rule makes due, oldest first, at most `limit`."""
    return conn.execute(f"SELECT {SEGMENT_COLUMNS} {AGE_VICTIMS}{_limit(limit)}",
                        (age.camera, age.retention_class, age.cutoff_ms)).fetchall()


def age_victims_total(conn: sqlite3.Connection, age: AgeRule) -> tuple[int, int]:
    """Step 2 counted: how many segments `age_victims` selects without a limit, and their bytes."""
    count, size = conn.execute(f"SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM (SELECT bytes {AGE_VICTIMS})",
                               (age.camera, age.retention_class, age.cutoff_ms)).fetchone()
    return count, size


def ring_key(row: Any) -> tuple[int, int, int]:
    """A segment row's place in PRESSURE_VICTIMS's order."""
    return row["retention_class"], row["timeline_ms"], row["start_ms"]


def pressure_victims(conn: sqlite3.Connection, limit: int | None = None) -> sqlite3.Cursor:
    """Step 3: deletable segments (SEGMENT_COLUMNS) in the ring's order, continuous video of every camera
    before any event video, oldest first; at most `limit`. Take what is needed with `choose_until`."""
    return conn.execute(f"SELECT {SEGMENT_COLUMNS} {PRESSURE_VICTIMS}{_limit(limit)}")


def unsent_victims(conn: sqlite3.Connection, limit: int | None = None) -> sqlite3.Cursor:
    """Step 3 under the free-space floor, once `pressure_victims` has nothing left: video awaiting upload
    (SEGMENT_COLUMNS), oldest first; at most `limit`."""
    return conn.execute(f"SELECT {SEGMENT_COLUMNS} {UNSENT_VICTIMS}{_limit(limit)}")


def _limit(limit: int | None) -> str:
    return "" if limit is None else f" LIMIT {int(limit)}"


def sweep_cameras(conn: sqlite3.Connection, config: Config) -> list[str]:
    """Every camera with segments or events in the index, and every camera in the config.

    A loose index scan (one index seek per camera), not a scan of the tables."""
    found = {camera.id for camera in config.cameras}
    # MIN(camera) is one seek in segments_camera_class / events_keep, both led by camera.
    for table in ("segments", "events"):
        found.update(row[0] for row in conn.execute(
            f"""WITH RECURSIVE c(camera) AS (
                    SELECT (SELECT MIN(camera) FROM {table})
                    UNION ALL
                    SELECT (SELECT MIN(camera) FROM {table} WHERE camera > c.camera)
                    FROM c WHERE c.camera IS NOT NULL)
                SELECT camera FROM c WHERE camera IS NOT NULL"""))
    return sorted(found)


def headroom_bytes(write_rate: float, storage: StorageConfig, segment_seconds: float) -> int:
    """Room for what recorders write before the next sweep, plus the segments they have open now."""
    return int(write_rate * (2 * storage.sweep_seconds + 2 * segment_seconds))


def room_bytes(write_rate: float, storage: StorageConfig) -> int:
    """Extra space a full sweep frees: what recorders write until the next full sweep (one batch later,
    with a sweep's margin), so that no urgent sweep is needed in between."""
    return int(write_rate * (storage.index_commit_seconds + 2 * storage.sweep_seconds))


def index_file_bytes(layout: StorageLayout) -> int:
    total = 0
    for path in layout.data_dir.glob("index.sqlite3*"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass  # the -shm/-wal file of a checkpoint that just finished
    return total


class FilesystemSpace(Protocol):
    """What retention reads of a filesystem's size (as `shutil.disk_usage` returns it)."""

    @property
    def total(self) -> int: ...

    @property
    def free(self) -> int: ...


# Measures the filesystem a path is on: `shutil.disk_usage`, or a stand-in for simulations and benchmarks.
DiskSpace = Callable[[Path], FilesystemSpace]


@dataclass(frozen=True)
class DiskUsage:
    used: int    # bytes the ring counts: segments (indexed and pending) and the index file
    limit: int   # the quota in bytes
    free: int    # free bytes on the filesystem
    min_free: int

    def bytes_to_free(self, headroom: int) -> tuple[int, str]:
        """What must be deleted now to keep the quota and the floor with `headroom` to spare, and why."""
        over_quota = self.used + headroom - self.limit
        under_floor = self.min_free + headroom - self.free
        need = max(over_quota, under_floor, 0)
        if need == 0:
            return 0, ""
        return need, (FLOOR if under_floor >= over_quota else QUOTA)

    def floor_short(self, headroom: int) -> int:
        """What the free-space floor alone needs deleted now, with `headroom` to spare (0: it holds). Only this
        may cost video awaiting upload, whatever the quota says."""
        return max(self.min_free + headroom - self.free, 0)


def disk_usage(layout: StorageLayout, storage: StorageConfig, segment_bytes: int,
               disk_space: DiskSpace = shutil.disk_usage) -> DiskUsage:
    disk = disk_space(layout.data_dir)
    return DiskUsage(segment_bytes + index_file_bytes(layout), storage.quota.limit_bytes(disk.total), disk.free,
                     storage.min_free_bytes)


def choose_until(rows: Iterable[Any], need: int) -> list[Any]:
    """The oldest-first prefix of `rows` whose bytes reach `need` (all of them if they do not)."""
    chosen, total = [], 0
    for row in rows:
        if total >= need:
            break
        chosen.append(row)
        total += row["bytes"]
    return chosen


@dataclass
class _Choice:
    """What one deletion transaction did: expired events deleted, segments marked (with why)."""
    events: int = 0
    victims: list[tuple[sqlite3.Row, str]] = field(default_factory=list)
    more: bool = False              # a query hit BATCH: another transaction follows
    found_for_space: bool = True    # space was needed and video to delete for it was found
    lost_clips: list[sqlite3.Row] = field(default_factory=list)  # outbox rows given up for the floor


# Clips named in an unsent_video_deleted alert's detail; every one is logged and its outbox row says why.
UNSENT_CLIPS_NAMED = 10


@dataclass
class _Unsent:
    """Video awaiting upload of one camera deleted by the floor in one sweep, and the clips given up."""
    segments: int = 0
    bytes: int = 0
    clips: list[sqlite3.Row] = field(default_factory=list)

    why: set[str] = field(default_factory=set)   # FLOOR and/or retention_max_days

    def add(self, row: sqlite3.Row, why: str) -> None:
        self.segments += 1
        self.bytes += row["bytes"]
        self.why.add(why)


@dataclass
class _Early:
    """Event video of one camera deleted before its event_days in one sweep."""
    segments: int = 0
    bytes: int = 0
    from_ms: int = OPEN_END_MS
    to_ms: int = 0
    why: set[str] = field(default_factory=set)

    def add(self, row: sqlite3.Row, why: str) -> None:
        self.segments += 1
        self.bytes += row["bytes"]
        self.from_ms = min(self.from_ms, row["start_ms"])
        self.to_ms = max(self.to_ms, row["end_ms"])
        self.why.add(why)


class RetentionPolicy:
    def __init__(self, config: Config, layout: StorageLayout, writer: IndexWriter, *, clock: Clock = SYSTEM_CLOCK,
                 disk_space: DiskSpace = shutil.disk_usage) -> None:
        self.config = config
        self.storage = config.storage
        self.layout = layout
        self.writer = writer
        self.clock = clock
        self.disk_space = disk_space
        self.segment_seconds = config.recording.segment_seconds
        self._written: deque[tuple[float, int]] = deque()  # (monotonic time, bytes) of recent segments
        # "" or why (QUOTA, FLOOR) the disk is short with nothing left to delete: said once until it recovers
        self._starved = ""

    def note_written(self, size: int) -> None:
        now = self.clock.monotonic()
        self._written.append((now, size))
        while self._written and self._written[0][0] < now - 60:
            self._written.popleft()

    def write_rate(self) -> float:
        """Bytes per second written over the last minute."""
        if not self._written:
            return 0.0
        span = max(self.clock.monotonic() - self._written[0][0], self.segment_seconds)
        return sum(size for _, size in self._written) / span

    def headroom_bytes(self) -> int:
        return headroom_bytes(self.write_rate(), self.storage, self.segment_seconds)

    def usage(self) -> DiskUsage:
        return disk_usage(self.layout, self.storage, self.writer.indexed_bytes + self.writer.pending_bytes,
                          self.disk_space)

    def bytes_to_free(self, extra_room: bool = False) -> tuple[int, str]:
        headroom = self.headroom_bytes() + (room_bytes(self.write_rate(), self.storage) if extra_room else 0)
        return self.usage().bytes_to_free(headroom)

    def sweep(self, urgent_only: bool = False) -> SweepResult:
        """Delete what is due: events, then video by age, then video for space (see the module docstring).
        `urgent_only`: only if the quota or the floor will not last until the next full sweep."""
        at_ms = self.clock.now_ms()
        conn = self.writer.conn
        short, why = self.bytes_to_free()
        if short == 0:
            self._starved = ""
            if urgent_only:
                return SweepResult(0, 0, "")
        timeline_ms = self.writer.timeline.now_ms()   # ages are counted there (see AgeRule)
        rules = [camera_rules(self.config, camera, timeline_ms) for camera in sweep_cameras(conn, self.config)]
        self._expire_references(at_ms, [rule.camera for rule in rules])
        need, why = self.bytes_to_free(extra_room=True)
        if need == 0 and not self._due(rules):
            return SweepResult(0, 0, "")
        floor_need = self.usage().floor_short(self.headroom_bytes())   # what may cost video awaiting upload
        by_camera = {rule.camera: rule for rule in rules}
        deleted = freed = events_deleted = 0
        reasons: list[str] = []
        early: dict[str, _Early] = {}
        unsent: dict[str, _Unsent] = {}
        while True:
            choice = _Choice()
            self.writer.commit(also=functools.partial(self._choose, rules, need, why, floor_need, at_ms, choice))
            events_deleted += choice.events
            gone, gone_bytes = self._unlink([row for row, _ in choice.victims])
            deleted, freed = deleted + len(gone), freed + gone_bytes
            for clip in choice.lost_clips:
                unsent.setdefault(clip["camera"], _Unsent()).clips.append(clip)
            gone_ids = {row["id"] for row in gone}
            for row, reason in choice.victims:
                if row["retention_class"] == AWAITING_UPLOAD and row["id"] in gone_ids:
                    unsent.setdefault(row["camera"], _Unsent()).add(row, reason)
                reasons.append(reason)
                camera = row["camera"]
                if camera not in by_camera:
                    by_camera[camera] = camera_rules(self.config, camera, timeline_ms)
                if reason in (QUOTA, FLOOR) and row["retention_class"] == EVENT \
                        and by_camera[camera].within_event_days(row):
                    early.setdefault(camera, _Early()).add(row, reason)
            usage, headroom = self.usage(), self.headroom_bytes()   # one measure for both
            short, why = usage.bytes_to_free(headroom)
            floor_need = usage.floor_short(headroom)
            if short > 0 and not choice.found_for_space:
                self._nothing_left_to_delete(why, short)
                break
            need = max(need - gone_bytes, short)  # a backlog over BATCH rows goes on in further transactions
            if not choice.more and short == 0:
                break

        for camera, lost in early.items():
            detail = (f"{', '.join(sorted(lost.why))}: deleted {lost.segments} event-video segments"
                      f" ({lost.bytes / 1e6:.1f} MB) of {camera} from {format_ms(lost.from_ms)} to"
                      f" {format_ms(lost.to_ms)} before their event_days"
                      f" ({self.config.retention_days(camera).event_days:g} days)")
            log.warning("ALERT: %s", detail)
            self.writer.add_event(EventRecord(camera, EventKind.ALERT, at_ms, at_ms, subkind=AlertKind.DELETED_EARLY, detail=detail))
        if early:
            self._commit_alerts()
        if unsent:
            self._unsent_deleted(unsent, at_ms)

        reason = ", ".join(dict.fromkeys(reasons))
        if deleted:
            log_fn = log.warning if FLOOR in reasons else log.info
            log_fn("retention: deleted %d segments (%.1f MB): %s", deleted, freed / 1e6, reason)
        if events_deleted:
            log.info("retention: deleted %d events past their retention", events_deleted)
        return SweepResult(deleted, freed, reason, events_deleted, sum(e.segments for e in early.values()),
                           sum(u.segments for u in unsent.values()))

    def _due(self, rules: Iterable[CameraRules]) -> bool:
        """Whether an event or a segment has outlived its retention (index seeks only, no write)."""
        conn = self.writer.conn
        return any(expired_events(conn, rule, 1) or any(age_victims(conn, age, 1) for age in rule.segments)
                   for rule in rules)

    # -- deleting ---------------------------------------------------------------------------------

    def _choose(self, rules: list[CameraRules], need: int, why: str, floor_need: int, at_ms: int, choice: _Choice,
                conn: sqlite3.Connection) -> None:
        """Inside the commit's transaction: delete expired events, mark expired video, then mark the
        oldest deletable video until `need` bytes (less what age frees) are marked; if that is all of it and
        the free-space floor still needs more (`floor_need`, never more than `need`), the oldest video
        awaiting upload too, giving up its clips."""
        for rule in rules:
            expired = self._expire_events(conn, rule)
            choice.events += expired
            choice.more |= expired >= BATCH
        unsent_by_age: list[sqlite3.Row] = []
        for rule in rules:
            for age in rule.segments:
                rows = age_victims(conn, age, BATCH)
                choice.more |= len(rows) >= BATCH
                choice.victims += [(row, age.why) for row in rows]
                if age.retention_class == AWAITING_UPLOAD:
                    unsent_by_age += rows
        self._mark(conn, [row for row, _ in choice.victims])
        choice.lost_clips += self._give_up_clips(conn, unsent_by_age, at_ms, "past retention_max_days (the legal "
                                                 "maximum)")
        by_age = sum(row["bytes"] for row, _ in choice.victims)
        need -= by_age
        if need > 0:
            ring = pressure_victims(conn, BATCH).fetchall()
            chosen = choose_until(ring, need)
            choice.more |= len(chosen) >= BATCH
            self._mark(conn, chosen)
            choice.victims += [(row, why) for row in chosen]
            floor_need -= by_age + sum(row["bytes"] for row in chosen)
            # Only once classes 0 and 1 are exhausted (fewer than BATCH left, all of them chosen: need >=
            # floor_need, so a remaining floor_need means every row was taken).
            unsent: list[sqlite3.Row] = []
            if floor_need > 0 and len(ring) < BATCH:
                unsent = choose_until(unsent_victims(conn, BATCH).fetchall(), floor_need)
                choice.more |= len(unsent) >= BATCH
                self._mark(conn, unsent)
                choice.victims += [(row, FLOOR) for row in unsent]
                choice.lost_clips += self._give_up_clips(conn, unsent, at_ms, "deleted by the free-space floor")
            choice.found_for_space = bool(chosen or unsent)

    @staticmethod
    def _give_up_clips(conn: sqlite3.Connection, victims: list[sqlite3.Row], at_ms: int,
                       why: str) -> list[sqlite3.Row]:
        """Inside the transaction that marks `victims` (video awaiting upload): their queued clips become
        `unavailable` with the reason, and what is left of those clips' video is re-classified (the marked
        rows keep their class until they go: classify skips them). Returns the outbox rows given up.

        Reporting them to the hub is the sync process's later step (issue 12): the row, with this reason, is
        the record it sends. A victim whose unlink then fails stays on disk as ordinary video; its clip stays
        given up (part of it was chosen to go, and will be with the next sweep that can)."""
        reason = f"{why} before it reached the hub at {format_ms(at_ms)}"
        lost: list[sqlite3.Row] = []
        for row in victims:
            lost += conn.execute(GIVE_UP_CLIPS, {"reason": reason, "now": at_ms, "camera": row["camera"],
                                                 "start_ms": row["start_ms"], "end_ms": row["end_ms"]}).fetchall()
        for clip in lost:
            classify(conn, clip["camera"], clip["start_ms"], clip["end_ms"])
        return lost

    @staticmethod
    def _mark(conn: sqlite3.Connection, rows: list[sqlite3.Row]) -> None:
        conn.executemany("UPDATE segments SET deleting = 1 WHERE id = ?", [(row["id"],) for row in rows])

    def _unlink(self, victims: list[sqlite3.Row]) -> tuple[list[sqlite3.Row], int]:
        """Unlink marked (committed) segments and make that durable; their rows go with the next commit.
        Returns the segments deleted and their bytes.

        A file that cannot be unlinked (read-only remount, I/O error), or that storage.deletion refuses (a
        symlink below the data dir, a row whose camera or time no layout path has), is logged and its row
        unmarked with the next commit, so a later sweep tries again; nothing else is touched."""
        directories = set()
        gone: list[sqlite3.Row] = []
        failed: list[int] = []
        for victim in victims:
            try:
                path = self.layout.segment_path(victim["camera"], victim["start_ms"])
                if not delete_data_file(self.layout, path, DataFile.SEGMENT):
                    log.warning("retention: %s was already gone", path)
            except ValueError as exc:  # DeletionRefused, or the layout has no path for the row
                log.error("retention: segment %r at %r not deleted: %s", victim["camera"], victim["start_ms"], exc)
                failed.append(victim["id"])
                continue
            except OSError as exc:
                log.error("retention: cannot delete %s (%s); will try again", path, exc)
                failed.append(victim["id"])
                continue
            gone.append(victim)
            directories.add(path.parent)
        for directory in directories:
            try:
                fsync_dir(directory)
            except FileNotFoundError:
                continue
            _remove_empty_dirs(directory, stop=directory.parent.parent)  # keep camera dirs
        freed = sum(victim["bytes"] for victim in gone)
        self.writer.note_deleted(freed)  # the files are gone whatever happens to the rows
        self.writer.forget_segments([victim["id"] for victim in gone])
        self.writer.unmark_segments(failed)
        return gone, freed

    def _expire_references(self, at_ms: int, cameras: Iterable[str]) -> None:
        """Superseded reference views are pictures of a camera's view, personal data like video: past the
        legal maximum they go. The current reference stays whatever its age: detection needs it."""
        for camera in cameras:
            days = self.config.retention_days(camera).retention_max_days
            if days is None:
                continue
            cutoff = at_ms - int(days * DAY_MS)
            query = ("SELECT id, image FROM reference_views WHERE camera = ? AND approved_ms < ? AND approved_ms <"
                     " (SELECT MAX(approved_ms) FROM reference_views WHERE camera = ?)")
            params = (camera, cutoff, camera)
            if not self.writer.conn.execute(query, params).fetchall():
                continue
            self.writer.transaction(functools.partial(self._delete_references, query, params))
            log.info("retention: deleted the superseded reference views of %s older than %g days", camera, days)

    def _delete_references(self, query: str, params: tuple[object, ...], conn: sqlite3.Connection) -> None:
        # unlinked inside the transaction that deletes the rows, as snapshots are (_expire_events)
        for row in conn.execute(query, params).fetchall():
            try:
                delete_data_file(self.layout, self.layout.absolute(str(row["image"])), DataFile.REFERENCE)
            except DeletionRefused as exc:  # not a file of ours: left alone, and the expired row goes
                log.error("retention: reference view image %r left alone: %s", row["image"], exc)
            except OSError as exc:  # the row stays, so the image is not forgotten; retried next sweep
                log.error("retention: cannot delete reference view %s: %s", row["image"], exc)
                continue
            conn.execute("DELETE FROM reference_views WHERE id = ?", (row["id"],))

    def _expire_events(self, conn: sqlite3.Connection, rules: CameraRules) -> int:
        """Inside a write transaction: delete up to BATCH expired events of a camera and their snapshots,
        and give the video they kept back to its other tiers. Returns how many went."""
        rows = expired_events(conn, rules, BATCH)
        # Snapshots are unlinked first, inside the transaction that deletes their rows. A crash after an
        # unlink rolls the deletion back and leaves a row whose snapshot is missing: harmless (readers
        # show no picture; the next sweep deletes the row again). The other order would leave JPEGs that
        # no row knows about, filling the disk for good. Holding the write lock meanwhile keeps a hold
        # added by the CLI from slipping in between the choice and the unlink.
        directories = set()
        gone = []
        for row in rows:
            if row["snapshot"]:
                path = self.layout.absolute(str(row["snapshot"]))
                try:
                    delete_data_file(self.layout, path, DataFile.SNAPSHOT)
                    directories.add(path.parent)
                except DeletionRefused as exc:  # not a snapshot of ours: left alone, and the expired event goes
                    log.error("retention: event snapshot %r left alone: %s", row["snapshot"], exc)
                except OSError as exc:  # the row stays, so the snapshot is not forgotten; retried next sweep
                    log.error("retention: cannot delete snapshot %s: %s", path, exc)
                    continue
            gone.append(row)
        for directory in directories:
            if directory.is_dir():
                fsync_dir(directory)
        conn.executemany("DELETE FROM events WHERE id = ?", [(row["id"],) for row in gone])
        for row in gone:
            if row["keep_from_ms"] is not None:  # the video it kept goes back to its other tiers
                classify(conn, row["camera"], row["keep_from_ms"], row["keep_to_ms"])
        return len(gone)

    # -- alerts -----------------------------------------------------------------------------------

    def _kept(self, retention_class: int) -> tuple[dict[str, int], str]:
        """Bytes per camera of a class the quota never deletes (held, awaiting upload), and as text."""
        kept = {row[0]: row[1] for row in self.writer.conn.execute(
            "SELECT camera, SUM(bytes) FROM segments WHERE retention_class = ? AND deleting = 0 GROUP BY camera",
            (retention_class,))}
        text = ", ".join(f"{camera} {size / 1e6:.1f} MB" for camera, size in sorted(kept.items())) if kept else "none"
        return kept, text

    def _nothing_left_to_delete(self, why: str, need: int) -> None:
        """The ring is empty but for held video and (quota) video awaiting upload, and the disk is still short."""
        if self._starved == why:
            return
        self._starved = why
        held, held_text = self._kept(HOLD)
        if why != FLOOR:
            _, unsent_text = self._kept(AWAITING_UPLOAD)
            log.warning("retention: quota reached (%.1f MB short) and nothing but held video and video awaiting"
                        " upload is left (held: %s; awaiting upload: %s); held video is kept over the quota until"
                        " its hold is released, video awaiting upload until the hub has it (only the free-space"
                        " floor deletes it)", need / 1e6, held_text, unsent_text)
            return
        detail = (f"free space below min_free ({need / 1e6:.1f} MB short) and no recording left to delete"
                  f" (held video: {held_text}): something else is filling the disk")
        log.error("ALERT: %s", detail)
        at_ms = self.clock.now_ms()
        cameras = {camera.id for camera in self.config.enabled_cameras} | set(held)
        for camera in sorted(cameras):
            self.writer.add_event(EventRecord(camera, EventKind.ALERT, at_ms, at_ms, subkind=AlertKind.DISK_FULL, detail=detail))
        if cameras:
            self._commit_alerts()

    def _unsent_deleted(self, unsent: dict[str, _Unsent], at_ms: int) -> None:
        """The floor or the legal maximum deleted video of clips queued for the hub: an error per clip, an ALERT
        per camera. What exactly was lost is in the outbox rows, marked in the deletion's transaction
        (_give_up_clips), which the sync process reports to the hub."""
        for camera, lost in sorted(unsent.items()):
            why = ", ".join(sorted(lost.why)) or FLOOR
            for clip in lost.clips:
                log.error("retention: %s: deleted video of the %s clip of %s from %s to %s (outbox %d) before it"
                          " reached the hub", why, clip["kind"], camera, format_ms(clip["start_ms"]),
                          format_ms(clip["end_ms"]), clip["id"])
            named = [f"{clip['kind']} {format_ms(clip['start_ms'])} to {format_ms(clip['end_ms'])}"
                     for clip in lost.clips[:UNSENT_CLIPS_NAMED]]
            more = len(lost.clips) - len(named)
            detail = (f"{why}: deleted {lost.segments} segments ({lost.bytes / 1e6:.1f} MB) of"
                      f" {camera} awaiting upload to the hub, {len(lost.clips)} clip(s) lost before they reached it: "
                      + "; ".join(named))
            if more > 0:
                detail += f"; and {more} more (each in the log and its outbox row)"
            log.error("ALERT: %s", detail)
            self.writer.add_event(EventRecord(camera, EventKind.ALERT, at_ms, at_ms,
                                              subkind=AlertKind.UNSENT_VIDEO_DELETED, detail=detail))
        self._commit_alerts()

    def _commit_alerts(self) -> None:
        # An alert is evidence of what was lost: write it now rather than at the next batch. If the index
        # cannot commit either, it stays pending and goes with the next batch.
        try:
            self.writer.commit()
        except (sqlite3.Error, OSError) as exc:
            log.error("retention: alert not indexed yet (will be with the next commit): %s", exc)


def _remove_empty_dirs(directory: "os.PathLike[str]", stop: "os.PathLike[str]") -> None:
    """Hour and day directories left empty by the ring are removed (a Pi lists them at every start-up)."""
    current = os.fspath(directory)
    stop_path = os.fspath(stop)
    while current.startswith(stop_path) and current != stop_path:
        try:
            os.rmdir(current)
        except OSError:
            return  # not empty (the recorder may be writing there) or already gone
        current = os.path.dirname(current)
