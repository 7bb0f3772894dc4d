"""Video of clips waiting for the city hub (issue 12): retention never deletes a queued, unreceipted clip's
video unless the free-space floor forces it, and then it logs, raises an alert and marks the clip
`unavailable` with the reason, the record reported upstream.

Everything is real but the filesystem's size: SQLite index files written through IndexWriter and swept by
RetentionPolicy on a SimulatedClock (nothing sleeps), clips queued and receipted through sync.outbox, segment
files on disk (sparse: their size is what the index and the disk accounting see). The filesystem the ring
measures is a stand-in: its free space is what the segment files and "someone else's" bytes leave.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest

from edgenvr.config.checking import load_config
from edgenvr.config.records import Config
from edgenvr.core.clock import SimulatedClock
from edgenvr.core.records import AlertKind, EventKind, EventRecord, SegmentRecord
from edgenvr.core.time_format import format_ms
from edgenvr.core.units import DAY_MS, HOUR_MS, MINUTE_MS, OPEN_END_MS
from edgenvr.index import schema as index_schema
from edgenvr.index.reconcile import check_consistency, reconcile
from edgenvr.index.retention_classes import (
    AWAITING_UPLOAD,
    CONTINUOUS,
    EVENT,
    HOLD,
    classes_after,
)
from edgenvr.index.writer import IndexWriter
from edgenvr.retention import policy as retention_policy
from edgenvr.retention.holds import add_hold
from edgenvr.retention.policy import FLOOR, RetentionPolicy
from edgenvr.retention.report import Due, build_report, format_report
from edgenvr.storage.layout import StorageLayout
from edgenvr.sync import outbox

S = 100_000_000          # bytes of a segment (sparse files: no disk is filled)
SEGMENT_MS = 10 * MINUTE_MS
SETTLE = 7_000
LOST = "deleted by the free-space floor before it reached the hub at "


class Space(NamedTuple):
    total: int
    free: int


@dataclass
class Disk:
    """The filesystem as the ring measures it: `total` bytes, less the segment files and `other` bytes."""

    root: Path
    total: int
    other: int = 0

    def __call__(self, path: Path) -> Space:
        files = sum(p.stat().st_size for p in self.root.rglob("*.mp4"))
        return Space(self.total, self.total - files - self.other)


def write_config(path: Path, data_dir: Path, storage: dict[str, object] | None = None,
                 cameras: tuple[str, ...] = ("gate",)) -> Config:
    def value(v: object) -> str:
        return json.dumps(v) if isinstance(v, str) else str(v)

    lines = ["[storage]", f"data_dir = {json.dumps(str(data_dir))}"]
    lines += [f"{key} = {value(v)}" for key, v in {"quota": "100%", "min_free": 0, **(storage or {})}.items()]
    for camera in cameras:
        lines += ["[[cameras]]", f'id = "{camera}"', f'url = "rtsp://192.0.2.1/{camera}"']
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


@dataclass
class Box:
    """A data dir with an index and segment files, written as the supervisor writes them, and the sync
    process's outbox on the same index file."""

    data_dir: Path
    clock: SimulatedClock = field(default_factory=SimulatedClock)
    disk: Disk = field(init=False)

    def __post_init__(self) -> None:
        self.layout = StorageLayout(self.data_dir)
        self.open()
        self.disk = Disk(self.layout.segments_dir, 100 * S)

    def open(self) -> None:
        self.writer = IndexWriter(index_schema.connect(self.layout.index_path), clock=self.clock,
                                  event_padding_ms=(1_000, 2_000))

    @property
    def conn(self) -> sqlite3.Connection:
        return self.writer.conn

    def segment(self, camera: str, start_ms: int, size: int = S) -> tuple[str, int]:
        path = self.layout.segment_path(camera, start_ms)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as file:
            file.truncate(size)
        end_ms = start_ms + SEGMENT_MS
        self.writer.add_segment(SegmentRecord(camera, start_ms, end_ms, self.layout.relative(path), size, "00" * 32,
                                              "h264", 320, 240, 250, end_ms))
        return camera, start_ms

    def motion(self, segment: tuple[str, int]) -> None:
        """A motion event from 2 to 3 minutes into the segment (its padded range stays inside it)."""
        camera, start_ms = segment
        self.writer.add_event(EventRecord(camera, EventKind.MOTION, start_ms + 2 * MINUTE_MS, start_ms + 3 * MINUTE_MS))

    def queue(self, since_ms: int) -> int:
        """What the sync process does each round: queue the closed events that ended since `since_ms`."""
        return outbox.enqueue_closed_events(self.conn, outbox.sync_since(self.conn, since_ms), self.clock.now_ms(),
                                            SETTLE)

    def policy(self, config: Config) -> RetentionPolicy:
        return RetentionPolicy(config, self.layout, self.writer, clock=self.clock, disk_space=self.disk)

    def segments(self, retention_class: int | None = None) -> set[tuple[str, int]]:
        return {(r[0], r[1]) for r in self.conn.execute(
            "SELECT camera, start_ms FROM segments WHERE deleting = 0 AND (? IS NULL OR retention_class = ?)",
            (retention_class, retention_class))}

    def clips(self) -> dict[tuple[str, int], tuple[str, str]]:
        """(camera, start_ms) -> (state, last_error) of every outbox row."""
        return {(r[0], r[1]): (r[2], r[3]) for r in self.conn.execute(
            "SELECT camera, start_ms, state, last_error FROM outbox")}

    def assert_consistent(self) -> None:
        """Index and disk agree, and every segment's class is what `classify` would give it now."""
        report = check_consistency(self.conn, self.layout)
        assert report.consistent, report.summary()
        cameras = [r[0] for r in self.conn.execute("SELECT DISTINCT camera FROM segments")]
        stale = [(row["camera"], row["start_ms"], row["retention_class"], row["class"]) for camera in cameras
                 for row in classes_after(self.conn, camera, -OPEN_END_MS, OPEN_END_MS, "1", {})
                 if row["class"] != row["retention_class"]]
        assert stale == [], "classes out of step with holds, events and the outbox"


