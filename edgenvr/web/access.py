"""Who may do what, decided in one place for every request: the access middleware, of the box's web server and
of the city hub (edgenvr.hub.hub_web), each with its own route table and context (CONTEXT_KEY: anything with
the AccessContext members; the box's is web.web_context.WebContext).

For each request: the route's rule from the route table (web.api_routes; a route without one is refused) ->
on a box without an admin yet, every route not marked `during_setup` answers 503 (web.setup_routes) ->
PUBLIC routes run at once; BOX routes (the hub's, called by enrolled boxes, never by people) run at once too,
their handler authenticating the box by its RFC 9421 signature (or, at enrolment, its one-time token) before
anything else -> the caller is authenticated by `Authorization: Bearer <token>` or else the
session cookie (nothing else: not the peer address, not Host, not X-Forwarded-* headers, which anyone can
send) -> the rule's permission is checked against the caller's role -> every camera the request names (the
`{camera}` of the path, `camera` in the query, `camera` in the JSON body) is checked against the caller's
grants -> a state-changing request made with a session cookie must carry the session's CSRF token in
`X-CSRF-Token` and must not come from another site (Origin / Sec-Fetch-Site) -> a JSON body is validated
against the route's schema -> the handler runs. Handlers that find a camera by another id (an event's
snapshot) call `require_camera` themselves.

Every answer, errors included, gets the security headers (a strict Content-Security-Policy, no framing,
no sniffing, no referrer, no caching of API answers).

Failure paths: no or bad credentials -> 401; not allowed -> 403; missing/wrong CSRF token or a foreign
origin -> 403; a route not in the table -> 500 and a log line (a programming error, never served open).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import urlsplit

from aiohttp import web

from edgenvr.core.clock import Clock
from edgenvr.evidence.audit import AuditAction
from edgenvr.storage.layout import StorageLayout
from edgenvr.web.accounts import Accounts, Permission, Session, User
from edgenvr.web.api_routes import Access, Handler, route_rule
from edgenvr.web.request_values import fail, json_body
from edgenvr.web.web_context import WebContext

log = logging.getLogger(__name__)

T = TypeVar("T")


class AccessContext(Protocol):
    """What the middleware and the routes the box and the hub share (web.account_routes, the audit search) use
    of an app's context: the accounts and the audit trail behind one write thread, in a data directory."""

    clock: Clock
    tls: bool       # sessions' cookies are Secure over TLS

    @property
    def layout(self) -> StorageLayout: ...

    @property
    def accounts(self) -> Accounts: ...   # only from inside `write(...)`

    async def write(self, action: Callable[..., T], *args: Any) -> T: ...

    def audit_now(self, actor: str, action: AuditAction, **fields: Any) -> None: ...   # in the write thread

    async def audit(self, actor: str, action: AuditAction, **fields: Any) -> None: ...

    def requested_camera(self, raw: str) -> str: ...   # a camera named in a path or query, checked (else 400)


class SetupGate(Protocol):
    """A box without an admin serves its setup page only (web.setup_routes; the hub has no gate)."""

    async def require_set_up(self) -> None: ...   # raises the setup answer (503) while there is no admin


SESSION_COOKIE = "edgenvr_session"
CSRF_HEADER = "X-CSRF-Token"
CALLER_KEY = web.RequestKey("edgenvr_caller", object)
BODY_KEY = web.RequestKey("edgenvr_body", object)
CONTEXT_KEY = web.AppKey("edgenvr_context", AccessContext)
SETUP_GATE_KEY = web.AppKey("edgenvr_setup_gate", SetupGate)

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                                "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True)
class Caller:
    """Who is asking: a user through a browser session or through an API token."""
    user: User
    session_id: str | None = None     # the cookie's secret, for logout
    session: Session | None = None
    by_token: bool = False

    @property
    def actor(self) -> str:
        """The name the audit trail records."""
        return f"{self.user.name} (API token)" if self.by_token else self.user.name


def caller(request: web.Request) -> Caller:
    found = request.get(CALLER_KEY)
    assert isinstance(found, Caller), "only for routes that are not PUBLIC"
    return found


def access_context(request: web.Request) -> AccessContext:
    return request.app[CONTEXT_KEY]


def context(request: web.Request) -> WebContext:
    """The box's context, for the box's routes. The routes the hub shares with the box (web.account_routes' but
    `me`, the audit search) use only its AccessContext members, which the hub's context has too."""
    return cast(WebContext, request.app[CONTEXT_KEY])


