"""The camera routes of the HTTP API: cameras and their state, a camera's timeline, its video of a range as
one seekable MP4, events and their snapshots, and the reference view.

Every route here reads the index read-only in a worker thread (web_context.read) and builds file paths only
from validated ids (layout.segment_path, or a path stored by edgenvr itself that is checked to lie inside its
directory). Access (role, camera grants) is decided by web.access before a handler runs; the snapshot route,
which finds its camera through the event, checks the grant itself.

Failure paths: a malformed range or id -> 400 (web.request_values); nothing recorded in a video range -> 404
naming the gap and its reason; a segment unreadable or deleted by the ring while being sent -> the answer is
cut off (the browser asks again) and the reason logged; an index that cannot be read -> 503.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from edgenvr.config.records import Config
from edgenvr.core.records import COMMISSIONING, EventKind, RecorderState
from edgenvr.core.units import DAY_MS, MINUTE_MS
from edgenvr.evidence.audit import AuditAction
from edgenvr.index.queries import (
    EventRow,
    backlog,
    camera_states,
    event_by_id,
    events,
    gaps,
    latest_reference,
    newest_codec,
    recorded_stretches,
)
from edgenvr.index.writer import GAP_THRESHOLD_MS
from edgenvr.storage.layout import StorageLayout
from edgenvr.web.access import caller, context, require_camera, secure_headers
from edgenvr.web.accounts import Permission
from edgenvr.web.api_routes import (
    CAMERA_PATH,
    CAMERA_QUERY,
    END_MS,
    START_MS,
    Access,
    ApiRoute,
)
from edgenvr.web.live_relay import FIRST_PICTURE_SECONDS, LiveRelay
from edgenvr.web.playback_video import (
    LAYOUTS,
    PROGRESSIVE,
    NoRecording,
    PlaybackError,
    PlaybackVideo,
    plan_playback_video,
)
from edgenvr.web.request_values import (
    byte_range,
    configured_camera,
    fail,
    query_range,
    whole_number,
)

log = logging.getLogger(__name__)

LONGEST_VIDEO_MS = DAY_MS
LONGEST_TIMELINE_MS = 31 * DAY_MS
EVENTS_LIMIT = 1000
PLAYBACK_AUDIT_MS = 10 * MINUTE_MS   # one audit record per viewer, camera and range this often (a player
# makes dozens of Range requests for one video)
PLAYBACK_SEEN_KEY = web.AppKey("edgenvr_playback_seen", dict)   # (who, camera, start, end) -> when audited
LIVE_KEY = web.AppKey("edgenvr_live_relay", LiveRelay)
PLANS_KEY = web.AppKey("edgenvr_playback_plans", dict)   # (camera, start, end, layout) -> (monotonic time, video)
PLAN_KEPT_SECONDS = 30.0
PLANS_KEPT = 64
PLANS_KEPT_BYTES = 32 << 20   # of plan headers: a day's progressive moov is ~10 MB
VIDEO_LAYOUT = {"name": "layout", "in": "query", "required": False,
                "schema": {"type": "string", "enum": list(LAYOUTS), "default": PROGRESSIVE},
                "description": "progressive (default): one moov indexing every sample, so that any player seeks "
                               "with it alone; fragmented: moof + mdat fragments indexed by a sidx "
                               "(Chromium seeks with it, Firefox reads up to the time sequentially)."}


# --- cameras ---

def _camera_list(conn: sqlite3.Connection, config: Config, layout: StorageLayout, now_ms: int) -> list[dict[str, Any]]:
    states = {row["id"]: row for row in camera_states(conn)}
    tampered: dict[str, list[str]] = {}
    for event in events(conn, layout, None, EventKind.TAMPER, now_ms, now_ms + 1):
        if event.end_ms is None:
            tampered.setdefault(event.camera, []).append(event.subkind)
    result = []
    for camera in config.cameras:
        row = states.get(camera.id)
        state = RecorderState(row["state"]) if row is not None else RecorderState.UNKNOWN
        codec = newest_codec(conn, camera.id, row["last_end_ms"] if row is not None else None)
        reference = latest_reference(conn, camera.id)
        result.append({
            "id": camera.id, "name": camera.name,
            "state": "disabled" if not camera.enabled else str(state),
            "state_since_ms": row["state_since_ms"] if row is not None else None,
            "state_reason": (row["state_reason"] or "") if row is not None else "",
            "last_video_ms": row["last_end_ms"] if row is not None else None,
            "tamper": sorted(tampered.get(camera.id, [])),
            "codec": codec,
            "reference": None if reference is None else {
                "approved_ms": reference["approved_ms"],
                "provisional": reference["approved_by"] == COMMISSIONING,
                "approved_by": None if reference["approved_by"] == COMMISSIONING else reference["approved_by"]},
        })
    return result


async def list_cameras(request: web.Request) -> web.Response:
    ctx = context(request)
    user = caller(request).user
    cameras = await _index_read(request, _camera_list, ctx.config, ctx.layout, ctx.clock.now_ms())
    return web.json_response({"cameras": [c for c in cameras if user.may_see(c["id"])]})


async def sync_status(request: web.Request) -> web.Response:
    """The box's store-and-forward to the city hub: how much waits and why (as `edgenvr status` says it)."""
    sync = context(request).config.sync
    if not sync.enabled:
        return web.json_response({"enabled": False})
    waiting = await _index_read(request, backlog)
    return web.json_response({"enabled": True, "hub_url": sync.hub_url, "backlog": waiting.count,
                              "backlog_bytes_built": waiting.bytes_known, "oldest_ms": waiting.oldest_ms,
                              "last_error": waiting.last_error})


