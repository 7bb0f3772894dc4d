"""A city hub for the tests: `edgenvr hub --config` in a process of its own on a loopback port (plain HTTP, or
its own HTTPS with `tls=True`), with its CLI at hand (`hub.cli("enrol", "--box", ...)`), killed -9 and started
again on demand (`hub.kill_and_restart()`), stopped cleanly (exit 0) at the end.

Backends (`BACKENDS`; a suite's `hub` fixture is parametrised over them, see `backend_params`):
- "sqlite": the default hub, one process, SQLite in its data dir;
- "postgres-2-workers": `[hub] workers = 2` (a gunicorn master and two aiohttp workers) on a fresh database of
  the session's PostgreSQL (tests/postgres_server.py). The kernel shares the connections out between the
  workers, so the requests of one upload reach both: the suites pass unchanged only if nothing a request
  needs lives in one worker's memory.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import edgenvr
from tests.postgres_server import PostgresServer, shared_postgres
from tests.web_site import free_port

SQLITE = "sqlite"
POSTGRES_2_WORKERS = "postgres-2-workers"
BACKENDS = (SQLITE, POSTGRES_2_WORKERS)


def backend_params() -> list[Any]:
    """BACKENDS as fixture params: the PostgreSQL one is `slow` (it starts PostgreSQL and gunicorn)."""
    return [SQLITE, pytest.param(POSTGRES_2_WORKERS, marks=pytest.mark.slow)]


def postgres_for(request: pytest.FixtureRequest, backend: str) -> PostgresServer | None:
    """The session's PostgreSQL if `backend` needs it (started then), else None."""
    return shared_postgres(request) if backend == POSTGRES_2_WORKERS else None


@dataclass
class Hub:
    config: Path
    data_dir: Path
    url: str
    port: int
    log: Path
    process: subprocess.Popen[bytes]
    backend: str = SQLITE
    verify: str | bool = True   # what `requests` checks the hub's certificate with (its own, when tls=True)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`edgenvr hub COMMAND --config HUB.toml ARGS...`"""
        return edgenvr("hub", *args[:1], "--config", str(self.config), *args[1:])

    def token(self, box: str, site: str = "Pos RT 08, Kuningan") -> str:
        result = self.cli("enrol", "--box", box, "--site", site)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def kill_and_restart(self) -> None:
        """kill -9 the hub (gunicorn's master: its workers go with it), then start it again on the same config."""
        self.process.kill()
        self.process.wait(10)
        self.process = _start(self.config, self.log)
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        certificate = self.data_dir / "keys" / "tls.crt"   # made by the hub at its first start, before its workers
        deadline = time.monotonic() + 30
        while True:
            try:
                if (self.verify is True or certificate.exists()) and \
                        requests.get(self.url + "/api/health", timeout=2, verify=self.verify).json()["status"] == "ok":
                    return
            except (requests.ConnectionError, ValueError):
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.2)


def _start(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "edgenvr", "hub", "--config", str(config)], stdout=log,
                                stderr=subprocess.STDOUT)


@contextlib.contextmanager
def running_hub(root: Path, backend: str = SQLITE, postgres: PostgresServer | None = None, *,
                tls: bool = False) -> Iterator[Hub]:
    """`edgenvr hub` on `backend` (BACKENDS; "postgres-2-workers" needs `postgres`, see postgres_for)."""
    port = free_port()
    data_dir = root / "hub-data"
    lines = [f'listen = "127.0.0.1:{port}"', f"tls = {'true' if tls else 'false'}", f'data_dir = "{data_dir}"',
             "max_clip_mb = 64"]
    if backend == POSTGRES_2_WORKERS:
        assert postgres is not None, "the postgres-2-workers hub needs the session's PostgreSQL"
        lines += [f'database_url = "{postgres.new_database()}"', "workers = 2"]
    else:
        assert backend == SQLITE, backend
    config = root / "hub.toml"
    config.write_text("[hub]\n" + "\n".join(lines) + "\n")
    log_path = root / "hub.log"
    # The certificate's names are the hub's and localhost.
    url = f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}"
    hub = Hub(config, data_dir, url, port, log_path, _start(config, log_path), backend,
              str(data_dir / "keys" / "tls.crt") if tls else True)
    try:
        hub._wait_healthy()
        yield hub
    finally:
        hub.process.terminate()
        assert hub.process.wait(timeout=20) == 0, log_path.read_text()
