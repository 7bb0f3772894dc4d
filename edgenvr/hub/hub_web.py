"""The hub's HTTP API for people and its UI: sign-in, the fleet, clip search, playback and download, remote
pull requests, users, tokens and the audit trail, on the same app as the boxes' routes (hub_server), all
through the box's one access middleware (web.access) and one route table (web.api_routes).

Owns: the hub's route table (the people's routes, and the boxes' routes marked Access.BOX), the context the
middleware and the shared routes use (HubWebContext: the hub's accounts and audit trail, hub.hub_accounts), the
UI's files (hub/static, plus the box UI's modules it reuses, served from the box's static dir), and the hub's
OpenAPI description.

Invariants:
- Every route has a rule: PUBLIC (health, sign-in, the UI's files), BOX (enrolment, uploads, the channel: the
  handler checks the box's RFC 9421 signature or its one-time token; no user credential is accepted there),
  or a user's credential (Bearer token or session cookie, CSRF on state-changing session requests) with a
  permission: VIEW (fleet, clips, playback), EXPORT (pull requests, evidence downloads), MANAGE_USERS,
  READ_AUDIT (hub.hub_accounts says what the roles mean here).
- Footage is shown only after its audit record is written (no record, no footage: 503): a download (`export`)
  every time, playback (`playback`) once per user, clip and file per PLAYBACK_AUDIT_S in this process; a pull
  request (`pull_request`) is recorded before it is queued, and its refusal after. Sign-ins, sign-outs and user
  changes are recorded by the box's own account routes, reused here.
- Ids are checked before use: a clip id is 32 hex digits (stored_clips), a box id the enrolment rule
  (box_enrolment.BOX_ID), a camera id core.camera_ids (the middleware); nothing from a request is joined into a
  path.
- Playback serves the video file's byte span inside the stored zip, with Range, If-Range, HEAD and 416, so a
  player seeks without the hub unpacking anything.
Failure paths: bad parameters -> 400; no such clip -> 404; a damaged stored clip -> 500, logged; a pull that
breaks a rule -> 400 naming it; the audit trail or the accounts unusable -> 503, nothing done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import edgenvr
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.time_format import basic_utc
from edgenvr.evidence.audit import AuditAction, AuditError
from edgenvr.evidence.identity import DeviceIdentity, IdentityError
from edgenvr.hub import hub_metrics
from edgenvr.hub.box_enrolment import BOX_ID
from edgenvr.hub.fleet import fleet
from edgenvr.hub.hub_accounts import (
    HUB_ID,
    HUB_NAME,
    audit_camera,
    hub_identity,
    hub_layout,
)
from edgenvr.hub.hub_config import HubConfig
from edgenvr.hub.remote_pulls import MAX_PULL_MS, Pull, PullRefused, pulls, request_pull
from edgenvr.hub.stored_clips import (
    MAX_CLIPS,
    ClipNotFound,
    ClipQuery,
    ClipUnreadable,
    ClipVideo,
    clip_json,
    clip_path,
    clip_row,
    find_clips,
    read_clip,
)
from edgenvr.storage.layout import StorageLayout
from edgenvr.sync.outbox import ClipKind
from edgenvr.web import account_routes, evidence_routes
from edgenvr.web.access import (
    BODY_KEY,
    CONTEXT_KEY,
    LoginLimiter,
    caller,
    secure_headers,
)
from edgenvr.web.accounts import Permission
from edgenvr.web.api_routes import (
    CAMERA_QUERY,
    Access,
    ApiRoute,
    openapi_document,
    register_routes,
)
from edgenvr.web.request_values import (
    byte_range,
    camera_id,
    fail,
    time_range,
    whole_number,
)
from edgenvr.web.server import STATIC_DIR as BOX_STATIC_DIR
from edgenvr.web.web_context import AdminWrites

log = logging.getLogger(__name__)

T = TypeVar("T")

STATIC_DIR = Path(__file__).parent / "static"
# The box UI's modules the hub's UI imports, served from the box's static dir (one copy of each). The hub's own
# files win on a clash. Its i18n/<lang>.json, which the box's i18n.js loads, is the box's catalogue with the
# hub's on top (`catalogues`): the reused modules find their words, and the hub says only what differs.
BOX_UI_FILES = ("app.css", "icon.svg", "api.js", "dom.js", "i18n.js", "session.js", "time.js", "ui.js",
                "views/login.js", "views/admin_audit.js")
PLAYBACK_AUDIT_S = 600.0      # as the box: a player makes many Range requests for one video
SEND_CHUNK = 256 * 1024
MAX_PART = 64                 # clip_intake.MAX_ENTRIES bounds a clip's files
_STATIC_KEY = web.AppKey("edgenvr_hub_static", dict)
_CATALOGUES_KEY = web.AppKey("edgenvr_hub_catalogues", dict)
_OPENAPI_KEY = web.AppKey("edgenvr_hub_openapi", dict)
_PLAYBACK_SEEN_KEY = web.AppKey("edgenvr_hub_playback_seen", dict)   # (who, clip, part) -> monotonic s


@dataclass
class HubWebContext(AdminWrites):
    """The web.access.AccessContext of the hub: its accounts and audit trail behind one write thread (SQLite
    connections stay in the thread that made them; the event loop never waits on a disk write or an Argon2
    hash), plus the database and config the hub's routes read."""

    config: HubConfig
    engine: sa.Engine
    receipt_key: Ed25519PrivateKey = field(repr=False)
    clock: Clock = SYSTEM_CLOCK
    tls: bool = field(init=False)
    layout: StorageLayout = field(init=False)
    identity: DeviceIdentity = field(init=False)

    def __post_init__(self) -> None:
        self.tls = self.config.tls
        self.layout = hub_layout(self.config)
        self.identity = hub_identity(self.receipt_key)
        self.start_writes("hub-web-writer")

    def requested_camera(self, raw: str) -> str:
        """A camera a request names: a camera id (the clip search, with its own box filter) or, as the hub's
        audit trail names cameras (hub_accounts.audit_camera), box/camera; each part checked, else 400."""
        box, _, camera = raw.rpartition("/")
        if box and not BOX_ID.fullmatch(box):
            fail(web.HTTPBadRequest, "camera: not box/camera (a box id, '/', a camera id)")
        camera_id(camera)
        return raw


