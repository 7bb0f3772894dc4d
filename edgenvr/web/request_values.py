"""Reading values out of requests: query times and ranges, ids, byte ranges (Range, If-Range), and JSON bodies
validated against the route table's schemas. Everything malformed becomes an HTTP error with a JSON
`{"error": message}` body, raised here, so a handler only ever sees checked values.

Invariants: times are UTC epoch ms integers within core.units' bounds; a range is start < end, not in the
future (a minute of client clock skew allowed at the end), and at most the caller's limit long; camera ids
match core.camera_ids; a body is JSON of at most MAX_BODY_BYTES that matches its schema.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import jsonschema_rs
from aiohttp import web

from edgenvr.config.records import Config
from edgenvr.core.camera_ids import CAMERA_ID_RULE, is_camera_id
from edgenvr.core.time_format import format_ms
from edgenvr.core.units import HOUR_MS, LATEST_TIME_MS, MINUTE_MS
from edgenvr.web.api_routes import BODIES

MAX_BODY_BYTES = 64 * 1024
CLOCK_SKEW_MS = MINUTE_MS   # a browser's clock may run a little ahead of the box's
_VALIDATORS = {name: jsonschema_rs.validator_for(schema) for name, schema in BODIES.items()}


class HTTPLocked(web.HTTPClientError):
    """423: the account is locked (aiohttp has no class for it)."""
    status_code = 423


def configured_camera(config: Config, camera: str) -> str:
    """`camera` if the box's config has it; 404 otherwise (a camera removed from the config is not served)."""
    try:
        config.camera(camera)
    except KeyError:
        fail(web.HTTPNotFound, f"no camera {camera} in this box's config")
    return camera


def fail(status: type[web.HTTPException], message: str) -> NoReturn:
    raise status(text=json.dumps({"error": message}), content_type="application/json")


def whole_number(raw: str | None, name: str, *, low: int = 0, high: int = LATEST_TIME_MS) -> int:
    if raw is None or raw == "":
        fail(web.HTTPBadRequest, f"{name} is missing")
    try:
        value = int(raw, 10)
    except ValueError:
        fail(web.HTTPBadRequest, f"{name} must be a whole number, got {raw[:40]!r}")
    if not low <= value <= high:
        fail(web.HTTPBadRequest, f"{name} must be between {low} and {high}, got {value}")
    return value


def time_range(start: object, end: object, now_ms: int, *, longest_ms: int | None = None) -> tuple[int, int]:
    """A checked [start, end) from query strings or JSON numbers."""
    start_ms = start if type(start) is int else whole_number(start if isinstance(start, str) else None, "start_ms")
    end_ms = end if type(end) is int else whole_number(end if isinstance(end, str) else None, "end_ms")
    if not 0 <= start_ms <= LATEST_TIME_MS or not 0 <= end_ms <= LATEST_TIME_MS:
        fail(web.HTTPBadRequest, f"times must be between 0 and {LATEST_TIME_MS} ms")
    if end_ms <= start_ms:
        fail(web.HTTPBadRequest, f"end_ms ({end_ms}) must be after start_ms ({start_ms})")
    if start_ms >= now_ms or end_ms > now_ms + CLOCK_SKEW_MS:
        fail(web.HTTPBadRequest, f"the range {format_ms(start_ms)} to {format_ms(end_ms)} reaches into the future"
                                 f" (the box's clock says {format_ms(now_ms)})")
    if longest_ms is not None and end_ms - start_ms > longest_ms:
        fail(web.HTTPBadRequest, f"the range is longer than {longest_ms / HOUR_MS:g} h: ask for less")
    return start_ms, end_ms


def query_range(request: web.Request, now_ms: int, *, longest_ms: int | None = None) -> tuple[int, int]:
    return time_range(request.query.get("start_ms"), request.query.get("end_ms"), now_ms, longest_ms=longest_ms)


def camera_id(raw: object, name: str = "camera") -> str:
    if not isinstance(raw, str) or not is_camera_id(raw):
        fail(web.HTTPBadRequest, f"{name}: not a camera id ({CAMERA_ID_RULE})")
    return raw


async def json_body(request: web.Request, schema: str) -> dict[str, Any]:
    """The request's JSON body, checked against BODIES[schema]."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        fail(web.HTTPRequestEntityTooLarge, f"the body is larger than {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        fail(web.HTTPRequestEntityTooLarge, f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        fail(web.HTTPBadRequest, "the body is not JSON")
    try:
        _VALIDATORS[schema].validate(body)
    except jsonschema_rs.ValidationError as error:
        where = "/".join(str(part) for part in error.instance_path) or "body"
        fail(web.HTTPBadRequest, f"{where}: {error.message[:300]}")
    return body


def byte_range(request: web.Request, size: int, etag: str) -> tuple[int, int, bool]:
    """[first, end) of a `size`-byte file that the request's Range asks for, and whether it is partial (a
    Range whose If-Range names another version gets the whole file); 416 for a range beyond it."""
    try:
        wanted = request.http_range
    except ValueError:
        wanted = slice(None, None)
    first, end = wanted.start, wanted.stop
    if first is not None and first < 0:       # "bytes=-N": the last N bytes
        first, end = max(0, size + first), size
    first = first or 0
    end = size if end is None else min(end, size)
    if_range = request.headers.get("If-Range")
    partial = (request.headers.get("Range") is not None and wanted != slice(None, None)
               and (if_range is None or if_range == etag))
    if not partial:
        return 0, size, False
    if first >= size or first >= end:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return first, end, True
