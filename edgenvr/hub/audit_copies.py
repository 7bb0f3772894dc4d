"""The hub's copy of each box's audit trail, sent up over the box's channel a batch at a time, so that a box
whose own trail was cut, edited or replaced by an older copy is caught by the city (evidence.audit cannot see
a whole file replaced by an older copy of itself; the copy here can).

Owns the audit_copies and audit_state rows. Invariants:
- A record is kept only if its hash is that of its fields and its own signature is by the box's ENROLLED key
  (evidence.audit.checked_upstream_record): nobody but the box's key adds to its copy.
- Kept records are never changed: a record sent again with another hash is not stored, it is a problem.
- Each batch is checked against the copy's end: the next seq, its link (prev_hash) to the last record kept,
  and the box's signed head, which must not end before the copy does. The first problem found is kept with
  its time (later ones are logged) until someone looks into it; records validly signed by the box go on being
  copied after a break in the chain, so the trail keeps reaching the city.
Failure paths: a record that is not the box's (bad hash or signature) -> that batch stops there, the problem
is noted, the box is told where the copy ends (it sends again later); database errors propagate (the channel
logs them; the box sends the batch again).
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgenvr.core.time_format import format_ms
from edgenvr.evidence.audit import (
    RECORD_FIELDS,
    AuditError,
    checked_upstream_record,
    upstream_head_valid,
)
from edgenvr.hub.hub_database import AUDIT_COPIES, AUDIT_STATE
from edgenvr.sync.hub_protocol import AUDIT_BATCH

log = logging.getLogger(__name__)



def copy_end(engine: sa.Engine, box: str) -> int:
    """The seq of the last record of `box` the hub holds (0: none)."""
    with engine.connect() as conn:
        return int(conn.execute(sa.select(AUDIT_STATE.c.last_seq).where(AUDIT_STATE.c.box == box)).scalar() or 0)


def audit_problem(engine: sa.Engine, box: str) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.select(AUDIT_STATE.c.problem).where(AUDIT_STATE.c.box == box)).scalar() or ""


def receive(engine: sa.Engine, box: str, records: list[dict[str, Any]], head: dict[str, Any] | None,
            public_key: Ed25519PublicKey, now_ms: int) -> int:
    """File a batch from `box`; the seq the copy now ends at (what the box sends after next)."""
    problems: list[str] = []
    with engine.begin() as conn:
        state = conn.execute(sa.select(AUDIT_STATE).where(AUDIT_STATE.c.box == box).with_for_update()).first()
        last_seq, last_hash = (state.last_seq, state.last_hash) if state else (0, "")
        for sent in records[:AUDIT_BATCH]:
            try:
                record = checked_upstream_record(sent, box, public_key)
            except AuditError as exc:
                problems.append(f"the box sent a record that is not its own: {exc}")
                break
            if record.seq <= last_seq:
                kept = conn.execute(sa.select(AUDIT_COPIES.c.hash, AUDIT_COPIES.c.received_ms).where(
                    AUDIT_COPIES.c.box == box, AUDIT_COPIES.c.seq == record.seq)).first()
                if kept is not None and kept.hash != record.hash:
                    problems.append(f"record {record.seq} is not the one the hub received on "
                                    f"{format_ms(kept.received_ms)}: the box's trail was changed since")
                continue
            if last_seq and record.seq != last_seq + 1:
                problems.append(f"records {last_seq + 1}-{record.seq - 1} never reached the hub: they were removed "
                                "from the box before they could be sent")
            elif last_seq and record.prev_hash != last_hash:
                problems.append(f"record {record.seq} does not follow record {last_seq} as the hub received it: "
                                "the box's trail was rewritten")
            conn.execute(sa.insert(AUDIT_COPIES).values(
                box=box, received_ms=now_ms, signature=sent["signature"],
                **{name: getattr(record, name) for name in RECORD_FIELDS}))
            last_seq, last_hash = record.seq, record.hash
        if head is not None:
            if not upstream_head_valid(head, box, public_key):
                problems.append("the box's audit head is not signed by its key")
            elif head["seq"] == last_seq and head["hash"] != last_hash:
                problems.append(f"the box's last record {last_seq} is not the one the hub holds: the box's trail was "
                                "changed since")
            elif head["seq"] < last_seq:
                problems.append(f"the box's trail now ends at record {head['seq']}, the hub holds up to {last_seq}: "
                                "records were removed from the box, or its file was replaced by an older copy")
        problem = (state.problem if state and state.problem else "") or (problems[0] if problems else "")
        values = {"last_seq": last_seq, "last_hash": last_hash, "problem": problem,
                  "problem_ms": state.problem_ms if state and state.problem else (now_ms if problems else None)}
        if state is None:
            conn.execute(sa.insert(AUDIT_STATE).values(box=box, **values))
        else:
            conn.execute(sa.update(AUDIT_STATE).where(AUDIT_STATE.c.box == box).values(**values))
    for found in problems:
        log.warning("box %s: audit trail: %s", box, found)
    return last_seq