def hub_context(request: web.Request) -> HubWebContext:
    return cast(HubWebContext, request.app[CONTEXT_KEY])


async def _audited(ctx: HubWebContext, actor: str, action: AuditAction, **fields: Any) -> None:
    """The record first; if it cannot be written, nothing is shown or done (503)."""
    try:
        await ctx.audit(actor, action, **fields)
    except (AuditError, IdentityError, OSError, sqlite3.Error) as error:
        log.error("%s refused: the audit trail cannot be written (%s)", action, error)
        fail(web.HTTPServiceUnavailable, "the audit trail cannot be written, so nothing was done")


# --- who am I, the UI, the description ---

async def me(request: web.Request) -> web.Response:
    found = caller(request)
    ctx = hub_context(request)
    return web.json_response({"user": account_routes.user_json(found.user),
                              "csrf_token": found.session.csrf_token if found.session is not None else None,
                              "hub": {"id": HUB_ID, "name": HUB_NAME, "key_fingerprint": ctx.identity.fingerprint}})


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name", "index.html")
    catalogue = request.app[_CATALOGUES_KEY].get(name)
    if catalogue is not None:
        return web.Response(body=catalogue, content_type="application/json", headers={"Cache-Control": "no-cache"})
    path = request.app[_STATIC_KEY].get(name)
    if path is None:
        fail(web.HTTPNotFound, "no such file")
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "no-cache"})


def static_files() -> dict[str, Path]:
    """name -> file: the reused box modules, then every file under hub/static (which wins on a clash)."""
    files = {name: BOX_STATIC_DIR / name for name in BOX_UI_FILES if (BOX_STATIC_DIR / name).is_file()}
    files |= {path.relative_to(STATIC_DIR).as_posix(): path for path in sorted(STATIC_DIR.rglob("*")) if path.is_file()}
    return files


