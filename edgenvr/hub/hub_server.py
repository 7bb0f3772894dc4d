"""The hub's HTTP server (`edgenvr hub --config HUB.toml`): box enrolment, clip uploads (tus) from enrolled
boxes, the boxes' channels (hub.box_channel: pulls down, health up), health. One process here; at city scale
several run on one PostgreSQL database and blob mount, every request answerable by any of them (hub_database).

Owns: the boxes' routes. Invariants:
- Every route is in one route table (hub.hub_web, which also has the people's API and UI) behind the box's
  access middleware (web.access). The boxes' routes are marked BOX there: each but health and enrolment (whose
  one-time token is its credential) is signed by an enrolled, unrevoked box (evidence.request_signing); the
  signing box is the caller, and an upload is its creator's.
- Nothing trusts the peer address or proxy headers.
- A serving process builds its app with `make_served_hub_app`: `serve_hub` in one process, or each worker of
  `[hub] workers = N` (hub_workers, gunicorn) after its fork; GET /api/health names the process that answered
  (`worker`: its pid), so an operator (and the tests) can see which worker a load balancer reached.
Failure paths: a missing or bad signature -> 401 naming why; an enrolment refused -> 403 naming why (never
the token); a malformed enrolment body -> 400; the listen address in use, or the TLS key unreadable -> logged,
exit 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import edgenvr
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.evidence.identity import public_pem, signing_key
from edgenvr.evidence.request_signing import SignatureRejected, verify_request
from edgenvr.hub import hub_database
from edgenvr.hub.box_channel import BoxChannels
from edgenvr.hub.box_enrolment import EnrolmentRefused, box_public_key, enrol_box
from edgenvr.hub.clip_intake import ClipIntake
from edgenvr.hub.hub_config import HubConfig
from edgenvr.hub.hub_web import add_hub_routes
from edgenvr.hub.tus_uploads import TusUploads, tus_resumable_header
from edgenvr.sync.hub_protocol import ENROL_PATH
from edgenvr.web.access import access_middleware
from edgenvr.web.tls_certificate import tls_server_context

log = logging.getLogger(__name__)

SWEEP_SECONDS = 3600.0
TLS_NAME = "edgenvr-hub"   # the name in the hub's self-signed certificate
ENGINE_KEY = web.AppKey("edgenvr_hub_engine", sa.Engine)
UPLOADS_KEY = web.AppKey("edgenvr_hub_uploads", TusUploads)


def make_hub_app(config: HubConfig, engine: sa.Engine, receipt_key: Ed25519PrivateKey,
                 clock: Clock = SYSTEM_CLOCK) -> web.Application:
    async def signed_box(request: web.Request) -> str:
        try:
            return await asyncio.to_thread(verify_request, request.method, request.path_qs, request.headers,
                                           b"", lambda box: box_public_key(engine, box))
        except SignatureRejected as exc:
            raise web.HTTPUnauthorized(text=f"{exc}\n") from None

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": edgenvr.__version__, "worker": os.getpid()})

    async def enrol(request: web.Request) -> web.Response:
        try:
            body: Any = await request.json()
            token, box, key = body["token"], body["box"], body["public_key"]
            if not all(isinstance(v, str) and len(v) < 4096 for v in (token, box, key)):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text='the body must be JSON {"token", "box", "public_key"} (strings)\n') from None
        try:
            await asyncio.to_thread(enrol_box, engine, token, box, key, clock)
        except EnrolmentRefused as exc:
            log.warning("enrolment of %r refused: %s", box[:64], exc)
            raise web.HTTPForbidden(text=f"{exc}\n") from None
        log.info("box %s enrolled", box)
        return web.json_response({"box": box, "hub_key": public_pem(receipt_key.public_key()).decode()})

    uploads = TusUploads(engine, config.blobs_dir, signed_box,
                         ClipIntake(engine, config.clips_dir, receipt_key, clock).on_complete,
                         max_bytes=config.max_clip_bytes, clock=clock)
    channels = BoxChannels(engine, signed_box, clock)

    async def delivering(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(channels.deliver_forever())
        yield
        task.cancel()

    # JSON bodies only; tus chunks are streamed. Every route passes the one access middleware (web.access).
    app = web.Application(middlewares=[tus_resumable_header, access_middleware], client_max_size=64 * 1024)
    app[ENGINE_KEY] = engine
    app[UPLOADS_KEY] = uploads
    add_hub_routes(app, config, engine, receipt_key, clock, public=[web.get("/api/health", health)],
                   boxes=[web.post(ENROL_PATH, enrol), *uploads.routes(), *channels.routes()])
    app.cleanup_ctx.append(delivering)
    app.on_shutdown.append(channels.close_all)
    return app


def make_served_hub_app(config: HubConfig, clock: Clock = SYSTEM_CLOCK) -> web.Application:
    """The app as a serving process runs it: its own engine (made here, after a worker's fork; disposed at
    cleanup) and, while it serves, expired unfinished uploads deleted every hour (by every worker: a sweep
    deletes only what is still expired, see tus_uploads)."""
    engine = hub_database.connect(hub_database.database_url(config.data_dir, config.database_url))
    app = make_hub_app(config, engine, signing_key(config.receipt_key_path, config.receipt_public_key_path), clock)

    async def sweeping(_app: web.Application) -> AsyncIterator[None]:
        async def sweep() -> None:
            while True:
                try:
                    await app[UPLOADS_KEY].sweep_expired()
                except (OSError, sa.exc.SQLAlchemyError) as exc:   # try again next time; serving goes on
                    log.error("uploads: sweeping expired uploads failed: %s", exc)
                await asyncio.sleep(SWEEP_SECONDS)
        task = asyncio.create_task(sweep())
        yield
        task.cancel()

    async def dispose(_app: web.Application) -> None:   # on_cleanup runs after every cleanup_ctx's end
        engine.dispose()

    app.cleanup_ctx.append(sweeping)
    app.on_cleanup.append(dispose)
    return app


async def serve_hub(config: HubConfig, clock: Clock = SYSTEM_CLOCK) -> None:
    """Serve in this one process until SIGTERM/SIGINT (`[hub] workers` > 1: hub_workers instead)."""
    ssl_context = tls_server_context(config.tls_key_path, config.tls_certificate_path, TLS_NAME) \
        if config.tls else None
    app = make_served_hub_app(config, clock)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context, reuse_address=True)
        await site.start()
        log.info("hub at %s://%s:%d/ (database: %s)", "https" if ssl_context else "http", config.host,
                 config.port, app[ENGINE_KEY].dialect.name)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
