"""The setup page's routes and the gate that keeps a box without an admin to them: until users.sqlite3 has an
admin, the web server serves the UI's files, health, GET /api/login and /api/setup only; every other route
answers 503 `{"error": ..., "setup_required": true}` (web.access asks `FirstAdminGate` for every route not
marked `during_setup`). POST /api/setup takes the one-time setup code (from the box's console,
runtime.setup_console, or the provisioning file, runtime.provisioning) with the first admin's name and
password: web.accounts makes the admin and uses the code up in one transaction. The admin then signs in as
anyone does.

Invariants: nobody can make the first admin without the setup code, which never leaves the box but on its
console (or came in the provisioning file); attempts are limited per peer address like sign-ins
(LoginLimiter), and every attempt, right or wrong, is an audit record (no record, no admin: 503). Once the
gate has seen an admin it stays open for the life of the process (an admin is never removed: web.accounts
refuses to remove or demote the last one); until then it asks the accounts at every request (a box in setup
has no traffic to speak of), so an admin made with `edgenvr user add` opens it at once too.

Failure paths: wrong code -> 401; no code waiting or an admin exists -> 409 with what to do; a bad name or
password -> 400 with the rule; too many attempts from one address -> 429; the audit trail or the accounts file
unusable -> 503 (and nothing is made).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from edgenvr.evidence.audit import AuditAction, AuditError
from edgenvr.evidence.identity import IdentityError
from edgenvr.web.access import BODY_KEY, LoginLimiter, context
from edgenvr.web.account_routes import user_json
from edgenvr.web.accounts import AccountError, SetupRefusal, SetupRefused, User
from edgenvr.web.api_routes import Access, ApiRoute
from edgenvr.web.request_values import fail
from edgenvr.web.web_context import WebContext

log = logging.getLogger(__name__)

LIMITER_KEY = web.AppKey("edgenvr_setup_limiter", LoginLimiter)
SETUP_ANSWER = ("this box is not set up yet: open its web page and make the first admin with the setup code "
                "shown on the box's screen (or given in its provisioning file)")
FIRST_ADMIN_COMMAND = "edgenvr user add --config /etc/edgenvr/edgenvr.toml --name NAME --role admin --password-stdin"


@dataclass
class FirstAdminGate:
    """web.access's SetupGate for the box: open once an admin exists."""

    ctx: WebContext
    _admin_seen: bool = field(default=False, init=False)

    async def require_set_up(self) -> None:
        if self._admin_seen:
            return
        try:
            self._admin_seen = await self.ctx.write(lambda: self.ctx.accounts.has_admin())
        except AccountError as error:   # fail closed, saying so (not as if the box were new)
            log.error("the accounts file cannot be read: %s", error)
            fail(web.HTTPServiceUnavailable, "the box's accounts cannot be read right now")
        if not self._admin_seen:
            raise web.HTTPServiceUnavailable(text=json.dumps({"error": SETUP_ANSWER, "setup_required": True}),
                                             content_type="application/json")


async def setup_status(request: web.Request) -> web.Response:
    """Whether the box waits for its first admin, and where its setup code is to be found."""
    ctx = context(request)
    try:
        admin, source = await ctx.write(lambda: (ctx.accounts.has_admin(), ctx.accounts.setup_code_source()))
    except AccountError as error:
        log.error("the accounts file cannot be read: %s", error)
        fail(web.HTTPServiceUnavailable, "the box's accounts cannot be read right now")
    return web.json_response({"required": not admin, "code": None if admin or source is None else str(source),
                              "command": FIRST_ADMIN_COMMAND})


async def complete_setup(request: web.Request) -> web.Response:
    ctx = context(request)
    body: dict[str, Any] = request[BODY_KEY]
    peer = request.remote or "?"
    if not request.app[LIMITER_KEY].allow(peer):
        fail(web.HTTPTooManyRequests, "too many setup attempts from this address: wait a minute")
    name, password, code = body["name"], body["password"], body["code"]

    def attempt() -> User | SetupRefused:
        source = ctx.accounts.setup_code_source()

        def audit_first() -> None:   # the code matched: no audit record, no admin
            ctx.audit_now("setup code", AuditAction.USER_ADD, detail=f"{name} as admin (the first admin, with the "
                                                                     f"setup code from the {source}) from {peer}")
        try:
            return ctx.accounts.complete_setup(code, name, password, before=audit_first)
        except SetupRefused as refused:
            if refused.refusal is SetupRefusal.WRONG_CODE:
                ctx.audit_now("?", AuditAction.LOGIN_FAILED, detail=f"wrong setup code from {peer}")
            return refused

    try:
        outcome = await ctx.write(attempt)
    except AccountError as error:   # the name or password breaks a rule: the code was not even tried
        fail(web.HTTPBadRequest, str(error))
    except (AuditError, IdentityError, OSError) as error:
        log.error("setup refused: the audit trail cannot be written (%s)", error)
        fail(web.HTTPServiceUnavailable, "the audit trail cannot be written, so no admin was made")
    if isinstance(outcome, SetupRefused):
        if outcome.refusal is SetupRefusal.WRONG_CODE:
            log.warning("a wrong setup code was entered from %s", peer)
            fail(web.HTTPUnauthorized, "wrong setup code")
        if outcome.refusal is SetupRefusal.ADMIN_EXISTS:
            fail(web.HTTPConflict, "this box has an admin already: sign in")
        fail(web.HTTPConflict, f"no setup code waits on this box: restart it with a screen connected to see a new "
                               f"one, or make the first admin on the box with `{FIRST_ADMIN_COMMAND}`")
    log.info("the first admin %s was made with the setup code from %s", outcome.name, peer)
    return web.json_response({"user": user_json(outcome)}, status=201)


ROUTES = [
    ApiRoute("GET", "/api/setup", setup_status, Access.PUBLIC,
             "Whether the box waits for its first admin (`required`), and where its setup code is (`code`: console, "
             "provisioned, or null when none waits)", during_setup=True),
    ApiRoute("POST", "/api/setup", complete_setup, Access.PUBLIC,
             "Make the first admin with the one-time setup code (then sign in with POST /api/login)", body="setup",
             responses={"201": "The admin", "401": "Wrong setup code",
                        "409": "No setup code waits, or an admin exists already",
                        "429": "Too many attempts from this address"}, during_setup=True),
]
