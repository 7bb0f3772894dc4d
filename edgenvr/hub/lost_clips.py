"""What boxes report they will never send: clips queued for the hub whose video the box had to delete first (its
free-space floor), each with the box's reason, so the city knows exactly what is missing and why.

Owns the lost_clips rows. Invariants: a loss is recorded once per box and box clip id (a report sent again
after a dropped acknowledgement changes nothing); a box reports only its own (stored under its signed id).
Failure paths: a malformed entry -> LossRefused naming it (the channel logs it; the box reports it again);
database errors propagate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from edgenvr.core.camera_ids import is_camera_id
from edgenvr.hub.hub_database import LOST_CLIPS
from edgenvr.sync.outbox import ClipKind


class LossRefused(ValueError):
    """A reported loss is not what a box sends."""


@dataclass(frozen=True)
class LostClip:
    box: str
    box_clip: int
    kind: str
    camera: str
    start_ms: int
    end_ms: int
    reason: str
    lost_ms: int | None
    received_ms: int


def record_losses(engine: sa.Engine, box: str, losses: list[Any], now_ms: int) -> list[int]:
    """Store `box`'s reported losses; the box's ids of those now on record (to acknowledge)."""
    rows = []
    for loss in losses:
        if not (isinstance(loss, dict) and isinstance(loss.get("id"), int) and loss.get("kind") in set(ClipKind)
                and is_camera_id(loss.get("camera")) and isinstance(loss.get("start_ms"), int)
                and isinstance(loss.get("end_ms"), int) and isinstance(loss.get("reason"), str)
                and (loss.get("at_ms") is None or isinstance(loss.get("at_ms"), int))):
            raise LossRefused(f"a malformed loss report {str(loss)[:120]!r}")
        rows.append({"box": box, "box_clip": loss["id"], "kind": loss["kind"], "camera": loss["camera"],
                     "start_ms": loss["start_ms"], "end_ms": loss["end_ms"], "reason": loss["reason"][:500],
                     "lost_ms": loss.get("at_ms"), "received_ms": now_ms})

    def store() -> None:
        with engine.begin() as conn:
            for row in rows:
                known = conn.execute(sa.select(LOST_CLIPS.c.box_clip).where(
                    LOST_CLIPS.c.box == box, LOST_CLIPS.c.box_clip == row["box_clip"])).first()
                if known is None:
                    conn.execute(sa.insert(LOST_CLIPS).values(**row))
    try:
        store()
    except sa.exc.IntegrityError:   # the same losses filed by another worker meanwhile (the box re-sent them on
        store()                     # a reopened channel): the second pass skips what is on record now
    return [row["box_clip"] for row in rows]


def lost_clips(engine: sa.Engine, box: str | None = None) -> list[LostClip]:
    query = sa.select(LOST_CLIPS).order_by(LOST_CLIPS.c.box, LOST_CLIPS.c.start_ms)
    if box is not None:
        query = query.where(LOST_CLIPS.c.box == box)
    with engine.connect() as conn:
        return [LostClip(**row._mapping) for row in conn.execute(query)]