def _event_json(event: EventRow) -> dict[str, Any]:
    return {"id": event.id, "camera": event.camera, "kind": event.kind, "subkind": event.subkind,
            "start_ms": event.start_ms, "end_ms": event.end_ms, "zones": event.zones,
            "peak_score": round(event.peak_score, 4), "snapshot": event.snapshot is not None,
            "detail": event.detail}


# --- timeline ---

def _timeline(conn: sqlite3.Connection, layout: StorageLayout, camera: str, start_ms: int, end_ms: int,
              clock_now: Any) -> dict[str, Any]:
    return {
        "camera": camera, "start_ms": start_ms, "end_ms": end_ms,
        "recorded": [{"start_ms": s.start_ms, "end_ms": s.end_ms, "codec": s.codec}
                     for s in recorded_stretches(conn, layout, camera, start_ms, end_ms, GAP_THRESHOLD_MS)],
        "gaps": [{"start_ms": max(g.start_ms, start_ms),
                  "end_ms": min(g.end_ms if g.end_ms is not None else clock_now, end_ms), "reason": g.reason}
                 for g in gaps(conn, layout, camera, start_ms, end_ms)],
        "events": [_event_json(e) for e in events(conn, layout, camera, None, start_ms, end_ms)],
    }


async def camera_timeline(request: web.Request) -> web.Response:
    ctx = context(request)
    now = ctx.clock.now_ms()
    start_ms, end_ms = query_range(request, now, longest_ms=LONGEST_TIMELINE_MS)
    camera = known_camera(request)
    return web.json_response(await _index_read(request, _timeline, ctx.layout, camera, start_ms, end_ms, now))


# --- video ---