def catalogues() -> dict[str, bytes]:
    """"i18n/<lang>.json" -> the box's catalogue of that language with the hub's keys on top."""
    merged = {}
    for path in sorted((STATIC_DIR / "i18n").glob("*.json")):
        box = json.loads((BOX_STATIC_DIR / "i18n" / path.name).read_text(encoding="utf-8"))
        merged[f"i18n/{path.name}"] = json.dumps(box | json.loads(path.read_text(encoding="utf-8")),
                                                 ensure_ascii=False).encode()
    return merged


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[_OPENAPI_KEY])


# --- the fleet ---

async def list_fleet(request: web.Request) -> web.Response:
    ctx = hub_context(request)
    now = ctx.clock.now_ms()
    boxes = await asyncio.to_thread(fleet, ctx.engine, now)
    return web.json_response({"now_ms": now, "boxes": [asdict(health) for health in boxes]})


# --- clips ---

def _box_param(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    if not BOX_ID.fullmatch(raw):
        fail(web.HTTPBadRequest, "box: not a box id (letters, digits, '_', '.', '-', at most 64)")
    return raw


async def search_clips(request: web.Request) -> web.Response:
    query = request.query
    kind = query.get("kind") or None
    if kind is not None and kind not in set(ClipKind):
        fail(web.HTTPBadRequest, f"kind must be one of {', '.join(ClipKind)}")
    wanted = ClipQuery(
        box=_box_param(query.get("box")), camera=query.get("camera") or None, kind=kind,   # camera: checked by
        from_ms=whole_number(query["from_ms"], "from_ms") if query.get("from_ms") else None,   # web.access
        to_ms=whole_number(query["to_ms"], "to_ms") if query.get("to_ms") else None,
        limit=whole_number(query.get("limit", str(MAX_CLIPS)), "limit", low=1, high=MAX_CLIPS))
    found = await asyncio.to_thread(find_clips, hub_context(request).engine, wanted)
    return web.json_response({"clips": found})


async def _stored(request: web.Request) -> tuple[sa.Row[Any], dict[str, Any], list[ClipVideo]]:
    """The clip the path names: its row, manifest and video files (404 if there is none)."""
    ctx = hub_context(request)
    clip_id = request.match_info["clip"]
    try:
        row = await asyncio.to_thread(clip_row, ctx.engine, clip_id)
        manifest, videos = await asyncio.to_thread(read_clip, ctx.config.clips_dir, clip_id)
    except ClipNotFound as missing:
        fail(web.HTTPNotFound, str(missing))
    except ClipUnreadable as damaged:
        log.error("a stored clip cannot be served: %s", damaged)
        fail(web.HTTPInternalServerError, f"the hub's copy of this clip is damaged: {damaged}")
    return row, manifest, videos


def _video_json(video: ClipVideo) -> dict[str, Any]:
    return {"part": video.part, "name": video.name, "bytes": video.size, "start_ms": video.start_ms,
            "end_ms": video.end_ms, "codec": video.codec, "width": video.width, "height": video.height,
            "sha256": video.sha256}


async def clip_detail(request: web.Request) -> web.Response:
    row, manifest, videos = await _stored(request)
    return web.json_response({"clip": clip_json(row), "files": [_video_json(video) for video in videos],
                              "manifest": manifest})


async def clip_video(request: web.Request) -> web.StreamResponse:
    ctx = hub_context(request)
    part = whole_number(request.query.get("part", "1"), "part", low=1, high=MAX_PART)
    row, _, videos = await _stored(request)
    if part > len(videos):
        fail(web.HTTPNotFound, f"clip {row.id} has {len(videos)} video file(s)")
    video = videos[part - 1]
    who = caller(request).actor
    seen = request.app[_PLAYBACK_SEEN_KEY]
    now = time.monotonic()
    if now - seen.get((who, row.id, part), -1e9) >= PLAYBACK_AUDIT_S:
        await _audited(ctx, who, AuditAction.PLAYBACK, camera=audit_camera(row.box, row.camera),
                       from_ms=video.start_ms, to_ms=video.end_ms, detail=f"clip {row.id}, file {video.name}")
        if len(seen) > 10_000:
            seen.clear()
        seen[(who, row.id, part)] = now
    etag = f'"{row.sha256[:32]}-{part}"'
    first, end, partial = byte_range(request, video.size, etag)
    try:
        handle = await asyncio.to_thread(open, clip_path(ctx.config.clips_dir, row.id), "rb")
    except FileNotFoundError:
        fail(web.HTTPNotFound, f"clip {row.id}'s file is gone")
    try:
        response = web.StreamResponse(status=206 if partial else 200, headers={
            "Content-Type": "video/mp4", "Accept-Ranges": "bytes", "ETag": etag, "Content-Length": str(end - first),
            "Cache-Control": "private, no-cache",
            "X-Edgenvr-Start-Ms": str(video.start_ms), "X-Edgenvr-End-Ms": str(video.end_ms),
            **({"Content-Range": f"bytes {first}-{end - 1}/{video.size}"} if partial else {})})
        secure_headers(request, response)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        position = first
        while position < end:
            chunk = await asyncio.to_thread(os.pread, handle.fileno(), min(SEND_CHUNK, end - position),
                                            video.offset + position)
            if not chunk:   # the file shrank under us: cut the connection rather than answer short
                log.error("clip %s ended early while being played", row.id)
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write(chunk)
            position += len(chunk)
        await response.write_eof()
    except ConnectionResetError:
        pass   # the player went away (a seek, a closed tab)
    finally:
        handle.close()
    return response


async def clip_evidence(request: web.Request) -> web.StreamResponse:
    """The stored zip as it is: the box's signed evidence folder, which `edgenvr verify` checks once unzipped."""
    ctx = hub_context(request)
    row = await _clip_row(request)
    reason = request.query.get("reason", "")[:500]
    path = clip_path(ctx.config.clips_dir, row.id)
    if not path.is_file():
        fail(web.HTTPNotFound, f"clip {row.id}'s file is gone")
    if request.method == "GET":
        await _audited(ctx, caller(request).actor, AuditAction.EXPORT, camera=audit_camera(row.box, row.camera),
                       from_ms=row.start_ms, to_ms=row.end_ms, reason=reason,
                       detail=f"clip {row.id} downloaded from the hub ({row.bytes} bytes, sha256 {row.sha256})")
    name = f"{row.box}_{row.camera}_{basic_utc(row.start_ms)}.zip"
    return web.FileResponse(path, headers={"Content-Type": "application/zip",
                                           "Content-Disposition": f'attachment; filename="{name}"'})


async def _clip_row(request: web.Request) -> sa.Row[Any]:
    try:
        return await asyncio.to_thread(clip_row, hub_context(request).engine, request.match_info["clip"])
    except ClipNotFound as missing:
        fail(web.HTTPNotFound, str(missing))


# --- remote pulls ---

def pull_json(pull: Pull) -> dict[str, Any]:
    return {"id": pull.id, "box": pull.box, "camera": pull.camera, "start_ms": pull.start_ms, "end_ms": pull.end_ms,
            "reason": pull.reason, "requested_by": pull.requested_by, "created_ms": pull.created_ms,
            "state": str(pull.state), "progress": pull.progress, "detail": pull.detail,
            "updated_ms": pull.updated_ms, "clip_id": pull.clip_id}


async def list_pulls(request: web.Request) -> web.Response:
    found = await asyncio.to_thread(pulls, hub_context(request).engine, _box_param(request.query.get("box")))
    return web.json_response({"pulls": [pull_json(pull) for pull in reversed(found)]})   # newest first


async def create_pull(request: web.Request) -> web.Response:
    ctx = hub_context(request)
    body: dict[str, Any] = request[BODY_KEY]
    box = _box_param(body["box"]) or ""
    # checked before the audit record, which cannot hold a reversed range: a past range, at most one pull long
    start_ms, end_ms = time_range(body["start_ms"], body["end_ms"], ctx.clock.now_ms(), longest_ms=MAX_PULL_MS)
    who = caller(request).actor
    fields = {"camera": audit_camera(box, body["camera"]), "from_ms": start_ms, "to_ms": end_ms,
              "reason": body["reason"]}
    await _audited(ctx, who, AuditAction.PULL_REQUEST, **fields, detail=f"asked box {box} for it")
    try:
        pull = await asyncio.to_thread(request_pull, ctx.engine, box, body["camera"], start_ms, end_ms,
                                       body["reason"], who, ctx.clock)
    except PullRefused as refused:
        try:
            await ctx.audit(who, AuditAction.PULL_REQUEST, **fields, detail=f"refused: {refused}")
        except (AuditError, IdentityError, OSError, sqlite3.Error) as error:
            log.error("the refusal of a pull request could not be audited: %s", error)   # the attempt is on record
        fail(web.HTTPBadRequest, str(refused))
    log.info("pull %s of %s/%s asked for by %s", pull.id, box, pull.camera, who)
    return web.json_response(pull_json(pull), status=201)


# --- the route table ---

_CLIP_PATH = {"name": "clip", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
              "description": "Clip id."}
_BOX_QUERY = {"name": "box", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 64},
              "description": "Only this box."}
