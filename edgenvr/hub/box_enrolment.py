"""Which boxes the hub trusts, and how a box becomes one: `edgenvr hub enrol --box ID --site NAME` prints a
one-time token; the box sends it once with its device public key (POST /api/v1/enrol); from then on it signs
every request with that key (evidence.request_signing) and the hub checks it against the key kept here.

Owns: the boxes and enrolments tables' rows. Invariants:
- A token is shown once and only its SHA-256 is stored; it is spent by its first use, expires after
  TOKEN_DAYS, and enrols only the box it was made for.
- A box enrolling again with a spent token and the same key gets the same answer (it lost the first one);
  with another key it is refused (someone else holds the token): an operator makes a new token, which
  replaces the key (a box whose disk was replaced).
- A revoked box's signatures are refused from the moment the revocation is committed.
- Two workers given one token at once (two boxes, or one box retrying on another connection) enrol one key:
  spending it is a conditional UPDATE (`used_ms IS NULL`) that only one of them wins; the other then answers
  as for a spent token.
Failure paths: EnrolmentRefused naming why (unknown or expired token, spent by another key, another box's
token, not an Ed25519 key); a box id that is not an id, or a site name over MAX_SITE characters ->
ValueError.
"""

from __future__ import annotations

import hashlib
import re
import secrets

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgenvr.core.clock import Clock
from edgenvr.core.units import DAY_MS
from edgenvr.evidence.identity import IdentityError, load_public_key
from edgenvr.hub.hub_database import BOXES, ENROLMENTS

TOKEN_DAYS = 7
TOKEN_PREFIX = "enrol_"
BOX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_SITE = 200   # boxes.site's length: PostgreSQL enforces it (SQLite would not), so it is checked here


class EnrolmentRefused(Exception):
    """The enrolment cannot be accepted; the message says why (never the token)."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_enrolment(engine: sa.Engine, box_id: str, site: str, clock: Clock) -> str:
    """A new one-time token for `box_id` at `site` (the box row is made or its site updated)."""
    if not BOX_ID.fullmatch(box_id):
        raise ValueError(f"box id {box_id!r}: letters, digits, '_', '.', '-', at most 64, starting with a letter"
                         " or digit")
    if len(site) > MAX_SITE:
        raise ValueError(f"site {site[:40]!r}...: at most {MAX_SITE} characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(24)
    now = clock.now_ms()

    def add() -> None:
        with engine.begin() as conn:
            if not conn.execute(sa.update(BOXES).where(BOXES.c.id == box_id).values(site=site)).rowcount:
                conn.execute(sa.insert(BOXES).values(id=box_id, site=site))
            conn.execute(sa.insert(ENROLMENTS).values(token_sha256=_digest(token), box=box_id, created_ms=now,
                                                      expires_ms=now + TOKEN_DAYS * DAY_MS))
    try:
        add()
    except sa.exc.IntegrityError:   # a concurrent enrol added the box after our UPDATE found none: update it
        add()
    return token


def enrol_box(engine: sa.Engine, token: str, box_id: str, public_pem: str, clock: Clock) -> None:
    """Accept the box's key for `box_id` if the token allows it; EnrolmentRefused otherwise."""
    try:
        load_public_key(public_pem.encode(), "the box's public key")
    except IdentityError as exc:
        raise EnrolmentRefused(str(exc)) from None
    now = clock.now_ms()
    with engine.begin() as conn:
        found = conn.execute(sa.select(ENROLMENTS).where(ENROLMENTS.c.token_sha256 == _digest(token))).first()
        if found is None:   # looked up by the token's hash: no timing tells anything about other tokens
            raise EnrolmentRefused("unknown enrolment token (ask the city IT office for a new one)")
        if found.box != box_id:
            raise EnrolmentRefused(f"this token is for another box, not {box_id!r}")
        box = conn.execute(sa.select(BOXES).where(BOXES.c.id == box_id)).first()
        if found.used_ms is not None:
            if box is not None and box.public_key == public_pem and box.revoked_ms is None:
                return   # the same box again: it lost the answer
            raise EnrolmentRefused("this token was already used (by another key); ask for a new one")
        if found.expires_ms <= now:
            raise EnrolmentRefused("this enrolment token expired; ask for a new one")
        spent = conn.execute(sa.update(ENROLMENTS).where(ENROLMENTS.c.token_sha256 == found.token_sha256,
                                                         ENROLMENTS.c.used_ms.is_(None)).values(used_ms=now))
        if spent.rowcount:
            conn.execute(sa.update(BOXES).where(BOXES.c.id == box_id)
                         .values(public_key=public_pem, enrolled_ms=now, revoked_ms=None))
            return
    # Another request spent it between our read and our UPDATE (and has committed: ours waited for it).
    enrol_box(engine, token, box_id, public_pem, clock)


def box_public_key(engine: sa.Engine, box_id: str) -> Ed25519PublicKey | None:
    """The key that must have signed a request of `box_id`; None if it is unknown, not enrolled or revoked."""
    if not BOX_ID.fullmatch(box_id):
        return None
    with engine.connect() as conn:
        row = conn.execute(sa.select(BOXES.c.public_key, BOXES.c.revoked_ms).where(BOXES.c.id == box_id)).first()
    if row is None or row.public_key is None or row.revoked_ms is not None:
        return None
    return load_public_key(row.public_key.encode(), f"box {box_id}'s key")


def revoke_box(engine: sa.Engine, box_id: str, clock: Clock) -> bool:
    """Refuse everything `box_id` signs from now on; whether such a box was enrolled."""
    with engine.begin() as conn:
        return bool(conn.execute(sa.update(BOXES).where(BOXES.c.id == box_id, BOXES.c.public_key.is_not(None))
                                 .values(revoked_ms=clock.now_ms())).rowcount)
