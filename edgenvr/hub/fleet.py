"""The fleet view: each box's last health report (sent over its channel every minute and on change, built by
sync.box_report) and what the city must look at: a box gone silent, a camera offline (a cut cable), tamper,
clips lost before they were sent (hub.lost_clips), an audit trail found changed (hub.audit_copies).

Owns the box_reports rows and the flags. Invariants:
- A report is stored as the box sent it, after a shape check (a JSON object of at most MAX_MESSAGE_BYTES with
  the fields read here of the right types): one bad report is refused whole, the last good one stays.
- Flags are computed when read, from the report's age on the reader's clock: a box that stopped talking is
  silent without anyone having to notice it.
Failure paths: a malformed report -> ReportRefused naming the field (the channel logs it and goes on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from edgenvr.core.records import RecorderState
from edgenvr.hub.hub_database import AUDIT_STATE, BOX_REPORTS, BOXES, LOST_CLIPS
from edgenvr.sync.hub_protocol import MAX_MESSAGE_BYTES, SILENT_AFTER_MS

OFFLINE_STATES = (RecorderState.OFFLINE, RecorderState.RECONNECTING)


class ReportRefused(Exception):
    """The report is not what a box sends; the message says what is wrong."""


@dataclass(frozen=True)
class BoxHealth:
    box: str
    site: str
    revoked: bool
    last_report_ms: int | None
    silent: bool                         # no report for longer than the silent limit (or never)
    version: str = ""
    cameras: dict[str, str] = field(default_factory=dict)       # camera -> recorder state
    cameras_offline: list[str] = field(default_factory=list)    # offline or reconnecting
    tamper: list[dict[str, Any]] = field(default_factory=list)  # open tamper events: camera, subkind, start_ms
    backlog: int = 0
    backlog_oldest_ms: int | None = None
    disk_free_percent: float | None = None
    temperature_c: float | None = None
    clock_synchronised: bool | None = None
    sync_problem: str = ""
    audit_problem: str = ""              # the first thing found wrong with its audit trail (hub.audit_copies)
    audit_seq: int = 0                   # the hub's copy of its audit trail ends at this record
    lost_clips: int = 0                  # clips it reported lost before it could send them (hub.lost_clips)


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "version": str, "cameras": list, "tamper": list, "backlog": dict, "disk": dict,
    "temperature_c": (float, int, type(None)), "clock_synchronised": bool}


def checked_report(text: str) -> dict[str, Any]:
    if len(text) > MAX_MESSAGE_BYTES:
        raise ReportRefused(f"a report is at most {MAX_MESSAGE_BYTES} bytes")
    try:
        report = json.loads(text)
    except ValueError as exc:
        raise ReportRefused(f"a report is JSON: {exc}") from None
    if not isinstance(report, dict):
        raise ReportRefused("a report is a JSON object")
    for name, kind in _FIELDS.items():
        if not isinstance(report.get(name), kind):
            raise ReportRefused(f"the report's {name!r} is missing or of the wrong type")
    for camera in report["cameras"]:
        if not (isinstance(camera, dict) and isinstance(camera.get("id"), str)
                and isinstance(camera.get("state"), str)):
            raise ReportRefused("each camera in a report needs an id and a state")
    return report


def store_report(engine: sa.Engine, box: str, text: str, now_ms: int) -> None:
    checked = checked_report(text)
    values = {"received_ms": now_ms, "report": json.dumps(checked)}

    def store() -> None:
        with engine.begin() as conn:
            if not conn.execute(sa.update(BOX_REPORTS).where(BOX_REPORTS.c.box == box).values(**values)).rowcount:
                conn.execute(sa.insert(BOX_REPORTS).values(box=box, **values))
    try:
        store()
    except sa.exc.IntegrityError:   # the box's first report, also filed by another worker meanwhile (a channel
        store()                     # reopened on it): its row exists now, update it


def fleet(engine: sa.Engine, now_ms: int, silent_after_ms: int = SILENT_AFTER_MS) -> list[BoxHealth]:
    """Every enrolled box, silent and troubled ones first, then by id."""
    lost = sa.select(LOST_CLIPS.c.box, sa.func.count().label("count")).group_by(LOST_CLIPS.c.box).subquery()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(BOXES.c.id, BOXES.c.site, BOXES.c.revoked_ms, BOX_REPORTS.c.received_ms, BOX_REPORTS.c.report,
                      AUDIT_STATE.c.problem, AUDIT_STATE.c.last_seq, lost.c.count)
            .select_from(BOXES.outerjoin(BOX_REPORTS, BOX_REPORTS.c.box == BOXES.c.id)
                         .outerjoin(AUDIT_STATE, AUDIT_STATE.c.box == BOXES.c.id)
                         .outerjoin(lost, lost.c.box == BOXES.c.id))
            .where(BOXES.c.public_key.is_not(None))).all()
    found = [_health(row, now_ms, silent_after_ms) for row in rows]
    return sorted(found, key=lambda h: (not h.silent, not (h.cameras_offline or h.tamper or h.audit_problem), h.box))


def _health(row: sa.Row[Any], now_ms: int, silent_after_ms: int) -> BoxHealth:
    silent = row.received_ms is None or now_ms - row.received_ms > silent_after_ms
    base = BoxHealth(row.id, row.site, row.revoked_ms is not None, row.received_ms, silent,
                     audit_problem=row.problem or "", audit_seq=row.last_seq or 0, lost_clips=row.count or 0)
    if row.report is None:
        return base
    report = json.loads(row.report)
    cameras = {camera["id"]: camera["state"] for camera in report["cameras"]}
    disk = report["disk"]
    total, free = disk.get("total_bytes"), disk.get("free_bytes")
    backlog = report["backlog"]
    return BoxHealth(
        row.id, row.site, row.revoked_ms is not None, row.received_ms, silent, report["version"], cameras,
        sorted(camera for camera, state in cameras.items() if state in OFFLINE_STATES), report["tamper"],
        int(backlog.get("count", 0)), backlog.get("oldest_ms"),
        round(100 * free / total, 1) if isinstance(total, int) and isinstance(free, int) and total > 0 else None,
        report["temperature_c"], report["clock_synchronised"], str(backlog.get("last_error", "")),
        row.problem or "", row.last_seq or 0, row.count or 0)
