"""The thread-per-camera group of the recorder and motion processes (core.camera_threads), with fake camera
loops: a bug in one camera restarts that camera alone, with its backoff; SIGTERM stops every camera and
closes the bus senders. test_crash_safety.py and test_motion_pipeline.py run the real processes."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Iterator

import pytest

from edgenvr.core.camera_threads import RestartBackoff, run_camera_threads


class FakeSender:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeLoop:
    """Raises `failures` times, then works until stopped; the last camera to work sends SIGTERM."""

    def __init__(self, camera_id: str, failures: int, working: threading.Barrier) -> None:
        self.camera_id = camera_id
        self.bus = FakeSender()
        self.failures = failures
        self.working = working
        self.stopped = threading.Event()
        self.pauses: list[float] = []
        self.restarts = 0
        self.runs = 0

    def run(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise RuntimeError(f"bug #{self.runs}")
        if self.working.wait(10) == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        assert self.stopped.wait(10)

    def stop(self) -> None:
        self.stopped.set()

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)

    def restarting(self) -> None:
        self.restarts += 1


@pytest.fixture
def own_signal_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_failing_camera_restarts_with_backoff_and_sigterm_stops_them_all(
        own_signal_handlers: None, caplog: pytest.LogCaptureFixture) -> None:
    working = threading.Barrier(2)
    broken, steady = FakeLoop("broken", failures=4, working=working), FakeLoop("steady", failures=0, working=working)
    extra = FakeSender()
    ticks: list[int] = []
    with caplog.at_level(logging.ERROR):
        run_camera_threads([broken, steady], thread_prefix="camera", what="recorder", log=logging.getLogger("test"),
                           backoff=RestartBackoff(first_seconds=1.0, max_seconds=4.0),
                           tick=lambda: ticks.append(1), senders=[extra])
    assert broken.pauses == [1.0, 2.0, 4.0, 4.0] and broken.restarts == 4 and broken.runs == 5
    assert steady.pauses == [] and steady.runs == 1
    assert broken.stopped.is_set() and steady.stopped.is_set()
    assert broken.bus.closed and steady.bus.closed and extra.closed
    assert ticks, "the main thread's tick never ran"
    restarts = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert restarts[0] == "camera broken: recorder failed; restarting it in 1 s" and len(restarts) == 4
    assert all(r.exc_info for r in caplog.records if "failed" in r.getMessage())
