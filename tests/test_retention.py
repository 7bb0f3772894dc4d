"""The disk ring on a real small filesystem (tmpfs): recording goes on, the quota and the free-space floor
hold at every moment, and the oldest video goes first."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from conftest import CLIP_CACHE, config_text, edgenvr, start_supervisor

from edgenvr.config.values import parse_size
from edgenvr.index.queries import open_readonly
from edgenvr.index.reconcile import check_consistency
from edgenvr.simulator import SimulatedCamera, make_clip
from edgenvr.storage.layout import StorageLayout

RUN_SECONDS = 45


@pytest.fixture
def small_disks(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    mounts = [tmp_path / "quota-disk", tmp_path / "floor-disk"]
    for mount in mounts:
        mount.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs (the disk-full tests need root): {result.stderr.strip()}")
    try:
        yield mounts[0], mounts[1]
    finally:
        for mount in mounts:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def _used_bytes(directory: Path) -> int:
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def test_ring_keeps_quota_and_free_space_floor_while_recording(small_disks: tuple[Path, Path], tmp_path: Path,
                                                               simulator_ready: None, supervisors: list) -> None:
    quota_disk, floor_disk = small_disks
    clip = make_clip(CLIP_CACHE / "vga-3mbit.h264", width=640, height=480, fps=25, seconds=4, bitrate=3_000_000)
    # The ring keeps what the limit leaves after its headroom (retention.policy.headroom_bytes + room_bytes: 9 s
    # of writes with 2 s segments and 1 s sweeps, ~3.4 MB at this clip's 3 Mbit/s): the limits leave room for
    # 4-6 segments of ~0.75 MB, so "at least 3 kept" holds with a margin (5 MB / 10 MB floor left 2-3: flaky).
    cases = {
        # quota binds: 7 MB of a 16 MB disk
        quota_disk: dict(quota="7MB", min_free="1MB"),
        # free-space floor binds: the quota would allow the whole disk
        floor_disk: dict(quota="100%", min_free="8MB"),
    }
    with SimulatedCamera({"cam": (clip, "h264")}, log_path=tmp_path / "cam.log") as camera:
        for disk, limits in cases.items():
            config = tmp_path / f"{disk.name}.toml"
            config.write_text(config_text(disk / "data", {"gate": camera.url("cam")}, segment_seconds=2, **limits))
            supervisors.append(start_supervisor(config, tmp_path / f"{disk.name}.log"))
        seen: dict[Path, set[int]] = {disk: set() for disk in cases}
        worst_used = {disk: 0 for disk in cases}
        worst_free = {disk: 1 << 62 for disk in cases}
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline:
            for disk in cases:
                layout = StorageLayout(disk / "data")
                worst_used[disk] = max(worst_used[disk], _used_bytes(layout.data_dir))
                worst_free[disk] = min(worst_free[disk], shutil.disk_usage(disk).free)
                seen[disk] |= {int(p.name.split(".")[0]) for p in layout.segments_dir.glob("*/*/*/*.mp4")}
            time.sleep(0.2)
        for supervisor in supervisors:
            assert supervisor.stop() == 0
        for disk in cases:  # the segment open at the stop is closed and indexed by the stop
            seen[disk] |= {int(p.name.split(".")[0]) for p in StorageLayout(disk / "data").segments_dir.glob("*/*/*/*.mp4")}

    for disk, limits in cases.items():
        layout = StorageLayout(disk / "data")
        written = sum(1 for _ in seen[disk])
        if limits["quota"].endswith("MB"):
            assert worst_used[disk] <= parse_size(limits["quota"]), (disk.name, worst_used[disk])
        assert worst_free[disk] >= parse_size(limits["min_free"]), (disk.name, worst_free[disk])
        with open_readonly(layout) as conn:
            kept = [r[0] for r in conn.execute("SELECT start_ms FROM segments ORDER BY start_ms")]
            assert check_consistency(conn, layout).consistent
        deleted = sorted(seen[disk] - set(kept))
        assert deleted, f"{disk.name}: the ring never had to delete ({written} segments); test too short"
        assert max(deleted) < min(kept), f"{disk.name}: something newer was deleted before something older"
        # recording went on to the end: the newest kept segment is recent
        assert kept and max(seen[disk]) == kept[-1]
        assert len(kept) >= 3, f"{disk.name}: ring holds too little to be useful: {len(kept)} segments"
        log = (tmp_path / f"{disk.name}.log").read_text()
        assert "retention: deleted" in log
        assert "Traceback" not in log and "No space left" not in log


def test_max_age_drops_old_continuous_video(tmp_path: Path, h264_clip: Path, simulator_ready: None,
                                            supervisors: list) -> None:
    max_age_s = 8
    with SimulatedCamera({"cam": (h264_clip, "h264")}, log_path=tmp_path / "cam.log") as camera:
        config = tmp_path / "c.toml"
        config.write_text(config_text(tmp_path / "data", {"gate": camera.url("cam")}, segment_seconds=1,
                                      extra_storage=f"max_age_days = {max_age_s / 86400}"))
        supervisor = start_supervisor(config, tmp_path / "edgenvr.log")
        supervisors.append(supervisor)
        time.sleep(22)
        checked_at_ms = int(time.time() * 1000)
        layout = StorageLayout(tmp_path / "data")
        with open_readonly(layout) as conn:
            oldest = conn.execute("SELECT MIN(start_ms), COUNT(*) FROM segments").fetchone()
        assert supervisor.stop() == 0
    # one sweep interval (1 s) plus the index commit (1 s) of slack
    assert checked_at_ms - oldest[0] <= (max_age_s + 3) * 1000, oldest
    assert oldest[1] >= max_age_s - 2, "the ring should still hold the last max_age seconds"
    assert "max_age_days" in supervisor.log()


def test_disk_filled_by_something_else_is_reported_and_recording_resumes(
        small_disks: tuple[Path, Path], tmp_path: Path, h264_clip: Path, simulator_ready: None,
        supervisors: list) -> None:
    disk = small_disks[0]
    with SimulatedCamera({"cam": (h264_clip, "h264")}, log_path=tmp_path / "cam.log") as camera:
        config = tmp_path / "c.toml"
        config.write_text(config_text(disk / "data", {"gate": camera.url("cam")}, segment_seconds=1,
                                      quota="100%", min_free="0"))
        supervisor = start_supervisor(config, tmp_path / "edgenvr.log")
        supervisors.append(supervisor)
        supervisor.wait_for_log("gate: recording")
        time.sleep(3)
        filler = disk / "someone-elses-file"
        filling = threading.Event()
        filling.set()

        def fill() -> None:  # a runaway process: takes every byte that comes free, until stopped
            with open(filler, "wb", buffering=0) as f:
                while filling.is_set():
                    try:
                        f.write(b"\0" * 4096)
                    except OSError:
                        time.sleep(0.01)

        thread = threading.Thread(target=fill, daemon=True)
        thread.start()
        supervisor.wait_for_log("No space left on device", timeout=30)
        time.sleep(4)
        filling.clear()
        thread.join(10)
        filler.unlink()
        freed_at_ms = int(time.time() * 1000)
        deadline = time.monotonic() + 30   # recording resumes: three new segments indexed (~6 s)
        resumed = 0
        while time.monotonic() < deadline and resumed < 3:
            time.sleep(0.5)
            with open_readonly(StorageLayout(disk / "data")) as conn:
                resumed = conn.execute("SELECT COUNT(*) FROM segments WHERE start_ms > ?", (freed_at_ms,)).fetchone()[0]
        assert supervisor.stop() == 0
    log = supervisor.log()
    assert "Traceback" not in log and " exited with code" not in log
    assert "ALERT: disk full" in log  # the emergency reserve let the index commit and the ring make room
    layout = StorageLayout(disk / "data")
    with open_readonly(layout) as conn:
        assert check_consistency(conn, layout).consistent
        resumed = conn.execute("SELECT COUNT(*) FROM segments WHERE start_ms > ?", (freed_at_ms,)).fetchone()[0]
        states = conn.execute("SELECT state FROM cameras").fetchall()
    assert resumed >= 3, "recording did not resume after space came back"
    assert states and states[0][0] == "stopped"


def test_video_held_from_the_cli_survives_the_ring_while_recording(small_disks: tuple[Path, Path], tmp_path: Path,
                                                                  simulator_ready: None, supervisors: list) -> None:
    disk = small_disks[0]
    clip = make_clip(CLIP_CACHE / "vga-3mbit.h264", width=640, height=480, fps=25, seconds=4, bitrate=3_000_000)
    layout = StorageLayout(disk / "data")
    with SimulatedCamera({"cam": (clip, "h264")}, log_path=tmp_path / "cam.log") as camera:
        config = tmp_path / "c.toml"
        # the ring keeps ~8 segments (16 s: the `hold add` below has that long to start and commit on a loaded
        # machine before the first ones are due)
        config.write_text(config_text(layout.data_dir, {"gate": camera.url("cam")}, segment_seconds=2,
                                      quota="10MB", min_free="1MB"))
        supervisor = start_supervisor(config, tmp_path / "edgenvr.log")
        supervisors.append(supervisor)
        deadline = time.monotonic() + 30
        first: list = []
        while time.monotonic() < deadline and len(first) < 2:
            time.sleep(0.5)
            if layout.index_path.exists():
                with open_readonly(layout) as conn:
                    first = conn.execute("SELECT start_ms, end_ms FROM segments WHERE deleting = 0"  # as readers see it
                                         " ORDER BY start_ms LIMIT 2").fetchall()
        assert len(first) == 2, "nothing recorded"
        held = edgenvr("hold", "add", "--config", str(config), "--camera", "gate", "--from", f"{first[0][0]}ms",
                       "--to", f"{first[1][1]}ms", "--reason", "incident 1")
        assert held.returncode == 0, held.stderr
        deadline = time.monotonic() + 90   # until the ring has turned over past the held video (~30 s)
        oldest_in_ring = None
        while time.monotonic() < deadline and (oldest_in_ring is None or oldest_in_ring <= first[1][0] + 10_000):
            time.sleep(0.5)
            with open_readonly(layout) as conn:
                oldest_in_ring = conn.execute("SELECT MIN(start_ms) FROM segments WHERE retention_class != 2"
                                              " AND deleting = 0").fetchone()[0]
        assert supervisor.stop() == 0
    with open_readonly(layout) as conn:
        kept = [(r[0], r[1]) for r in conn.execute("SELECT start_ms, retention_class FROM segments ORDER BY start_ms")]
        assert check_consistency(conn, layout).consistent
    assert [start for start, cls in kept if cls == 2] == [first[0][0], first[1][0]], "held video was deleted"
    ring = [start for start, cls in kept if cls != 2]
    assert ring and ring[0] > first[1][0] + 10_000, "the ring did not turn over past the held video"
    assert "retention: deleted" in supervisor.log() and "Traceback" not in supervisor.log()
