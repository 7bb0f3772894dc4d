"""The user commands: `edgenvr user add | passwd | remove | list | token | tokens | revoke-token`, the box's
web accounts (web.accounts) from the command line, e.g. the first admin before the web UI can be used.

Every change is audited first (`audited`, user name in the record's detail, never a password or token), so an
audit trail that cannot be written stops it. Arguments are checked before anything is opened or audited: a
bad name, role, camera (one the config does not have), password or label is refused with one line on stderr
and exit 2, as is a password asked for where there is no terminal. A change the accounts refuse (unknown
user or token, the last admin, an accounts file that cannot be used) is one line on stderr and exit 1, with
nothing changed (and a second audit record saying it failed).

Passwords come from the first line of stdin with --password-stdin (scripts), else from getpass twice on a
terminal; never from an argument (it would be in the shell history and in `ps`). A token's secret is printed
once, alone on stdout; the note that it will not be shown again goes to stderr.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgenvr.cli.evidence_commands import Loader, actor, audited
from edgenvr.config.records import Config
from edgenvr.core.time_format import format_ms
from edgenvr.storage.layout import StorageLayout

if TYPE_CHECKING:
    from edgenvr.web.accounts import Accounts, Role

# edgenvr.web.accounts (and argon2) is imported by the user commands alone, not by every start of `edgenvr`.

MAX_PASSWORD_LINE = 16 * 1024   # bytes read from stdin for a password: far over any allowed one


class _Refused(Exception):
    """A bad argument: message, exit 2, nothing opened."""


def _accounts(config: Config) -> Accounts:
    from edgenvr.web.accounts import Accounts

    return Accounts(StorageLayout(config.storage.data_dir))


def _checked_cameras(config: Config, config_path: str, role: Role, text: str | None) -> tuple[str, ...] | None:
    """--cameras as a grant: None (every camera) when absent, () for an empty list; names the config lacks are
    refused (the accounts store cannot tell)."""
    from edgenvr.web.accounts import check_cameras

    if text is None:
        return None
    cameras = tuple(name.strip() for name in text.split(",") if name.strip())
    grant = check_cameras(role, cameras)
    known = {camera.id for camera in config.cameras}
    unknown = [camera for camera in grant or () if camera not in known]
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise _Refused(f"no camera {', '.join(unknown)} in {config_path} (its cameras: {listed})")
    return grant


def _new_password(name: str, from_stdin: bool) -> str:
    """The new password: the first line of stdin, or asked twice on the terminal; checked against the rules."""
    from edgenvr.web.accounts import check_new_password

    if from_stdin:
        line = sys.stdin.buffer.readline(MAX_PASSWORD_LINE)
        try:
            password = line.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused("the password on stdin is not UTF-8 text") from None
        password = password.removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"new password for {name}: ")
        if getpass.getpass("the same again: ") != password:
            raise _Refused("the two passwords differ")
    else:
        raise _Refused("no terminal to ask the password on: give it on stdin with --password-stdin")
    return check_new_password(name, password)


def _fail(what: str, exc: Exception, code: int) -> int:
    print(f"edgenvr: {what}: {exc}", file=sys.stderr)
    return code


def _grant_text(cameras: tuple[str, ...] | None) -> str:
    return "all" if cameras is None else ",".join(cameras) or "none"


# -- commands ----------------------------------------------------------------------------------------------

def cmd_user_add(args: argparse.Namespace, load: Loader) -> int:
    from edgenvr.web.accounts import AccountError, check_name, check_role

    config = load(args.config)
    try:
        name = check_name(args.name)
        role = check_role(args.role)
        cameras = _checked_cameras(config, args.config, role, args.cameras)
        password = _new_password(name, args.password_stdin)
    except (AccountError, _Refused) as exc:
        return _fail("user not added", exc, 2)
    try:
        detail = f"user {name}, {role}, cameras {_grant_text(cameras)}"
        with (audited(config, actor(args.by), "user_add", detail=detail),
              _accounts(config) as accounts):
            user = accounts.add_user(name, role, password, cameras)
    except AccountError as exc:
        return _fail("user not added", exc, 1)
    print(f"added user {user.name} ({user.role}, cameras: {_grant_text(user.cameras)})")
    return 0


def cmd_user_passwd(args: argparse.Namespace, load: Loader) -> int:
    from edgenvr.web.accounts import AccountError, check_name

    config = load(args.config)
    try:
        name = check_name(args.name)
        password = _new_password(name, args.password_stdin)
    except (AccountError, _Refused) as exc:
        return _fail("password not changed", exc, 2)
    try:
        with (audited(config, actor(args.by), "user_password", detail=f"user {name}"),
              _accounts(config) as accounts):
            accounts.set_password(name, password)
    except AccountError as exc:
        return _fail("password not changed", exc, 1)
    print(f"password of {name} changed; its browser sessions are ended")
    return 0


def cmd_user_remove(args: argparse.Namespace, load: Loader) -> int:
    from edgenvr.web.accounts import AccountError, check_name

    config = load(args.config)
    try:
        name = check_name(args.name)
    except AccountError as exc:
        return _fail("user not removed", exc, 2)
    try:
        with (audited(config, actor(args.by), "user_remove", detail=f"user {name}"),
              _accounts(config) as accounts):
            accounts.remove_user(name)
    except AccountError as exc:
        return _fail("user not removed", exc, 1)
    print(f"removed user {name}; its tokens are revoked and its sessions ended")
    return 0


def cmd_user_list(args: argparse.Namespace, load: Loader) -> int:
    from edgenvr.web.accounts import AccountError

    config = load(args.config)
    try:
        with _accounts(config) as accounts:
            users = accounts.users()
            active: dict[str, int] = {}
            for token in accounts.tokens():
                if token.revoked_ms is None:
                    active[token.user] = active.get(token.user, 0) + 1
    except AccountError as exc:
        return _fail("cannot list the users", exc, 1)
    if not args.json:
        print(f"{'name':<32} {'role':<9} {'locked until (UTC)':<24} {'tokens':>6}  cameras")
    for user in users:
        if args.json:
            print(json.dumps({"name": user.name, "role": str(user.role),
                              "cameras": "all" if user.cameras is None else list(user.cameras),
                              "created_ms": user.created_ms, "locked_until_ms": user.locked_until_ms,
                              "tokens": active.get(user.name, 0)}))
            continue
        locked = format_ms(user.locked_until_ms) if user.locked_until_ms is not None else "-"
        print(f"{user.name:<32} {user.role:<9} {locked:<24} {active.get(user.name, 0):>6}  {_grant_text(user.cameras)}")
    return 0


def cmd_user_token(args: argparse.Namespace, load: Loader) -> int:
    from edgenvr.web.accounts import AccountError, check_label, check_name

    config = load(args.config)
    try:
        name = check_name(args.name)
        label = check_label(args.label)
    except AccountError as exc:
        return _fail("token not created", exc, 2)
    try:
        with (audited(config, actor(args.by), "token_create", detail=f"user {name}, label {label}"),
              _accounts(config) as accounts):
            token, secret = accounts.create_token(name, label)
    except AccountError as exc:
        return _fail("token not created", exc, 1)
    print(secret, flush=True)   # alone on stdout, for a script to keep
    print(f"edgenvr: token {token.id} for {token.user} ({token.label}): keep it now, it will not be shown again",
          file=sys.stderr)
    return 0


def cmd_user_tokens(args: argparse.Namespace, load: Loader) -> int:
    from edgenvr.web.accounts import AccountError, check_name

    config = load(args.config)
    try:
        name = None if args.name is None else check_name(args.name)
        with _accounts(config) as accounts:
            if name is not None and accounts.user(name) is None and not accounts.tokens(name):
                raise AccountError(f"no user {name}")
            tokens = accounts.tokens(name)
    except AccountError as exc:
        return _fail("cannot list the tokens", exc, 1)
    if not args.json:
        print(f"{'id':>5} {'user':<32} {'created (UTC)':<24} {'last used (UTC)':<24} {'revoked (UTC)':<24}  label")
    for token in tokens:
        if args.json:
            print(json.dumps({"id": token.id, "user": token.user, "label": token.label,
                              "created_ms": token.created_ms, "last_used_ms": token.last_used_ms,
                              "revoked_ms": token.revoked_ms}))
            continue
        used = format_ms(token.last_used_ms) if token.last_used_ms is not None else "never"
        revoked = format_ms(token.revoked_ms) if token.revoked_ms is not None else "-"
        print(f"{token.id:>5} {token.user:<32} {format_ms(token.created_ms):<24} {used:<24} {revoked:<24}  "
              f"{token.label}")
    return 0


def cmd_user_revoke_token(args: argparse.Namespace, load: Loader) -> int:
    from edgenvr.web.accounts import AccountError

    config = load(args.config)
    try:
        with _accounts(config) as accounts:
            found = [token for token in accounts.tokens() if token.id == args.id]
            if not found:
                raise AccountError(f"no token {args.id} (`edgenvr user tokens` lists them)")
            (token,) = found
            with audited(config, actor(args.by), "token_revoke", detail=f"token {token.id} of user {token.user}"):
                revoked = accounts.revoke_token(token.id)
    except AccountError as exc:
        return _fail("token not revoked", exc, 1)
    print(f"token {revoked.id} of {revoked.user} ({revoked.label}) revoked at {format_ms(revoked.revoked_ms or 0)}")
    return 0


def _token_id_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} is not a token id: use a number `edgenvr user tokens` shows")
    return value


def add_user_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], load: Loader,
                      text_arg: Callable[[str], str]) -> None:
    user = sub.add_parser("user", help="the web UI's users: add, passwd, remove, list, API tokens")
    user_sub = user.add_subparsers(dest="user_command", required=True)

    def command(name: str, text: str, func: Callable[[argparse.Namespace, Loader], int],
                changes: bool) -> argparse.ArgumentParser:
        parser = user_sub.add_parser(name, help=text)
        parser.add_argument("--config", required=True)
        if changes:
            parser.add_argument("--by", type=text_arg, help="who makes the change (default: the login name)")
        parser.set_defaults(func=lambda args: func(args, load))
        return parser

    add = command("add", "add a user (the password from --password-stdin or asked twice)", cmd_user_add, True)
    add.add_argument("--name", type=text_arg, required=True)
    add.add_argument("--role", type=text_arg, required=True,
                     help="viewer: watch; operator: also export and hold; admin: everything")
    add.add_argument("--cameras", type=text_arg, metavar="A,B",
                     help="the cameras a viewer or operator may see (default: all; \"\" for none)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")

    passwd = command("passwd", "set a user's password (ends its browser sessions, clears a lockout)",
                     cmd_user_passwd, True)
    passwd.add_argument("--name", type=text_arg, required=True)
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")

    remove = command("remove", "remove a user (revokes its tokens; never the last admin)", cmd_user_remove, True)
    remove.add_argument("--name", type=text_arg, required=True)

    listing = command("list", "the users, their roles, cameras, lockouts and tokens", cmd_user_list, False)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    token = command("token", "create an API token for a user; printed once", cmd_user_token, True)
    token.add_argument("--name", type=text_arg, required=True)
    token.add_argument("--label", type=text_arg, required=True, help="what the token is for (shown in lists)")

    tokens = command("tokens", "the API tokens (revoked ones too)", cmd_user_tokens, False)
    tokens.add_argument("--name", type=text_arg, help="only this user's")
    tokens.add_argument("--json", action="store_true", help="one JSON object per line")

    revoke = command("revoke-token", "revoke an API token", cmd_user_revoke_token, True)
    revoke.add_argument("--id", type=_token_id_arg, required=True)
