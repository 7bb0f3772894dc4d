"""The box's web server: the aiohttp application (route table + access middleware, the setup gate of a box
without an admin: web.setup_routes), its static UI, health, status and OpenAPI routes, and the process
`edgenvr run` starts when the config has a [web] table.

It runs in a process of its own (runtime.supervisor starts and restarts it), so no number of browsers, slow
phones or API scripts can delay a recorder or the supervisor's index commits: it shares only the index
(read-only, WAL) and the small files it writes itself (web.web_context).

Static files: the UI's files in edgenvr/web/static are listed once at start-up; a request names one of
them or gets 404. No path from a request is ever joined onto a directory.

Failure paths: the port taken or not allowed -> logged, the process exits 1 and the supervisor retries it
with backoff (recording goes on); the TLS key or certificate unreadable -> the same, with the file named.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import signal
import sys
from pathlib import Path

from aiohttp import web

import edgenvr
from edgenvr.config.records import Config
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.process_setup import BACKGROUND_NICE, become_child_process
from edgenvr.core.time_sync import time_sync_state
from edgenvr.web import (
    account_routes,
    box_metrics,
    camera_routes,
    evidence_routes,
    live_playlist,
    setup_routes,
)
from edgenvr.web.access import (
    CONTEXT_KEY,
    SETUP_GATE_KEY,
    LoginLimiter,
    access_middleware,
    context,
)
from edgenvr.web.api_routes import Access, ApiRoute, openapi_document, register_routes
from edgenvr.web.live_playlist import LivePlaylists
from edgenvr.web.live_relay import LiveRelay
from edgenvr.web.request_values import MAX_BODY_BYTES, fail
from edgenvr.web.tls_certificate import CertificateError, server_context
from edgenvr.web.web_context import WebContext

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_STATIC_KEY = web.AppKey("edgenvr_static", dict)
_OPENAPI_KEY = web.AppKey("edgenvr_openapi", dict)
STATUS_NTP_MAX_AGE_S = 5.0   # timesyncd's details are read at most this often, however often status is asked


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": edgenvr.__version__})


async def box_status(request: web.Request) -> web.Response:
    """The box as a whole (cameras have their own routes): version, id and name, and its clock (NTP)."""
    ctx = context(request)
    clock = await asyncio.to_thread(time_sync_state, ctx.clock, max_age_s=STATUS_NTP_MAX_AGE_S)
    return web.json_response({"version": edgenvr.__version__, "box": {"id": ctx.config.box.box_id,
                                                                     "name": ctx.config.box.box_name},
                              "time_sync": clock.to_json()})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[_OPENAPI_KEY])


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name", "index.html")
    path = request.app[_STATIC_KEY].get(name)
    if path is None:
        fail(web.HTTPNotFound, "no such file")
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "no-cache"})


def _static_files() -> dict[str, Path]:
    """name -> file for every file under static/ (names with '/' for subdirectories)."""
    if not STATIC_DIR.is_dir():
        return {}
    return {path.relative_to(STATIC_DIR).as_posix(): path for path in sorted(STATIC_DIR.rglob("*")) if path.is_file()}


_SERVER_ROUTES = [
    ApiRoute("GET", "/api/health", health, Access.PUBLIC, "Whether the box's web server answers, and its version",
             during_setup=True),
    ApiRoute("GET", "/api/status", box_status, Access.SIGNED_IN,
             "The box: version, id and name, and its clock's synchronisation (`time_sync`: synchronised, the NTP "
             "server, the last sync and its offset, or why they are unknown)"),
    ApiRoute("GET", "/api/openapi.json", openapi, Access.SIGNED_IN, "This description of the API"),
    ApiRoute("GET", "/", static_file, Access.PUBLIC, "The UI", during_setup=True),
    ApiRoute("GET", "/static/{name:.+}", static_file, Access.PUBLIC, "The UI's files", during_setup=True),
]


def all_routes() -> list[ApiRoute]:
    return [*_SERVER_ROUTES, *account_routes.ROUTES, *setup_routes.ROUTES, *camera_routes.ROUTES,
            *live_playlist.ROUTES, *evidence_routes.ROUTES, *box_metrics.ROUTES]


def make_app(config: Config, clock: Clock = SYSTEM_CLOCK, *, tls: bool | None = None,
             live_endpoint: str | None = None) -> web.Application:
    """The application; `live_endpoint`: where the recorders' live feeds connect (None: no live view)."""
    ctx = WebContext(config, clock, tls=config.web.tls if tls is None else tls)
    app = web.Application(middlewares=[access_middleware], client_max_size=MAX_BODY_BYTES)
    app[CONTEXT_KEY] = ctx
    app[account_routes.LIMITER_KEY] = LoginLimiter()
    app[setup_routes.LIMITER_KEY] = LoginLimiter()
    app[SETUP_GATE_KEY] = setup_routes.FirstAdminGate(ctx)   # no admin yet: the setup page only
    app[_STATIC_KEY] = _static_files()
    routes = all_routes()
    app[_OPENAPI_KEY] = openapi_document(routes, edgenvr.__version__)
    register_routes(app, routes)
    relay = app[camera_routes.LIVE_KEY] = LiveRelay(live_endpoint)
    playlists = app[live_playlist.PLAYLISTS_KEY] = LivePlaylists(relay, clock)   # live HLS, on the relay's viewers
    app[camera_routes.PLAYBACK_SEEN_KEY] = {}
    app[camera_routes.PLANS_KEY] = {}

    async def start_relay(app: web.Application) -> None:
        await relay.start()

    async def stop_relay(app: web.Application) -> None:
        await playlists.stop()
        await relay.stop()
    app.on_startup.append(start_relay)
    app.on_cleanup.append(stop_relay)

    async def close_context(app: web.Application) -> None:
        await asyncio.to_thread(ctx.close)
    app.on_cleanup.append(close_context)
    return app


def run_web_process(config: Config, name: str, live_endpoint: str | None = None) -> None:
    """Process entry point (started by the supervisor when the config has [web])."""
    # No data-dir lock: the web server writes no segments, so a supervisor's start-up need not wait for it.
    become_child_process(None, name, config.log_level, nice=BACKGROUND_NICE)   # clients wait, recording never
    try:
        asyncio.run(serve(config, live_endpoint=live_endpoint))
    except (OSError, CertificateError) as error:
        log.error("the web server cannot start on %s: %s", config.web.listen, error)
        sys.exit(1)


async def serve(config: Config, clock: Clock = SYSTEM_CLOCK, live_endpoint: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    app = make_app(config, clock, live_endpoint=live_endpoint)
    ssl_context = None
    if config.web.tls:
        ctx = app[CONTEXT_KEY]
        ssl_context = server_context(ctx.layout, config.box.box_id)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.web.host, config.web.port, ssl_context=ssl_context, reuse_address=True)
    await site.start()
    log.info("web UI at %s://%s:%d/", "https" if ssl_context else "http", config.web.host, config.web.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
