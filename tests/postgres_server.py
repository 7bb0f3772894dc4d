"""A real PostgreSQL for the hub suites (Debian's `postgresql` package; its own cluster, never the system's):
initdb in a temporary directory, served on a free loopback port with its unix socket in that directory,
stopped and removed at the end. One server per test session, started by the first test that asks
(`shared_postgres(request)`), a fresh database for each hub (`new_database()`).

As root (CI), initdb and the server run as the `postgres` user (initdb refuses root), in a directory chowned
to it. The server is this process's own child, not a daemon (no pg_ctl start): when the test process dies,
however it dies, the kernel tells the server to shut down (PR_SET_PDEATHSIG): a killed run leaves at most
the directory behind, never a server.
Durability is traded for speed (fsync, full-page writes and synchronous commits off): a test database never
has to survive a power cut, and what the suites check (statements, constraints, locking between workers) is
the same without it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from edgenvr.core.process_setup import die_with_parent_preexec
from tests.web_site import free_port

POSTGRES_LIB = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
SETTINGS = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off", "max_connections": "200"}


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian keeps each major version apart)."""
    versions = sorted((p for p in POSTGRES_LIB.glob("*/bin") if (p / "initdb").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not versions:
        pytest.fail(f"PostgreSQL is not installed (no {POSTGRES_LIB}/*/bin/initdb): apt-get install postgresql")
    return versions[-1]


@dataclass
class PostgresServer:
    directory: Path
    port: int
    _numbers: Iterator[int] = field(default_factory=itertools.count)

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database; its URL (as a hub config's database_url takes it)."""
        name = f"hub_{next(self._numbers)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a PostgreSQL in a new temporary directory; stop it and remove the directory at the end."""
    bin_dir = postgres_bin_dir()
    directory = Path(tempfile.mkdtemp(prefix="edgenvr-postgres-"))   # under /tmp: the postgres user can reach it
    user = None
    if os.getuid() == 0:
        shutil.chown(directory, SUPERUSER, SUPERUSER)
        user = SUPERUSER
    data, log_path = directory / "data", directory / "server.log"
    try:
        initdb = subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
                                 "--encoding=UTF8", "--locale=C", "--no-sync"],
                                cwd=directory, user=user, capture_output=True, text=True, timeout=120)
        assert initdb.returncode == 0, f"initdb failed:\n{initdb.stdout}{initdb.stderr}"
        port = free_port()
        settings = {**SETTINGS, "listen_addresses": "127.0.0.1", "port": str(port),
                    "unix_socket_directories": str(directory)}
        with open(log_path, "ab") as log:
            # SIGINT: PostgreSQL's fast shutdown (clients disconnected, a clean checkpoint)
            process = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(data),
                                        *(f"-c{name}={value}" for name, value in settings.items())],
                                       cwd=directory, user=user, stdout=log, stderr=subprocess.STDOUT,
                                       preexec_fn=die_with_parent_preexec(signal.SIGINT))
        try:
            server = PostgresServer(directory, port)
            deadline = time.monotonic() + 60
            while True:
                try:
                    psycopg.connect(server.url("postgres"), connect_timeout=2).close()
                    break
                except psycopg.OperationalError:
                    assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.1)
            yield server
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(60) == 0, log_path.read_text()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


_SHARED = pytest.StashKey[PostgresServer]()


def shared_postgres(request: pytest.FixtureRequest) -> PostgresServer:
    """The session's server: started at the first call, stopped when the session ends. (A session fixture
    would have to live in conftest.py to be one per session; only the hub suites need this server.)"""
    config = request.config
    if _SHARED not in config.stash:
        stack = contextlib.ExitStack()
        config.stash[_SHARED] = stack.enter_context(postgres_server())
        config.add_cleanup(stack.close)
    return config.stash[_SHARED]
