"""A box without a real-time clock, and a wall clock that jumps, as a user relies on them: nothing is deleted
early or out of order, video recorded before the clock was set lands at its true time, and a jump is told
as a jump, not as a 56-year outage.

The real index writer, retention, re-anchoring and housekeeping step run under SimulatedRecordingLoad on a
SimulatedClock whose adjtimex answer is simulated (`set_synchronised`): it boots at 1970, is stepped by NTP,
jumps a year and back, and reboots. Segment files are sparse stand-ins carrying their row and clock record in
`user.edgenvr`, as a recorder writes them.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import av
import pytest

from edgenvr.config.checking import load_config
from edgenvr.config.records import Config
from edgenvr.core.clock import (
    STA_UNSYNC,
    TIME_ERROR,
    TIME_OK,
    SimulatedClock,
    SystemClock,
)
from edgenvr.core.records import EventRecord, SegmentRecord
from edgenvr.core.units import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS
from edgenvr.index import reanchoring
from edgenvr.index.queries import gaps, open_readonly, segments
from edgenvr.index.reconcile import check_consistency
from edgenvr.index.recording_timeline import CLOCK_REANCHORED, CLOCK_UNSYNCHRONISED
from edgenvr.recording.segment_files import SegmentWriter, finalise_partial
from edgenvr.retention.policy import RetentionPolicy, pressure_victims
from edgenvr.simulator import SimulatedRecordingLoad
from edgenvr.storage.layout import StorageLayout
from edgenvr.storage.segment_attributes import (
    SEGMENT_XATTR,
    read_segment_attribute,
    write_segment_attribute,
)

TRUE_NOW_MS = 1_780_000_000_000          # 2026-05-28: what NTP says when it answers
YEAR_MS = 365 * DAY_MS
MB = 1_000_000


def write_config(tmp_path: Path, cameras: list[str], storage: dict[str, object], name: str = "edgenvr") -> Config:
    def value(v: object) -> str:
        return json.dumps(v) if isinstance(v, str) else str(v)

    lines = ["[storage]", f"data_dir = {json.dumps(str(tmp_path / 'data'))}"]
    lines += [f"{key} = {value(v)}" for key, v in {"quota": "100%", "min_free": "0", **storage}.items()]
    lines += ["[recording]", "segment_seconds = 10", "[motion]", "enabled = false", "tamper = false"]
    for camera in cameras:
        lines += ["[[cameras]]", f'id = "{camera}"', f'url = "rtsp://192.0.2.1/{camera}"']
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


def rows(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT camera, start_ms, end_ms, clock_state, timeline_ms FROM segments"
                        " ORDER BY camera, start_ms").fetchall()


def segment_files(layout: StorageLayout) -> set[tuple[str, int]]:
    return {(p.parts[-4], int(p.name.split(".")[0])) for p in layout.segments_dir.glob("*/*/*/*.mp4")}


def clock_jumps(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT camera, start_ms, detail FROM events WHERE kind = 'alert' AND subkind = 'clock_jump'"
                        " ORDER BY start_ms, camera").fetchall()


# -- boot at 1970, record, sync ------------------------------------------------------------------------

def test_an_hour_recorded_at_1970_is_kept_and_moved_to_its_true_time_when_ntp_answers(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["gate", "yard"], {"max_age_days": 7})
    clock = SimulatedClock(epoch_ms=0, synchronised=False, boot_id="00000000000000b1")   # a Pi, no RTC
    load = SimulatedRecordingLoad(config, clock, segment_bytes=MB)
    load.run(HOUR_MS / SECOND_MS)
    before_sync = list(load.announced)
    assert all(s.start_ms < HOUR_MS and not s.clock_synchronised for s in before_sync)
    assert ("yard", 95_000) in segment_files(load.layout), "a name of 5 digits, as at 1970"

    boot_at_sync = clock.boot_ms()
    clock.step_wall_ms(TRUE_NOW_MS - clock.now_ms())   # NTP answers: the wall clock steps 56 years
    clock.set_synchronised(True)
    load.run(20 * MINUTE_MS / SECOND_MS)   # a batch is committed, then the hour is re-anchored
    load.close()

    conn = open_readonly(load.layout)
    indexed = rows(conn)
    assert len(indexed) == len(load.announced), "nothing deleted, though max_age_days is 7 and the hour read 1970"
    # every segment of that hour is at its true time: when it was recorded by the boot-time clock
    true_start = {(s.camera, s.boot_ms): TRUE_NOW_MS - (boot_at_sync - s.boot_ms) for s in before_sync}
    by_start = {(r["camera"], r["start_ms"]): r for r in indexed}
    for s in before_sync:
        row = by_start.get((s.camera, true_start[(s.camera, s.boot_ms)]))
        assert row is not None, f"{s.camera} {s.start_ms} not at its true time"
        assert row["end_ms"] - row["start_ms"] == s.duration_ms and row["clock_state"] == CLOCK_REANCHORED
    assert not any(r["clock_state"] == CLOCK_UNSYNCHRONISED for r in indexed)
    assert {row.clock for row in segments(conn, load.layout, clock=clock)} == {"re-anchored", "synchronised"}
    # ... contiguous with what follows, in the same order
    for camera in ("gate", "yard"):
        mine = [r for r in indexed if r["camera"] == camera]
        assert all(b["start_ms"] == a["end_ms"] for a, b in zip(mine, mine[1:])), f"{camera} is not contiguous"
        assert [r["timeline_ms"] for r in mine] == sorted(r["timeline_ms"] for r in mine), "order changed"
    # the files were renamed to their true names: none is left at 1970, and index and disk agree
    assert segment_files(load.layout) == {(r["camera"], r["start_ms"]) for r in indexed}
    assert not (load.layout.segments_dir / "gate" / "1970-01-01").exists()
    assert check_consistency(conn, load.layout).consistent
    # the attribute of a moved file says its name is its true time
    moved = load.layout.segment_path("gate", min(r["start_ms"] for r in indexed if r["camera"] == "gate"))
    assert read_segment_attribute(load.layout, "gate", moved, "adopted").clock_synchronised
    # no 56-year gap "recorder was not running"; the jump is an event instead
    assert conn.execute("SELECT COUNT(*) FROM gaps").fetchone()[0] == 0
    assert gaps(conn, load.layout, clock=clock) == []
    jumps = clock_jumps(conn)
    assert [j["camera"] for j in jumps] == ["gate", "yard"] and "+56.4 years" in jumps[0]["detail"]
    conn.close()


def test_a_power_cut_of_edgenvr_alone_before_the_sync_still_lets_the_hour_be_reanchored(tmp_path: Path) -> None:
    """edgenvr killed (its last batch lost) and started again in the same boot, then NTP answers: the rows
    adopted from the files' attributes carry their boot-time clock, so they move to their true time too."""
    config = write_config(tmp_path, ["gate"], {"max_age_days": 7})
    clock = SimulatedClock(epoch_ms=0, synchronised=False, boot_id="00000000000000b1")
    load = SimulatedRecordingLoad(config, clock, segment_bytes=MB)
    load.run(HOUR_MS / SECOND_MS - 60)
    load.power_cut()
    assert load.restart().files_without_row, "the batch of the last minutes is adopted from the files"
    clock.step_wall_ms(TRUE_NOW_MS - clock.now_ms())
    clock.set_synchronised(True)
    load.run(20 * MINUTE_MS / SECOND_MS)
    load.close()
    conn = open_readonly(load.layout)
    indexed = rows(conn)
    assert len(indexed) == len(load.announced)
    assert all(r["start_ms"] > TRUE_NOW_MS - 2 * HOUR_MS and r["clock_state"] != CLOCK_UNSYNCHRONISED for r in indexed)
    assert all(b["start_ms"] == a["end_ms"] for a, b in zip(indexed, indexed[1:])), "contiguous"
    assert segment_files(load.layout) == {(r["camera"], r["start_ms"]) for r in indexed}
    conn.close()


