"""What the box can say about its clock's time synchronisation, for people: synchronised yes/no, and what
systemd-timesyncd says about its NTP server (name, address, the last exchange, the offset it measured then,
its poll interval). `edgenvr status`, the web's /api/status and the box's health report to the hub
(sync.box_report) all show this one record.

Sources, one per fact:
- "synchronised" is `Clock.synchronised()` (core.clock: the kernel's adjtimex answer, else timesyncd's flag
  file), the same answer every segment records in its clock record: status never says "synchronised" about a
  moment the recordings call unsynchronised.
- The NTP details are systemd-timesyncd's D-Bus properties (org.freedesktop.timesync1: ServerName,
  ServerAddress, PollIntervalUSec, NTPMessage), read with `busctl --json=short` (systemd's own client, which
  gives the exact microsecond timestamps; `timedatectl show-timesync` prints them rounded to the second, so no
  offset could be computed from it). The offset is NTP's ((T2 - T1) + (T3 - T4)) / 2 of the last exchange, as
  `timedatectl timesync-status` shows it.

Invariants: reading never changes anything and never raises; whatever cannot be read is None, with
`unknown` saying why in words ("busctl not available: not a systemd system", timesyncd not running, ...).
Nothing here is secret. The NTP part can be cached (`max_age_s`) for callers that look often (the health
report looks every 5 s); "synchronised" is always read afresh.
Failure paths: busctl missing, failing (no system bus, timesyncd not running, a sandbox refusing), slow
(more than BUSCTL_TIMEOUT_S), or answering something unexpected -> the NTP fields None and `unknown` says which.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from edgenvr.core.clock import Clock

BUSCTL_TIMEOUT_S = 2.0   # D-Bus may start timesyncd's answer first; a status never waits longer than this
_TIMESYNC = ("org.freedesktop.timesync1", "/org/freedesktop/timesync1", "org.freedesktop.timesync1.Manager")
_PROPERTIES = ("ServerName", "ServerAddress", "PollIntervalUSec", "NTPMessage")
_NTP_MESSAGE_TYPE = "(uuuuittayttttbtt)"   # leap, version, mode, stratum, precision, root delay, root dispersion,
# reference, origin (T1), receive (T2), transmit (T3), destination (T4) in µs of the realtime clock, spike, packets,
# jitter: systemd's timesyncd-bus.c


@dataclass(frozen=True)
class TimeSync:
    synchronised: bool                  # the kernel's word (core.clock), the one the recordings carry
    server: str | None = None           # the NTP server timesyncd uses (its name as configured)
    server_address: str | None = None
    last_sync_ms: int | None = None     # when the last NTP answer arrived (T4), UTC epoch ms
    offset_ms: float | None = None      # how far off the clock was at that exchange (+: it was behind)
    poll_interval_s: float | None = None
    stratum: int | None = None
    unknown: str | None = None          # why the NTP details are unknown (None: they were read)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self, format_ms: Callable[[int | None], str]) -> str:
        """One line for people: "synchronised; NTP server ... (1.2.3.4), last sync ..., offset +1.2 ms"."""
        words = ["synchronised" if self.synchronised else "NOT synchronised"]
        if self.unknown is not None:
            words.append(f"NTP: unknown ({self.unknown})")
        elif self.server is None and self.server_address is None:
            words.append("NTP: no server contacted yet")
        else:
            server = self.server or self.server_address
            if self.server and self.server_address and self.server_address != self.server:
                server = f"{self.server} ({self.server_address})"
            words.append(f"NTP server {server}")
            if self.last_sync_ms is not None:
                words.append(f"last sync {format_ms(self.last_sync_ms)}")
            if self.offset_ms is not None:
                words.append(f"offset {self.offset_ms:+.1f} ms")
            if self.poll_interval_s is not None:
                words.append(f"polled every {self.poll_interval_s:.0f} s")
        return "; ".join(words)


@dataclass(frozen=True)
class _NtpDetails:
    server: str | None = None
    server_address: str | None = None
    last_sync_ms: int | None = None
    offset_ms: float | None = None
    poll_interval_s: float | None = None
    stratum: int | None = None
    unknown: str | None = None


_cache_lock = threading.Lock()
_cached: tuple[float, _NtpDetails] | None = None


def time_sync_state(clock: Clock, *, max_age_s: float = 0.0) -> TimeSync:
    """The clock's synchronisation now; the NTP details read afresh, or reused when read less than
    `max_age_s` ago (real seconds: this waits on another process, not on edgenvr's clock)."""
    global _cached
    synchronised = clock.synchronised()
    with _cache_lock:
        cached = _cached
    if max_age_s > 0 and cached is not None and time.monotonic() - cached[0] < max_age_s:
        details = cached[1]
    else:
        details = _read_timesyncd()
        with _cache_lock:
            _cached = (time.monotonic(), details)
    return TimeSync(synchronised, details.server, details.server_address, details.last_sync_ms, details.offset_ms,
                    details.poll_interval_s, details.stratum, details.unknown)


def _read_timesyncd() -> _NtpDetails:
    if shutil.which("busctl") is None:
        return _NtpDetails(unknown="busctl not available: not a systemd system")
    try:
        done = subprocess.run(["busctl", "--json=short", "get-property", *_TIMESYNC, *_PROPERTIES],
                              capture_output=True, text=True, timeout=BUSCTL_TIMEOUT_S, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return _NtpDetails(unknown=f"systemd-timesyncd did not answer within {BUSCTL_TIMEOUT_S:.0f} s")
    except OSError as error:
        return _NtpDetails(unknown=f"busctl cannot run: {error.strerror or error}")
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:200]
        return _NtpDetails(unknown=f"systemd-timesyncd cannot be asked: {reason}")
    try:
        values = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        return _details(dict(zip(_PROPERTIES, values, strict=True)))
    except (ValueError, TypeError, KeyError, IndexError):
        return _NtpDetails(unknown="systemd-timesyncd answered in a form this edgenvr does not know")


def _details(values: dict[str, dict[str, Any]]) -> _NtpDetails:
    """The NTP details from busctl's JSON of each property ({"type": signature, "data": value})."""
    def data(name: str, signature: str) -> Any:
        if values[name]["type"] != signature:
            raise ValueError(f"{name} is {values[name]['type']}, not {signature}")
        return values[name]["data"]

    server = data("ServerName", "s") or None
    family, raw_address = data("ServerAddress", "(iay)")
    address = None
    if family in (socket.AF_INET, socket.AF_INET6) and raw_address:
        address = str(ipaddress.ip_address(bytes(raw_address)))
    poll = data("PollIntervalUSec", "t")
    message = data("NTPMessage", _NTP_MESSAGE_TYPE)
    if len(message) != 15:
        raise ValueError("NTPMessage has not 15 fields")
    stratum = message[3]
    origin, receive, transmit, destination = message[8:12]
    if not all(isinstance(t, int) and t > 0 for t in (origin, receive, transmit, destination)):
        # no exchange yet (timesyncd keeps zeros until its first answer)
        return _NtpDetails(server, address, poll_interval_s=poll / 1e6 if poll else None)
    offset_us = ((receive - origin) + (transmit - destination)) / 2
    return _NtpDetails(server, address, destination // 1000, round(offset_us / 1000, 3),
                       poll / 1e6 if poll else None, stratum if isinstance(stratum, int) and stratum > 0 else None)
