"""Retention tiers as an operator relies on them: continuous video goes before event video, held video is
never deleted, per-camera days and the legal maximum are obeyed, holds work from the command line, a sweep
killed at any moment loses nothing it should keep, and `edgenvr retention` tells the truth.

Everything is real: SQLite index files, segment and snapshot files on real small tmpfs mounts, the index
written through IndexWriter and swept by RetentionPolicy. Segment files hold zeros (retention never reads
them); their sizes are what the index and the disk accounting see.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from edgenvr.cli.main import main as cli_main
from edgenvr.config.checking import load_config
from edgenvr.config.records import Config
from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.core.records import EventRecord, ReferenceRecord, SegmentRecord
from edgenvr.index import schema as index_schema
from edgenvr.index.queries import open_readonly
from edgenvr.index.reconcile import check_consistency, reconcile
from edgenvr.index.writer import IndexWriter
from edgenvr.retention.holds import add_hold
from edgenvr.retention.policy import RetentionPolicy, index_file_bytes
from edgenvr.storage.durable_writes import write_durably
from edgenvr.storage.layout import StorageLayout
from tests.conftest import edgenvr

DAY = 86_400_000
MIN = 60_000
KiB = 1024


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[callable]:
    """mount(name, size) -> a fresh tmpfs of that size; all unmounted at the end."""
    mounts: list[Path] = []

    def mount(name: str = "disk", size: str = "16m") -> Path:
        path = tmp_path / name
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs (these tests need root): {result.stderr.strip()}")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


def write_config(path: Path, data_dir: Path, storage: dict[str, object] | None = None,
                 cameras: dict[str, dict[str, object]] | None = None) -> Config:
    def value(v: object) -> str:
        return json.dumps(v) if isinstance(v, str) else str(v)

    lines = ["[storage]", f"data_dir = {json.dumps(str(data_dir))}"]
    lines += [f"{key} = {value(v)}" for key, v in {"quota": "100%", "min_free": "0", **(storage or {})}.items()]
    for camera_id, settings in (cameras if cameras is not None else {"gate": {}}).items():
        lines += ["[[cameras]]", f'id = "{camera_id}"', f'url = "rtsp://192.0.2.1/{camera_id}"']
        lines += [f"{key} = {value(v)}" for key, v in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


@dataclass
class Box:
    """A data dir with an index and real segment and snapshot files, written as the supervisor would."""

    data_dir: Path
    layout: StorageLayout = field(init=False)
    writer: IndexWriter = field(init=False)

    def __post_init__(self) -> None:
        self.layout = StorageLayout(self.data_dir)
        self.writer = IndexWriter(index_schema.connect(self.layout.index_path))

    @property
    def conn(self):  # type: ignore[no-untyped-def]
        return self.writer.conn

    def segment(self, camera: str, start_ms: int, size: int = 4 * KiB, seconds: int = 10) -> tuple[str, int]:
        path = self.layout.segment_path(camera, start_ms)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * size)
        self.writer.add_segment(SegmentRecord(camera, start_ms, start_ms + seconds * 1000, self.layout.relative(path),
                                              size, "00" * 32, "h264", 320, 240, 250, start_ms + seconds * 1000))
        return camera, start_ms

    def event(self, camera: str, start_ms: int, end_ms: int | None, kind: str = "motion",
              snapshot: bool = False, subkind: str = "") -> str | None:
        relative = None
        if snapshot:
            path = self.layout.snapshot_path(camera, start_ms, kind, subkind)  # where motion workers write them
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\xff\xd8 jpeg \xff\xd9")
            relative = self.layout.relative(path)
        self.writer.add_event(EventRecord(camera, kind, start_ms, end_ms, subkind=subkind, snapshot=relative))
        return relative

    def policy(self, config: Config) -> RetentionPolicy:
        return RetentionPolicy(config, self.layout, self.writer)

    def segments(self, retention_class: int | None = None) -> set[tuple[str, int]]:
        query = "SELECT camera, start_ms FROM segments WHERE deleting = 0"
        args: tuple = ()
        if retention_class is not None:
            query += " AND retention_class = ?"
            args = (retention_class,)
        return {(r[0], r[1]) for r in self.conn.execute(query, args)}

    def files(self) -> set[tuple[str, int]]:
        return {(p.parts[-4], int(p.name.split(".")[0])) for p in self.layout.segments_dir.glob("*/*/*/*.mp4")}

    def events(self, kind: str | None = None) -> list:
        return self.conn.execute("SELECT * FROM events WHERE (? IS NULL OR kind = ?) ORDER BY id", (kind, kind)).fetchall()

    def assert_consistent(self) -> None:
        report = check_consistency(self.conn, self.layout)
        assert report.consistent, report.summary()
        assert self.segments() == self.files()


# -- disk pressure --------------------------------------------------------------------------------

def test_short_disk_deletes_continuous_first_then_oldest_event_video_never_held(tmpfs, tmp_path: Path) -> None:
    disk = tmpfs("disk", "16m")
    box = Box(disk / "data")
    size = 256 * KiB
    t0 = SYSTEM_CLOCK.now_ms() - 60 * MIN
    # gate: 20 segments; an event in segments 2-3 (with 10 s/20 s padding: 1-5) and one in 8-9 (7-11);
    # a hold over 14-16. yard: 10 continuous segments, all newer than gate's event video.
    gate = [box.segment("gate", t0 + i * 10_000, size) for i in range(20)]
    box.event("gate", gate[2][1] + 1000, gate[3][1] + 5000)
    box.event("gate", gate[8][1] + 1000, gate[9][1] + 5000)
    yard = [box.segment("yard", t0 + 30 * MIN + i * 10_000, size) for i in range(10)]
    box.writer.commit()
    config = write_config(tmp_path / "c.toml", box.data_dir, {"min_free": "6MiB", "event_days": 30},
                          {"gate": {}, "yard": {}})
    add_hold(box.conn, config, "gate", gate[14][1], gate[16][1] + 1000, "incident 7")
    event_video = sorted(box.segments(1))
    held = box.segments(2)
    continuous = box.segments(0)
    assert event_video == gate[1:6] + gate[7:12] and held == set(gate[14:17])

    # Something else fills the disk: free space ends 1.5 segments short of what deleting every continuous
    # segment gives back, so the two oldest event segments must go too, and nothing else.
    free = shutil.disk_usage(disk).free
    filler_size = free - 6 * 1024 * KiB + len(continuous) * size + size * 3 // 2
    with open(disk / "someone-elses-file", "wb") as filler:
        os.posix_fallocate(filler.fileno(), 0, filler_size)
    result = box.policy(config).sweep()

    assert box.segments(0) == set(), "continuous video must all go before any event video"
    assert sorted(box.segments(1)) == event_video[2:], "event video goes oldest first, only as much as needed"
    assert box.segments(2) == held
    assert shutil.disk_usage(disk).free >= 6 * 1024 * KiB
    assert result.deleted == len(continuous) + 2 and result.deleted_early == 2
    box.assert_consistent()
    alerts = box.events("alert")
    assert [(a["camera"], a["subkind"]) for a in alerts] == [("gate", "deleted_early")]
    detail = alerts[0]["detail"]
    assert "free space below min_free" in detail and "deleted 2 event-video segments" in detail
    assert "0.5 MB" in detail and "of gate" in detail and "event_days (30 days)" in detail
    assert all(y not in box.segments() for y in yard)


def test_only_held_video_left_and_disk_still_short_alerts_once(tmpfs, tmp_path: Path, caplog) -> None:
    disk = tmpfs("disk", "16m")
    box = Box(disk / "data")
    t0 = SYSTEM_CLOCK.now_ms() - 10 * MIN
    segments = [box.segment("gate", t0 + i * 10_000, 256 * KiB) for i in range(8)]
    box.writer.commit()
    config = write_config(tmp_path / "c.toml", box.data_dir, {"min_free": "8MiB"})
    add_hold(box.conn, config, "gate", segments[5][1], segments[7][1] + 10_000, "court order 12")
    filler_size = shutil.disk_usage(disk).free - 1024 * KiB  # leave 1 MiB: no deletion can reach 8 MiB
    with open(disk / "someone-elses-file", "wb") as filler:
        os.posix_fallocate(filler.fileno(), 0, filler_size)
    policy = box.policy(config)
    with caplog.at_level(logging.WARNING, logger="edgenvr.retention.policy"):
        policy.sweep()
        policy.sweep()
    assert box.segments() == set(segments[5:8]), "held video is never deleted, however short the disk"
    alerts = [r.getMessage() for r in caplog.records if "ALERT: free space below min_free" in r.getMessage()]
    assert len(alerts) == 1, alerts
    assert "something else is filling the disk" in alerts[0] and "gate 0.8 MB" in alerts[0]
    indexed = box.events("alert")
    assert [(a["camera"], a["subkind"]) for a in indexed] == [("gate", "disk_full")]
    box.assert_consistent()


# -- age rules ------------------------------------------------------------------------------------

def test_legal_maximum_deletes_continuous_and_event_video_but_holds_survive(tmpfs, tmp_path: Path) -> None:
    disk = tmpfs("disk", "16m")
    box = Box(disk / "data")
    now = SYSTEM_CLOCK.now_ms()
    old = [box.segment("gate", now - 40 * DAY + i * 10_000) for i in range(6)]
    recent = [box.segment("gate", now - 10 * DAY + i * 10_000) for i in range(3)]
    kept_snapshot = box.event("gate", old[1][1] + 1000, old[1][1] + 5000, snapshot=True)     # inside the hold
    gone_snapshot = box.event("gate", old[4][1] + 1000, old[4][1] + 5000, snapshot=True)     # not held
    box.event("gate", recent[1][1], recent[1][1] + 2000, kind="tamper", subkind="covered")
    # reference views are pictures of the camera's view too: a superseded one past the legal maximum goes,
    # the current one stays whatever its age (detection compares with it)
    references = []
    for approved in (now - 50 * DAY, now - 40 * DAY):
        path = box.layout.reference_path("gate", approved)
        write_durably(path, b"png")
        box.writer.add_reference(ReferenceRecord("gate", approved, box.layout.relative(path), "commissioning"))
        references.append(path)
    box.writer.commit()
    # event_days longer than the legal maximum: the legal maximum wins; no max_age_days at all
    config = write_config(tmp_path / "c.toml", box.data_dir, {"event_days": 60, "retention_max_days": 30})
    add_hold(box.conn, config, "gate", old[0][1], old[2][1] + 10_000, "police request 2024-117")
    result = box.policy(config).sweep()

    assert box.segments() == set(old[0:3] + recent), "only held video survives past retention_max_days"
    assert box.segments(2) == set(old[0:3])
    assert "retention_max_days" in result.reason
    kinds = [(e["kind"], e["start_ms"]) for e in box.events()]
    assert kinds == [("motion", old[1][1] + 1000), ("tamper", recent[1][1])]
    assert (box.data_dir / kept_snapshot).exists() and not (box.data_dir / gone_snapshot).exists()
    assert [p.exists() for p in references] == [False, True]
    assert [r[0] for r in box.conn.execute("SELECT approved_ms FROM reference_views")] == [now - 40 * DAY]
    box.assert_consistent()


def test_a_file_that_cannot_be_deleted_is_retried_next_sweep_and_does_not_stop_the_ring(tmpfs, tmp_path: Path) -> None:
    """A file the sweep cannot delete (an I/O error, a permission problem) is logged and retried at the next
    sweep; the sweep does not spin on it, and everything else due is deleted."""
    disk = tmpfs("disk", "16m")
    box = Box(disk / "data")
    now = SYSTEM_CLOCK.now_ms()
    old = [box.segment("gate", now - 40 * DAY + i * 10_000) for i in range(4)]
    box.writer.commit()
    stuck = box.layout.segment_path(*old[1])
    stuck.unlink()
    stuck.mkdir()  # unlink() of a directory fails like an unlink on a failing disk
    (stuck / "x").write_bytes(b"x")
    config = write_config(tmp_path / "c.toml", box.data_dir, {"max_age_days": 30})
    policy = box.policy(config)
    started = time.monotonic()
    result = policy.sweep()
    assert time.monotonic() - started < 5
    assert result.deleted == 3 and box.segments() == set()
    box.writer.commit()  # the supervisor's next commit: rows of deleted files go, the stuck one is unmarked
    assert [tuple(r) for r in box.conn.execute("SELECT start_ms, deleting FROM segments")] == [(old[1][1], 0)]
    (stuck / "x").unlink()
    stuck.rmdir()
    stuck.write_bytes(b"\0" * 4 * KiB)  # the disk is fine again
    policy.sweep()
    box.writer.commit()
    assert box.conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == 0 and not stuck.exists()


def test_a_full_disk_whose_only_video_cannot_be_deleted_does_not_hang_the_sweep(tmpfs, tmp_path: Path) -> None:
    """Space is short and every deletable file fails to unlink: the sweep logs it and returns, the next one
    tries again, and the files come back to the ring once the commit unmarks them."""
    disk = tmpfs("disk", "16m")
    box = Box(disk / "data")
    now = SYSTEM_CLOCK.now_ms()
    old = [box.segment("gate", now - 3_600_000 + i * 10_000) for i in range(3)]
    box.writer.commit()
    for segment in old:
        stuck = box.layout.segment_path(*segment)
        stuck.unlink()
        stuck.mkdir()
        (stuck / "x").write_bytes(b"x")
    config = write_config(tmp_path / "c.toml", box.data_dir, {"quota": "4KiB"})
    started = time.monotonic()
    result = box.policy(config).sweep()
    assert time.monotonic() - started < 5
    assert result.deleted == 0
    box.writer.commit()
    assert box.segments() == set(old)  # unmarked: a later sweep tries them again


def test_per_camera_days_override_storage_and_unknown_cameras_get_storage_days(tmpfs, tmp_path: Path) -> None:
    disk = tmpfs("disk", "16m")
    box = Box(disk / "data")
    now = SYSTEM_CLOCK.now_ms()
    ages = (1, 3, 7, 12, 25)  # days
    by_age = {camera: {age: box.segment(camera, now - age * DAY) for age in ages} for camera in ("gate", "yard", "old")}
    for camera in ("gate", "yard", "old"):  # an event on every segment 3 and 12 days old: event video
        for age in (3, 12):
            start = by_age[camera][age][1]
            box.event(camera, start + 1000, start + 2000)
    box.writer.commit()
    # [storage]: continuous 10 days, events 20 days. gate: continuous 2 days, events 5 days. yard: storage.
    # "old" recorded once but is no longer in the config: storage days.
    config = write_config(tmp_path / "c.toml", box.data_dir, {"max_age_days": 10, "event_days": 20},
                          {"gate": {"max_age_days": 2, "event_days": 5}, "yard": {}})
    box.policy(config).sweep()
    left = box.segments()
    assert {age for age in ages if by_age["gate"][age] in left} == {1, 3}
    assert {age for age in ages if by_age["yard"][age] in left} == {1, 3, 7, 12}
    assert {age for age in ages if by_age["old"][age] in left} == {1, 3, 7, 12}
    # gate's 12-day-old event is past its 5 event days; yard's and old's are within their 20
    events = {(e["camera"], round((now - e["start_ms"]) / DAY)) for e in box.events()}
    assert events == {("gate", 3), ("yard", 3), ("yard", 12), ("old", 3), ("old", 12)}
    box.assert_consistent()


def test_expired_event_gives_its_video_back_to_the_ring_not_a_hole_in_it(tmpfs, tmp_path: Path) -> None:
    """Default settings (no max_age_days): continuous video is kept until the disk is needed. An event
    past event_days stops protecting its video; that video must not be cut out of the continuous record."""
    disk = tmpfs("disk", "16m")
    box = Box(disk / "data")
    now = SYSTEM_CLOCK.now_ms()
    run = [box.segment("gate", now - 9 * DAY + i * 10_000) for i in range(6)]
    box.event("gate", run[2][1] + 1000, run[3][1] + 1000, snapshot=True)
    # a camera covered for 9 days and still covered: its open tamper event keeps video, but not forever
    stuck = [box.segment("yard", now - 9 * DAY + i * 10_000) for i in range(3)] + [box.segment("yard", now - MIN)]
    box.event("yard", stuck[0][1], None, kind="tamper", subkind="covered")
    box.writer.commit()
    config = write_config(tmp_path / "c.toml", box.data_dir, {"event_days": 7}, {"gate": {}, "yard": {}})
    assert box.segments(1) >= set(run[1:5])
    policy = box.policy(config)
    policy.sweep()
    assert [e["camera"] for e in box.events()] == ["yard"], "the gate event is past its 7 event days"
    assert set(run) <= box.segments(0), "its video is continuous video again, kept like the rest"
    assert {s for s in box.segments() if s[0] == "yard"} == {stuck[3]}, "an open event keeps event_days, no more"
    assert not list((box.data_dir / "snapshots" / "gate").rglob("*.jpg"))
    box.assert_consistent()


# -- holds from the command line ------------------------------------------------------------------

def _cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = cli_main(list(args))
    except SystemExit as exc:  # argparse and config errors exit
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_hold_add_list_release_through_the_cli(tmpfs, tmp_path: Path, capsys) -> None:
    disk = tmpfs("disk", "16m")
    box = Box(disk / "data")
    t0 = SYSTEM_CLOCK.now_ms() - 30 * MIN
    segments = [box.segment("gate", t0 + i * 10_000) for i in range(12)]
    box.event("gate", segments[6][1] + 1000, segments[6][1] + 3000)
    box.writer.commit()
    config_path = tmp_path / "c.toml"
    write_config(config_path, box.data_dir, {"max_age_days": 1})
    cfg = str(config_path)
    before = box.segments(1)

    code, out, err = _cli(capsys, "hold", "add", "--config", cfg, "--camera", "gate", "--from", f"{segments[2][1]}ms",
                          "--to", f"{segments[7][1] + 5000}ms", "--reason", "break-in, case 2291")
    assert code == 0, err
    hold_id = int(out.strip())
    assert "6 segments" in err
    assert box.segments(2) == set(segments[2:8]), "held at once, before any sweep"

    code, out, err = _cli(capsys, "hold", "list", "--config", cfg, "--json")
    assert code == 0, err
    [listed] = [json.loads(line) for line in out.splitlines()]
    assert listed["id"] == hold_id and listed["in_force"] and listed["segments"] == 6
    assert listed["reason"] == "break-in, case 2291" and listed["bytes"] == 6 * 4 * KiB

    code, out, err = _cli(capsys, "hold", "release", "--config", cfg, str(hold_id), "--reason", "case closed")
    assert code == 0, err
    assert box.segments(2) == set() and box.segments(1) == before, "back to event and continuous retention"
    code, out, _ = _cli(capsys, "hold", "list", "--config", cfg)
    assert "break-in" not in out
    code, out, _ = _cli(capsys, "hold", "list", "--config", cfg, "--all", "--json")
    [released] = [json.loads(line) for line in out.splitlines()]
    assert not released["in_force"] and released["release_reason"] == "case closed"
    assert released["reason"] == "break-in, case 2291"

    # the real entry point, as a technician types it
    result = edgenvr("hold", "add", "--config", cfg, "--camera", "gate", "--from", "2020-01-01T00:00:00Z",
                     "--to", "2020-01-02T00:00:00Z", "--reason", "audit")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().isdigit()


def test_hold_bad_input_is_refused_with_a_clear_message(tmpfs, tmp_path: Path, capsys) -> None:
    disk = tmpfs("disk", "16m")
    box = Box(disk / "data")
    box.segment("gate", SYSTEM_CLOCK.now_ms() - MIN)
    box.writer.commit()
    config_path = tmp_path / "c.toml"
    write_config(config_path, box.data_dir)
    cfg = str(config_path)
    add = ("hold", "add", "--config", cfg)
    cases = [
        ((*add, "--camera", "garage", "--from", "@1700000000", "--to", "@1700000600", "--reason", "x"),
         2, "unknown camera 'garage'"),
        ((*add, "--camera", "gate", "--from", "@1700000600", "--to", "@1700000000", "--reason", "x"),
         2, "must start before it ends"),
        ((*add, "--camera", "gate", "--from", "@1700000000", "--to", "@1700000000", "--reason", "x"),
         2, "must start before it ends"),
        ((*add, "--camera", "gate", "--from", "@1700000000", "--to", "@1700000600", "--reason", "  "),
         2, "reason must not be empty"),
        ((*add, "--camera", "gate", "--from", "yesterday", "--to", "@1700000600", "--reason", "x"),
         2, "ISO 8601"),
        (("hold", "release", "--config", cfg, "99"), 2, "no hold 99"),
    ]
    for args, expected_code, message in cases:
        code, out, err = _cli(capsys, *args)
        assert (code, message in err) == (expected_code, True), (args, code, err)
        assert out == ""
    assert box.conn.execute("SELECT COUNT(*) FROM holds").fetchone()[0] == 0

    code, out, _ = _cli(capsys, *add, "--camera", "gate", "--from", "@1700000000", "--to", "@1700000600",
                        "--reason", "x")
    hold_id = out.strip()
    assert _cli(capsys, "hold", "release", "--config", cfg, hold_id)[0] == 0
    code, _, err = _cli(capsys, "hold", "release", "--config", cfg, hold_id)
    assert code == 2 and "already released" in err

    nothing = tmp_path / "nothing.toml"
    write_config(nothing, tmp_path / "never-recorded")
    code, _, err = _cli(capsys, "hold", "add", "--config", str(nothing), "--camera", "gate", "--from", "@1700000000",
                        "--to", "@1700000600", "--reason", "x")
    assert code == 1 and "nothing has been recorded" in err
    assert not (tmp_path / "never-recorded").exists()


def test_hold_added_while_the_supervisor_commits_waits_for_it_and_holds(tmpfs, tmp_path: Path, capsys) -> None:
    disk = tmpfs("disk", "16m")
    box = Box(disk / "data")
    t0 = SYSTEM_CLOCK.now_ms() - 10 * MIN
    segments = [box.segment("gate", t0 + i * 10_000) for i in range(6)]
    box.segment("retired", t0)  # recorded once, since removed from the config: its video can still be held
    box.writer.commit()
    config_path = tmp_path / "c.toml"
    write_config(config_path, box.data_dir)
    locked, release = threading.Event(), threading.Event()

    def supervisor_commit() -> None:  # the supervisor's writer, in the middle of a slow batch
        conn = index_schema.connect(box.layout.index_path)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE cameras SET state = 'recording'")
        locked.set()
        release.wait(10)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=supervisor_commit)
    thread.start()
    locked.wait(10)
    threading.Timer(1.0, release.set).start()
    started = time.monotonic()
    code, out, err = _cli(capsys, "hold", "add", "--config", str(config_path), "--camera", "gate",
                          "--from", f"{segments[1][1]}ms", "--to", f"{segments[3][1]}ms", "--reason", "waits its turn")
    thread.join()
    assert code == 0, err
    assert time.monotonic() - started >= 0.9
    assert box.segments(2) == set(segments[1:3])
    code, out, err = _cli(capsys, "hold", "add", "--config", str(config_path), "--camera", "retired",
                          "--from", f"{t0}ms", "--to", f"{t0 + 1}ms", "--reason", "still on disk")
    assert code == 0, err
    assert ("retired", t0) in box.segments(2)


# -- crash safety ---------------------------------------------------------------------------------

_SWEEPER = """
import sys
from edgenvr.index import schema as index_schema
from edgenvr.config.checking import load_config
from edgenvr.index.writer import IndexWriter
from edgenvr.retention.policy import RetentionPolicy
from edgenvr.storage.layout import StorageLayout
config = load_config(sys.argv[1])
layout = StorageLayout(config.storage.data_dir)
policy = RetentionPolicy(config, layout, IndexWriter(index_schema.connect(layout.index_path)))
print("sweeping", flush=True)
policy.sweep()
print("done", flush=True)
"""


ROUNDS = 6


def test_sweep_killed_at_random_points_keeps_what_it_must(tmpfs, tmp_path: Path) -> None:
    disk = tmpfs("disk", "96m")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    box = Box(disk / "template")
    now = SYSTEM_CLOCK.now_ms()
    # 3000 segments, 10 s every 144 s from 6 days to 1.2 days ago: all past max_age_days = 1.
    starts = [now - 6 * DAY + i * 144_000 for i in range(3000)]
    for start in starts:
        box.segment("gate", start, 1024)
    snapshots = {}
    for i in range(0, 1500, 25):       # 60 events 6 to 3.5 days ago: past event_days = 3
        snapshots[starts[i]] = box.event("gate", starts[i] + 1000, starts[i] + 3000, snapshot=True)
    for i in range(2400, 3000, 50):    # 12 events ~2 days ago: within event_days, their video stays
        snapshots[starts[i]] = box.event("gate", starts[i] + 1000, starts[i] + 3000, snapshot=True)
    box.writer.commit()
    config = write_config(tmp_path / "template.toml", box.data_dir, {"max_age_days": 1, "event_days": 3})
    add_hold(box.conn, config, "gate", starts[300], starts[340], "insurance claim 55")  # 5.5 days ago
    # held video, and the video of the events still within event_days (the old events' video is past
    # max_age_days once they expire)
    must_keep = box.segments(2) | {s for s in box.segments(1) if s[1] >= starts[2400]}
    assert len(box.segments(2)) == 40 and len(must_keep) == 40 + 12
    held_events = {e["start_ms"] for e in box.events() if starts[300] <= e["start_ms"] < starts[340]}
    recent_events = {e["start_ms"] for e in box.events() if e["start_ms"] > starts[2400]}
    must_keep_events = held_events | recent_events
    assert len(held_events) == 2 and len(recent_events) == 12
    box.writer.conn.close()

    def sweep(data_dir: Path, kill_after: float | None) -> tuple[bool, float]:
        """Run a sweep in its own process; kill -9 it `kill_after` s in. (finished, seconds it ran)."""
        config_path = tmp_path / f"{data_dir.name}.toml"
        write_config(config_path, data_dir, {"max_age_days": 1, "event_days": 3})
        process = subprocess.Popen([sys.executable, "-c", _SWEEPER, str(config_path)], stdout=subprocess.PIPE,
                                   text=True)
        assert process.stdout is not None and process.stdout.readline() == "sweeping\n"
        started = time.monotonic()
        if kill_after is not None:
            time.sleep(kill_after)
            process.send_signal(signal.SIGKILL)
        output = process.stdout.read()
        process.wait(60)
        return "done" in output, time.monotonic() - started

    shutil.copytree(box.data_dir, disk / "calibration")
    finished, duration = sweep(disk / "calibration", None)
    assert finished
    shutil.rmtree(disk / "calibration")

    interrupted = 0
    for round_ in range(ROUNDS):
        data_dir = disk / f"round-{round_}"
        shutil.copytree(box.data_dir, data_dir)
        kill_after = (round_ + rng.random()) / ROUNDS * 0.8 * duration  # spread over the sweep
        finished, _ = sweep(data_dir, kill_after)
        interrupted += not finished
        layout = StorageLayout(data_dir)
        conn = index_schema.connect(layout.index_path)
        try:
            where = f"seed {seed}, round {round_}, killed after {kill_after:.3f} s of {duration:.3f} s"
            # all a killed sweep may leave behind is rows marked `deleting`, which reconcile finishes
            left = check_consistency(conn, layout)
            going = {str(layout.segment_path(r[0], r[1]))
                     for r in conn.execute("SELECT camera, start_ms FROM segments WHERE deleting = 1")}
            assert not (left.rows_without_file or left.rows_with_wrong_size or set(left.files_without_row) - going), \
                f"{where}: {left.summary()}"
            writer = IndexWriter(conn)
            reconcile(writer, layout)
            assert not layout.quarantine_dir.exists(), where
            report = check_consistency(conn, layout)
            assert report.consistent, f"{where}: {report.summary()}"
            kept = {(r[0], r[1]) for r in conn.execute("SELECT camera, start_ms FROM segments")}
            assert must_keep <= kept, f"{where}: lost {sorted(must_keep - kept)[:5]}"
            events = {r["start_ms"] - 1000: r for r in conn.execute("SELECT start_ms, snapshot FROM events")}
            for start in must_keep_events:
                assert start - 1000 in events and (data_dir / snapshots[start - 1000]).exists(), where
            on_disk = {layout.relative(p) for p in (data_dir / "snapshots").glob("*/*/*.jpg")}
            known = {r["snapshot"] for r in events.values()}
            assert on_disk <= known, f"{where}: snapshots without an event: {sorted(on_disk - known)[:3]}"
            # the next sweep (the supervisor's, after its start-up reconcile) finishes the job
            RetentionPolicy(load_config(tmp_path / f"{data_dir.name}.toml"), layout, writer).sweep()
            writer.commit()  # and its next commit drops the rows of what the sweep deleted
            kept = {(r[0], r[1]) for r in conn.execute("SELECT camera, start_ms FROM segments")}
            assert kept == must_keep, where
            assert {r["start_ms"] for r in conn.execute("SELECT start_ms FROM events")} == must_keep_events, where
            assert check_consistency(conn, layout).consistent, where
        finally:
            conn.close()
        shutil.rmtree(data_dir)
    print(f"random seed {seed}; a whole sweep took {duration:.3f} s; {interrupted} of {ROUNDS} kills landed mid-sweep")
    assert interrupted >= ROUNDS // 2, f"only {interrupted} of {ROUNDS} kills landed mid-sweep ({duration:.3f} s)"


# -- the retention report -------------------------------------------------------------------------

def test_retention_report_shows_days_next_sweep_and_when_the_disk_fills(tmpfs, tmp_path: Path, capsys) -> None:
    disk = tmpfs("disk", "16m")
    box = Box(disk / "data")
    now = SYSTEM_CLOCK.now_ms()
    size = 100_000
    # gate: 4 continuous segments 3 days old (past max_age_days 2.5); a motion event 2 days old (past
    # event_days 1.5) in a run of 5 segments, its padding reaching 1-4; held video 1 day old; 36 segments
    # in the last hour (one every 100 s), one of them with a motion event; an old offline event.
    aged = [box.segment("gate", now - 3 * DAY + i * 10_000, size) for i in range(4)]
    evented = [box.segment("gate", now - 2 * DAY + i * 10_000, size) for i in range(5)]
    box.event("gate", evented[2][1] + 1000, evented[2][1] + 2000)
    held = [box.segment("gate", now - DAY + i * 10_000, size) for i in range(2)]
    hour = [box.segment("gate", now - 3_590_000 + i * 100_000, size) for i in range(36)]
    box.event("gate", hour[10][1] + 1000, hour[10][1] + 2000)
    box.event("gate", now - 3 * DAY, now - 3 * DAY + 1000, kind="offline")
    box.writer.commit()
    storage = {"max_age_days": 2.5, "event_days": 1.5, "sweep_seconds": 10}
    config = write_config(tmp_path / "c.toml", box.data_dir, storage)
    add_hold(box.conn, config, "gate", held[0][1], held[1][1] + 10_000, "tribunal")
    box.writer.conn.close()
    segment_bytes = 47 * size
    rate = 36 * size / 3600                      # bytes/s over the last hour
    headroom = int(rate * (2 * 10 + 2 * 10))    # two sweeps and two segments (10 s default)
    config_path = tmp_path / "r.toml"

    def report(quota: int) -> list[dict]:
        write_config(config_path, box.data_dir, {**storage, "quota": f"{quota}B"})
        code, out, err = _cli(capsys, "retention", "--config", str(config_path), "--json")
        assert code == 0, err
        return [json.loads(line) for line in out.splitlines()]

    def next_sweep(camera: dict) -> set[tuple]:
        return {(d["why"], d["what"], d["count"], d["bytes"]) for d in camera["next_sweep"]}

    # Quota with room: nothing to delete for space; full when the room is written at the hour's rate.
    index_bytes = index_file_bytes(box.layout)
    gate, disk_info = report(segment_bytes + index_bytes + 5_000_000)
    assert gate["camera"] == "gate" and gate["in_config"]
    assert (gate["continuous"]["segments"], gate["continuous"]["bytes"]) == (40, 40 * size)
    assert gate["continuous"]["oldest_ms"] == aged[0][1] and gate["continuous"]["newest_ms"] == hour[-1][1] + 10_000
    assert gate["continuous"]["days"] == pytest.approx((hour[-1][1] + 10_000 - aged[0][1]) / DAY, abs=1e-5)
    assert (gate["event"]["segments"], gate["event"]["bytes"]) == (5, 5 * size)
    assert gate["event"]["days"] == pytest.approx((hour[10][1] + 10_000 - evented[1][1]) / DAY, abs=1e-5)
    assert (gate["held"]["segments"], gate["held"]["bytes"]) == (2, 2 * size)
    assert gate["holds_in_force"] == 1
    assert gate["write_rate_bytes_per_s"] == pytest.approx(rate, rel=0.01)
    # the 2-day-old motion event and the offline event are past event_days; the motion event's video becomes
    # continuous video, younger than max_age_days: kept
    assert next_sweep(gate) == {("max_age_days", "continuous", 4, 4 * size), ("event_days", "events", 2, 0)}
    assert disk_info["need_bytes"] == 0
    assert disk_info["room_bytes"] == pytest.approx(5_000_000, abs=64 * KiB)  # the index file may grow a little
    assert (disk_info["full_at_ms"] - disk_info["at_ms"]) / 1000 == pytest.approx(5_000_000 / rate, rel=0.02)
    assert disk_info["days_at_rate"] == pytest.approx((45 * size + 5_000_000) / rate / 86400, rel=0.02)

    # A quota 40.5 segments short after the age deletions. Once the expired event's video is continuous
    # again, there are 40 continuous segments (1 + 4 of the old event's + 35 of the last hour), so the
    # 41st to go is the one event segment left, and held video is untouched.
    gate, disk_info = report(segment_bytes + index_bytes + headroom - 4 * size - 40 * size - size // 2)
    assert next_sweep(gate) == {("max_age_days", "continuous", 4, 4 * size), ("event_days", "events", 2, 0),
                                ("quota reached", "continuous", 40, 40 * size), ("quota reached", "event", 1, size)}
    assert disk_info["full_at_ms"] == disk_info["at_ms"] and disk_info["need_bytes"] > 0
    # The report predicts; it deletes nothing.
    with open_readonly(box.layout) as conn:
        assert conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == 47
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 3
    # and the human-readable form says the same
    code, out, _ = _cli(capsys, "retention", "--config", str(config_path))
    assert code == 0
    assert "next sweep: delete 4 continuous segments (0.4 MB): max_age_days" in out
    assert "next sweep: delete 40 continuous segments (4.0 MB): quota reached" in out
    assert "next sweep: delete 1 event segments (0.1 MB): quota reached" in out
    assert "next sweep: delete 2 events: event_days" in out
    assert "full now" in out

    # what the report predicted is what a sweep does
    writer = IndexWriter(index_schema.connect(box.layout.index_path))
    result = RetentionPolicy(load_config(config_path), box.layout, writer).sweep()
    assert (result.deleted, result.events_deleted) == (4 + 41, 2)
    assert {(s[0], s[1]) for s in writer.conn.execute("SELECT camera, start_ms FROM segments")} == set(held)
