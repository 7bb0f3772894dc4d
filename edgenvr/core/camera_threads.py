"""A worker process's cameras, one thread each: what the recorder and the motion processes share.

Owns: one thread per camera and its restart after a bug, SIGTERM/SIGINT, the main thread's wait, and closing
the bus at exit. (The process's start, `become_child_process`, is in process_setup.)
Invariants:
- A bug that escapes one camera's loop is logged with its traceback and that camera alone restarts after a
  pause (doubling up to a maximum); the other cameras never notice. libav releases the GIL while it reads,
  so a camera blocked on a frozen stream holds up nobody.
- SIGTERM asks every camera to stop (each closes what it has open); SIGINT is ignored: Ctrl-C reaches the
  supervisor too, which stops its processes in order.
- The main thread waits only with timeouts: Python runs signal handlers there alone, between bytecodes. The
  handler only sets flags (and the loops' own stop flags); it takes no lock the main thread may hold.
- Every bus sender is closed before zmq's context is terminated (term() waits for open sockets).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import zmq

from edgenvr.core.bus import BusSender

# How often the main thread looks for a stop request and runs its tick. Real time: it waits for a signal.
TICK_SECONDS = 0.2


class CameraLoop(Protocol):
    """One camera's work in a worker process, as the thread group sees it."""

    @property
    def camera_id(self) -> str: ...

    @property
    def bus(self) -> BusSender: ...

    def run(self) -> None:
        """Work until asked to stop, then return."""

    def stop(self) -> None:
        """Ask `run` to return soon. Called from the signal handler: sets a flag, nothing more."""

    def pause(self, seconds: float) -> None:
        """Wait `seconds`, returning at once when asked to stop."""

    def restarting(self) -> None:
        """A bug escaped `run` (already logged); it runs again after a pause. Say so where it is shown."""


@dataclass(frozen=True)
class RestartBackoff:
    first_seconds: float
    max_seconds: float


@dataclass
class _StopRequest:
    requested: bool = False


def run_camera_threads(loops: Sequence[CameraLoop], *, thread_prefix: str, what: str, log: logging.Logger,
                       backoff: RestartBackoff, tick: Callable[[], None] | None = None,
                       join_seconds_after_stop: float | None = None, senders: Sequence[BusSender] = ()) -> None:
    """Run each loop in a thread named `<thread_prefix>-<camera>` until SIGTERM, then close the loops' bus
    senders, `senders`, and zmq. `tick` runs in the main thread every TICK_SECONDS (the motion process's
    heartbeats). After SIGTERM each thread is joined for `join_seconds_after_stop` (None: until it ends)."""
    stop = _StopRequest()

    def on_term(signum: int, frame: object) -> None:
        stop.requested = True
        for loop in loops:
            loop.stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the supervisor, which stops us in order
    threads = [threading.Thread(target=_run_until_stopped, args=(loop, stop, what, log, backoff),
                                name=f"{thread_prefix}-{loop.camera_id}", daemon=True) for loop in loops]
    for thread in threads:
        thread.start()
    while True:
        alive = [thread for thread in threads if thread.is_alive()]
        if not alive:
            break
        if tick is not None:
            tick()
        if stop.requested:
            for thread in threads:
                thread.join(join_seconds_after_stop)
            break
        alive[0].join(TICK_SECONDS)  # returns at once when that thread ends; signals run in between
    for loop in loops:
        loop.bus.close()
    for sender in senders:
        sender.close()
    zmq.Context.instance().term()


def _run_until_stopped(loop: CameraLoop, stop: _StopRequest, what: str, log: logging.Logger,
                       backoff: RestartBackoff) -> None:
    """Thread body: a bug that escapes one camera's loop is logged and that camera restarted."""
    pause = backoff.first_seconds
    while not stop.requested:
        try:
            loop.run()
            return
        except Exception:  # noqa: BLE001 - last line of defence for one camera's thread
            log.exception("camera %s: %s failed; restarting it in %.0f s", loop.camera_id, what, pause)
            loop.restarting()
            loop.pause(pause)
            pause = min(pause * 2, backoff.max_seconds)
