"""systemd's notify protocol (sd_notify(3)): READY, WATCHDOG and STOPPING for a Type=notify unit with a
watchdog, and STATUS with EXTEND_TIMEOUT_USEC while a long start-up (rebuilding the index) makes progress.
A datagram to $NOTIFY_SOCKET; outside systemd (no socket) nothing happens."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def sd_notify(message: str) -> None:
    """systemd Type=notify readiness and watchdog pings; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError as exc:
            log.debug("sd_notify failed: %s", exc)


def notify_progress(status: str, next_within_seconds: float) -> None:
    """Show `status` in `systemctl status` and give the current phase (start-up) `next_within_seconds` more
    to send the next message: a start-up that keeps making progress is never killed by TimeoutStartSec,
    one that stops is killed that long after its last report. systemd never shortens the configured
    timeout this way (EXTEND_TIMEOUT_USEC only extends it)."""
    text = " ".join(status.split())   # one line: a newline would start another assignment
    sd_notify(f"STATUS={text}\nEXTEND_TIMEOUT_USEC={int(next_within_seconds * 1_000_000)}")
