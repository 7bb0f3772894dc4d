"""Remote pulls: the city asks a box for a range of one camera (`edgenvr hub pull`), the box exports and uploads
it, and the request ends with the clip or with the box's reason why not.

Owns the pulls table's rows and their states. Invariants:
- A request names an enrolled, unrevoked box, one camera, start < end, at most MAX_PULL_MS, and a reason
  (who asked and why is what the audit needs later).
- States (sync.hub_protocol.PullState): ready is set by clip intake in the transaction that files the clip,
  never by the box's word; unavailable and ready are final; failed is not (the box retries, and a clip that
  arrives makes it ready).
- The box speaks only for its own requests (every update is WHERE box = the signed caller) and never moves a
  request out of a final state.
Failure paths: a request that breaks a rule -> PullRefused naming it (the CLI prints it, exit 1; the API 400);
database errors propagate.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from edgenvr.core.camera_ids import CAMERA_ID_RULE, is_camera_id
from edgenvr.core.clock import Clock
from edgenvr.hub.hub_database import BOXES, PULLS
from edgenvr.sync.hub_protocol import MAX_PULL_REASON, MessageType, PullState

MAX_PULL_MS = 24 * 3600 * 1000   # one clip; a longer span is asked for in pieces


FINAL = (PullState.READY, PullState.UNAVAILABLE)
OPEN = (PullState.QUEUED, PullState.EXPORTING, PullState.UPLOADING, PullState.FAILED)
BOX_SETS = frozenset({PullState.QUEUED, PullState.EXPORTING, PullState.UPLOADING, PullState.UNAVAILABLE,
                      PullState.FAILED})   # what a box may say about its request (ready is the hub's)


class PullRefused(Exception):
    """The request breaks a rule; the message says which."""


@dataclass(frozen=True)
class Pull:
    id: str
    box: str
    camera: str
    start_ms: int
    end_ms: int
    reason: str
    requested_by: str
    created_ms: int
    state: PullState
    progress: int
    detail: str
    updated_ms: int
    clip_id: str | None

    def message(self) -> dict[str, Any]:
        """What the box is sent: the request, not who asked (that stays at the hub)."""
        return {"type": MessageType.PULL, "id": self.id, "camera": self.camera, "start_ms": self.start_ms,
                "end_ms": self.end_ms, "reason": self.reason}


def _pull(row: sa.Row[Any]) -> Pull:
    values = dict(row._mapping)
    values.pop("delivered_ms", None)
    return Pull(**{**values, "state": PullState(values["state"])})


def request_pull(engine: sa.Engine, box: str, camera: str, start_ms: int, end_ms: int, reason: str,
                 requested_by: str, clock: Clock) -> Pull:
    if not is_camera_id(camera):
        raise PullRefused(f"{camera[:80]!r} is not a camera id ({CAMERA_ID_RULE})")
    if not start_ms < end_ms:
        raise PullRefused("the range must end after it starts")
    if end_ms - start_ms > MAX_PULL_MS:
        raise PullRefused(f"one pull is at most {MAX_PULL_MS // 3_600_000} h; ask for a longer span in pieces")
    reason = reason.strip()
    if not reason or len(reason) > MAX_PULL_REASON:
        raise PullRefused(f"give the reason for the pull (1-{MAX_PULL_REASON} characters)")
    now = clock.now_ms()
    with engine.begin() as conn:
        known = conn.execute(sa.select(BOXES.c.revoked_ms, BOXES.c.public_key).where(BOXES.c.id == box)).first()
        if known is None or known.public_key is None:
            raise PullRefused(f"no enrolled box {box[:64]!r}")
        if known.revoked_ms is not None:
            raise PullRefused(f"box {box} is revoked")
        row = {"id": secrets.token_hex(16), "box": box, "camera": camera, "start_ms": start_ms, "end_ms": end_ms,
               "reason": reason, "requested_by": requested_by[:128], "created_ms": now, "state": PullState.QUEUED,
               "progress": 0, "detail": "", "updated_ms": now, "clip_id": None}
        conn.execute(sa.insert(PULLS).values(**row))
    return Pull(**row)


def pulls(engine: sa.Engine, box: str | None = None) -> list[Pull]:
    query = sa.select(PULLS).order_by(PULLS.c.created_ms, PULLS.c.id)
    if box is not None:
        query = query.where(PULLS.c.box == box)
    with engine.connect() as conn:
        return [_pull(row) for row in conn.execute(query)]


def open_pulls(engine: sa.Engine, boxes: list[str], *, undelivered_only: bool) -> list[Pull]:
    """The requests the boxes connected to a worker are still to answer (`undelivered_only`: those never
    acknowledged, for the worker's regular look; all open ones when a box (re)connects)."""
    if not boxes:
        return []
    query = sa.select(PULLS).where(PULLS.c.box.in_(boxes), PULLS.c.state.in_(OPEN)).order_by(PULLS.c.created_ms)
    if undelivered_only:
        query = query.where(PULLS.c.delivered_ms.is_(None))
    with engine.connect() as conn:
        return [_pull(row) for row in conn.execute(query)]


def note_sent(engine: sa.Engine, pull_ids: list[str], now_ms: int) -> None:
    """Sent down a channel: not sent again on the worker's regular look (a reconnect sends it again)."""
    with engine.begin() as conn:
        conn.execute(sa.update(PULLS).where(PULLS.c.id.in_(pull_ids), PULLS.c.delivered_ms.is_(None))
                     .values(delivered_ms=now_ms))


def box_says(engine: sa.Engine, box: str, pull_id: str, state: PullState, progress: int, detail: str,
             now_ms: int) -> bool:
    """The box's word on its request; whether it changed one (not another box's, not a final one)."""
    if state not in BOX_SETS:
        raise PullRefused(f"a box cannot set a pull {state}")
    with engine.begin() as conn:
        changed = conn.execute(
            sa.update(PULLS).where(PULLS.c.id == pull_id, PULLS.c.box == box, PULLS.c.state.notin_(FINAL))
            .values(state=state, progress=max(0, min(100, progress)), detail=detail[:MAX_PULL_REASON],
                    delivered_ms=now_ms, updated_ms=now_ms)).rowcount
    return bool(changed)


def check_clip_for(conn: sa.Connection, box: str, pull_id: str, camera: str, start_ms: int, end_ms: int) -> None:
    """A clip announced as the answer to `pull_id` must be for that box's request and its camera and range."""
    pull = conn.execute(sa.select(PULLS).where(PULLS.c.id == pull_id, PULLS.c.box == box)).first()
    if pull is None:
        raise PullRefused(f"box {box} has no pull {pull_id[:40]!r}")
    if (pull.camera, pull.start_ms, pull.end_ms) != (camera, start_ms, end_ms):
        raise PullRefused(f"the clip is not the range pull {pull_id} asked for")


def mark_ready(conn: sa.Connection, pull_id: str, clip_id: str, now_ms: int) -> None:
    """In clip intake's transaction that files the clip: the request is answered."""
    conn.execute(sa.update(PULLS).where(PULLS.c.id == pull_id).values(
        state=PullState.READY, progress=100, clip_id=clip_id, detail="", updated_ms=now_ms))
