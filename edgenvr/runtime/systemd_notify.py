"""systemd's notify protocol (sd_notify(3)): READY, WATCHDOG and STOPPING for a Type=notify unit with a
watchdog. A datagram to $NOTIFY_SOCKET; outside systemd (no socket) nothing happens."""

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