async def camera_video(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    start_ms, end_ms = query_range(request, ctx.clock.now_ms(), longest_ms=LONGEST_VIDEO_MS)
    kind = request.query.get("layout", PROGRESSIVE)
    if kind not in LAYOUTS:
        fail(web.HTTPBadRequest, f"layout must be {' or '.join(LAYOUTS)}, got {kind[:40]!r}")
    camera = known_camera(request)
    try:
        video = await _planned_video(request, camera, start_ms, end_ms, kind)
    except NoRecording as gap:
        fail(web.HTTPNotFound, str(gap))
    except PlaybackError as error:
        log.warning("playback of %s refused: %s", camera, error)
        fail(web.HTTPConflict, f"this video cannot be played: {error}")
    await _audit_playback(request, camera, start_ms, end_ms)
    first, end, partial = byte_range(request, video.size, f'"{video.etag}"')
    response = web.StreamResponse(status=206 if partial else 200, headers={
        "Content-Type": "video/mp4", "Accept-Ranges": "bytes", "ETag": f'"{video.etag}"',
        "Cache-Control": "private, no-cache", "Content-Length": str(end - first),
        "X-Edgenvr-Start-Ms": str(video.start_ms), "X-Edgenvr-End-Ms": str(video.end_ms),
        "X-Edgenvr-Codec": video.mime_codecs,
        **({"X-Edgenvr-Ends-Early-At-Ms": str(video.ends_early_at_ms)} if video.ends_early_at_ms else {}),
        **({"Content-Range": f"bytes {first}-{end - 1}/{video.size}"} if partial else {}),
    })
    secure_headers(request, response)
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    chunks = video.chunks(first, end)
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            await response.write(chunk)
        await response.write_eof()
    except ConnectionResetError:
        pass   # the player went away (a seek, a closed tab): nothing was wrong
    except PlaybackError as error:
        # Headers are sent: the only honest answer left is a cut connection (the player asks again, and a
        # video whose segment the ring deleted gets a fresh plan without it).
        log.warning("playback of %s cut off: %s", camera, error)
        request.app[PLANS_KEY].pop((camera, start_ms, end_ms, kind), None)
        if request.transport is not None:
            request.transport.close()
    finally:
        chunks.close()
    return response


async def _planned_video(request: web.Request, camera: str, start_ms: int, end_ms: int,
                         kind: str) -> PlaybackVideo:
    """The planned video of a range, kept PLAN_KEPT_SECONDS: a player makes many Range requests for one video,
    and they must all see one layout (the ring may delete its oldest segment meanwhile: then a read of it
    fails and the player asks again, after the plan has expired). At most PLANS_KEPT plans and
    PLANS_KEPT_BYTES of their headers are kept, the oldest dropped first (a plan larger than that on its own
    is served but not kept)."""
    plans = request.app[PLANS_KEY]
    key = (camera, start_ms, end_ms, kind)
    now = time.monotonic()
    kept = plans.get(key)
    if kept is not None and now - kept[0] < PLAN_KEPT_SECONDS:
        return kept[1]
    video: PlaybackVideo = await _index_read(request, plan_playback_video, context(request).layout, camera,
                                             start_ms, end_ms, kind)
    plans.pop(key, None)
    if video.header_size > PLANS_KEPT_BYTES:
        return video
    held = sum(plan.header_size for _, plan in plans.values())
    for stale in sorted(plans, key=lambda k: plans[k][0]):   # oldest first
        if len(plans) < PLANS_KEPT and held + video.header_size <= PLANS_KEPT_BYTES:
            break
        held -= plans.pop(stale)[1].header_size
    plans[key] = (now, video)
    return video


async def _audit_playback(request: web.Request, camera: str, start_ms: int, end_ms: int) -> None:
    ctx = context(request)
    who = caller(request).actor
    key = (who, camera, start_ms, end_ms)
    seen = request.app[PLAYBACK_SEEN_KEY]
    now = time.monotonic()
    if now - seen.get(key, -1e9) < PLAYBACK_AUDIT_MS / 1000:
        return
    try:
        await ctx.audit(who, AuditAction.PLAYBACK, camera=camera, from_ms=start_ms, to_ms=end_ms)
    except Exception as error:   # noqa: BLE001 - personal data law: no audit record, no footage
        log.error("playback refused: the audit trail cannot be written (%s)", error)
        fail(web.HTTPServiceUnavailable, "the audit trail cannot be written, so no footage is shown")
    if len(seen) > 10_000:
        seen.clear()
    seen[key] = now




# --- live view ---

async def live_view(request: web.Request) -> web.WebSocketResponse:
    """A WebSocket of the camera's live picture (see web.live_relay for what it carries)."""
    camera = known_camera(request)
    relay = request.app[LIVE_KEY]
    if not relay.available:
        fail(web.HTTPServiceUnavailable, "live view is available only under `edgenvr run`")
    await audited(request, caller(request).actor, AuditAction.LIVE_VIEW, camera=camera)
    socket = web.WebSocketResponse(heartbeat=20, max_msg_size=4096)
    secure_headers(request, socket)
    await socket.prepare(request)
    viewer = relay.watch(camera)
    closed = asyncio.create_task(_until_closed(socket))
    try:
        mime = await asyncio.wait_for(asyncio.shield(viewer.mime), FIRST_PICTURE_SECONDS)
        await socket.send_json({"mime": mime})
        while not closed.done():
            piece = asyncio.create_task(viewer.queue.get())
            await asyncio.wait((piece, closed), return_when=asyncio.FIRST_COMPLETED)
            if not piece.done():
                piece.cancel()
                break
            await socket.send_bytes(piece.result())
    except asyncio.TimeoutError:
        await socket.send_json({"error": f"camera {camera} sends no picture (is it recording?)"})
    except (ConnectionResetError, RuntimeError):
        pass   # the viewer went away
    finally:
        relay.leave(viewer)
        closed.cancel()
        await socket.close()
    return socket


async def _until_closed(socket: web.WebSocketResponse) -> None:
    async for _ in socket:   # viewers send nothing; this notices when they leave
        pass


# --- events ---

async def list_events(request: web.Request) -> web.Response:
    ctx = context(request)
    now = ctx.clock.now_ms()
    if "start_ms" in request.query or "end_ms" in request.query:
        start_ms, end_ms = query_range(request, now, longest_ms=LONGEST_TIMELINE_MS)
    else:
        start_ms, end_ms = now - DAY_MS, now + 1
    kind = request.query.get("kind")
    if kind is not None and kind not in set(EventKind):
        fail(web.HTTPBadRequest, f"kind must be one of {', '.join(EventKind)}")
    limit = whole_number(request.query.get("limit", str(EVENTS_LIMIT)), "limit", low=1, high=EVENTS_LIMIT)
    camera = request.query.get("camera")   # its grant was checked by web.access
    user = caller(request).user
    found = await _index_read(request, events, ctx.layout, camera, kind, start_ms, end_ms)
    visible = [e for e in found if user.may_see(e.camera)]
    return web.json_response({"events": [_event_json(e) for e in visible[-limit:][::-1]]})   # newest first


async def event_snapshot(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    event_id = whole_number(request.match_info["event"], "event id", low=1, high=2**62)
    event = await _index_read(request, event_by_id, ctx.layout, event_id)
    if event is None:
        fail(web.HTTPNotFound, f"no event {event_id}")
    require_camera(request, event.camera)
    path = _inside(ctx.layout.data_dir / "snapshots", event.snapshot)
    if path is None:
        fail(web.HTTPNotFound, f"event {event_id} has no snapshot")
    return web.FileResponse(path, headers={"Content-Type": "image/jpeg", "Cache-Control": "private, max-age=3600"})


def _inside(directory: Path, stored: str | None) -> Path | None:
    """A file path the index stored, if it is a regular file inside `directory` once symlinks are resolved
    (an index edited by hand, or a symlink planted in the data dir, never leads outside)."""
    if stored is None:
        return None
    try:
        resolved = Path(stored).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return resolved if resolved.is_relative_to(directory.resolve()) and resolved.is_file() else None


# --- reference view ---

async def reference_image(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    camera = known_camera(request)
    row = await _index_read(request, latest_reference, camera)
    path = None if row is None else _inside(ctx.layout.data_dir / "references", str(ctx.layout.absolute(row["image"])))
    if path is None:
        fail(web.HTTPNotFound, f"camera {camera} has no reference view yet")
    return web.FileResponse(path, headers={"Content-Type": "image/png", "Cache-Control": "private, no-cache"})


async def approve_reference(request: web.Request) -> web.Response:
    from edgenvr.detection.reference_approval import (
        ReferenceError,
        approve_current_view,
    )

    ctx = context(request)
    camera_id = known_camera(request)
    camera = ctx.config.camera(camera_id)
    who = caller(request).actor
    await audited(request, who, AuditAction.REFERENCE_APPROVE, camera=camera_id)
    try:
        await asyncio.to_thread(approve_current_view, ctx.layout, camera, who, clock=ctx.clock)
    except (ReferenceError, OSError, sqlite3.Error) as error:
        await ctx.audit(who, AuditAction.REFERENCE_APPROVE, camera=camera_id, detail=f"failed: {error}")
        fail(web.HTTPServiceUnavailable, f"the view was not approved: {error}")
    row = await _index_read(request, latest_reference, camera_id)
    return web.json_response({"camera": camera_id, "approved_ms": row["approved_ms"] if row else None})


# --- shared ---

def known_camera(request: web.Request) -> str:
    """The URL's camera, if the config has it (404 otherwise)."""
    return configured_camera(context(request).config, request.match_info["camera"])


async def _index_read(request: web.Request, query: Any, *args: Any) -> Any:
    try:
        return await context(request).read(query, *args)
    except FileNotFoundError:
        fail(web.HTTPServiceUnavailable, "nothing has been recorded yet (no index)")
    except sqlite3.Error as error:
        log.warning("index read failed: %s", error)
        fail(web.HTTPServiceUnavailable, "the index cannot be read right now; try again")


async def audited(request: web.Request, who: str, action: AuditAction, **fields: Any) -> None:
    try:
        await context(request).audit(who, action, **fields)
    except Exception as error:   # noqa: BLE001 - no audit record, no action
        log.error("%s refused: the audit trail cannot be written (%s)", action, error)
        fail(web.HTTPServiceUnavailable, "the audit trail cannot be written, so nothing was done")


ROUTES = [
    ApiRoute("GET", "/api/sync", sync_status, Access.SIGNED_IN,
             "Sync to the city hub: enabled, hub_url, backlog (clips waiting), oldest_ms, last_error (why they wait)"),
    ApiRoute("GET", "/api/cameras", list_cameras, Access.SIGNED_IN,
             "The cameras you may see: id, name, state (recording, reconnecting, offline since T...), open tamper"),
    ApiRoute("GET", "/api/cameras/{camera}/timeline", camera_timeline, Permission.VIEW,
             "Recorded stretches, gaps with their reasons, and events of a camera in a range (at most 31 days)",
             (CAMERA_PATH, START_MS, END_MS), responses={"404": "No such camera"}),
    ApiRoute("GET", "/api/cameras/{camera}/video.mp4", camera_video, Permission.VIEW,
             "A range (at most 24 h) as one MP4 by stream copy; Range requests seek. Media time 0 is "
             "X-Edgenvr-Start-Ms; holes stay holes",
             (CAMERA_PATH, START_MS, END_MS, VIDEO_LAYOUT), content="video/mp4",
             responses={"206": "Part of the video (a Range request)", "404": "Nothing recorded in the range",
                        "416": "A Range beyond the video"}),
    ApiRoute("GET", "/api/cameras/{camera}/live", live_view, Permission.VIEW,
             "WebSocket: the live picture as fragmented MP4 for MediaSource (a JSON message with the MIME type, "
             "then the init segment and fragments); no extra camera session, nothing while nobody watches",
             (CAMERA_PATH,), responses={"101": "Switching to the WebSocket", "503": "No live view here"}),
    ApiRoute("GET", "/api/events", list_events, Permission.VIEW,
             "Events, newest first (default: the last 24 h)",
             (CAMERA_QUERY, {**START_MS, "required": False}, {**END_MS, "required": False},
              {"name": "kind", "in": "query", "required": False,
               "schema": {"type": "string", "enum": [str(k) for k in EventKind]}},
              {"name": "limit", "in": "query", "required": False,
               "schema": {"type": "integer", "minimum": 1, "maximum": EVENTS_LIMIT}})),
    ApiRoute("GET", "/api/events/{event}/snapshot.jpg", event_snapshot, Permission.VIEW,
             "The JPEG taken when the event started",
             ({"name": "event", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}},),
             content="image/jpeg", responses={"404": "No such event, or it has no snapshot"}),
    ApiRoute("GET", "/api/cameras/{camera}/reference.png", reference_image, Permission.VIEW,
             "The reference view in use for moved-camera detection", (CAMERA_PATH,), content="image/png",
             responses={"404": "No reference view yet"}),
    ApiRoute("POST", "/api/cameras/{camera}/reference/approve", approve_reference, Permission.APPROVE_REFERENCE,
             "Approve the camera's current view as its reference (watches the camera for ~10 s)", (CAMERA_PATH,),
             responses={"503": "The camera could not be watched"}),
]
