"""The account routes of the HTTP API: signing in and out, who am I, and (admins) users and API tokens.

Sign-in: a peer address may try LoginLimiter.ATTEMPTS times a minute (429 after), an account locks after
web.accounts' lock-out count of wrong passwords; every attempt, right or wrong, is an audit record, and so is
a lock. A session is a random id in an HttpOnly, SameSite=Strict cookie (Secure over TLS); its CSRF token is
given to the page by /api/login and /api/me, and web.access requires it on every state-changing request.
Until an admin exists nobody can sign in, and GET /api/login says so (the UI then shows how to create one
with `edgenvr user add`): there is no default password.

Failure paths: a wrong name or password -> 401 (the same answer for an unknown name); locked -> 423 with the
time it unlocks; the audit trail unwritable -> 503 and nobody is signed in; bad user data -> 400 with the
store's message; the accounts file unusable -> 503.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from aiohttp import web

from edgenvr.core.time_format import format_ms
from edgenvr.evidence.audit import AuditAction, AuditError
from edgenvr.evidence.identity import IdentityError
from edgenvr.web.access import (
    BODY_KEY,
    SESSION_COOKIE,
    Caller,
    LoginLimiter,
    caller,
    context,
)
from edgenvr.web.accounts import (
    ROLE_PERMISSIONS,
    AccountError,
    LoginOutcome,
    Permission,
    Role,
    Token,
    User,
)
from edgenvr.web.api_routes import Access, ApiRoute
from edgenvr.web.request_values import HTTPLocked, fail, whole_number
from edgenvr.web.web_context import WebContext

log = logging.getLogger(__name__)

LIMITER_KEY = web.AppKey("edgenvr_login_limiter", LoginLimiter)
_USER_PATH = {"name": "user", "in": "path", "required": True, "schema": {"type": "string"}}


def user_json(user: User) -> dict[str, Any]:
    return {"name": user.name, "role": str(user.role), "cameras": None if user.cameras is None else list(user.cameras),
            "locked_until_ms": user.locked_until_ms,
            "permissions": sorted(str(p) for p in ROLE_PERMISSIONS[user.role])}


def token_json(token: Token) -> dict[str, Any]:
    return {"id": token.id, "user": token.user, "label": token.label, "created_ms": token.created_ms,
            "last_used_ms": token.last_used_ms, "revoked_ms": token.revoked_ms}


async def _store(ctx: WebContext, action: Any, *args: Any) -> Any:
    """Run an accounts change (with its audit record) in the write thread, mapping failures to answers."""
    try:
        return await ctx.write(action, *args)
    except AccountError as error:
        fail(web.HTTPBadRequest, str(error))
    except (AuditError, IdentityError) as error:
        log.error("refused: the audit trail cannot be written (%s)", error)
        fail(web.HTTPServiceUnavailable, "the audit trail cannot be written, so nothing was done")
    except (sqlite3.Error, OSError) as error:
        log.error("the accounts file cannot be used: %s", error)
        fail(web.HTTPServiceUnavailable, "the user accounts cannot be read or written right now")


# --- signing in ---

async def login_status(request: web.Request) -> web.Response:
    ctx = context(request)
    admin = await _store(ctx, lambda: ctx.accounts.has_admin())
    return web.json_response({"admin_exists": admin})


async def login(request: web.Request) -> web.Response:
    ctx = context(request)
    body: dict[str, Any] = request[BODY_KEY]
    peer = request.remote or "?"
    if not request.app[LIMITER_KEY].allow(peer):
        fail(web.HTTPTooManyRequests, "too many sign-in attempts from this address: wait a minute")
    name, password = body["name"], body["password"]

    def attempt() -> tuple[Any, tuple[str, Any] | None]:
        if not ctx.accounts.has_admin():
            return None, None
        result = ctx.accounts.check_password(name, password)
        who = name if result.user is not None or _plain(name) else "?"
        if result.outcome is LoginOutcome.OK:
            assert result.user is not None
            ctx.audit_now(who, AuditAction.LOGIN, detail=f"from {peer}")
            return result, ctx.accounts.start_session(name)
        ctx.audit_now(who, AuditAction.LOGIN_FAILED, detail=f"{result.outcome} password from {peer}")
        if result.just_locked:
            ctx.audit_now(who, AuditAction.LOCKOUT, detail=f"after {result.failures} wrong passwords, until "
                                                           f"{format_ms(result.locked_until_ms)}")
        return result, None

    result, started = await _store(ctx, attempt)
    if result is None:
        fail(web.HTTPConflict, "no admin account exists yet: create one on the box with "
                               "`edgenvr user add --config FILE --name NAME --role admin --password-stdin`")
    if result.outcome is LoginOutcome.LOCKED or result.just_locked:
        fail(HTTPLocked, f"this account is locked after too many wrong passwords until "
                             f"{format_ms(result.locked_until_ms)}")
    if started is None:
        fail(web.HTTPUnauthorized, "wrong name or password")
    session_id, session = started
    response = web.json_response({"user": user_json(session.user), "csrf_token": session.csrf_token})
    response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="Strict", secure=ctx.tls, path="/")
    return response


def _plain(name: str) -> bool:
    """A typed name fit for the audit trail (a password typed into the name field is not recorded)."""
    return 0 < len(name) <= 32 and name.isascii() and name.replace("-", "").replace(".", "").replace("_", "").isalnum()


async def logout(request: web.Request) -> web.Response:
    ctx = context(request)
    found: Caller = caller(request)

    def end() -> None:
        if found.session_id is not None:
            ctx.accounts.end_session(found.session_id)
        ctx.audit_now(found.actor, AuditAction.LOGOUT)
    await _store(ctx, end)
    response = web.json_response({"signed_out": True})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def me(request: web.Request) -> web.Response:
    found = caller(request)
    return web.json_response({"user": user_json(found.user),
                              "csrf_token": found.session.csrf_token if found.session is not None else None,
                              "box": {"id": context(request).config.box.box_id,
                                      "name": context(request).config.box.box_name}})


# --- users and tokens (admins) ---

async def list_users(request: web.Request) -> web.Response:
    ctx = context(request)
    users, tokens = await _store(ctx, lambda: (ctx.accounts.users(), ctx.accounts.tokens()))
    return web.json_response({"users": [{**user_json(u), "tokens": sum(1 for t in tokens if t.user == u.name
                                                                       and t.revoked_ms is None)}
                                        for u in users]})


def _checked_cameras(ctx: WebContext, cameras: list[str] | None) -> tuple[str, ...] | None:
    if cameras is None:
        return None
    known = {camera.id for camera in ctx.config.cameras}
    unknown = sorted(set(cameras) - known)
    if unknown:
        fail(web.HTTPBadRequest, f"no camera {', '.join(unknown)} in this box's config")
    return tuple(dict.fromkeys(cameras))


async def add_user(request: web.Request) -> web.Response:
    ctx = context(request)
    body: dict[str, Any] = request[BODY_KEY]
    cameras = _checked_cameras(ctx, body.get("cameras"))
    who = caller(request).actor

    def add() -> User:
        ctx.audit_now(who, AuditAction.USER_ADD, detail=f"{body['name']} as {body['role']}"
                                                        f" (cameras: {'all' if cameras is None else ','.join(cameras)})")
        return ctx.accounts.add_user(body["name"], Role(body["role"]), body["password"], cameras)
    return web.json_response(user_json(await _store(ctx, add)), status=201)


async def change_user(request: web.Request) -> web.Response:
    ctx = context(request)
    name = request.match_info["user"]
    body: dict[str, Any] = request[BODY_KEY]
    who = caller(request).actor

    def change() -> User:
        user = ctx.accounts.user(name)
        if user is None:
            raise AccountError(f"no user {name}")
        if "role" in body or "cameras" in body:
            role = Role(body.get("role", user.role))
            cameras = _checked_cameras(ctx, body["cameras"]) if "cameras" in body else user.cameras
            ctx.audit_now(who, AuditAction.USER_ROLE, detail=f"{name} to {role}"
                                                               f" (cameras: {'all' if cameras is None else ','.join(cameras)})")
            user = ctx.accounts.set_role(name, role, cameras)
        if "password" in body:
            ctx.audit_now(who, AuditAction.USER_PASSWORD, detail=name)
            ctx.accounts.set_password(name, body["password"])
        return ctx.accounts.user(name) or user
    return web.json_response(user_json(await _store(ctx, change)))


async def remove_user(request: web.Request) -> web.Response:
    ctx = context(request)
    name = request.match_info["user"]
    who = caller(request).actor

    def remove() -> None:
        if ctx.accounts.user(name) is None:
            raise AccountError(f"no user {name}")
        ctx.audit_now(who, AuditAction.USER_REMOVE, detail=name)
        ctx.accounts.remove_user(name)
    await _store(ctx, remove)
    return web.json_response({"removed": name})


async def list_tokens(request: web.Request) -> web.Response:
    ctx = context(request)
    tokens = await _store(ctx, lambda: ctx.accounts.tokens(request.query.get("user") or None))
    return web.json_response({"tokens": [token_json(t) for t in tokens]})


async def create_token(request: web.Request) -> web.Response:
    ctx = context(request)
    name = request.match_info["user"]
    label: str = request[BODY_KEY]["label"]
    who = caller(request).actor

    def create() -> tuple[Token, str]:
        ctx.audit_now(who, AuditAction.TOKEN_CREATE, detail=f"for {name}: {label}")
        return ctx.accounts.create_token(name, label)
    token, secret = await _store(ctx, create)
    return web.json_response({**token_json(token), "token": secret}, status=201)


async def revoke_token(request: web.Request) -> web.Response:
    ctx = context(request)
    token_id = whole_number(request.match_info["token"], "token id", low=1, high=2**62)
    who = caller(request).actor

    def revoke() -> Token:
        ctx.audit_now(who, AuditAction.TOKEN_REVOKE, detail=f"token {token_id}")
        return ctx.accounts.revoke_token(token_id)
    return web.json_response(token_json(await _store(ctx, revoke)))


ROUTES = [
    ApiRoute("GET", "/api/login", login_status, Access.PUBLIC,
             "Whether an admin account exists (until one does, nobody can sign in)", during_setup=True),
    ApiRoute("POST", "/api/login", login, Access.PUBLIC,
             "Sign in: sets the session cookie and answers the user and the CSRF token", body="login",
             responses={"401": "Wrong name or password", "409": "No admin account exists yet",
                        "423": "The account is locked", "429": "Too many attempts from this address"}),
    ApiRoute("POST", "/api/logout", logout, Access.SIGNED_IN, "Sign out (ends the session)"),
    ApiRoute("GET", "/api/me", me, Access.SIGNED_IN, "Who you are, your role, cameras and permissions, and the CSRF token"),
    ApiRoute("GET", "/api/users", list_users, Permission.MANAGE_USERS, "The box's users"),
    ApiRoute("POST", "/api/users", add_user, Permission.MANAGE_USERS, "Add a user", body="user_add",
             responses={"201": "The user"}),
    ApiRoute("PATCH", "/api/users/{user}", change_user, Permission.MANAGE_USERS,
             "Change a user's role, cameras or password (a new password ends its sessions)", (_USER_PATH,),
             body="user_change"),
    ApiRoute("DELETE", "/api/users/{user}", remove_user, Permission.MANAGE_USERS,
             "Remove a user (its tokens and sessions end; the last admin cannot be removed)", (_USER_PATH,)),
    ApiRoute("GET", "/api/tokens", list_tokens, Permission.MANAGE_USERS, "API tokens (user=NAME: one user's)",
             ({"name": "user", "in": "query", "required": False, "schema": {"type": "string"}},)),
    ApiRoute("POST", "/api/users/{user}/tokens", create_token, Permission.MANAGE_USERS,
             "Create an API token for a user; the answer's `token` is shown only this once", (_USER_PATH,),
             body="token", responses={"201": "The token"}),
    ApiRoute("DELETE", "/api/tokens/{token}", revoke_token, Permission.MANAGE_USERS, "Revoke an API token",
             ({"name": "token", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}},)),
]
