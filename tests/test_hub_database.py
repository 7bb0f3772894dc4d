"""The hub's database across edgenvr versions, as the city's IT office upgrades (or rolls back) its hub: an older
database is brought up to date at the hub's start without losing a row, in one transaction that a failed step
leaves undone; a database a newer edgenvr changed is refused, untouched, by `edgenvr hub migrate` and the hub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from edgenvr.hub import hub_database
from edgenvr.hub.hub_database import BOXES, SCHEMA, SCHEMA_VERSION, SchemaTooNew
from tests.conftest import edgenvr
from tests.hub_site import SQLITE, backend_params, postgres_for
from tests.web_site import free_port


@pytest.fixture(params=backend_params())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    postgres = postgres_for(request, request.param)
    yield hub_database.database_url(tmp_path / "hub-data",
                                    None if request.param == SQLITE else postgres.new_database())


def _hub_config(tmp_path: Path, database_url: str) -> Path:
    config = tmp_path / "hub.toml"
    configured = "" if database_url.startswith("sqlite") else \
        f'database_url = "{database_url.replace("postgresql+psycopg://", "postgresql://")}"\n'
    config.write_text(f'[hub]\nlisten = "127.0.0.1:{free_port()}"\ntls = false\ndata_dir = "{tmp_path / "hub-data"}"\n'
                      + configured)
    return config


def _rows(url: str) -> tuple[int, list[str]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return (conn.execute(sa.select(SCHEMA.c.version)).scalar_one(),
                    [row.id for row in conn.execute(sa.select(BOXES.c.id).order_by(BOXES.c.id))])
    finally:
        engine.dispose()


def test_a_database_from_before_versions_were_kept_is_adopted_with_its_rows(database_url: str,
                                                                           tmp_path: Path) -> None:
    hub_database.connect(database_url).dispose()
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:   # as an edgenvr before the version was kept left it
        SCHEMA.drop(conn)
        conn.execute(sa.insert(BOXES).values(id="rt08", site="Pos RT 08"))
    engine.dispose()
    done = edgenvr("hub", "migrate", "--config", str(_hub_config(tmp_path, database_url)))
    assert done.returncode == 0, done.stderr
    assert f"version {SCHEMA_VERSION}" in done.stdout
    assert _rows(database_url) == (SCHEMA_VERSION, ["rt08"])


def test_a_database_a_newer_edgenvr_changed_is_refused_untouched(database_url: str, tmp_path: Path) -> None:
    hub_database.connect(database_url).dispose()
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.update(SCHEMA).values(version=SCHEMA_VERSION + 1))
        conn.execute(sa.insert(BOXES).values(id="rt08", site="Pos RT 08"))
    engine.dispose()
    config = _hub_config(tmp_path, database_url)
    for command in (("hub", "migrate", "--config", str(config)), ("hub", "--config", str(config))):
        done = edgenvr(*command)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert f"version {SCHEMA_VERSION + 1}, written by a newer edgenvr" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert _rows(database_url) == (SCHEMA_VERSION + 1, ["rt08"])


def test_an_upgrade_runs_each_step_once_in_order_and_one_that_fails_leaves_the_database_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A release that changes the tables twice: the two steps run in order at the hub's start; had the second
    failed, the first is undone too and the hub does not start on a half-changed database."""
    url = hub_database.database_url(tmp_path, None)
    hub_database.connect(url).dispose()
    ran: list[int] = []

    def add_column(conn: sa.Connection) -> None:
        ran.append(SCHEMA_VERSION + 1)
        conn.execute(sa.text("ALTER TABLE boxes ADD COLUMN note TEXT"))

    def fill_column(conn: sa.Connection) -> None:
        ran.append(SCHEMA_VERSION + 2)
        conn.execute(sa.text("UPDATE boxes SET note = 'checked'"))
        if failing:
            raise sa.exc.OperationalError("UPDATE boxes", {}, Exception("disk I/O error"))

    monkeypatch.setattr(hub_database, "SCHEMA_VERSION", SCHEMA_VERSION + 2)
    monkeypatch.setitem(hub_database.MIGRATIONS, SCHEMA_VERSION + 1, add_column)
    monkeypatch.setitem(hub_database.MIGRATIONS, SCHEMA_VERSION + 2, fill_column)
    failing = True
    with pytest.raises(sa.exc.OperationalError):
        hub_database.connect(url)
    assert ran == [SCHEMA_VERSION + 1, SCHEMA_VERSION + 2]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert "note" not in {column["name"] for column in sa.inspect(conn).get_columns("boxes")}
        assert conn.execute(sa.select(SCHEMA.c.version)).scalar_one() == SCHEMA_VERSION
    engine.dispose()

    failing, ran[:] = False, []
    hub_database.connect(url).dispose()
    assert ran == [SCHEMA_VERSION + 1, SCHEMA_VERSION + 2]
    hub_database.connect(url).dispose()   # up to date: nothing runs again
    assert ran == [SCHEMA_VERSION + 1, SCHEMA_VERSION + 2]
    assert _rows(url)[0] == SCHEMA_VERSION + 2
    with pytest.raises(SchemaTooNew):   # and the release before it refuses what this one made
        monkeypatch.setattr(hub_database, "SCHEMA_VERSION", SCHEMA_VERSION)
        hub_database.connect(url)