# -- kept by the age rules and the quota ----------------------------------------------------------

def test_a_queued_clip_outlives_the_age_rules_and_the_quota_and_is_ordinary_video_once_synced(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Box(tmp_path / "data")
    now = box.clock.now_ms()
    t0 = now - 12 * HOUR_MS
    gate = [box.segment("gate", t0 + i * SEGMENT_MS) for i in range(72)]   # 12 hours of 10-minute segments
    box.motion(gate[10])
    box.writer.commit()
    assert box.queue(t0) == 1
    clip = {gate[10]}
    assert box.segments(AWAITING_UPLOAD) == clip and box.segments(EVENT) == set()   # in the queuing transaction
    aged = {"max_age_days": 0.25, "event_days": 0.1}   # 6 hours of video, event video 2.4 hours

    # Age: the clip's event is past event_days and goes, yet its video (10 hours old) stays: still queued.
    result = box.policy(write_config(tmp_path / "c.toml", box.data_dir, aged)).sweep()
    assert result.events_deleted == 1 and result.deleted == 36 - 1
    assert box.segments() == clip | set(gate[36:])
    assert box.segments(AWAITING_UPLOAD) == clip

    # Quota: newer video goes first, oldest first, though the clip is older than all of it.
    policy = box.policy(write_config(tmp_path / "c.toml", box.data_dir,
                                     {**aged, "quota": box.policy(write_config(tmp_path / "c.toml", box.data_dir, aged))
                                      .usage().used - 10 * S - S // 2}))
    assert policy.sweep().reason == "quota reached"
    assert box.segments() == clip | set(gate[47:])

    # A quota under the clip's size: everything else goes and the ring stays over the quota, said once.
    policy = box.policy(write_config(tmp_path / "c.toml", box.data_dir, {**aged, "quota": S // 2}))
    with caplog.at_level(logging.WARNING, logger="edgenvr.retention.policy"):
        policy.sweep()
        policy.sweep()
    assert box.segments() == clip
    over = [r.getMessage() for r in caplog.records if "quota reached" in r.getMessage()
            and "awaiting upload: gate 100.0 MB" in r.getMessage()]
    assert len(over) == 1, caplog.text
    assert box.clips()[("gate", gate[10][1] + 2 * MINUTE_MS - 1_000)] == ("queued", "")
    # `edgenvr retention` shows it as it shows held video: what it keeps, and over the quota by how much.
    report = build_report(box.conn, policy.config, box.layout, clock=box.clock, disk_space=box.disk)
    assert report.cameras[0].awaiting_upload.segments == 1 and report.cameras[0].clips_queued == 1
    assert report.disk.awaiting_upload_bytes == S and S // 2 <= report.disk.kept_over_quota_bytes <= S
    lines = format_report(report)
    assert "  kept whatever the quota: held video 0.0 MB, video awaiting upload 100.0 MB (held video is never" \
           " deleted; video awaiting upload only by min_free, after all other video)" in lines
    assert any(line.startswith("  held video and video awaiting upload keep the ring ") for line in lines)

    # The hub's receipt: the clip's video is ordinary continuous video again, and the age rule takes it.
    item = outbox.next_due(box.conn, box.clock.now_ms())
    assert item is not None
    outbox.mark_synced(box.conn, item.id, "{receipt}", box.clock.now_ms())
    assert box.segments(CONTINUOUS) == clip
    box.policy(write_config(tmp_path / "c.toml", box.data_dir, aged)).sweep()
    assert box.segments() == set()
    box.assert_consistent()


def test_video_indexed_after_its_clip_was_queued_is_awaiting_upload_from_its_batch_on(tmp_path: Path) -> None:
    box = Box(tmp_path / "data")
    t0 = box.clock.now_ms() - HOUR_MS
    box.writer.add_event(EventRecord("gate", EventKind.MOTION, t0 + MINUTE_MS, t0 + 2 * MINUTE_MS))
    box.writer.commit()
    assert box.queue(t0) == 1                       # the sync process queues the event ...
    segment = box.segment("gate", t0)               # ... before the batch with its segment is committed
    box.writer.commit()
    assert box.segments(AWAITING_UPLOAD) == {segment}
    outbox.mark_unavailable(box.conn, outbox.next_due(box.conn, box.clock.now_ms()).id, "no recording",
                            box.clock.now_ms())
    assert box.segments(EVENT) == {segment}         # given up: its event keeps it, as any event video
    box.assert_consistent()


# -- deleted only by the free-space floor ----------------------------------------------------------

def _floor_box(tmp_path: Path) -> tuple[Box, Config, list[tuple[str, int]], list[tuple[str, int]]]:
    """Two days ago: gate 20 segments; an event in 2-3 from before sync began (event video); clips queued
    for motion in 6-7 ("A") and 12-13 ("B"); a hold on 16-17. yard: 3 segments, a clip queued for the middle
    one ("C", older than A). Then someone else fills the disk to 17.5 segments short of min_free (10)."""
    box = Box(tmp_path / "data")
    t0 = box.clock.now_ms() - 2 * DAY_MS
    gate = [box.segment("gate", t0 + i * SEGMENT_MS) for i in range(20)]
    yard = [box.segment("yard", t0 + (3 + i) * SEGMENT_MS + MINUTE_MS) for i in range(3)]
    box.writer.add_event(EventRecord("gate", EventKind.MOTION, gate[2][1] + 2 * MINUTE_MS, gate[3][1] + MINUTE_MS))
    box.writer.commit()
    assert box.queue(gate[4][1]) == 0                # sync began after that event
    box.writer.add_event(EventRecord("gate", EventKind.MOTION, gate[6][1] + 2 * MINUTE_MS, gate[7][1] + MINUTE_MS))
    box.writer.add_event(EventRecord("gate", EventKind.MOTION, gate[12][1] + 2 * MINUTE_MS,
                                     gate[13][1] + MINUTE_MS))
    box.motion(yard[1])
    box.writer.commit()
    assert box.queue(gate[4][1]) == 3
    config = write_config(tmp_path / "c.toml", box.data_dir, {"min_free": 10 * S}, ("gate", "yard"))
    add_hold(box.conn, config, "gate", gate[16][1], gate[17][1] + SEGMENT_MS, "incident 7", clock=box.clock)
    assert box.segments(EVENT) == set(gate[2:4])
    assert box.segments(AWAITING_UPLOAD) == {*gate[6:8], *gate[12:14], yard[1]}
    assert box.segments(HOLD) == set(gate[16:18])
    box.disk.other = 100 * S - 23 * S - 10 * S + 17 * S + S // 2     # free space 17.5 segments under min_free
    return box, config, gate, yard


def test_the_floor_deletes_all_other_unheld_video_first_then_the_oldest_awaiting_upload_and_says_what_was_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box, config, gate, yard = _floor_box(tmp_path)
    # `edgenvr retention` predicts it: all continuous and event video, then 1.5 segments awaiting upload
    # (C's, then the first of A's), oldest first across cameras.
    report = build_report(box.conn, config, box.layout, clock=box.clock, disk_space=box.disk)
    due = {camera.camera: set(camera.next_sweep) for camera in report.cameras}
    assert due == {"gate": {Due(FLOOR, "continuous", 12, 12 * S), Due(FLOOR, "event", 2, 2 * S),
                            Due(FLOOR, "awaiting upload", 1, S)},
                   "yard": {Due(FLOOR, "continuous", 2, 2 * S), Due(FLOOR, "awaiting upload", 1, S)}}
    gate_report = report.cameras[0]
    assert (gate_report.awaiting_upload.segments, gate_report.awaiting_upload.bytes) == (4, 4 * S)
    assert gate_report.clips_queued == 2 and gate_report.held.segments == 2
    assert (report.disk.held_bytes, report.disk.awaiting_upload_bytes) == (2 * S, 5 * S)
    lines = format_report(report)
    assert any(line.startswith("  awaiting upload ") and "4 segments" in line for line in lines)
    assert "  clips waiting for the hub: 2 (edgenvr status)" in lines
    assert "  next sweep: delete 1 awaiting upload segments (100.0 MB): free space below min_free" in lines

    at = box.clock.now_ms()
    with caplog.at_level(logging.WARNING, logger="edgenvr.retention.policy"):
        result = box.policy(config).sweep()

    assert result.reason == FLOOR and result.deleted == 14 + 2 + 2 and result.unsent_deleted == 2
    # Kept: B's video (whole, still queued), what is left of A's (given up: the event it is for keeps it as
    # event video, which the floor deletes first next time) and held video, never deleted.
    assert box.segments(AWAITING_UPLOAD) == set(gate[12:14])
    assert box.segments(EVENT) == {gate[7]}
    assert box.segments(HOLD) == set(gate[16:18])
    assert box.segments() == {gate[7], *gate[12:14], *gate[16:18]}
    assert box.disk(box.layout.segments_dir).free >= 10 * S
    box.assert_consistent()

    # The outbox says exactly what was lost (the record the sync process reports upstream): A and C, with
    # the reason and when; B waits on.
    reason = LOST + format_ms(at)
    pad = 2 * MINUTE_MS - 1_000    # a clip starts at its event's start less the pre-padding
    assert box.clips() == {("gate", gate[6][1] + pad): ("unavailable", reason),
                           ("gate", gate[12][1] + pad): ("queued", ""),
                           ("yard", yard[1][1] + pad): ("unavailable", reason)}
    done = {r[0] for r in box.conn.execute("SELECT done_ms FROM outbox WHERE state = 'unavailable'")}
    assert done == {at}

    # An error per clip, an ALERT per camera, indexed as an alert event.
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    per_clip = [m for m in errors if "before it reached the hub" in m and not m.startswith("ALERT")]
    assert len(per_clip) == 2
    assert any(f"clip of yard from {format_ms(yard[1][1] + pad)}" in m for m in per_clip)
    alerts = box.conn.execute("SELECT camera, detail FROM events WHERE kind = 'alert' AND subkind = ?"
                              " ORDER BY camera", (AlertKind.UNSENT_VIDEO_DELETED,)).fetchall()
    assert [a[0] for a in alerts] == ["gate", "yard"]
    assert "deleted 1 segments (100.0 MB) of gate awaiting upload to the hub, 1 clip(s) lost" in alerts[0][1]
    assert f"motion {format_ms(gate[6][1] + pad)} to {format_ms(gate[7][1] + MINUTE_MS + 2_000)}" in alerts[0][1]
    assert f"motion {format_ms(yard[1][1] + pad)} to " in alerts[1][1]
    assert sum("ALERT: free space below min_free: deleted" in m for m in errors) == 2

    # Later, with the disk even shorter: A's leftover goes before B, and held video never goes.
    box.clock.advance(60)
    box.disk.other += 10 * S
    with caplog.at_level(logging.WARNING, logger="edgenvr.retention.policy"):
        box.policy(config).sweep()
    assert box.segments() == set(gate[16:18])
    assert box.clips()[("gate", gate[12][1] + pad)] == ("unavailable", LOST + format_ms(box.clock.now_ms()))
    assert any("ALERT: free space below min_free" in r.getMessage() and "held video: gate 200.0 MB" in r.getMessage()
               for r in caplog.records)
    box.assert_consistent()


def test_the_quota_alone_never_deletes_video_awaiting_upload(tmp_path: Path) -> None:
    box, _, gate, yard = _floor_box(tmp_path)
    box.disk.other = 0   # plenty of free space; a quota far under what is kept
    config = write_config(tmp_path / "q.toml", box.data_dir, {"quota": S}, ("gate", "yard"))
    result = box.policy(config).sweep()
    assert result.unsent_deleted == 0 and result.deleted == 16
    assert box.segments() == {*gate[6:8], *gate[12:14], yard[1], *gate[16:18]}
    assert all(state == ("queued", "") for state in box.clips().values())
    box.assert_consistent()


# -- a crash at any step leaves the classes in step ---------------------------------------------

def test_a_failure_inside_an_outbox_change_rolls_back_the_row_and_its_classes_together(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = Box(tmp_path / "data")
    t0 = box.clock.now_ms() - HOUR_MS
    segment = box.segment("gate", t0)
    box.motion(segment)
    box.writer.commit()

    def crash(*_: object) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    with monkeypatch.context() as patch:
        patch.setattr(outbox, "classify", crash)
        with pytest.raises(sqlite3.OperationalError):
            box.queue(t0)
    assert box.clips() == {} and box.segments(EVENT) == {segment}
    assert box.queue(t0) == 1 and box.segments(AWAITING_UPLOAD) == {segment}
    item = outbox.next_due(box.conn, box.clock.now_ms())
    assert item is not None
    for change in (lambda: outbox.mark_synced(box.conn, item.id, "{receipt}", t0),
                   lambda: outbox.mark_unavailable(box.conn, item.id, "gone", t0)):
        with monkeypatch.context() as patch:
            patch.setattr(outbox, "classify", crash)
            with pytest.raises(sqlite3.OperationalError):
                change()
        assert list(box.clips().values()) == [("queued", "")] and box.segments(AWAITING_UPLOAD) == {segment}
    box.assert_consistent()


def test_a_sweep_that_fails_while_choosing_gives_up_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box, config, gate, yard = _floor_box(tmp_path)
    before = (box.segments(), box.segments(AWAITING_UPLOAD), box.clips())

    def crash(*_: object) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(retention_policy, "classify", crash)   # as the clips are given up, in the transaction
    with pytest.raises(sqlite3.OperationalError):
        box.policy(config).sweep()
    assert (box.segments(), box.segments(AWAITING_UPLOAD), box.clips()) == before
    assert box.conn.execute("SELECT COUNT(*) FROM segments WHERE deleting = 1").fetchone()[0] == 0
    box.assert_consistent()


def test_a_crash_after_the_choice_is_finished_at_start_up_and_the_clips_stay_given_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box, config, gate, yard = _floor_box(tmp_path)

    def power_cut(self: RetentionPolicy, victims: list[sqlite3.Row]) -> tuple[list[sqlite3.Row], int]:
        raise KeyboardInterrupt("power cut between the mark and the unlink")

    monkeypatch.setattr(RetentionPolicy, "_unlink", power_cut)
    with pytest.raises(KeyboardInterrupt):
        box.policy(config).sweep()
    box.conn.close()

    box.open()   # start-up: the interrupted deletions are finished
    reconcile(box.writer, box.layout)
    box.writer.commit()
    assert box.segments() == {gate[7], *gate[12:14], *gate[16:18]}
    states = [state for state, _ in box.clips().values()]
    assert sorted(states) == ["queued", "unavailable", "unavailable"]
    box.assert_consistent()


def test_a_clip_given_up_by_the_floor_keeps_that_reason_when_its_export_then_fails(tmp_path: Path) -> None:
    box, config, gate, yard = _floor_box(tmp_path)
    taken = outbox.next_due(box.conn, box.clock.now_ms())   # the sync process starts on the oldest clip (C) ...
    assert taken is not None and (taken.camera, taken.start_ms) == ("yard", yard[1][1] + 2 * MINUTE_MS - 1_000)
    at = box.clock.now_ms()
    box.policy(config).sweep()                               # ... the floor deletes its video meanwhile ...
    outbox.mark_unavailable(box.conn, taken.id, "no recording in the range", at + 1_000)   # ... its export fails
    assert box.clips()[("yard", taken.start_ms)] == ("unavailable", LOST + format_ms(at))
    box.assert_consistent()


def test_an_index_from_before_the_class_puts_the_video_of_its_queued_clips_in_it_when_migrated(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, migration in enumerate(index_schema.MIGRATIONS[:6], start=1):   # as edgenvr wrote it before 7
        for statement in index_schema._statements(migration):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    starts = [n * SEGMENT_MS for n in range(1, 6)]
    conn.executemany("INSERT INTO segments (camera, start_ms, end_ms, bytes, sha256, codec, width, height, packets,"
                     " wall_end_ms, origin, timeline_ms, retention_class) VALUES ('gate', ?, ?, 1, zeroblob(32),"
                     " 'h264', 320, 240, 1, ?, 'recorder', ?, ?)",
                     [(s, s + SEGMENT_MS, s + SEGMENT_MS, s, HOLD if n == 3 else CONTINUOUS) for n, s in enumerate(starts)])
    conn.executemany("INSERT INTO outbox (kind, priority, camera, start_ms, end_ms, created_ms, state) VALUES"
                     " ('motion', 2, 'gate', ?, ?, 0, ?)",
                     [(starts[1] + 1, starts[3] + 1, "queued"), (starts[4] + 1, starts[4] + 2, "synced")])
    conn.close()
    conn = index_schema.connect(path)
    classes = [r[0] for r in conn.execute("SELECT retention_class FROM segments ORDER BY start_ms")]
    assert classes == [CONTINUOUS, AWAITING_UPLOAD, AWAITING_UPLOAD, HOLD, CONTINUOUS]


def test_the_legal_maximum_deletes_video_awaiting_upload_and_gives_up_its_clip_with_that_reason(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Box(tmp_path / "data")
    now = box.clock.now_ms()
    t0 = now - 3 * DAY_MS
    gate = [box.segment("gate", t0 + i * SEGMENT_MS) for i in range(3 * 144)]   # three days of 10-minute segments
    box.motion(gate[10])      # 2.9 days old: past a 2-day legal maximum
    box.motion(gate[300])     # 0.9 days old: within it
    box.writer.commit()
    assert box.queue(t0) == 2
    config = write_config(tmp_path / "c.toml", box.data_dir, {"retention_max_days": 2})
    add_hold(box.conn, config, "gate", gate[20][1], gate[21][1], "court order 12", clock=box.clock)

    at = box.clock.now_ms()
    with caplog.at_level(logging.WARNING, logger="edgenvr.retention.policy"):
        result = box.policy(config).sweep()
    assert result.unsent_deleted == 1
    assert gate[10] not in box.segments() and gate[20] in box.segments(HOLD)   # held video stays, the law aside
    assert box.segments(AWAITING_UPLOAD) == {gate[300]}
    pad = 2 * MINUTE_MS - 1_000
    reason = f"past retention_max_days (the legal maximum) before it reached the hub at {format_ms(at)}"
    assert box.clips() == {("gate", gate[10][1] + pad): ("unavailable", reason),
                           ("gate", gate[300][1] + pad): ("queued", "")}
    alerts = [row[0] for row in box.conn.execute("SELECT detail FROM events WHERE kind = 'alert' AND subkind = ?",
                                                 (AlertKind.UNSENT_VIDEO_DELETED,))]
    assert len(alerts) == 1 and alerts[0].startswith("retention_max_days: deleted 1 segments"), alerts
    assert any("retention_max_days: deleted video of the motion clip of gate" in r.getMessage()
               for r in caplog.records)
    box.assert_consistent()
