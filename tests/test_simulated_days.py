"""Weeks of retention and hours of index batching as a user relies on them, in a second or two.

The real index writer, retention and the supervisor's periodic work (`IndexHousekeeping.step()`) run under
`edgenvr.simulator.SimulatedRecordingLoad` on a `SimulatedClock`: cameras announce segments onto sparse
stand-in files that carry their row in `user.edgenvr` as a recorder writes it, nothing sleeps. The 30-day
runs use 10-minute segments and one step per 10 minutes (the sweep interval they configure) to stay fast;
the batching tests step every second with 10 s segments and the shipped batch, as the supervisor does.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from edgenvr.config.checking import load_config
from edgenvr.config.records import Config
from edgenvr.core.clock import SimulatedClock
from edgenvr.core.records import CameraState, EventRecord
from edgenvr.core.units import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS
from edgenvr.index.queries import open_readonly, segments
from edgenvr.index.reconcile import check_consistency
from edgenvr.index.retention_classes import CONTINUOUS, EVENT, HOLD
from edgenvr.retention.holds import add_hold
from edgenvr.simulator import SimulatedRecordingLoad

MB = 1_000_000


def write_config(tmp_path: Path, cameras: list[str], storage: dict[str, object], segment_seconds: float) -> Config:
    def value(v: object) -> str:
        return json.dumps(v) if isinstance(v, str) else str(v)

    lines = ["[storage]", f"data_dir = {json.dumps(str(tmp_path / 'data'))}"]
    lines += [f"{key} = {value(v)}" for key, v in {"quota": "100%", "min_free": "0", **storage}.items()]
    lines += ["[recording]", f"segment_seconds = {segment_seconds}", "[motion]", "enabled = false", "tamper = false"]
    for camera in cameras:
        lines += ["[[cameras]]", f'id = "{camera}"', f'url = "rtsp://192.0.2.1/{camera}"']
    path = tmp_path / "edgenvr.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


@pytest.fixture
def ram_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory in RAM (/dev/shm) where there is one, else tmp_path: a month of segment files and hour
    directories, created and deleted, costs seconds of file system metadata on a busy disk, and the file
    system is not what these tests are about (the batching tests below use tmp_path)."""
    if not (os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="edgenvr-test-", dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def kept_segments(conn: sqlite3.Connection) -> dict[tuple[str, int], int]:
    """(camera, start_ms) -> retention class of every segment the index keeps."""
    return {(r[0], r[1]): r[2] for r in conn.execute(
        "SELECT camera, start_ms, retention_class FROM segments WHERE deleting = 0")}


# -- retention over 30 days -------------------------------------------------------------------------

SEGMENT_S = 600        # 10-minute segments
STEP_S = SEGMENT_S     # a step (and a sweep) every 10 minutes: no longer, or the write rate is misjudged
BATCH_S = 3600         # a full sweep (and a commit) every hour
LATE_MS = (BATCH_S + STEP_S) * SECOND_MS   # expired video goes with the next full sweep, at most this late
EVENT_EVERY_MS = 6 * HOUR_MS


def thirty_days(load: SimulatedRecordingLoad, each_step: Callable[[], None] = lambda: None) -> list[EventRecord]:
    """30 days of recording; every 6 hours a minute of motion on every camera. Returns the events."""
    events = []
    for _ in load.ticks(30 * DAY_MS / SECOND_MS, every=STEP_S):
        now = load.clock.now_ms()
        if now > load.started_ms and (now - load.started_ms) % EVENT_EVERY_MS == 0:
            for camera in load.cameras:
                events.append(EventRecord(camera, "motion", now - 5 * MINUTE_MS, now - 4 * MINUTE_MS))
                load.writer.add_event(events[-1])   # as the supervisor receives it from a motion worker
        each_step()
    return events


def segment_finder(load: SimulatedRecordingLoad) -> Callable[[EventRecord], tuple[str, int]]:
    """event -> (camera, start_ms) of the segment that recorded its start."""
    starts = {camera: sorted(s.start_ms for s in load.announced if s.camera == camera) for camera in load.cameras}
    return lambda event: (event.camera, starts[event.camera][bisect.bisect_right(starts[event.camera], event.start_ms) - 1])


def test_thirty_days_keep_a_week_of_video_two_weeks_of_event_video_and_held_video_for_good(ram_dir: Path) -> None:
    config = write_config(ram_dir, ["gate"], {"max_age_days": 7, "event_days": 14, "sweep_seconds": STEP_S,
                                              "index_commit_seconds": BATCH_S}, segment_seconds=SEGMENT_S)
    load = SimulatedRecordingLoad(config, SimulatedClock(), segment_bytes=MB)
    # an incident on day 2: gate's video of that day is held (before it is even recorded)
    hold_from, hold_to = load.started_ms + DAY_MS, load.started_ms + 2 * DAY_MS
    add_hold(load.conn, config, "gate", hold_from, hold_to, "incident 12", clock=load.clock)

    started = time.monotonic()
    events = thirty_days(load)
    load.close()   # commits what is pending, as `edgenvr run` does when it stops
    seconds = time.monotonic() - started
    at = load.clock.now_ms() - STEP_S * SECOND_MS   # the last step

    conn = open_readonly(load.layout)
    kept = kept_segments(conn)
    announced = {(s.camera, s.start_ms) for s in load.announced}
    assert set(kept) <= announced
    # continuous video: the last week is all there, nothing older than a week (and a batch) is left
    week = {key for key in announced if key[1] >= at - 7 * DAY_MS}
    assert week <= set(kept), f"{len(week - set(kept))} segments of the last week are missing"
    assert min(start for (_, start), cls in kept.items() if cls == CONTINUOUS) >= at - 7 * DAY_MS - LATE_MS
    # events and their video: kept for 14 days, twice as long as the continuous video around them
    post_ms = int(config.storage.event_post_seconds * SECOND_MS)   # video kept after an event
    held = [e for e in events if hold_from <= e.start_ms < hold_to]
    due = [e for e in events if e not in held and e.end_ms + post_ms < at - 14 * DAY_MS - LATE_MS]
    young = [e for e in events if e.end_ms >= at - 14 * DAY_MS]
    indexed_events = {(r[0], r[1]) for r in conn.execute("SELECT camera, start_ms FROM events WHERE kind = 'motion'")}
    assert {(e.camera, e.start_ms) for e in young + held} <= indexed_events
    assert not {(e.camera, e.start_ms) for e in due} & indexed_events, "events past their 14 days are deleted"
    segment_of = segment_finder(load)
    for event in young:
        assert kept.get(segment_of(event)) == EVENT, f"video of {event} lost"
    assert any(e.start_ms < at - 13 * DAY_MS for e in young)
    event_video = [start for (_, start), cls in kept.items() if cls == EVENT]
    assert min(event_video) >= at - 14 * DAY_MS - LATE_MS - STEP_S * SECOND_MS
    # held video survives, 28 days old, and so do the events in it
    held_video = {key for key in announced if hold_from <= key[1] < hold_to}
    assert len(held_video) == 144 and {key for key, cls in kept.items() if cls == HOLD} == held_video
    assert len(held) == 4
    # the index and the disk agree, and so does the writer's count of the ring's bytes
    assert check_consistency(conn, load.layout).consistent
    assert load.writer.indexed_bytes == len(kept) * MB
    conn.close()
    assert seconds < 10, f"30 simulated days took {seconds:.1f} s"
    print(f"30 days, 1 camera: {seconds:.2f} s, {load.writer.commits} commits, {load.housekeeping.counts}")


def test_a_full_ring_stays_within_its_quota_for_thirty_days_and_deletes_continuous_video_first(ram_dir: Path) -> None:
    quota = 2 * 2 * 144 * MB   # two days of both cameras
    config = write_config(ram_dir, ["gate", "yard"], {"quota": f"{quota}B", "event_days": 14, "sweep_seconds": STEP_S,
                                                       "index_commit_seconds": BATCH_S}, segment_seconds=SEGMENT_S)
    load = SimulatedRecordingLoad(config, SimulatedClock(), segment_bytes=MB)
    hold_from, hold_to = load.started_ms + DAY_MS, load.started_ms + 2 * DAY_MS
    add_hold(load.conn, config, "gate", hold_from, hold_to, "incident 12", clock=load.clock)
    fullest = 0

    def within_quota() -> None:   # after every sweep, and until the next: the cameras write a segment each
        nonlocal fullest
        usage = load.retention.usage()
        until_next_sweep = usage.used + len(load.cameras) * load.segment_bytes
        assert until_next_sweep <= usage.limit, f"{until_next_sweep - usage.limit} bytes over the quota"
        fullest = max(fullest, until_next_sweep)

    events = thirty_days(load, within_quota)
    at = load.clock.now_ms() - STEP_S * SECOND_MS
    usage = load.retention.usage()
    assert usage.used >= 0.9 * usage.limit and fullest >= 0.95 * usage.limit, "the ring deletes no more than it must"

    kept = kept_segments(load.conn)
    held_video = {(s.camera, s.start_ms) for s in load.announced if s.camera == "gate" and hold_from <= s.start_ms < hold_to}
    assert {key for key, cls in kept.items() if cls == HOLD} == held_video, "held video is never deleted for space"
    # two weeks of event video are kept, while continuous video goes after a day or so
    segment_of = segment_finder(load)
    for event in [e for e in events if e.end_ms >= at - 14 * DAY_MS]:
        assert kept.get(segment_of(event)) == EVENT, f"video of {event} lost"
    continuous = [start for (_, start), cls in kept.items() if cls == CONTINUOUS]
    assert at - 2 * DAY_MS < min(continuous) < at - DAY_MS // 2
    assert load.conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'alert'").fetchone()[0] == 0, \
        "no event video was deleted before its event_days"
    load.close()


# -- index batching ---------------------------------------------------------------------------------

def batching_load(tmp_path: Path) -> SimulatedRecordingLoad:
    """Four cameras, 10 s segments, the shipped index_commit_seconds (600) and sweep_seconds (10)."""
    config = write_config(tmp_path, [f"cam-{i}" for i in range(4)], {}, segment_seconds=10)
    assert config.storage.index_commit_seconds == 600 and config.storage.sweep_seconds == 10
    return SimulatedRecordingLoad(config, SimulatedClock())


def test_segment_rows_are_committed_once_per_batch_and_never_wait_longer(tmp_path: Path) -> None:
    load = batching_load(tmp_path)
    load.run(11 * MINUTE_MS / SECOND_MS)   # the first batch is committed after 10 minutes
    reader = open_readonly(load.layout)   # what `edgenvr segments` and the web API see
    seen, changes, commits = None, [], load.writer.commits
    for _ in load.ticks(2 * HOUR_MS / SECOND_MS):
        now = load.clock.now_ms()
        newest_row, newest_start = reader.execute(   # one seek each, at an index's end
            "SELECT (SELECT MAX(id) FROM segments), (SELECT MAX(start_ms) FROM segments)").fetchone()
        if newest_row != seen:
            seen = newest_row
            changes.append(now)
        assert now - (newest_start + 10 * SECOND_MS) <= (600 + 10) * SECOND_MS, "a row waited longer than a batch"
    assert load.writer.commits - commits == 12, "6 commits an hour"
    assert len(changes) == 12 + 1
    assert all(b - a == 600 * SECOND_MS for a, b in zip(changes[1:], changes[2:])), "one batch every 600 s"
    # meanwhile readers see every closed segment from its file, before its row is committed
    listed = list(segments(reader, load.layout, clock=load.clock))
    assert [(s.camera, s.start_ms, s.bytes) for s in listed] == \
           [(s.camera, s.start_ms, s.bytes) for s in sorted(load.announced, key=lambda s: (s.start_ms, s.camera))]
    assert not listed[-1].indexed and listed[0].indexed
    reader.close()
    load.close()


def test_events_and_camera_states_are_committed_within_a_second(tmp_path: Path) -> None:
    load = batching_load(tmp_path)
    load.run(5 * MINUTE_MS / SECOND_MS)
    reader = open_readonly(load.layout)
    load.run(5)   # mid-batch: segment rows are waiting
    now = load.clock.now_ms()
    load.writer.add_event(EventRecord("cam-2", "motion", now - 3000, now - 1000))   # as the supervisor receives it
    load.writer.set_state(CameraState("cam-3", "reconnecting", now, "connection refused"))
    assert reader.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    load.run(1)
    assert [tuple(r) for r in reader.execute("SELECT camera, start_ms FROM events")] == [("cam-2", now - 3000)]
    assert tuple(reader.execute("SELECT state, state_reason FROM cameras WHERE id = 'cam-3'").fetchone()) == \
           ("reconnecting", "connection refused")
    reader.close()
    load.close()


def test_rows_waiting_for_their_batch_survive_a_power_cut(tmp_path: Path) -> None:
    load = batching_load(tmp_path)
    load.run(HOUR_MS / SECOND_MS)
    commits = load.writer.commits
    while load.writer.commits == commits:   # until a batch is committed ...
        load.run(1)
    load.run(598)                           # ... and the power goes a second before the next one
    committed = load.conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
    waiting = len(load.announced) - committed
    assert waiting >= 4 * 59
    load.power_cut()
    found = load.restart()   # `edgenvr run` once the power is back: reconcile first
    assert len(found.files_without_row) == waiting and found.rows_without_file == []
    load.run(20 * MINUTE_MS / SECOND_MS)   # and recording goes on
    load.close()

    conn = open_readonly(load.layout)
    indexed = {(r["camera"], r["start_ms"]): (r["end_ms"], r["bytes"], r["sha256"].hex(), r["origin"])
               for r in conn.execute("SELECT * FROM segments")}
    assert indexed.keys() == {(s.camera, s.start_ms) for s in load.announced}, "no segment lost"
    for s in load.announced:
        assert indexed[(s.camera, s.start_ms)][:3] == (s.end_ms, s.bytes, s.sha256), "adopted from the file's own row"
    assert sum(origin == "adopted" for *_, origin in indexed.values()) == waiting
    assert conn.execute("SELECT COUNT(*) FROM gaps").fetchone()[0] == 0, "the record stays continuous"
    assert check_consistency(conn, load.layout).consistent
    conn.close()
