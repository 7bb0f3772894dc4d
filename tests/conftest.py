"""Shared test fixtures: real test cameras (GStreamer RTSP server), real edgenvr processes, real files.

Tests are marked by what they use (`pytest_collection_modifyitems` below), so `pytest -m "not rtsp and not
slow"` runs the fast layer alone: `rtsp` for the GStreamer RTSP test camera, `slow` for real edgenvr
supervisors and other subprocesses.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from edgenvr.simulator import CLIP_CACHE, make_clip, simulator_unavailable_reason


@pytest.fixture
def current_event_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop set as the thread's current one, for code that drives the bus's asyncio zmq socket
    without running a loop (BusReceiver.receive_waiting). Needed because `asyncio.run` in an earlier test
    leaves no current loop behind (and asking for one then raises)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()

# What makes a test `rtsp` or `slow`: fixtures it requests (directly or through other fixtures), or names
# that its code or its fixtures' code uses (nested functions included).
RTSP_FIXTURES = {"simulator_ready"}
RTSP_NAMES = {"SimulatedCamera", "simulator_unavailable_reason"}
SLOW_FIXTURES = {"supervisors"}
SLOW_NAMES = {"start_supervisor", "edgenvr", "Popen", "run_supervisor"}


def _names_used(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _names_used(constant)
    return names


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        fixtures = set(item.fixturenames)
        names = _names_used(item.function.__code__)
        for fixture in fixtures:  # pytest has no public way to a fixture's function
            for definition in item._fixtureinfo.name2fixturedefs.get(fixture, ()):
                code = getattr(definition.func, "__code__", None)
                if code is not None:
                    names |= _names_used(code)
        if fixtures & RTSP_FIXTURES or names & RTSP_NAMES:
            item.add_marker(pytest.mark.rtsp)
        if fixtures & SLOW_FIXTURES or names & SLOW_NAMES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def simulator_ready() -> None:
    reason = simulator_unavailable_reason()
    if reason:
        pytest.fail(f"test camera unavailable: {reason}")


@pytest.fixture(scope="session")
def h264_clip() -> Path:
    return make_clip(CLIP_CACHE / "qvga-25fps-gop25.h264", codec="h264", width=320, height=240, fps=25, seconds=4)


@pytest.fixture(scope="session")
def h265_clip() -> Path:
    return make_clip(CLIP_CACHE / "qvga-25fps-gop25.h265", codec="h265", width=320, height=240, fps=25, seconds=4)


def config_text(data_dir: Path, cameras: dict[str, str], *, segment_seconds: float = 5, quota: str = "90%",
                min_free: str = "0", commit_seconds: float = 1, sweep_seconds: float = 1,
                extra_storage: str = "", cameras_per_process: int = 8, motion: bool = False) -> str:
    # Motion detection is off unless a test is about it: recording tests then measure recording alone.
    on = "true" if motion else "false"
    lines = ["[motion]", f"enabled = {on}", f"tamper = {on}", "[storage]", f'data_dir = "{data_dir}"', f'quota = "{quota}"', f'min_free = "{min_free}"',
             f"index_commit_seconds = {commit_seconds}", f"sweep_seconds = {sweep_seconds}", extra_storage,
             "[recording]", f"segment_seconds = {segment_seconds}", "read_timeout_seconds = 5",
             "connect_timeout_seconds = 5", "max_backoff_seconds = 2",
             f"cameras_per_process = {cameras_per_process}"]
    for camera_id, url in cameras.items():
        lines += ["[[cameras]]", f'id = "{camera_id}"', f'url = "{url}"']
    return "\n".join(lines) + "\n"


@dataclass
class RunningSupervisor:
    """`edgenvr run` as a real child process, its log in a file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"edgenvr exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not logged within {timeout} s:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


def edgenvr(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line as a technician types it, in a process of its own."""
    return subprocess.run([sys.executable, "-m", "edgenvr", *args], capture_output=True, text=True, timeout=60)


def start_supervisor(config_path: Path, log_path: Path) -> RunningSupervisor:
    log_file = open(log_path, "ab")
    process = subprocess.Popen([sys.executable, "-m", "edgenvr", "run", "--config", str(config_path)],
                               stdout=log_file, stderr=subprocess.STDOUT)
    log_file.close()
    return RunningSupervisor(process, log_path)


@pytest.fixture
def supervisors() -> Iterator[list[RunningSupervisor]]:
    """Supervisors a test starts; any still running at the end are killed."""
    started: list[RunningSupervisor] = []
    yield started
    for supervisor in started:
        if supervisor.process.poll() is None:
            supervisor.kill()
