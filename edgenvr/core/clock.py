"""The one way edgenvr reads time: a `Clock` passed to whatever needs it, so days and weeks of recording,
retention and link outages are tested on a `SimulatedClock` without sleeping.

Invariants: `now_ms()` is the wall clock in UTC epoch milliseconds (an int; it may jump when NTP steps it);
`monotonic()` is seconds that never go back (for intervals, timeouts and schedules); `sleep()` waits
on that clock. Code never calls `time.time`/`time.monotonic`/`time.sleep` itself, except where it waits
on the real world outside edgenvr (sockets, child processes, the OS), which no simulation can speed up.

Clock trust (docs/architecture.md, "Clock trust"): a box without a real-time clock (every Raspberry Pi)
starts at 1970 or where it last stopped, and NTP may step the wall clock either way at any time. So a Clock
also says what vouches for the wall clock:
- `synchronised()`: whether the kernel says its clock is synchronised (adjtimex(2): not TIME_ERROR and
  STA_UNSYNC clear), or else whether systemd-timesyncd says so (its flag file); anything unknown is "no".
- `boot_id()`: which boot of the machine this is (the kernel's random boot id, its first 64 bits as 16 hex
  digits: unique among one box's boots, and small enough for a segment's extended attribute).
- `boot_ms()`: the boot-time clock (CLOCK_BOOTTIME: counts suspend, never steps) in ms since the boot.
  `now_ms() - boot_ms()` moves only when the wall clock is stepped: that is how a jump is seen.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Protocol

log = logging.getLogger(__name__)

# adjtimex(2): the return value TIME_ERROR, or STA_UNSYNC in `status`, means the clock is not synchronised.
TIME_OK = 0
TIME_ERROR = 5
STA_UNSYNC = 0x0040
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")   # touched by timesyncd once it has synchronised
# A change of `now_ms() - boot_ms()` (or of a stream's wall-clock anchor) over this is a step of the wall clock:
# NTP slews at most 0.5 ms per second.
WALL_STEP_MS = 1000


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall clock, UTC epoch milliseconds."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences mean anything."""

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` on this clock."""

    def synchronised(self) -> bool:
        """Whether the wall clock is known to be synchronised (NTP) now."""

    def boot_id(self) -> str:
        """This boot of the machine: 16 hex digits, the same for every process until the next boot."""

    def boot_ms(self) -> int:
        """Milliseconds since this boot on a clock that counts suspend and is never stepped."""


def synchronised_from_adjtimex(state: int, status: int) -> bool:
    """The kernel's answer (adjtimex's return value and `status`) read as "synchronised"."""
    return state != TIME_ERROR and not status & STA_UNSYNC


class _Timex(ctypes.Structure):
    """struct timex up to `status` (the fields before it are `long` on every ABI), then room to spare:
    the kernel writes the whole structure, whose tail differs between ABIs and time_t sizes."""
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("_rest", ctypes.c_byte * 512)]


_libc: ctypes.CDLL | None = None


def read_adjtimex() -> tuple[int, int]:
    """(return value, status) of a read-only adjtimex(2) (modes 0). Raises OSError if refused (a sandbox
    without the call answers EPERM) or unavailable (not Linux)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    timex = _Timex()   # zeroed: modes 0 only reads
    state = _libc.adjtimex(ctypes.byref(timex))
    if state < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return state, timex.status


class SystemClock:
    """The machine's clocks. `adjtimex` and the timesyncd flag are injectable for tests."""

    def __init__(self, adjtimex: Callable[[], tuple[int, int]] = read_adjtimex,
                 timesyncd_flag: Path = TIMESYNCD_FLAG, boot_id_path: Path = BOOT_ID_PATH) -> None:
        self._adjtimex: Callable[[], tuple[int, int]] | None = adjtimex
        self._timesyncd_flag = timesyncd_flag
        self._boot_id_path = boot_id_path
        self._boot_id: str | None = None

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def synchronised(self) -> bool:
        if self._adjtimex is not None:
            try:
                return synchronised_from_adjtimex(*self._adjtimex())
            except (OSError, AttributeError) as exc:  # refused by a sandbox, or no adjtimex here: ask timesyncd
                log.info("cannot read the kernel clock's state (%s); using systemd-timesyncd's flag", exc)
                self._adjtimex = None
        # Without the kernel's answer, only timesyncd's flag vouches; no flag means "not known": not synchronised.
        return self._timesyncd_flag.exists()

    def boot_id(self) -> str:
        if self._boot_id is None:
            try:
                self._boot_id = boot_key(self._boot_id_path.read_text())
            except (OSError, ValueError) as exc:
                # No boot id to read (not Linux, or /proc hidden): this process counts as a boot of its own, so
                # nothing it records is ever vouched for by a clock it cannot see (safe, if less precise).
                self._boot_id = OWN_BOOT_PREFIX + uuid.uuid4().hex[:16 - len(OWN_BOOT_PREFIX)]
                log.warning("no kernel boot id (%s); this run counts as a boot of its own", exc)
        return self._boot_id

    def boot_ms(self) -> int:
        boottime = getattr(time, "CLOCK_BOOTTIME", None)   # Linux; elsewhere the monotonic clock (no suspend)
        if boottime is None:
            return time.monotonic_ns() // 1_000_000
        return time.clock_gettime_ns(boottime) // 1_000_000


# A boot id made up by a process that cannot read the kernel's: every process has its own, so nobody can
# check another's against it (core.record_validation skips the boot check then). A kernel id starting with
# it (1 in 65,536) only loses that check.
OWN_BOOT_PREFIX = "ffff"


def boot_key(boot_id: str) -> str:
    """The kernel's boot id (a UUID) as a Clock's `boot_id()`: its first 64 bits, 16 lower-case hex digits."""
    digits = uuid.UUID(boot_id.strip()).hex
    return digits[:16]


SYSTEM_CLOCK: Clock = SystemClock()


class SimulatedClock:
    """Time that moves only when told to: `advance()` (or `sleep()`, which advances) moves all clocks
    together; `step_wall_ms()` moves the wall clock alone, as NTP or a wrong RTC does; `set_synchronised()`
    is the simulated adjtimex source (what the kernel would answer); `reboot()` starts a new boot (new boot
    id, boot-time clock from near zero, the wall clock wherever the box's RTC or fake-hwclock puts it).
    Thread-safe."""

    def __init__(self, epoch_ms: int = 1_764_547_200_000, monotonic: float = 1000.0, *,
                 synchronised: bool = True, boot_id: str = "0000000000000001") -> None:
        self._lock = threading.Lock()
        self._epoch_ms = epoch_ms   # wall clock at monotonic == `monotonic`
        self._start = monotonic
        self._seconds = monotonic
        self._synchronised = synchronised
        self._boot_id = boot_id
        self._boot_started = 0.0    # monotonic seconds at which this boot's boot-time clock read 0

    def now_ms(self) -> int:
        with self._lock:
            return self._epoch_ms + round((self._seconds - self._start) * 1000)

    def monotonic(self) -> float:
        with self._lock:
            return self._seconds

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def synchronised(self) -> bool:
        with self._lock:
            return self._synchronised

    def boot_id(self) -> str:
        with self._lock:
            return self._boot_id

    def boot_ms(self) -> int:
        with self._lock:
            return round((self._seconds - self._boot_started) * 1000)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        with self._lock:
            self._seconds += seconds

    def step_wall_ms(self, delta_ms: int) -> None:
        """The wall clock jumps by `delta_ms` (either way); the monotonic and boot-time clocks do not move."""
        with self._lock:
            self._epoch_ms += delta_ms

    def set_synchronised(self, synchronised: bool) -> None:
        """What the simulated kernel answers from now on (adjtimex: TIME_OK, or TIME_ERROR with STA_UNSYNC)."""
        with self._lock:
            self._synchronised = synchronised

    def reboot(self, boot_id: str, wall_ms: int, *, synchronised: bool = False, boot_ms: int = 5000) -> None:
        """A new boot: `boot_id`, the boot-time clock at `boot_ms`, the wall clock at `wall_ms`, and (as at
        every boot before NTP answers) not synchronised unless said. The monotonic clock of this process
        goes on: a simulation outlives the boots it simulates."""
        with self._lock:
            self._boot_id = boot_id
            self._boot_started = self._seconds - boot_ms / 1000
            self._epoch_ms = wall_ms - round((self._seconds - self._start) * 1000)
            self._synchronised = synchronised