@pytest.mark.parametrize("then", ["power cut", "retry"])
def test_a_crash_between_the_renames_and_their_commit_loses_and_duplicates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then: str) -> None:
    config = write_config(tmp_path, ["gate"], {"max_age_days": 7})
    clock = SimulatedClock(epoch_ms=0, synchronised=False, boot_id="00000000000000b1")
    load = SimulatedRecordingLoad(config, clock, segment_bytes=MB)
    load.run(30 * MINUTE_MS / SECOND_MS)

    def power_lost(conn: sqlite3.Connection, moves: list) -> None:
        raise sqlite3.OperationalError("disk I/O error")   # the files are renamed; their rows never move

    monkeypatch.setattr(reanchoring, "_move_rows", power_lost)
    clock.step_wall_ms(TRUE_NOW_MS - clock.now_ms())
    clock.set_synchronised(True)
    load.run(12 * MINUTE_MS / SECOND_MS)
    renamed = {key for key in segment_files(load.layout) if key[1] > TRUE_NOW_MS - HOUR_MS}
    assert len(renamed) > 100, "the files were renamed before the crash"
    monkeypatch.undo()
    if then == "power cut":
        load.power_cut()
        load.restart()   # the reconcile finds rows without their file and files without their row
    load.run(20 * MINUTE_MS / SECOND_MS)
    load.close()
    conn = open_readonly(load.layout)
    indexed = rows(conn)
    assert len(indexed) == len(load.announced), "every segment indexed once"
    assert segment_files(load.layout) == {(r["camera"], r["start_ms"]) for r in indexed}
    assert all(r["start_ms"] > TRUE_NOW_MS - HOUR_MS for r in indexed), "all at their true time"
    assert check_consistency(conn, load.layout).consistent
    conn.close()


