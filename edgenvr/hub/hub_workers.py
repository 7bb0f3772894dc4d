"""The hub as several worker processes (`[hub] workers = N`, N > 1): gunicorn's master forks N aiohttp workers
(aiohttp.GunicornWebWorker), each listening on the hub's address (SO_REUSEPORT) and serving the app
`hub_server.make_served_hub_app` builds, with its own database engine made after its fork. The kernel shares
the connections out between them, so the requests of one upload reach different workers; behind a load
balancer, so do several such hubs on several machines.

Owns: the gunicorn settings, and what the master does before the first fork. Invariants:
- Workers are stateless: what they share is in the database (PostgreSQL; hub_config refuses several workers
  on SQLite) and the blob directory; any request may reach any worker, and a worker may die at any time (the
  master forks another; the leases of the uploads it was writing lapse by themselves).
- What must exist once is made by the master before any worker starts: the tables, the receipt key (two
  workers each making one would sign receipts with keys the boxes do not know), the TLS key and certificate
  (served by every worker through gunicorn's certfile/keyfile, the same files `serve_hub` serves).
- The hub's config is the only config: no gunicorn config file, no GUNICORN_CMD_ARGS, no control socket.
- SIGTERM or SIGINT to the master: the workers stop listening and finish their requests (at most
  GRACEFUL_SECONDS; a cut PATCH keeps what tus_uploads commits), and the master exits 0. A master killed -9
  takes its workers along (PR_SET_PDEATHSIG), so a restarted hub finds its address free.
Failure paths: the address in use, the database unreachable, the receipt key or certificate unusable -> raised
before any fork (the caller says so, exit 1); a worker that cannot boot -> gunicorn logs why and stops, exit 1.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from gunicorn.app.base import BaseApplication

from edgenvr.core.process_setup import die_with_parent, setup_logging
from edgenvr.evidence.identity import signing_key
from edgenvr.hub import hub_database
from edgenvr.hub.hub_config import HubConfig
from edgenvr.hub.hub_server import TLS_NAME, make_served_hub_app
from edgenvr.web.tls_certificate import tls_server_context

log = logging.getLogger(__name__)

WORKER_CLASS = "aiohttp.GunicornWebWorker"
GRACEFUL_SECONDS = 10   # a request still running then is cut; a box resumes at the committed offset
KEEPALIVE_SECONDS = 75  # aiohttp's own default, what a single-process hub keeps idle connections for


def gunicorn_settings(config: HubConfig, log_level: str) -> dict[str, Any]:
    """The gunicorn settings for `config`'s hub."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    settings: dict[str, Any] = {
        "bind": [f"{host}:{config.port}"],
        "workers": config.workers,
        "worker_class": WORKER_CLASS,
        "graceful_timeout": GRACEFUL_SECONDS,
        "keepalive": KEEPALIVE_SECONDS,
        "proc_name": "edgenvr-hub",
        "loglevel": log_level,
        "errorlog": "-",
        "accesslog": None,               # as serve_hub: what matters is logged by the app, with its reason
        "control_socket_disable": True,  # one well-known path per user: two hubs (or tests) would share it
        # Each worker listens on the port itself (SO_REUSEPORT; only processes of the same user may join): the
        # kernel spreads the connections evenly. On one shared socket the worker that wakes first takes nearly
        # all of them (42 of 43 with two idle workers here).
        "reuse_port": True,
    }
    if config.tls:
        # aiohttp's worker makes its context from these: TLS 1.2 at least (Python's default), as serve_hub
        settings |= {"certfile": str(config.tls_certificate_path), "keyfile": str(config.tls_key_path)}
    return settings


def prepare(config: HubConfig) -> str:
    """Check the address and make what the workers share once, before any fork: the tables, the receipt key,
    the TLS certificate. The database's dialect name; raises OSError (the address in use) and what
    hub_database.connect, signing_key and tls_server_context raise."""
    # Each worker binds the address after its fork, and gunicorn forks a new one for each that fails there:
    # a hub whose address is taken would do so forever. Bound here without SO_REUSEPORT, the address is
    # refused if anything listens on it (a hub of the same user too, which SO_REUSEPORT would let in).
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    socket.create_server((config.host, config.port), family=family).close()
    engine = hub_database.connect(hub_database.database_url(config.data_dir, config.database_url))
    dialect = engine.dialect.name
    engine.dispose()   # each worker makes its own after the fork: a connection pool never crosses one
    signing_key(config.receipt_key_path, config.receipt_public_key_path)
    if config.tls:
        tls_server_context(config.tls_key_path, config.tls_certificate_path, TLS_NAME)
    return dialect


class _HubWorkers(BaseApplication):   # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's application: settings from the hub's config only; each worker's app made after its fork."""

    def __init__(self, config: HubConfig, log_level: str) -> None:
        self.hub_config, self.log_level = config, log_level   # read by load_config, which __init__ calls
        super().__init__(prog="edgenvr hub")

    def load_config(self) -> None:
        for name, value in gunicorn_settings(self.hub_config, self.log_level).items():
            self.cfg.set(name, value)

    def load(self) -> Callable[[], Awaitable[web.Application]]:
        config, level = self.hub_config, self.log_level

        async def worker_app() -> web.Application:   # GunicornWebWorker awaits it in the forked worker
            # A master killed -9 takes its workers along at once, as a single-process hub goes whole: orphans
            # would keep the port (SO_REUSEPORT) until they noticed, and a restarted hub could not bind it.
            die_with_parent()
            setup_logging(level, f"hub worker {os.getpid()}")   # whose lines are whose
            return make_served_hub_app(config)
        return worker_app


def serve_hub_workers(config: HubConfig, log_level: str = "info") -> int:
    """Serve with config.workers gunicorn workers until SIGTERM/SIGINT; the exit code (0: stopped as asked)."""
    dialect = prepare(config)
    log.info("hub at %s://%s:%d/ with %d workers (database: %s)", "https" if config.tls else "http", config.host,
             config.port, config.workers, dialect)
    try:
        _HubWorkers(config, log_level).run()
    except SystemExit as stopped:   # gunicorn's master ends with sys.exit: 0 when asked to stop
        return 0 if stopped.code in (None, 0) else 1
    return 0