_TIME = {"type": "integer", "minimum": 0}

PEOPLE_ROUTES = [
    ApiRoute("GET", "/", static_file, Access.PUBLIC, "The hub's UI"),
    ApiRoute("GET", "/static/{name:.+}", static_file, Access.PUBLIC, "The UI's files"),
    ApiRoute("GET", "/api/openapi.json", openapi, Access.SIGNED_IN, "This description of the hub's API"),
    ApiRoute("GET", "/api/me", me, Access.SIGNED_IN, "Who you are, your role and permissions, and the CSRF token"),
    ApiRoute("GET", "/api/fleet", list_fleet, Permission.VIEW,
             "Every enrolled box's last report: silent boxes, offline cameras, tamper, backlog, disk (troubled first)"),
    ApiRoute("GET", "/api/clips", search_clips, Permission.VIEW, "Clips received from boxes, newest first",
             (_BOX_QUERY, CAMERA_QUERY,
              {"name": "kind", "in": "query", "required": False,
               "schema": {"type": "string", "enum": [str(kind) for kind in ClipKind]}},
              {"name": "from_ms", "in": "query", "required": False, "schema": _TIME,
               "description": "Clips ending after this (UTC epoch ms)."},
              {"name": "to_ms", "in": "query", "required": False, "schema": _TIME,
               "description": "Clips starting before this (UTC epoch ms)."},
              {"name": "limit", "in": "query", "required": False,
               "schema": {"type": "integer", "minimum": 1, "maximum": MAX_CLIPS}})),
    ApiRoute("GET", "/api/clips/{clip}", clip_detail, Permission.VIEW,
             "A clip, its video files and its signed manifest", (_CLIP_PATH,), responses={"404": "No such clip"}),
    ApiRoute("GET", "/api/clips/{clip}/video.mp4", clip_video, Permission.VIEW,
             "A video file of the clip (part=N, default 1) as the box signed it; Range requests seek",
             (_CLIP_PATH, {"name": "part", "in": "query", "required": False,
                           "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PART}}),
             content="video/mp4", responses={"206": "Part of the video (a Range request)", "404": "No such clip",
                                             "416": "A Range beyond the video",
                                             "503": "The audit trail cannot be written"}),
    ApiRoute("GET", "/api/clips/{clip}/evidence.zip", clip_evidence, Permission.EXPORT,
             "The clip's evidence folder as the box sent it (a zip; `edgenvr verify` checks it unzipped)",
             (_CLIP_PATH, {"name": "reason", "in": "query", "required": False,
                           "schema": {"type": "string", "maxLength": 500}, "description": "Why (audited)."}),
             content="application/zip", responses={"404": "No such clip", "503": "The audit trail cannot be written"}),
    ApiRoute("GET", "/api/pulls", list_pulls, Permission.EXPORT, "Remote pull requests and how each stands, newest first",
             (_BOX_QUERY,)),
    ApiRoute("POST", "/api/pulls", create_pull, Permission.EXPORT,
             "Ask a box for a range of one camera (at most 24 h); it uploads it as a clip when its channel is open",
             body="pull_request", responses={"201": "The request", "503": "The audit trail cannot be written"}),
    hub_metrics.ROUTE,
]


def _shared_routes() -> list[ApiRoute]:
    """The box's account routes and audit search, as the hub serves them: `me` is the hub's, users carry no
    camera grant (hub.hub_accounts)."""
    bodies = {"user_add": "hub_user_add", "user_change": "hub_user_change"}
    summaries = {("GET", "/api/users"): "The hub's users",
                 ("PATCH", "/api/users/{user}"): "Change a user's role or password (a new password ends its sessions)"}
    shared = [replace(route, body=bodies.get(route.body or "", route.body),
                      summary=summaries.get((route.method, route.path), route.summary))
              for route in account_routes.ROUTES if route.path != "/api/me"]
    return [*shared, *(route for route in evidence_routes.ROUTES if route.path == "/api/audit")]


_BOX_SUMMARIES = {
    "enrol": "A box enrols once: its one-time token, id and device public key; answers the hub's receipt key",
    "options": "tus 1.0: what the upload endpoint supports",
    "create": "tus: create an upload (the same clip again: the same upload)",
    "head": "tus: an upload's committed offset (and its receipt once filed)",
    "patch": "tus: the next chunk of an upload",
    "terminate": "tus: abandon an upload",
    "overridden": "tus: a PATCH or DELETE sent as POST with X-HTTP-Method-Override",
    "handle": "The box's channel (a WebSocket the box opens): pulls down; reports, pull states, audit records up",
}


def box_route(route: web.RouteDef) -> ApiRoute:
    """An aiohttp route of the boxes' side (hub_server, tus_uploads, box_channel) in the route table, marked BOX."""
    handler = route.handler
    summary = _BOX_SUMMARIES.get(getattr(handler, "__name__", ""), "A request of an enrolled box")
    names = [part[1:-1].split(":")[0] for part in route.path.split("/") if part.startswith("{")]
    return ApiRoute(route.method, route.path, handler, Access.BOX, summary,   # type: ignore[arg-type]
                    tuple({"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                          for name in names))


def hub_routes(public: list[web.RouteDef], boxes: list[web.RouteDef]) -> list[ApiRoute]:
    """The hub's whole route table: `public` (health), the boxes' routes, the people's."""
    return [*(ApiRoute(route.method, route.path, route.handler, Access.PUBLIC,   # type: ignore[arg-type]
                       "Whether the hub answers, its version and which worker answered") for route in public),
            *(box_route(route) for route in boxes), *PEOPLE_ROUTES, *_shared_routes()]


def add_hub_routes(app: web.Application, config: HubConfig, engine: sa.Engine, receipt_key: Ed25519PrivateKey,
                   clock: Clock, *, public: list[web.RouteDef], boxes: list[web.RouteDef]) -> None:
    """Register every route of the hub's app through the route table, with what the access middleware (which
    the app must have) and the people's routes need."""
    ctx = HubWebContext(config, engine, receipt_key, clock)
    routes = hub_routes(public, boxes)
    app[CONTEXT_KEY] = ctx
    app[account_routes.LIMITER_KEY] = LoginLimiter()
    app[_STATIC_KEY] = static_files()
    app[_CATALOGUES_KEY] = catalogues()
    app[_PLAYBACK_SEEN_KEY] = {}
    app[_OPENAPI_KEY] = openapi_document(
        routes, edgenvr.__version__, title="edgenvr city hub API",
        description="Times are UTC epoch milliseconds. People sign in with POST /api/login (a session cookie; send "
                    "its csrf_token as X-CSRF-Token on every POST/PUT/PATCH/DELETE) or send `Authorization: Bearer "
                    "TOKEN` (`edgenvr hub token create`). Boxes sign their requests (box_signature).")
    register_routes(app, routes)

    async def close_context(_app: web.Application) -> None:
        await asyncio.to_thread(ctx.close)
    app.on_cleanup.append(close_context)