def test_a_box_that_never_syncs_keeps_max_age_days_by_its_boot_time_clock(tmp_path: Path) -> None:
    keep_ms = 72 * MINUTE_MS
    config = write_config(tmp_path, ["gate"], {"max_age_days": keep_ms / DAY_MS, "sweep_seconds": 60,
                                               "index_commit_seconds": 600})
    clock = SimulatedClock(epoch_ms=0, synchronised=False, boot_id="00000000000000b1")
    load = SimulatedRecordingLoad(config, clock, segment_bytes=MB)
    load.run(3 * HOUR_MS / SECOND_MS, every=10)
    load.close()
    conn = open_readonly(load.layout)
    kept = [r["start_ms"] for r in rows(conn)]
    newest = load.announced[-1].start_ms
    # 72 minutes of video (and at most a batch and a sweep more) are kept, however meaningless the wall clock
    assert newest - min(kept) <= keep_ms + (600 + 60) * SECOND_MS
    assert {s.start_ms for s in load.announced if s.start_ms >= newest - keep_ms + 10 * SECOND_MS} <= set(kept)
    assert all(r["clock_state"] == CLOCK_UNSYNCHRONISED for r in rows(conn)), "never re-anchored: never synced"
    conn.close()


# -- a false NTP step of a year, and back ------------------------------------------------------------

