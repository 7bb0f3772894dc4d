"""A lost, half-rebuilt or corrupt index at start-up: the box rebuilds it from the rows its segment files carry
and records again, instead of failing its start (and systemd restarting it for ever).

The 20,000-segment data dir is made once by `edgenvr.simulator.SimulatedRecordingLoad` (8 cameras, 10 s
segments, the real writer and periodic work on a simulated clock): sparse stand-in files each carrying its
row in `user.edgenvr`, as a recorder writes them, and the index that recording committed. Tests copy it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
from conftest import config_text, start_supervisor

from edgenvr.config.checking import load_config
from edgenvr.core.clock import SimulatedClock
from edgenvr.core.units import HOUR_MS
from edgenvr.index import schema as index_schema
from edgenvr.index.queries import open_readonly
from edgenvr.index.reconcile import ReconcileProgress, check_consistency, reconcile
from edgenvr.index.recovery import open_or_rebuild
from edgenvr.index.writer import IndexWriter
from edgenvr.simulator import SimulatedCamera, SimulatedRecordingLoad
from edgenvr.storage.layout import StorageLayout

CAMERAS = [f"cam-{i}" for i in range(8)]
SEGMENTS = 20_000
SEGMENT_S = 10
# A row as the recorder made it; `origin` says who indexed it and `id` is the table's, so neither is compared.
ROW = "camera, start_ms, end_ms, bytes, sha256, codec, width, height, packets, wall_end_ms, retention_class"


def _rows(layout: StorageLayout) -> list[tuple]:
    with open_readonly(layout) as conn:
        return [tuple(r) for r in conn.execute(f"SELECT {ROW} FROM segments ORDER BY camera, start_ms")]


def _lose_index(layout: StorageLayout) -> None:
    for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"):
        (layout.data_dir / name).unlink(missing_ok=True)


def _copy(source: Path, target: Path) -> StorageLayout:
    """A copy of a data dir, sparse files and their attributes included (cp -a keeps both)."""
    subprocess.run(["cp", "-a", "--sparse=always", str(source), str(target)], check=True)
    return StorageLayout(target)


@pytest.fixture(scope="module")
def ram_root() -> Iterator[Path]:
    """RAM (/dev/shm) where there is one: 20,000 files per copy are file system metadata work, not what is tested."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="edgenvr-recovery-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def recorded(ram_root: Path) -> tuple[Path, list[tuple]]:
    """(data dir, its index rows): 8 cameras x ~2,500 segments of 10 s, recorded through the real writer."""
    config_path = ram_root / "load.toml"
    lines = ["[storage]", f"data_dir = {json.dumps(str(ram_root / 'original'))}", 'quota = "100%"', 'min_free = "0"',
             "[recording]", f"segment_seconds = {SEGMENT_S}", "[motion]", "enabled = false", "tamper = false"]
    for camera in CAMERAS:
        lines += ["[[cameras]]", f'id = "{camera}"', f'url = "rtsp://192.0.2.1/{camera}"']
    config_path.write_text("\n".join(lines) + "\n")
    load = SimulatedRecordingLoad(load_config(config_path), SimulatedClock(), segment_bytes=1_000_000)
    load.run((SEGMENTS // len(CAMERAS) + 2) * SEGMENT_S, every=SEGMENT_S)
    load.close()
    rows = _rows(load.layout)
    assert len(rows) >= SEGMENTS
    return load.layout.data_dir, rows


def test_a_lost_index_is_rebuilt_identical_from_the_segment_files_in_batches(
        recorded: tuple[Path, list[tuple]], ram_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    original, rows = recorded
    layout = _copy(original, ram_root / "lost")
    _lose_index(layout)
    caplog.set_level(logging.INFO)

    opened = open_or_rebuild(layout)
    assert opened.rebuild == "missing" and opened.moved_to is None
    writer = IndexWriter(opened.conn)
    told: list[ReconcileProgress] = []
    found = reconcile(writer, layout, progress=told.append, batch_rows=2000, batch_seconds=3600)
    opened.conn.close()

    assert _rows(layout) == rows, "every row as the recorder made it"
    with open_readonly(layout) as conn:
        assert {r[0] for r in conn.execute("SELECT origin FROM segments")} == {"adopted"}
        assert conn.execute("SELECT COUNT(*) FROM gaps").fetchone()[0] == 0, "the record stays continuous"
        assert check_consistency(conn, layout).consistent
    assert found.unindexed_files == len(rows) and len(found.files_without_row) <= 1000
    # Committed in batches: never more than a batch and one camera-hour (360 segments) waiting in memory.
    commits = [p for p in told if not p.done]
    added = [b.added - a.added for a, b in zip([ReconcileProgress(0), *commits], commits)]
    assert writer.commits == len(commits) == told[-1].commits
    assert len(rows) / (2000 + 360) <= len(commits) <= len(rows) / 2000 + 1
    assert max(added) <= 2000 + HOUR_MS // (SEGMENT_S * 1000)
    assert told[-1].done and told[-1].added == len(rows) and told[-1].files == len(rows)
    assert any(r.levelno == logging.ERROR and "is missing but the data dir has video" in r.getMessage()
               and "holds" in r.getMessage() for r in caplog.records)


def test_damage_that_only_quick_check_finds_is_moved_aside_and_rebuilt(
        recorded: tuple[Path, list[tuple]], ram_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Garbage in the middle of the file: SQLite opens it and reads its schema, `PRAGMA quick_check` finds it."""
    original, rows = recorded
    layout = _copy(original, ram_root / "damaged")
    size = layout.index_path.stat().st_size
    with open(layout.index_path, "r+b") as index_file:
        index_file.seek(size // 2)
        index_file.write(os.urandom(8192))
    damaged = layout.index_path.read_bytes()
    caplog.set_level(logging.INFO)

    opened = open_or_rebuild(layout)
    assert opened.rebuild.startswith("corrupt: quick_check") and opened.moved_to is not None
    assert opened.moved_to.read_bytes() == damaged and opened.moved_to.parent == layout.data_dir
    reconcile(IndexWriter(opened.conn), layout)
    opened.conn.close()
    assert _rows(layout) == rows
    assert any(r.levelno == logging.ERROR and f"moved to {opened.moved_to}" in r.getMessage() for r in caplog.records)


def _notify_socket(tmp_path: Path) -> tuple[socket.socket, Path]:
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(0.2)
    return listener, path


def _offline_config(tmp_path: Path, data_dir: Path) -> Path:
    """Cameras that refuse connections: the supervisor starts, and records nothing new."""
    config = tmp_path / "edgenvr.toml"
    config.write_text(config_text(data_dir, {camera: "rtsp://127.0.0.1:9/nothing" for camera in CAMERAS},
                                  commit_seconds=600))
    return config


def test_a_rebuild_killed_half_way_goes_on_where_it_stopped(
        recorded: tuple[Path, list[tuple]], ram_root: Path, tmp_path: Path) -> None:
    """`edgenvr run` on a data dir whose index is lost, killed with SIGKILL once two batches are committed
    (as systemd's start timeout or a power cut would): the next start keeps those rows, adopts only the rest."""
    original, rows = recorded
    layout = _copy(original, ram_root / "killed")
    _lose_index(layout)
    config = _offline_config(tmp_path, layout.data_dir)
    listener, notify_path = _notify_socket(tmp_path)
    log_path = tmp_path / "first.log"
    with open(log_path, "wb") as log_file:
        first = subprocess.Popen([sys.executable, "-m", "edgenvr", "run", "--config", str(config)],
                                 stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "NOTIFY_SOCKET": str(notify_path)})
    messages: list[str] = []
    reported = 0   # rows the killed rebuild said it had committed
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None and "READY=1" not in messages:
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                continue
            if re.search(r"\b([2-9]|\d\d+) batches committed", messages[-1]):
                first.send_signal(signal.SIGKILL)
                reported = int(re.search(r"(\d+) rows added", messages[-1])[1])
                break
        assert reported, f"the rebuild ended before two batches were committed: {messages[-3:]}\n{log_path.read_text()[-2000:]}"
        assert first.wait(10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
        listener.close()
    progress = [m for m in messages if m.startswith("STATUS=")]
    assert progress and all("\nEXTEND_TIMEOUT_USEC=120000000" in m for m in progress), messages[:3]
    assert "is missing but the data dir has video" in log_path.read_text()
    with sqlite3.connect(layout.index_path) as conn:
        kept = conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
    conn.close()
    assert reported <= kept < len(rows), "what was reported committed is there, and the rebuild was not done"

    second = start_supervisor(config, tmp_path / "second.log")
    try:
        second.wait_for_log("start-up reconcile took", timeout=120)
    finally:
        assert second.stop() == 0
    log = second.log()
    assert "is missing" not in log and "corrupt" not in log, "a half-built index is resumed, not rebuilt again"
    summary = re.search(r"start-up reconcile took .* (\d+) rows, (\d+) files; .* unindexed files (\d+)", log)
    assert summary is not None, log[-2000:]
    assert (int(summary[1]), int(summary[3])) == (kept, len(rows) - kept), "committed adoptions are not redone"
    assert _rows(layout) == rows
    with open_readonly(layout) as conn:
        assert check_consistency(conn, layout).consistent
        assert conn.execute("SELECT COUNT(*) FROM gaps").fetchone()[0] == 0
    assert "Traceback" not in log + log_path.read_text()


def test_an_index_from_a_newer_edgenvr_is_refused_and_left_where_it_is(tmp_path: Path, supervisors: list) -> None:
    layout = StorageLayout(tmp_path / "data")
    conn = index_schema.connect(layout.index_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = layout.index_path.read_bytes()
    supervisors.append(start_supervisor(_offline_config(tmp_path, layout.data_dir), tmp_path / "edgenvr.log"))
    supervisor = supervisors[0]
    with pytest.raises(AssertionError, match="exited with"):   # it refuses to start
        supervisor.wait_for_log("recording 8 cameras", timeout=30)
    assert supervisor.process.returncode != 0
    assert re.search(r"cannot open index .*newer", supervisor.log())
    assert layout.index_path.read_bytes() == before
    assert not list(layout.data_dir.glob("index.sqlite3.corrupt-*")), "a newer index is not corrupt"


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory, h264_clip: Path, simulator_ready: None) -> Iterator[SimulatedCamera]:
    root = tmp_path_factory.mktemp("camera")
    with SimulatedCamera({"cam": (h264_clip, "h264")}, log_path=root / "cam.log") as running:
        yield running


RECORDED = "camera, start_ms, end_ms, bytes, sha256, codec, width, height, packets, wall_end_ms"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_index_is_moved_aside_and_rebuilt_and_recording_resumes(
        damage: str, camera: SimulatedCamera, tmp_path: Path, supervisors: list) -> None:
    layout = StorageLayout(tmp_path / "data")
    config = tmp_path / "edgenvr.toml"
    config.write_text(config_text(layout.data_dir, {"door": camera.url("cam")}, segment_seconds=2))
    supervisors.append(start_supervisor(config, tmp_path / "first.log"))
    supervisors[0].wait_for_log("door: recording")
    time.sleep(7)
    assert supervisors[0].stop() == 0
    with open_readonly(layout) as conn:
        recorded = {tuple(r) for r in conn.execute(f"SELECT {RECORDED} FROM segments")}
    conn.close()
    assert len(recorded) >= 2
    size = layout.index_path.stat().st_size
    if damage == "garbage":   # a card that returns someone else's blocks
        layout.index_path.write_bytes(os.urandom(size))
    else:                     # a file system repair that cut the file
        os.truncate(layout.index_path, size // 2)
    damaged = layout.index_path.read_bytes()

    restarted_ms = time.time() * 1000
    supervisors.append(start_supervisor(config, tmp_path / "second.log"))
    supervisors[1].wait_for_log("door: recording")
    time.sleep(5)
    assert supervisors[1].stop() == 0

    log = supervisors[1].log()
    moved = [p for p in layout.data_dir.glob("index.sqlite3.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(moved) == 1 and moved[0].read_bytes() == damaged, "kept as it was, not deleted"
    assert re.search(rf"ERROR .*index .* is corrupt \(.+\): moved to {re.escape(str(moved[0]))} .*holds", log), log[-3000:]
    assert re.search(rf"index rebuilt \(it was corrupt: .+\): {len(recorded)} segments indexed from their files", log)
    with open_readonly(layout) as conn:
        after = {tuple(r) for r in conn.execute(f"SELECT {RECORDED} FROM segments WHERE start_ms < ?", (restarted_ms,))}
        origins = {r[0] for r in conn.execute("SELECT origin FROM segments WHERE start_ms < ?", (restarted_ms,))}
        new = conn.execute("SELECT COUNT(*) FROM segments WHERE start_ms > ?", (restarted_ms,)).fetchone()[0]
        assert check_consistency(conn, layout).consistent
    conn.close()
    assert after == recorded and origins == {"adopted"}, "every segment is back, with the row it was recorded with"
    assert new >= 1, "recording resumed"
    assert "Traceback" not in log
