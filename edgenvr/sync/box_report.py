"""The box's health report to the city hub (sent over the channel every minute and whenever what matters
changes; the hub's fleet view reads it, hub.fleet): cameras' recorder states, open tamper events, disk,
backlog, temperature, whether the clock is synchronised, software version.

Owns the report's content. Invariants: built only from what the index and the OS already say (the sync process
reads the index; it never asks the recorders), so reporting cannot disturb recording; `what_matters` is the
part whose change is sent at once (free bytes and temperature drift all the time and wait for the minute).
Failure paths: no temperature sensor -> null; sqlite3 errors propagate (the channel tries on the next look).
"""

from __future__ import annotations

import shutil
import sqlite3
from typing import Any

import psutil

import edgenvr
from edgenvr.config.records import Config
from edgenvr.core.clock import Clock
from edgenvr.core.records import RecorderState
from edgenvr.index.queries import camera_states
from edgenvr.sync import outbox
from edgenvr.sync.hub_protocol import MessageType


def box_report(conn: sqlite3.Connection, config: Config, clock: Clock) -> dict[str, Any]:
    states = {row["id"]: row for row in camera_states(conn)}
    cameras = []
    for camera in config.cameras:
        row = states.get(camera.id)
        cameras.append({"id": camera.id, "state": row["state"] if row else RecorderState.UNKNOWN,
                        "since_ms": row["state_since_ms"] if row else None,
                        "reason": row["state_reason"] if row else "never recorded"})
    tamper = [{"camera": camera, "subkind": subkind, "start_ms": start}
              for camera, subkind, start in conn.execute(
                  "SELECT camera, subkind, start_ms FROM events WHERE kind = 'tamper' AND end_ms IS NULL"
                  " ORDER BY start_ms")]
    waiting = outbox.backlog(conn)
    disk = shutil.disk_usage(config.storage.data_dir)
    return {"type": MessageType.REPORT, "version": edgenvr.__version__, "sent_ms": clock.now_ms(),
            "cameras": cameras, "tamper": tamper,
            "backlog": {"count": waiting.count, "oldest_ms": waiting.oldest_ms, "bytes_built": waiting.bytes_known,
                        "last_error": waiting.last_error},
            "disk": {"total_bytes": disk.total, "free_bytes": disk.free},
            "temperature_c": _temperature(), "clock_synchronised": clock.synchronised()}


def what_matters(report: dict[str, Any]) -> tuple[Any, ...]:
    """What is sent as soon as it changes: camera states, tamper, backlog count, clock sync."""
    return (tuple((c["id"], c["state"]) for c in report["cameras"]),
            tuple((t["camera"], t["subkind"], t["start_ms"]) for t in report["tamper"]),
            report["backlog"]["count"], report["clock_synchronised"])


def _temperature() -> float | None:
    """The hottest sensor the kernel reports (a Pi's SoC, an x86's package), rounded; None without sensors."""
    try:
        sensors = psutil.sensors_temperatures()
    except (AttributeError, OSError):   # not on this platform, or unreadable
        return None
    readings = [entry.current for entries in sensors.values() for entry in entries if entry.current]
    return round(max(readings), 1) if readings else None