def test_a_year_forward_and_back_deletes_nothing_early_and_keeps_the_recording_order(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["gate", "yard"], {"max_age_days": 7, "event_days": 14,
                                                       "sweep_seconds": 10, "index_commit_seconds": 600})
    clock = SimulatedClock()   # synchronised, as NTP says it is
    load = SimulatedRecordingLoad(config, clock, segment_bytes=MB)
    load.run(3 * HOUR_MS / SECOND_MS, every=10)
    now = clock.now_ms()
    motion = EventRecord("gate", "motion", now - HOUR_MS, now - HOUR_MS + 30 * SECOND_MS)
    load.writer.add_event(motion)   # as the supervisor receives it from a motion worker
    load.run(HOUR_MS / SECOND_MS, every=10)

    clock.step_wall_ms(YEAR_MS)     # a false NTP answer, the clock still "synchronised"
    load.run(HOUR_MS / SECOND_MS, every=10)
    clock.step_wall_ms(-YEAR_MS)    # and back
    load.run(HOUR_MS / SECOND_MS, every=10)
    load.writer.commit()

    conn = load.conn
    assert conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == len(load.announced), \
        "nothing deleted: no segment was older than 7 days by the boot-time clock"
    assert conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'motion'").fetchone()[0] == 1
    assert conn.execute("SELECT retention_class FROM segments WHERE camera = 'gate' AND start_ms <= ? AND end_ms > ?",
                        (motion.start_ms, motion.start_ms)).fetchone()[0] == 1, "its video is still event video"
    jumps = clock_jumps(conn)
    assert len(jumps) == 4 and {j["detail"].split(",")[0] for j in jumps} == \
        {"wall clock stepped +365.0 days", "wall clock stepped -365.0 days"}
    reasons = [r[0] for r in conn.execute("SELECT reason FROM gaps")]
    assert reasons and all(reason.startswith("clock jumped (+365.0 days); no video lost") for reason in reasons)

    # The ring's order is the recording order, though the wall clock went back: the oldest continuous video
    # goes first (event video after all of it).
    event_video = {(r[0], r[1]) for r in conn.execute("SELECT camera, start_ms FROM segments WHERE retention_class = 1")}
    recorded = [(s.camera, s.start_ms) for s in sorted(load.announced, key=lambda s: (s.boot_ms, s.camera))
                if (s.camera, s.start_ms) not in event_video]
    ring = [(r["camera"], r["start_ms"]) for r in pressure_victims(conn) if r["retention_class"] == 0]
    assert ring == recorded and [s.start_ms for s in load.announced][-1] < max(start for _, start in recorded)
    used = load.retention.usage().used
    tight = write_config(tmp_path, ["gate", "yard"], {"quota": f"{used - 100 * MB}B"}, name="tight")
    result = RetentionPolicy(tight, load.layout, load.writer, clock=clock, disk_space=load.disk_space).sweep()
    gone = set(recorded) - segment_files(load.layout)
    assert result.deleted >= 100 and gone == set(recorded[:result.deleted]), "the oldest recordings went first"
    load.close()


# -- across a reboot -----------------------------------------------------------------------------------

def test_a_reboot_before_sync_keeps_both_boots_in_order_and_reanchors_the_boot_that_synced(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["gate"], {"max_age_days": 7})
    clock = SimulatedClock(epoch_ms=0, synchronised=False, boot_id="00000000000000b1")
    load = SimulatedRecordingLoad(config, clock, segment_bytes=MB)
    load.run(HOUR_MS / SECOND_MS)            # boot 1: an hour at 1970, never synchronised
    first_boot = list(load.announced)
    report = load.reboot("00000000000000b2", wall_ms=0)   # power cut; the Pi starts at 1970 again
    assert len(report.files_without_row) > 0, "the last batch of boot 1 is adopted from its files"
    load.run(HOUR_MS / SECOND_MS)            # boot 2: the same 1970 hour again, names taken by boot 1
    second_boot = load.announced[len(first_boot):]
    clock.step_wall_ms(TRUE_NOW_MS - clock.now_ms())
    clock.set_synchronised(True)
    load.run(20 * MINUTE_MS / SECOND_MS)
    load.close()

    conn = open_readonly(load.layout)
    indexed = {(r["camera"], r["start_ms"]): r for r in rows(conn)}
    assert len(indexed) == len(load.announced), "nothing deleted or overwritten"
    # boot 1 never knew the time: it stays as recorded, marked; boot 2 moved to its true time
    assert all(indexed[("gate", s.start_ms)]["clock_state"] == CLOCK_UNSYNCHRONISED for s in first_boot)
    assert {r["clock_state"] for (_, start), r in indexed.items() if start > TRUE_NOW_MS - 2 * HOUR_MS} == {1, 2}
    assert len([k for k in indexed if k[1] > TRUE_NOW_MS - 2 * HOUR_MS]) == len(load.announced) - len(first_boot)
    # recording order: all of boot 1, then boot 2, whatever the names say
    ring = [(r["camera"], r["start_ms"]) for r in pressure_victims(conn)]
    assert ring[:len(first_boot)] == [("gate", s.start_ms) for s in first_boot]
    assert len(second_boot) > 0 and check_consistency(conn, load.layout).consistent
    boot_gap = [r[0] for r in conn.execute("SELECT reason FROM gaps")]
    assert all(reason.startswith("clock not synchronised") for reason in boot_gap), boot_gap
    conn.close()


