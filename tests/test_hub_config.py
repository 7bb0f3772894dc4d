"""The hub's config file (edgenvr.hub.hub_config) as a city IT technician writes it: defaults that serve
HTTPS on 8443 in one process, every problem named with its key in one go, several workers only on PostgreSQL,
and `edgenvr hub` refusing to start without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgenvr.hub.hub_config import HubConfigError, load_hub_config
from tests.conftest import edgenvr


def test_a_minimal_hub_config_serves_https_on_8443_with_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('[hub]\ndata_dir = "/var/lib/edgenvr-hub"\n')
    config = load_hub_config(path)
    assert (config.host, config.port, config.tls, config.database_url) == ("0.0.0.0", 8443, True, None)
    assert config.workers == 1
    assert config.clips_dir == Path("/var/lib/edgenvr-hub/blobs/clips")


def test_every_problem_is_named_with_its_key(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('[hub]\nlisten = "8443"\ntls = "yes"\nmax_clip_mb = 0\ndatabase_url = "mysql://x"\n'
                    'colour = "red"\nworkers = 0\n[web]\n')
    with pytest.raises(HubConfigError) as error:
        load_hub_config(path)
    for named in ("web", "colour", "listen", "tls", "data_dir", "max_clip_mb", "database_url", "workers"):
        assert named in str(error.value), named


@pytest.mark.parametrize("workers, database_url, problem", [
    (4, None, "needs database_url"),
    (2, "sqlite:////var/lib/edgenvr-hub/hub.sqlite3", "needs database_url"),
    ("2", "postgresql://edgenvr@db/edgenvr", "whole number"),
    (True, "postgresql://edgenvr@db/edgenvr", "whole number"),
    (65, "postgresql://edgenvr@db/edgenvr", "1-64"),
    (4, "postgresql://edgenvr@db/edgenvr", None),
])
def test_several_workers_need_postgresql(tmp_path: Path, workers: object, database_url: str | None,
                                          problem: str | None) -> None:
    """Workers share the database; SQLite is a file of one process, so `workers` > 1 needs PostgreSQL."""
    path = tmp_path / "hub.toml"
    value = str(workers).lower() if isinstance(workers, bool) else \
        (f'"{workers}"' if isinstance(workers, str) else str(workers))
    path.write_text(f'[hub]\ndata_dir = "/var/lib/edgenvr-hub"\nworkers = {value}\n'
                    + (f'database_url = "{database_url}"\n' if database_url else ""))
    if problem is None:
        assert load_hub_config(path).workers == workers
        return
    with pytest.raises(HubConfigError, match="workers") as error:
        load_hub_config(path)
    assert problem in str(error.value)


def test_edgenvr_hub_needs_a_readable_config(tmp_path: Path) -> None:
    missing = edgenvr("hub")
    assert missing.returncode == 2 and "--config" in missing.stderr
    broken = tmp_path / "hub.toml"
    broken.write_text("[hub\n")
    result = edgenvr("hub", "--config", str(broken))
    assert result.returncode == 2 and "not valid TOML" in result.stderr and "Traceback" not in result.stderr
    enrol = edgenvr("hub", "enrol", "--config", str(broken), "--box", "x", "--site", "y")
    assert enrol.returncode == 2 and "Traceback" not in enrol.stderr
    broken.write_text(f'[hub]\ndata_dir = "{tmp_path}"\nworkers = 2\n')
    on_sqlite = edgenvr("hub", "--config", str(broken))
    assert on_sqlite.returncode == 2 and "workers = 2 needs database_url" in on_sqlite.stderr
