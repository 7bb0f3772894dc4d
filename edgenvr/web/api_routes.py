"""The web server's route table: every HTTP route, who may call it, what it takes and answers, and its
OpenAPI 3 description, declared once here. The city hub (edgenvr.hub.hub_web) builds its own table of the same
ApiRoutes and registers it the same way.

Invariants:
- A route exists only through this table (`register_routes`), so the access middleware (web.access) knows
  every route's rule and `/api/openapi.json` lists every route: a test compares the description with the
  router. A request to a route without a rule is refused (fail closed).
- `access` is one of PUBLIC (health, login, static files: no credentials), SIGNED_IN (any signed-in user or
  token), a Permission of web.accounts, or BOX (the hub's routes for enrolled boxes: the handler checks the
  box's RFC 9421 signature, or at enrolment its one-time token; no user credential is ever accepted there);
  a route whose path has `{camera}`, or whose query or body has a `camera`, is also checked against the
  caller's camera grants by the middleware.
- Until the box has an admin, only the routes marked `during_setup` answer (the setup page and what it needs);
  the others answer 503 with `setup_required: true` (web.setup_routes), whatever their access rule.
- Request bodies are validated against `body` (JSON Schema) before the handler runs: a body that does not
  match gets 400 with the validator's message; query parameters are read by web.request_values, which
  answers 400 for anything malformed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiohttp import web

from edgenvr.web.accounts import Permission


class Access(StrEnum):
    PUBLIC = "public"          # no credentials: health, login, static files
    SIGNED_IN = "signed_in"    # any signed-in user or token
    BOX = "box"                # the hub's box routes: the box's signature (its handler checks it), never a user


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The parameters routes share, as OpenAPI parameter objects.
_TIME = {"type": "integer", "minimum": 0, "maximum": 253402300799999}
CAMERA_PATH = {"name": "camera", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,31}$"},
               "description": "Camera id."}
START_MS = {"name": "start_ms", "in": "query", "required": True, "schema": _TIME, "description": "Start, UTC epoch ms."}
END_MS = {"name": "end_ms", "in": "query", "required": True, "schema": _TIME,
          "description": "End (exclusive), UTC epoch ms."}
CAMERA_QUERY = {"name": "camera", "in": "query", "required": False, "schema": CAMERA_PATH["schema"],
                "description": "Only this camera."}

_ID = {"type": "integer", "minimum": 1, "maximum": 2**62}
_REASON = {"type": "string", "minLength": 1, "maxLength": 500}
_PASSWORD = {"type": "string", "minLength": 1, "maxLength": 1024}
_USER_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,31}$"}
_ROLE = {"type": "string", "enum": ["viewer", "operator", "admin"]}
_CAMERAS = {"oneOf": [{"type": "null"}, {"type": "array", "items": CAMERA_PATH["schema"], "maxItems": 256}],
            "description": "Cameras granted; null: every camera."}

BODIES: dict[str, dict[str, Any]] = {
    "login": {"type": "object", "additionalProperties": False, "required": ["name", "password"],
              "properties": {"name": {"type": "string", "maxLength": 64}, "password": _PASSWORD}},
    "export": {"type": "object", "additionalProperties": False, "required": ["camera", "start_ms", "end_ms", "reason"],
               "properties": {"camera": CAMERA_PATH["schema"], "start_ms": _TIME, "end_ms": _TIME, "reason": _REASON,
                              "hold": {"type": "boolean", "description": "Also put the range on hold."}}},
    "hold": {"type": "object", "additionalProperties": False, "required": ["camera", "start_ms", "end_ms", "reason"],
             "properties": {"camera": CAMERA_PATH["schema"], "start_ms": _TIME, "end_ms": _TIME, "reason": _REASON}},
    "release": {"type": "object", "additionalProperties": False, "required": ["reason"],
                "properties": {"reason": _REASON}},
    "user_add": {"type": "object", "additionalProperties": False, "required": ["name", "role", "password"],
                 "properties": {"name": _USER_NAME, "role": _ROLE, "password": _PASSWORD, "cameras": _CAMERAS}},
    "user_change": {"type": "object", "additionalProperties": False, "minProperties": 1,
                    "properties": {"role": _ROLE, "cameras": _CAMERAS, "password": _PASSWORD}},
    "setup": {"type": "object", "additionalProperties": False, "required": ["code", "name", "password"],
              "properties": {"code": {"type": "string", "minLength": 1, "maxLength": 128,
                                      "description": "The one-time setup code (the box's console, or the "
                                                     "provisioning file)"},
                             "name": _USER_NAME, "password": _PASSWORD}},
    "token": {"type": "object", "additionalProperties": False, "required": ["label"],
              "properties": {"label": {"type": "string", "minLength": 1, "maxLength": 80}}},
    # The city hub's (edgenvr.hub.hub_web): here because the one validator (web.request_values) reads this
    # table. Hub users see every camera of every box, so they carry no camera grant.
    "hub_user_add": {"type": "object", "additionalProperties": False, "required": ["name", "role", "password"],
                     "properties": {"name": _USER_NAME, "role": _ROLE, "password": _PASSWORD}},
    "hub_user_change": {"type": "object", "additionalProperties": False, "minProperties": 1,
                        "properties": {"role": _ROLE, "password": _PASSWORD}},
    "pull_request": {"type": "object", "additionalProperties": False,
                     "required": ["box", "camera", "start_ms", "end_ms", "reason"],
                     "properties": {"box": {"type": "string", "minLength": 1, "maxLength": 64,
                                            "description": "The box's id (the hub checks it is one)."},
                                    "camera": CAMERA_PATH["schema"], "start_ms": _TIME, "end_ms": _TIME,
                                    "reason": _REASON}},
}


@dataclass(frozen=True)
class ApiRoute:
    method: str
    path: str
    handler: Handler
    access: Access | Permission
    summary: str
    parameters: tuple[dict[str, Any], ...] = ()
    body: str | None = None             # a key of BODIES
    responses: dict[str, str] = field(default_factory=dict)   # status -> description (besides the errors)
    content: str = "application/json"   # of the 200 answer
    # Served while the box has no admin yet (the setup page, its UI files, health); every other route then
    # answers 503 with `setup_required` (web.access, web.setup_routes).
    during_setup: bool = False

    @property
    def state_changing(self) -> bool:
        return self.method not in ("GET", "HEAD", "OPTIONS")


ROUTE_RULE_KEY = "edgenvr_route"   # where each aiohttp route keeps its ApiRoute (route.handler's attribute)


def register_routes(app: web.Application, routes: list[ApiRoute]) -> None:
    for route in routes:
        # HEAD beside each GET (players probe sizes with it), under the same rule
        for method in (route.method, "HEAD") if route.method == "GET" else (route.method,):
            added = app.router.add_route(method, route.path, route.handler)
            setattr(added, ROUTE_RULE_KEY, route)   # read back by web.access through request.match_info.route


def route_rule(request: web.Request) -> ApiRoute | None:
    """The ApiRoute the request matched; None for anything this table did not register."""
    return getattr(request.match_info.route, ROUTE_RULE_KEY, None)


BOX_SIGNATURE = {"type": "apiKey", "in": "header", "name": "Signature",
                 "description": "Boxes sign each request with their device key (RFC 9421: Signature-Input, Signature, "
                                "Content-Digest of a body; key id = the box's id); at enrolment the one-time token "
                                "in the body is the credential."}
BOX_API_DESCRIPTION = ("Times are UTC epoch milliseconds. Sign in with POST /api/login (a session cookie; send its "
                       "csrf_token as X-CSRF-Token on every POST/PUT/PATCH/DELETE) or send "
                       "`Authorization: Bearer TOKEN`. Until the box has an admin, only /api/setup, /api/health, "
                       "GET /api/login and the UI's files answer; every other route answers 503 with "
                       "`setup_required: true`.")


def openapi_document(routes: list[ApiRoute], version: str, *, title: str = "edgenvr box API",
                     description: str = BOX_API_DESCRIPTION) -> dict[str, Any]:
    """The OpenAPI 3.1 description of `routes` (served at /api/openapi.json), with the body schemas they use."""
    paths: dict[str, dict[str, Any]] = {}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for route in routes:
        if not route.path.startswith("/api/"):
            continue   # static files and the UI's pages
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__.lstrip("_"),
            "parameters": list(route.parameters),
            "responses": {"200": {"description": route.responses.get("200", "OK"),
                                  "content": {route.content: {"schema": {} if route.content == "application/json"
                                                              else {"type": "string", "format": "binary"}}}},
                          "400": {"description": "A malformed request", **error},
                          **{status: {"description": text, **error}
                             for status, text in route.responses.items() if status != "200"}},
        }
        if route.access is Access.BOX:
            operation["security"] = [{"box_signature": []}]
            operation["responses"]["401"] = {"description": "Not signed by an enrolled box", **error}
            operation["x-edgenvr-access"] = str(route.access)
        elif route.access is not Access.PUBLIC:
            operation["security"] = [{"session": []}, {"bearer": []}]
            operation["responses"]["401"] = {"description": "Not signed in", **error}
            operation["responses"]["403"] = {"description": "Not allowed for this user", **error}
            operation["x-edgenvr-access"] = str(route.access)
        else:
            operation["security"] = []
        if route.during_setup:
            operation["x-edgenvr-during-setup"] = True
        if route.body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{route.body}"}}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    schemes: dict[str, Any] = {"session": {"type": "apiKey", "in": "cookie", "name": "edgenvr_session"},
                               "bearer": {"type": "http", "scheme": "bearer"}}
    if any(route.access is Access.BOX for route in routes):
        schemes["box_signature"] = BOX_SIGNATURE
    used = {route.body for route in routes if route.body is not None}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": {**{name: schema for name, schema in BODIES.items() if name in used},
                        "Error": {"type": "object", "required": ["error"],
                                  "properties": {"error": {"type": "string"}}}},
            "securitySchemes": schemes,
        },
    }