# -- file names of any epoch ----------------------------------------------------------------------------

def test_a_segment_named_95000_is_adopted_counted_by_the_ring_and_deleted_first(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["gate"], {})
    load = SimulatedRecordingLoad(config, SimulatedClock(), segment_bytes=MB)
    # left by a boot at 1970 whose last batch was lost before NTP answered
    path = load.layout.segment_path("gate", 95_000)
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        f.truncate(MB)
    write_segment_attribute(path, SegmentRecord("gate", 95_000, 105_000, load.layout.relative(path), MB, "ab" * 32,
                                                "h264", 1920, 1080, 250, 105_000, clock_synchronised=False,
                                                boot_id="00000000000000a0", boot_ms=95_000))
    load.power_cut()
    found = load.restart()
    assert found.files_without_row == [str(path)]
    load.writer.commit()
    assert load.writer.indexed_bytes == MB, "the ring counts it"
    load.run(10 * MINUTE_MS / SECOND_MS)
    load.writer.commit()
    assert check_consistency(load.conn, load.layout).consistent
    assert load.conn.execute("SELECT clock_state FROM segments WHERE start_ms = 95000").fetchone()[0] == \
        CLOCK_UNSYNCHRONISED
    used = load.retention.usage().used
    tight = write_config(tmp_path, ["gate"], {"quota": f"{used - MB // 2}B"}, name="tight")
    RetentionPolicy(tight, load.layout, load.writer, clock=load.clock, disk_space=load.disk_space).sweep()
    assert not path.exists(), "deletable, and the oldest recording, so the first to go"
    load.writer.commit()   # the row of a deleted segment goes with the next commit
    assert load.conn.execute("SELECT COUNT(*) FROM segments WHERE start_ms = 95000").fetchone()[0] == 0
    load.close()


# -- the clock record on the files ----------------------------------------------------------------------

def test_a_recorded_segment_and_a_partial_left_by_a_crash_carry_their_clock_record(tmp_path: Path,
                                                                                    h264_clip: Path) -> None:
    layout = StorageLayout(tmp_path / "data")
    clock = SimulatedClock(epoch_ms=50_000, synchronised=False, boot_id="00000000000000c3")
    with av.open(str(h264_clip)) as source:
        stream = source.streams.video[0]
        packets = [p for p in source.demux(stream) if p.size]
        for index, packet in enumerate(packets):   # a raw H.264 stream has no timestamps: 25 fps
            packet.pts = packet.dts = index * int(1 / (25 * stream.time_base))
        closed = SegmentWriter(layout, "gate", stream, 50_000, packets[0].dts, stream.time_base, clock=clock)
        clock.advance(2)
        crashed = SegmentWriter(layout, "yard", stream, 52_000, packets[0].dts, stream.time_base, clock=clock)
        for packet in packets[:50]:
            closed.write(packet)
        record = closed.close(52_000, 52_000, start_ms=49_900)   # the anchor settled 100 ms earlier
        for packet in packets[:50]:
            crashed.write(packet)
        crashed.abort()   # killed: a .partial is left
    assert (record.clock_synchronised, record.boot_id, record.boot_ms) == (False, "00000000000000c3", 1_000_000 - 100)
    stored = read_segment_attribute(layout, "gate", layout.absolute(record.path), "adopted")
    assert (stored.start_ms, stored.sha256, stored.boot_id, stored.boot_ms) == \
           (49_900, record.sha256, record.boot_id, record.boot_ms)
    assert len(os.getxattr(layout.absolute(record.path), SEGMENT_XATTR)) == 64
    recovered = finalise_partial(layout, "yard", layout.segment_path("yard", 52_000).with_suffix(".mp4.partial"))
    assert recovered is not None and (recovered.boot_id, recovered.boot_ms, recovered.clock_synchronised) == \
           ("00000000000000c3", 1_002_000, False)