def require_camera(request: web.Request, camera: str) -> None:
    """403 unless the caller may see `camera` (grants apply to every media and export URL)."""
    if not caller(request).user.may_see(camera):
        fail(web.HTTPForbidden, f"you have no access to camera {camera}")


def require(request: web.Request, permission: Permission) -> None:
    if not caller(request).user.may(permission):
        fail(web.HTTPForbidden, f"your role may not {permission.value.replace('_', ' ')}")


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await _checked(request, handler)
    except web.HTTPException as answer:
        _secure(request, answer)
        raise
    _secure(request, response)
    return response


async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.match_info.http_exception is not None:
        return await handler(request)   # no such route (404) or method (405): aiohttp's own answer
    rule = route_rule(request)
    if rule is None:
        log.error("refused %s %s: the route is not in the route table", request.method, request.path)
        fail(web.HTTPInternalServerError, "this route has no access rule")
    gate = request.app.get(SETUP_GATE_KEY)
    if gate is not None and not rule.during_setup:
        await gate.require_set_up()   # no admin yet: the setup page's answer, whoever asks
    if rule.access is Access.BOX:
        return await handler(request)   # the handler checks the box's signature first (see the docstring)
    if rule.access is Access.PUBLIC:
        if rule.body is not None:
            request[BODY_KEY] = await json_body(request, rule.body)
        return await handler(request)
    found = await _authenticate(request)
    request[CALLER_KEY] = found
    if isinstance(rule.access, Permission):
        require(request, rule.access)
    if rule.state_changing and found.session is not None:
        _check_csrf(request, found.session)
    if request.headers.get("Upgrade", "").lower() == "websocket":
        _check_same_origin(request)   # a WebSocket is a GET the browser lets any page open
    for camera in (request.match_info.get("camera"), request.query.get("camera")):
        if camera is not None:
            require_camera(request, access_context(request).requested_camera(camera))
    if rule.body is not None:
        body = await json_body(request, rule.body)
        if "camera" in body:
            require_camera(request, body["camera"])
        request[BODY_KEY] = body
    return await handler(request)


async def _authenticate(request: web.Request) -> Caller:
    ctx = access_context(request)
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            fail(web.HTTPUnauthorized, "use Authorization: Bearer <token>")
        user = await ctx.write(lambda: ctx.accounts.user_for_token(secret.strip()))
        if user is None:
            fail(web.HTTPUnauthorized, "the token is not valid (unknown, revoked, or its user was removed)")
        return Caller(user, by_token=True)
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        fail(web.HTTPUnauthorized, "sign in first")
    session = await ctx.write(lambda: ctx.accounts.session(session_id))
    if session is None:
        fail(web.HTTPUnauthorized, "your session has ended: sign in again")
    return Caller(session.user, session_id=session_id, session=session)


def _check_csrf(request: web.Request, session: Session) -> None:
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
        fail(web.HTTPForbidden, f"missing or wrong {CSRF_HEADER} header (reload the page)")
    _check_same_origin(request)


def _check_same_origin(request: web.Request) -> None:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        fail(web.HTTPForbidden, "a request from another site was refused")
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        fail(web.HTTPForbidden, "a request from another site was refused")


def _secure(request: web.Request, response: web.StreamResponse) -> None:
    if response.prepared:
        return   # a streamed answer got its headers before it started
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/api/") and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"


def secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    """For handlers that stream: set the headers before `prepare`."""
    _secure(request, response)


class LoginLimiter:
    """At most LOGIN_ATTEMPTS login attempts a minute from one peer address (the TCP peer, never a header):
    password guessing across many accounts is slowed as well as each account's own lock-out."""

    ATTEMPTS = 10
    WINDOW_SECONDS = 60.0
    MAX_PEERS = 10_000

    def __init__(self) -> None:
        self._attempts: dict[str, deque[float]] = {}

    def allow(self, peer: str) -> bool:
        now = time.monotonic()
        recent = self._attempts.setdefault(peer, deque())
        while recent and now - recent[0] > self.WINDOW_SECONDS:
            recent.popleft()
        if len(recent) >= self.ATTEMPTS:
            return False
        recent.append(now)
        if len(self._attempts) > self.MAX_PEERS:   # bounded: forget the quiet peers
            for quiet in [p for p, times in self._attempts.items() if not times or now - times[-1] > self.WINDOW_SECONDS]:
                del self._attempts[quiet]
        return True
