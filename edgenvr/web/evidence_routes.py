"""The evidence routes of the HTTP API: exports (the signed evidence folder of evidence.bundle as a zip
download), holds, and the audit trail's search.

Exports are built in a thread of their own with their own audit-trail connection (the trail takes appends
from several connections and processes), in `<data>/exports/`, zipped there without compression (video does
not compress; the zip's entries keep the folder's names, so `unzip` then `edgenvr verify` works), streamed
from the file, and removed once sent: the box keeps the recording and the audit record, not a copy.

Failure paths: a malformed request -> 400; nothing recorded -> 404 naming the gap; the audit trail or the
device key unusable -> 503 and nothing exported (no audit record, no footage); the data disk full while
zipping -> 507 and the partial files removed; the client going away mid-download -> files removed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp import web

from edgenvr.core.time_format import basic_utc
from edgenvr.core.units import DAY_MS
from edgenvr.evidence.audit import AuditAction, AuditError, AuditTrail, read_records
from edgenvr.evidence.bundle import ExportError, ExportRequest, export_clip, zip_export
from edgenvr.evidence.clip_builder import ClipError
from edgenvr.evidence.identity import IdentityError
from edgenvr.retention.holds import (
    HoldError,
    add_hold,
    hold_to_json,
    list_holds,
    open_index,
    release_hold,
)
from edgenvr.web.access import (
    BODY_KEY,
    caller,
    context,
    require,
    require_camera,
    secure_headers,
)
from edgenvr.web.accounts import Permission
from edgenvr.web.api_routes import CAMERA_QUERY, ApiRoute
from edgenvr.web.request_values import configured_camera, fail, time_range, whole_number
from edgenvr.web.web_context import WebContext

log = logging.getLogger(__name__)

LONGEST_EXPORT_MS = DAY_MS
AUDIT_LIMIT = 2000
_SEND_CHUNK = 1 << 20


# --- exports ---

async def create_export(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    body: dict[str, Any] = request[BODY_KEY]
    camera = body["camera"]
    start_ms, end_ms = time_range(body["start_ms"], body["end_ms"], ctx.clock.now_ms(), longest_ms=LONGEST_EXPORT_MS)
    configured_camera(ctx.config, camera)
    who = caller(request).actor
    if body.get("hold"):
        require(request, Permission.HOLD)
        await _add_hold(ctx, who, camera, start_ms, end_ms, body["reason"])
    exports_dir = ctx.layout.exports_dir
    name = f"{ctx.config.box.box_id}_{camera}_{basic_utc(start_ms)}"
    folder = exports_dir / f"{name}_{os.getpid()}_{id(request)}"
    archive = folder.with_name(folder.name + ".zip")
    try:
        try:
            await asyncio.to_thread(_export_zip, ctx, ExportRequest(camera, start_ms, end_ms, folder, body["reason"], who),
                                    archive, name)
        except ClipError as error:
            fail(web.HTTPNotFound, str(error))
        except (AuditError, IdentityError, sqlite3.Error) as error:
            log.error("export refused: the audit trail or the box's key cannot be used (%s)", error)
            fail(web.HTTPServiceUnavailable, "the audit trail cannot be written, so nothing was exported")
        except ExportError as error:
            fail(web.HTTPConflict, str(error))
        except OSError as error:
            log.error("export of %s failed: %s", camera, error)
            fail(web.HTTPInsufficientStorage, f"the export could not be written on the box: {error.strerror or error}")
        # Open, then remove: the open file stays readable while it is sent, and nothing is left behind
        # however the download ends.
        handle = open(archive, "rb")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        archive.unlink(missing_ok=True)
    with handle:
        response = web.StreamResponse(headers={
            "Content-Type": "application/zip", "Content-Length": str(os.fstat(handle.fileno()).st_size),
            "Content-Disposition": f'attachment; filename="{name}.zip"'})
        secure_headers(request, response)
        await response.prepare(request)
        while chunk := await asyncio.to_thread(handle.read, _SEND_CHUNK):
            await response.write(chunk)
        await response.write_eof()
    return response


def _export_zip(ctx: WebContext, export: ExportRequest, archive: Path, name: str) -> None:
    """The evidence folder, then its zip (entries under `name/`); both in the exports directory."""
    export.out_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with ctx.index() as conn:
        trail = AuditTrail(ctx.layout, ctx.identity, ctx.clock)
        try:
            export_clip(conn, ctx.config, ctx.layout, ctx.identity, trail, export)
        finally:
            trail.close()
    zip_export(export.out_dir, archive, name)


# --- holds ---

async def _add_hold(ctx: WebContext, who: str, camera: str, start_ms: int, end_ms: int, reason: str) -> dict[str, Any]:
    def add() -> dict[str, Any]:
        ctx.audit_now(who, AuditAction.HOLD_ADD, camera=camera, from_ms=start_ms, to_ms=end_ms, reason=reason)
        conn = open_index(ctx.layout)
        try:
            return hold_to_json(add_hold(conn, ctx.config, camera, start_ms, end_ms, reason, clock=ctx.clock))
        except BaseException as error:
            ctx.audit_now(who, AuditAction.HOLD_ADD, camera=camera, from_ms=start_ms, to_ms=end_ms, reason=reason,
                          detail=f"failed: {error}")
            raise
        finally:
            conn.close()
    return await _hold_write(ctx, add)


async def _hold_write(ctx: WebContext, action: Any) -> dict[str, Any]:
    try:
        return await ctx.write(action)
    except HoldError as error:
        fail(web.HTTPBadRequest, str(error))
    except (AuditError, IdentityError) as error:
        log.error("hold refused: the audit trail cannot be written (%s)", error)
        fail(web.HTTPServiceUnavailable, "the audit trail cannot be written, so nothing was done")
    except (sqlite3.Error, OSError) as error:
        fail(web.HTTPServiceUnavailable, f"the index refused the write ({error}); try again")


async def list_holds_route(request: web.Request) -> web.Response:
    ctx = context(request)
    camera = request.query.get("camera")
    released = request.query.get("all") == "true"
    user = caller(request).user

    def read() -> list[dict[str, Any]]:
        conn = open_index(ctx.layout)
        try:
            return [hold_to_json(h) for h in list_holds(conn, camera, released) if user.may_see(h.camera)]
        finally:
            conn.close()
    try:
        return web.json_response({"holds": await asyncio.to_thread(read)})
    except (sqlite3.Error, OSError) as error:
        fail(web.HTTPServiceUnavailable, f"the index cannot be read right now ({error})")


async def create_hold(request: web.Request) -> web.Response:
    ctx = context(request)
    body: dict[str, Any] = request[BODY_KEY]
    start_ms, end_ms = time_range(body["start_ms"], body["end_ms"], ctx.clock.now_ms() + 366 * DAY_MS)
    configured_camera(ctx.config, body["camera"])
    hold = await _add_hold(ctx, caller(request).actor, body["camera"], start_ms, end_ms, body["reason"])
    return web.json_response(hold, status=201)


async def release_hold_route(request: web.Request) -> web.Response:
    ctx = context(request)
    hold_id = whole_number(request.match_info["hold"], "hold id", low=1, high=2**62)
    reason: str = request[BODY_KEY]["reason"]
    who = caller(request).actor

    def release() -> dict[str, Any]:
        conn = open_index(ctx.layout)
        try:
            row = conn.execute("SELECT camera, from_ms, to_ms FROM holds WHERE id = ?", (hold_id,)).fetchone()
            if row is None:
                raise HoldError(f"no hold {hold_id}")
            if not caller(request).user.may_see(row["camera"]):
                raise PermissionError(row["camera"])
            ctx.audit_now(who, AuditAction.HOLD_RELEASE, camera=row["camera"], from_ms=row["from_ms"],
                          to_ms=row["to_ms"], reason=reason, detail=f"hold {hold_id}")
            return hold_to_json(release_hold(conn, hold_id, reason, clock=ctx.clock))
        finally:
            conn.close()
    try:
        return web.json_response(await _hold_write(ctx, release))
    except PermissionError as denied:
        require_camera(request, str(denied))
        raise


# --- audit ---

async def search_audit(request: web.Request) -> web.Response:
    ctx = context(request)
    query = request.query
    since = whole_number(query["since_ms"], "since_ms") if "since_ms" in query else None
    until = whole_number(query["until_ms"], "until_ms") if "until_ms" in query else None
    limit = whole_number(query.get("limit", str(AUDIT_LIMIT)), "limit", low=1, high=AUDIT_LIMIT)
    wanted = {key: query[key] for key in ("actor", "action", "camera") if query.get(key)}
    text = query.get("text", "").lower()
    try:
        records = await asyncio.to_thread(read_records, ctx.layout, since, until)
    except AuditError as error:
        fail(web.HTTPServiceUnavailable, f"the audit trail cannot be read: {error}")
    found = [r for r in records
             if all(str(getattr(r, key) or "") == value for key, value in wanted.items())
             and (not text or text in f"{r.actor} {r.action} {r.camera or ''} {r.reason} {r.detail}".lower())]
    return web.json_response({"records": [
        {"seq": r.seq, "time_ms": r.time_ms, "actor": r.actor, "action": r.action, "camera": r.camera,
         "from_ms": r.from_ms, "to_ms": r.to_ms, "reason": r.reason, "detail": r.detail}
        for r in found[-limit:][::-1]]})


_RANGE_BODY = "camera, start_ms, end_ms (UTC epoch ms) and reason"
ROUTES = [
    ApiRoute("POST", "/api/exports", create_export, Permission.EXPORT,
             f"Export a range (at most 24 h) as the signed evidence folder in a zip: {_RANGE_BODY}; hold: also hold it",
             body="export", content="application/zip",
             responses={"404": "Nothing recorded in the range", "503": "The audit trail cannot be written",
                        "507": "The box's disk is full"}),
    ApiRoute("GET", "/api/holds", list_holds_route, Permission.VIEW, "Holds in force (all=true: released too)",
             (CAMERA_QUERY, {"name": "all", "in": "query", "required": False,
                             "schema": {"type": "string", "enum": ["true", "false"]}})),
    ApiRoute("POST", "/api/holds", create_hold, Permission.HOLD, f"Keep a range whatever its age: {_RANGE_BODY}",
             body="hold", responses={"201": "The hold"}),
    ApiRoute("POST", "/api/holds/{hold}/release", release_hold_route, Permission.HOLD,
             "End a hold; its video goes back to normal retention",
             ({"name": "hold", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}},),
             body="release"),
    ApiRoute("GET", "/api/audit", search_audit, Permission.READ_AUDIT,
             "Search the audit trail, newest first",
             tuple({"name": name, "in": "query", "required": False, "schema": schema} for name, schema in (
                 ("since_ms", {"type": "integer", "minimum": 0}), ("until_ms", {"type": "integer", "minimum": 0}),
                 ("actor", {"type": "string"}), ("action", {"type": "string"}), ("camera", {"type": "string"}),
                 ("text", {"type": "string"}), ("limit", {"type": "integer", "minimum": 1, "maximum": AUDIT_LIMIT})))),
]
