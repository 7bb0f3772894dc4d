"""Which boxes the hub trusts (edgenvr.hub.box_enrolment), on a real hub database (SQLite, and PostgreSQL as
several workers share it) and the simulated clock: a token enrols its box once and expires after a week; a box
that lost the answer may ask again with the same key; a new token re-keys a box whose disk was replaced; a
revoked box is refused at once; one token used twice at the same moment enrols one key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

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
from tests.hub_site import SQLITE, backend_params, postgres_for


@pytest.fixture(params=backend_params())
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    postgres = postgres_for(request, request.param)
    connected = hub_database.connect(hub_database.database_url(
        tmp_path, None if request.param == SQLITE else postgres.new_database()))
    yield connected
    connected.dispose()


def _pem(tmp_path: Path, name: str) -> str:
    return public_pem(signing_key(tmp_path / f"{name}.key", tmp_path / f"{name}.pub").public_key()).decode()


def test_a_token_enrols_its_box_once_then_the_box_is_trusted_until_revoked(engine: sa.Engine, tmp_path: Path) -> None:
    clock = SimulatedClock()
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


def test_a_token_expires_after_a_week(engine: sa.Engine, tmp_path: Path) -> None:
    clock = SimulatedClock()
    token = create_enrolment(engine, "rt08", "Pos RT 08", clock)
    clock.advance(TOKEN_DAYS * 86400 + 1)
    with pytest.raises(EnrolmentRefused, match="expired"):
        enrol_box(engine, token, "rt08", _pem(tmp_path, "a"), clock)
    with pytest.raises(ValueError):
        create_enrolment(engine, "../etc", "x", clock)


def test_one_token_used_by_two_keys_at_the_same_moment_enrols_exactly_one(engine: sa.Engine, tmp_path: Path) -> None:
    """Two requests with one token reach two workers together: one key is enrolled, the other refused (never
    both answered "enrolled" with the last writer's key kept)."""
    clock = SimulatedClock()
    keys = [_pem(tmp_path, "a"), _pem(tmp_path, "b")]
    with ThreadPoolExecutor(2) as pool:
        for round_ in range(10):
            box = f"rt{round_:02d}"
            token = create_enrolment(engine, box, "Pos RT", clock)
            together = threading.Barrier(2)

            def enrol(key: str) -> str | None:
                together.wait()
                try:
                    enrol_box(engine, token, box, key, clock)
                    return key
                except EnrolmentRefused as exc:
                    assert "already used" in str(exc), exc
                    return None
            won = [key for key in pool.map(enrol, keys) if key is not None]
            assert len(won) == 1, round_
            assert public_pem(box_public_key(engine, box)).decode() == won[0]


def test_a_site_name_longer_than_the_database_keeps_is_refused_on_every_backend(engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="at most"):
        create_enrolment(engine, "rt08", "x" * 201, SimulatedClock())
    assert create_enrolment(engine, "rt08", "x" * 200, SimulatedClock()).startswith("enrol_")
