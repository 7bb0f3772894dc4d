"""What every edgenvr process does first: logging format, dying with its parent, and the data-dir locks.

Locks (flock, released by the kernel when a process dies, so a crash never leaves a stale lock):
- the supervisor holds `.supervisor.lock` exclusively: two supervisors never share a data dir;
- each worker process (recorders and motion) holds `.recorders.lock` shared; a starting supervisor takes it
  exclusively (waiting) before it reconciles, so no recorder of a killed supervisor can still be writing while
  the disk is checked.
The thread per camera that recorder and motion processes run is core.camera_threads.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Callable

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def setup_logging(level: str, name: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies, so a killed supervisor leaves no orphans."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def die_with_parent_preexec(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A subprocess preexec_fn that makes the child get `sig` when its parent dies (Linux; None elsewhere).

    prctl is resolved here, before fork: nothing may be loaded between fork and exec."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: nobody would signal us
            os._exit(1)

    return preexec


def lock_file(path: Path, exclusive: bool, wait_seconds: float) -> IO[str] | None:
    """Open and flock `path`; returns the open file (keep it open to hold the lock) or None on timeout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    # Real time, not a Clock: this waits for another process to let go of the lock.
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(handle, mode)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                return None
            time.sleep(0.05)


_held_locks: list[IO[str]] = []


# The niceness of processes that serve people or the hub (web, sync): when the two cores are full, the
# recorders, motion workers and the supervisor's index commits get the CPU first. Measured with 50 busy playback
# clients: at equal priority the supervisor's commit p95 went from 1.4 to 5.8 ms (benchmarks/playback.py).
BACKGROUND_NICE = 10


def become_child_process(shared_lock: Path | None, name: str, log_level: str, *, nice: int = 0) -> None:
    """A worker process's start: die with the supervisor, a readable name, logging, its niceness raised by
    `nice` (BACKGROUND_NICE for work that must yield to recording), and `shared_lock` (if any) held shared for
    the process's life (the supervisor's start-up waits for it to be free)."""
    die_with_parent()
    refused_nice = None
    if nice:
        try:
            os.nice(nice)   # only ever raised: never needs privileges (edgenvr.service allows setpriority for it)
        except OSError as error:   # a sandbox refusing the call: serve at the same priority rather than not at all
            refused_nice = error
    try:  # `ps -o comm`/`top` then show "recorders-1", "motion-1" instead of "python3"
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
    setup_logging(log_level, name)
    if refused_nice is not None:
        logging.getLogger(__name__).warning("cannot lower this process's priority (%s): it competes with recording "
                                            "for the CPU", refused_nice)
    if shared_lock is None:
        return
    lock = lock_file(shared_lock, exclusive=False, wait_seconds=30)
    if lock is None:
        logging.getLogger(__name__).error("cannot take the lock %s", shared_lock)
        os._exit(1)
    _held_locks.append(lock)
