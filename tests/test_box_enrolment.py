"""Which boxes the hub trusts (edgenvr.hub.box_enrolment), on a real SQLite hub database and the simulated
clock: a token enrols its box once and expires after a week; a box that lost the answer may ask again with the
same key; a new token re-keys a box whose disk was replaced; a revoked box is refused at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgenvr.core.clock import SimulatedClock
from edgenvr.evidence.identity import public_pem, signing_key
from edgenvr.hub import hub_database
from edgenvr.hub.box_enrolment import (
    TOKEN_DAYS,
    EnrolmentRefused,
    box_public_key,
    create_enrolment,
    enrol_box,
    revoke_box,
)


def _pem(tmp_path: Path, name: str) -> str:
    return public_pem(signing_key(tmp_path / f"{name}.key", tmp_path / f"{name}.pub").public_key()).decode()


def test_a_token_enrols_its_box_once_then_the_box_is_trusted_until_revoked(tmp_path: Path) -> None:
    engine, clock = hub_database.connect(hub_database.database_url(tmp_path, None)), SimulatedClock()
    first, second = _pem(tmp_path, "a"), _pem(tmp_path, "b")
    assert box_public_key(engine, "rt08") is None
    token = create_enrolment(engine, "rt08", "Pos RT 08", clock)
    with pytest.raises(EnrolmentRefused, match="another box"):
        enrol_box(engine, token, "rt09", first, clock)
    with pytest.raises(EnrolmentRefused, match="not a PEM"):
        enrol_box(engine, token, "rt08", "-----BEGIN nonsense", clock)
    enrol_box(engine, token, "rt08", first, clock)
    enrol_box(engine, token, "rt08", first, clock)           # lost the answer: asks again, same key
    with pytest.raises(EnrolmentRefused, match="already used"):
        enrol_box(engine, token, "rt08", second, clock)      # someone else with the token
    assert public_pem(box_public_key(engine, "rt08")).decode() == first

    replaced = create_enrolment(engine, "rt08", "Pos RT 08", clock)   # the box's disk was replaced
    enrol_box(engine, replaced, "rt08", second, clock)
    assert public_pem(box_public_key(engine, "rt08")).decode() == second

    assert revoke_box(engine, "rt08", clock) and box_public_key(engine, "rt08") is None
    assert not revoke_box(engine, "never-enrolled", clock)


def test_a_token_expires_after_a_week(tmp_path: Path) -> None:
    engine, clock = hub_database.connect(hub_database.database_url(tmp_path, None)), SimulatedClock()
    token = create_enrolment(engine, "rt08", "Pos RT 08", clock)
    clock.advance(TOKEN_DAYS * 86400 + 1)
    with pytest.raises(EnrolmentRefused, match="expired"):
        enrol_box(engine, token, "rt08", _pem(tmp_path, "a"), clock)
    with pytest.raises(ValueError):
        create_enrolment(engine, "../etc", "x", clock)