def test_files_written_before_clock_records_are_still_read(tmp_path: Path) -> None:
    import struct
    layout = StorageLayout(tmp_path / "data")
    path = layout.segment_path("gate", 1_764_547_200_000)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\0" * 100)
    os.setxattr(path, SEGMENT_XATTR, struct.pack("<B32sIIiHH8s", 1, b"\x01" * 32, 10_000, 250, 5, 1920, 1080, b"h264"))
    record = read_segment_attribute(layout, "gate", path, "adopted")
    assert (record.end_ms - record.start_ms, record.packets, record.codec, record.boot_id, record.clock_synchronised) == \
           (10_000, 250, "h264", "", True)


def test_the_segment_attribute_stays_inside_an_ext4_inode(tmp_path: Path) -> None:
    """64 bytes in a default ext4 (256-byte inodes): no extra block per segment. One byte more would need one."""
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(32 * MB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    layout = StorageLayout(tmp_path / "data")
    path = layout.segment_path("gate", 95_000)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    write_segment_attribute(path, SegmentRecord("gate", 95_000, 105_000, "x", 1, "ab" * 32, "hevc", 3840, 2160,
                                                250, 106_000, clock_synchronised=False, boot_id="ffffffffffffffff",
                                                boot_ms=(1 << 40) - 1))
    value = tmp_path / "value"
    value.write_bytes(os.getxattr(path, SEGMENT_XATTR))
    (tmp_path / "longer").write_bytes(value.read_bytes() + b"\0")

    def external_block(name: str, value_file: Path) -> str:
        for command in (f"write {path} {name}", f"ea_set -f {value_file} {name} user.edgenvr"):
            subprocess.run(["debugfs", "-w", "-R", command, str(image)], check=True, capture_output=True)
        stat = subprocess.run(["debugfs", "-R", f"stat {name}", str(image)], check=True, capture_output=True, text=True)
        return next(line for line in stat.stdout.splitlines() if "File ACL" in line).split("File ACL:")[1].split()[0]

    assert external_block("segment", value) == "0"
    assert external_block("longer", tmp_path / "longer") != "0"


# -- the simulated adjtimex source -------------------------------------------------------------------------

def test_the_system_clock_reads_the_kernel_and_falls_back_to_timesyncd(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("0f9d00a4-a38b-4321-af50-1d1ccf6f7635\n")
    assert not SystemClock(lambda: (TIME_ERROR, STA_UNSYNC), flag, boot_id).synchronised()
    assert not SystemClock(lambda: (TIME_OK, STA_UNSYNC), flag, boot_id).synchronised()
    assert SystemClock(lambda: (TIME_OK, 0), flag, boot_id).synchronised()

    def refused() -> tuple[int, int]:   # a sandbox without adjtimex
        raise OSError(errno.EPERM, "Operation not permitted")

    clock = SystemClock(refused, flag, boot_id)
    assert not clock.synchronised(), "nothing vouches: not synchronised"
    flag.touch()
    assert clock.synchronised(), "timesyncd's flag vouches"
    assert clock.boot_id() == "0f9d00a4a38b4321"


# -- what a review found: an open event at re-anchoring ------------------------------------------------

def test_an_event_open_while_its_hour_is_reanchored_is_closed_by_its_worker_not_duplicated(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["gate"], {})
    clock = SimulatedClock(epoch_ms=0, synchronised=False, boot_id="00000000000000b2")
    load = SimulatedRecordingLoad(config, clock, segment_bytes=MB)
    load.run(30 * MINUTE_MS / SECOND_MS)
    opened = EventRecord("gate", "tamper", clock.now_ms() - MINUTE_MS, None, "moved")
    load.writer.add_event(opened)                      # a "moved" camera: open until re-approved
    load.run(MINUTE_MS / SECOND_MS)
    clock.step_wall_ms(TRUE_NOW_MS - clock.now_ms())
    clock.set_synchronised(True)
    load.run(20 * MINUTE_MS / SECOND_MS)               # the half hour is re-anchored
    load.writer.add_event(EventRecord("gate", "tamper", opened.start_ms, clock.now_ms(), "moved"))  # re-approved
    load.writer.commit()
    tamper = load.conn.execute("SELECT start_ms, end_ms FROM events WHERE kind = 'tamper'").fetchall()
    assert len(tamper) == 1 and tamper[0]["end_ms"] is not None, [tuple(r) for r in tamper]
    load.close()


# -- a box upgraded from an edgenvr without the timeline ------------------------------------------------

def _index_of_an_older_edgenvr(layout: StorageLayout, schema_version: int, camera: str, from_ms: int,
                               count: int, size: int) -> list[int]:
    """An index at `schema_version` with `count` 10 s segments of `camera` from `from_ms`, rows and files as
    that edgenvr wrote them (no timeline). Returns their starts."""
    from edgenvr.index import schema

    layout.index_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(layout.index_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for number, migration in enumerate(schema.MIGRATIONS[:schema_version], start=1):
        for statement in schema._statements(migration):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    starts = [from_ms + n * 10 * SECOND_MS for n in range(count)]
    conn.executemany("INSERT INTO segments (camera, start_ms, end_ms, bytes, sha256, codec, width, height, packets,"
                     " wall_end_ms, origin) VALUES (?, ?, ?, ?, zeroblob(32), 'h264', 320, 240, 1, ?, 'recorder')",
                     [(camera, s, s + 10 * SECOND_MS, size, s + 10 * SECOND_MS) for s in starts])
    conn.execute("INSERT INTO events (camera, kind, start_ms, end_ms, keep_from_ms, keep_to_ms) VALUES (?, 'motion',"
                 " ?, ?, ?, ?)", (camera, starts[-2], starts[-1], starts[-2] - 5000, starts[-1] + 5000))
    conn.close()
    for start in starts:
        path = layout.segment_path(camera, start)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)
    return starts


def test_an_upgraded_box_keeps_its_older_video_through_a_year_forward_and_keeps_it_first_in_the_ring(
        tmp_path: Path) -> None:
    config = write_config(tmp_path, ["gate"], {"max_age_days": 7, "event_days": 14, "sweep_seconds": 10,
                                               "index_commit_seconds": 60})
    clock = SimulatedClock()
    layout = StorageLayout(config.storage.data_dir)
    old = _index_of_an_older_edgenvr(layout, 2, "gate", clock.now_ms() - 6 * DAY_MS, 360, MB)
    load = SimulatedRecordingLoad(config, clock, segment_bytes=MB)   # edgenvr run: the index is upgraded
    load.run(HOUR_MS / SECOND_MS, every=10)
    clock.step_wall_ms(YEAR_MS)     # a false NTP answer
    load.run(HOUR_MS / SECOND_MS, every=10)
    load.writer.commit()

    conn = load.conn
    assert [r["start_ms"] for r in conn.execute("SELECT start_ms FROM segments WHERE start_ms < ? ORDER BY start_ms",
                                                (load.started_ms,))] == old, "6-day-old video is not a year old"
    assert conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'motion'").fetchone()[0] == 1
    assert segment_files(load.layout) >= {("gate", start) for start in old}
    ring = [r["start_ms"] for r in pressure_victims(conn)]
    assert ring[:len(old)] == old, "what was recorded first is deleted first"
    load.close()


def test_rows_from_before_the_timeline_never_land_after_its_first_boot(tmp_path: Path) -> None:
    """An index that already has a boot on its timeline (upgraded to 3 earlier) with rows from before, one of
    them recorded by a clock running ahead: migration 4 puts them all before that boot."""
    from edgenvr.index import schema

    layout = StorageLayout(tmp_path / "data")
    first_boot_ms = 1_780_000_000_000
    starts = _index_of_an_older_edgenvr(layout, 3, "gate", first_boot_ms - 30 * SECOND_MS, 6, MB)
    conn = sqlite3.connect(layout.index_path, isolation_level=None)
    conn.execute("INSERT INTO boots (id, boot_id, base_ms, first_ms) VALUES (1, '00000000000000b1', ?, ?)",
                 (first_boot_ms - 5000, first_boot_ms))
    schema.migrate(conn)
    placed = conn.execute("SELECT start_ms, timeline_ms FROM segments ORDER BY start_ms").fetchall()
    assert placed == [(s, min(s, first_boot_ms)) for s in starts]
    assert conn.execute("SELECT timeline_keep_to_ms FROM events").fetchone()[0] == first_boot_ms
    conn.close()


@pytest.mark.parametrize("step_ms", [YEAR_MS, -YEAR_MS, 2 * HOUR_MS])
def test_an_event_closed_just_after_a_clock_step_is_kept_with_its_video(tmp_path: Path, step_ms: int) -> None:
    """A motion worker's frame clock keeps the wall clock's old reading for a few frames after a step: the
    close it announces then is placed where it happened, not a year ago (which would expire it at once)."""
    config = write_config(tmp_path, ["gate"], {"max_age_days": 7, "event_days": 14, "sweep_seconds": 10,
                                               "index_commit_seconds": 60})
    clock = SimulatedClock()
    load = SimulatedRecordingLoad(config, clock, segment_bytes=MB)
    load.run(HOUR_MS / SECOND_MS, every=10)
    before_step = clock.now_ms()
    motion = EventRecord("gate", "motion", before_step - 40 * SECOND_MS, None)
    load.writer.add_event(motion)
    load.run(20, every=10)
    clock.step_wall_ms(step_ms)
    load.run(20, every=10)   # the clock watch sees the step
    load.writer.add_event(EventRecord("gate", "motion", motion.start_ms, before_step + 15 * SECOND_MS))
    load.run(HOUR_MS / SECOND_MS, every=10)
    load.writer.commit()

    conn = load.conn
    assert conn.execute("SELECT end_ms FROM events WHERE kind = 'motion'").fetchone()[0] == before_step + 15 * SECOND_MS
    classes = {r[0] for r in conn.execute("SELECT retention_class FROM segments WHERE camera = 'gate' AND start_ms < ?"
                                          " AND end_ms > ?", (before_step + 15 * SECOND_MS, motion.start_ms))}
    assert classes == {1}, "its video is still event video"
    end = before_step + 15 * SECOND_MS
    segment = conn.execute("SELECT start_ms, timeline_ms FROM segments WHERE camera = 'gate' AND start_ms <= ?"
                           " AND end_ms > ?", (end, end)).fetchone()
    kept_to = conn.execute("SELECT timeline_keep_to_ms FROM events WHERE kind = 'motion'").fetchone()[0]
    padding = int(config.storage.event_post_seconds * SECOND_MS)
    assert abs(kept_to - (segment["timeline_ms"] + end - segment["start_ms"] + padding)) <= SECOND_MS, \
        "aged from where it ended on the recording timeline"
    load.close()
