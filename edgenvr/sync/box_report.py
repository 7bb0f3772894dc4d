"""The box's health report to the city hub (sent over the channel every minute and whenever what matters
changes; the hub's fleet view reads it, hub.fleet): cameras' recorder states, open tamper events, disk,
backlog, temperature, whether the clock is synchronised and what its NTP server says (core.time_sync), software
version.

Owns the report's content. Invariants: built only from what the index and the OS already say (the sync process
reads the index; it never asks the recorders), so reporting cannot disturb recording; `what_matters` is the
part whose change is sent at once (free bytes and temperature drift all the time and wait for the minute).
Failure paths: no temperature sensor -> null; sqlite3 errors propagate (the channel tries on the next look).
"""

from __future__ import annotations

import shutil
import sqlite3
from typing import Any

import edgenvr
from edgenvr.config.records import Config
from edgenvr.core.clock import Clock
from edgenvr.core.host_sensors import hottest_temperature_c
from edgenvr.core.records import RecorderState
from edgenvr.core.time_sync import time_sync_state
from edgenvr.index.queries import camera_states
from edgenvr.sync import outbox
from edgenvr.sync.hub_protocol import REPORT_EVERY_S, MessageType


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
    # what timesyncd says is read once a report interval at most: the report is looked at every few seconds
    time_sync = time_sync_state(clock, max_age_s=REPORT_EVERY_S)
    return {"type": MessageType.REPORT, "version": edgenvr.__version__, "sent_ms": clock.now_ms(),
            "cameras": cameras, "tamper": tamper,
            "backlog": {"count": waiting.count, "oldest_ms": waiting.oldest_ms, "bytes_built": waiting.bytes_known,
                        "last_error": waiting.last_error},
            "disk": {"total_bytes": disk.total, "free_bytes": disk.free},
            "temperature_c": hottest_temperature_c(), "clock_synchronised": time_sync.synchronised,
            "time_sync": time_sync.to_json()}


def what_matters(report: dict[str, Any]) -> tuple[Any, ...]:
    """What is sent as soon as it changes: camera states, tamper, backlog count, clock sync."""
    return (tuple((c["id"], c["state"]) for c in report["cameras"]),
            tuple((t["camera"], t["subkind"], t["start_ms"]) for t in report["tamper"]),
            report["backlog"]["count"], report["clock_synchronised"])
