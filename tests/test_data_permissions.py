"""Who can read what edgenvr records. A real `edgenvr run`, started with a shell's umask of 022, records a real
test camera with motion detection into a data directory made as systemd/edgenvr.tmpfiles.conf makes
/var/lib/edgenvr (set-group-ID to the viewer group); a technician approves a reference view from the same
shell. Everything created under the data dir (segments and their directories, the index and its -wal/-shm,
locks, the disk reserve, snapshots, reference views, a quarantined file and its reason) must be 0640 files
and 0750 directories (the reserve 0600) of the viewer group: viewers read, nobody else gets in.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Iterator

import pytest
from conftest import CLIP_CACHE, config_text, edgenvr, start_supervisor

from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.simulator import SimulatedCamera, counter_ignore_polygon, make_scene_clip
from edgenvr.storage.layout import StorageLayout, partial_path
from edgenvr.storage.permissions import make_data_dirs

VIEWER_GID = 4242  # stands for edgenvr-view: any group will do for a test run as root (CI runs as root)
SHELL_UMASK = 0o022


@pytest.fixture
def shell_umask() -> Iterator[None]:
    """The umask of a technician's shell, for this test and every process it starts."""
    previous = os.umask(SHELL_UMASK)
    yield
    os.umask(previous)


def _entries(data_dir: Path) -> dict[Path, os.stat_result]:
    found: dict[Path, os.stat_result] = {}
    for directory, _, files in os.walk(data_dir):
        for path in (Path(directory), *(Path(directory, name) for name in files)):
            try:
                found[path] = path.lstat()
            except FileNotFoundError:
                pass  # renamed or removed meanwhile (a .partial closed, a -wal checkpointed away)
    return found


def _expected_mode(path: Path, entry: os.stat_result) -> int:
    if stat.S_ISDIR(entry.st_mode):
        return 0o2750  # 0750, and the set-group-ID bit inherited from the data dir
    if path.name in (".reserve", "device.key"):
        return 0o600  # space held for the index; the box's private key: read by nobody else
    return 0o640


def _offenders(entries: dict[Path, os.stat_result], viewer_gid: int) -> list[str]:
    return [f"{path}: {stat.S_IMODE(entry.st_mode):o} group {entry.st_gid}" for path, entry in sorted(entries.items())
            if stat.S_IMODE(entry.st_mode) != _expected_mode(path, entry) or entry.st_gid != viewer_gid]


def _camera_block(camera_id: str, url: str) -> str:
    # the barcode strip changes every frame: ignored, or nothing would ever be calm enough for a reference view
    ignore = ", ".join(f"[{x:.4f}, {y:.4f}]" for x, y in counter_ignore_polygon(640, 360))
    return "\n".join(["[[cameras]]", f'id = "{camera_id}"', f'url = "{url}"', f'detect_url = "{url}"',
                      "[cameras.motion]", f"ignore = [[{ignore}]]"]) + "\n"


def test_recordings_are_readable_by_the_viewer_group_and_nobody_else(tmp_path: Path, shell_umask: None,
                                                                      simulator_ready: None) -> None:
    viewer_gid = VIEWER_GID if os.geteuid() == 0 else os.getgid()
    walk = make_scene_clip(CLIP_CACHE / "scenes" / "walk.h264", "walk")
    layout = StorageLayout(tmp_path / "data")
    layout.data_dir.mkdir()
    os.chown(layout.data_dir, -1, viewer_gid)
    os.chmod(layout.data_dir, 0o2750)
    # A segment a killed run left torn beyond repair (recorded 0640): start-up quarantines it with its reason.
    torn = partial_path(layout.segment_path("gate", SYSTEM_CLOCK.now_ms() - 3_600_000))
    make_data_dirs(torn.parent)
    descriptor = os.open(torn, os.O_WRONLY | os.O_CREAT, 0o640)
    os.write(descriptor, b"\x00not an mp4" * 100)
    os.close(descriptor)

    with SimulatedCamera({"walk": (walk.path, "h264", walk.fps)}, log_path=tmp_path / "camera.log") as camera:
        config = tmp_path / "edgenvr.toml"
        config.write_text(config_text(layout.data_dir, {}, motion=True, segment_seconds=2)
                          + _camera_block("gate", camera.url("walk")))
        supervisor = start_supervisor(config, tmp_path / "edgenvr.log")
        try:
            supervisor.wait_for_log("camera gate: recording")
            approve = edgenvr("reference", "approve", "--config", str(config), "--camera", "gate", "--by", "test")
            assert approve.returncode == 0, approve.stderr
            # the walker crosses the picture within the clip's first 15 s; its event's snapshot is written
            # when the event closes
            deadline = time.monotonic() + 75
            while not list((layout.data_dir / "snapshots").rglob("*.jpg")) and time.monotonic() < deadline:
                time.sleep(0.5)
            while_running = _entries(layout.data_dir)
        finally:
            assert supervisor.stop() == 0, supervisor.log()[-3000:]
    after_stop = _entries(layout.data_dir)

    names = {path.relative_to(layout.data_dir).as_posix() for path in {*while_running, *after_stop}}
    for wanted in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm", ".supervisor.lock", ".reserve"):
        assert wanted in names, sorted(names)
    for kind, pattern in (("segment", "segments/gate/*/*/*.mp4"), ("snapshot", "snapshots/gate/*/*.jpg"),
                          ("reference view", "references/gate/*.png"),
                          ("quarantined file", "quarantine/gate-*.partial"),
                          ("quarantine reason", "quarantine/*.reason.txt")):
        assert list(layout.data_dir.glob(pattern)), f"no {kind} was made: {sorted(names)}"
    assert _offenders(while_running, viewer_gid) == []
    assert _offenders(after_stop, viewer_gid) == []
