"""The one way edgenvr reads time: a `Clock` passed to whatever needs it, so days and weeks of recording,
retention and link outages are tested on a `SimulatedClock` without sleeping.

Invariants: `now_ms()` is the wall clock in UTC epoch milliseconds (an int; it may jump when NTP steps it);
`monotonic()` is seconds that never go back (for intervals, timeouts and schedules); `sleep()` waits
on that clock. Code never calls `time.time`/`time.monotonic`/`time.sleep` itself, except where it waits
on the real world outside edgenvr (sockets, child processes, the OS), which no simulation can speed up.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall clock, UTC epoch milliseconds."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences mean anything."""

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` on this clock."""


class SystemClock:
    """The machine's clocks."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


SYSTEM_CLOCK: Clock = SystemClock()


class SimulatedClock:
    """Time that moves only when told to: `advance()` (or `sleep()`, which advances) moves both clocks
    together; `step_wall_ms()` moves the wall clock alone, as NTP or a wrong RTC does. Thread-safe."""

    def __init__(self, epoch_ms: int = 1_764_547_200_000, monotonic: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self._epoch_ms = epoch_ms   # wall clock at monotonic == `monotonic`
        self._start = monotonic
        self._seconds = monotonic

    def now_ms(self) -> int:
        with self._lock:
            return self._epoch_ms + round((self._seconds - self._start) * 1000)

    def monotonic(self) -> float:
        with self._lock:
            return self._seconds

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        with self._lock:
            self._seconds += seconds

    def step_wall_ms(self, delta_ms: int) -> None:
        """The wall clock jumps by `delta_ms` (either way); the monotonic clock does not move."""
        with self._lock:
            self._epoch_ms += delta_ms
