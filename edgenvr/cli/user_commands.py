"""The user commands: `edgenvr user add | passwd | remove | list | token | tokens | revoke-token`, the box's
web accounts (web.accounts) from the command line, e.g. the first admin before the web UI can be used; and the
same commands for the city hub's people (`edgenvr hub user add | list | remove | password | role`, `edgenvr hub
token create | list | revoke`, `edgenvr hub audit [verify]`): one set of functions, told where the accounts and
the audit trail are by an AccountsHome (the box's data dir and trail, or the hub's, hub.hub_accounts). Hub users
carry no camera grant: they see every camera (--cameras is not offered there).

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
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from edgenvr.cli.evidence_commands import (
    Loader,
    actor,
    add_audit_parser,
    audited,
    audited_by,
    show_audit,
)
from edgenvr.config.records import Config
from edgenvr.core.time_format import format_ms
from edgenvr.storage.layout import StorageLayout

if TYPE_CHECKING:
    from edgenvr.hub.hub_config import HubConfig
    from edgenvr.web.accounts import Accounts, Role

# edgenvr.web.accounts (and argon2) is imported by the user commands alone, not by every start of `edgenvr`.

MAX_PASSWORD_LINE = 16 * 1024   # bytes read from stdin for a password: far over any allowed one


class _Refused(Exception):
    """A bad argument: message, exit 2, nothing opened."""


Audited = Callable[..., AbstractContextManager[None]]   # (who, action, **record fields): record, then the body


@dataclass(frozen=True)
class AccountsHome:
    """Where the user commands work: the data dir whose users.sqlite3 they change, the audit trail each change
    is first recorded in, and the cameras a grant may name (None: grants are not offered, every user sees every
    camera: the hub)."""
    layout: StorageLayout
    audited: Audited
    config_path: str
    cameras: frozenset[str] | None


Locate = Callable[[argparse.Namespace], AccountsHome]


def box_home(load: Loader) -> Locate:
    """The box's: its data dir and audit trail, the cameras of its config (`--config`)."""
    def locate(args: argparse.Namespace) -> AccountsHome:
        config: Config = load(args.config)
        return AccountsHome(StorageLayout(config.storage.data_dir), partial(audited, config), args.config,
                            frozenset(camera.id for camera in config.cameras))
    return locate


def hub_home(hub_config: Callable[[argparse.Namespace], HubConfig]) -> Locate:
    """The city hub's (hub.hub_accounts): its data dir, its trail signed by its receipt key, no camera grants."""
    def locate(args: argparse.Namespace) -> AccountsHome:
        from edgenvr.hub.hub_accounts import hub_layout, open_hub_audit

        config = hub_config(args)
        try:
            layout = hub_layout(config)
        except OSError as exc:
            print(f"edgenvr hub: the data dir {config.data_dir} cannot be made: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        return AccountsHome(layout, partial(audited_by, lambda: open_hub_audit(config)), str(args.config), None)
    return locate


def _accounts(home: AccountsHome) -> Accounts:
    from edgenvr.web.accounts import Accounts

    return Accounts(home.layout)


def _checked_cameras(home: AccountsHome, role: Role, text: str | None) -> tuple[str, ...] | None:
    """--cameras as a grant: None (every camera) when absent, () for an empty list; names the config lacks are
    refused (the accounts store cannot tell)."""
    from edgenvr.web.accounts import check_cameras

    if text is None or home.cameras is None:
        return None
    cameras = tuple(name.strip() for name in text.split(",") if name.strip())
    grant = check_cameras(role, cameras)
    unknown = [camera for camera in grant or () if camera not in home.cameras]
    if unknown:
        listed = ", ".join(sorted(home.cameras)) or "none"
        raise _Refused(f"no camera {', '.join(unknown)} in {home.config_path} (its cameras: {listed})")
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

def cmd_user_add(args: argparse.Namespace, locate: Locate) -> int:
    from edgenvr.web.accounts import AccountError, check_name, check_role

    home = locate(args)
    try:
        name = check_name(args.name)
        role = check_role(args.role)
        cameras = _checked_cameras(home, role, getattr(args, "cameras", None))
        password = _new_password(name, args.password_stdin)
    except (AccountError, _Refused) as exc:
        return _fail("user not added", exc, 2)
    try:
        detail = f"user {name}, {role}, cameras {_grant_text(cameras)}"
        with (home.audited(actor(args.by), "user_add", detail=detail),
              _accounts(home) as accounts):
            user = accounts.add_user(name, role, password, cameras)
    except AccountError as exc:
        return _fail("user not added", exc, 1)
    print(f"added user {user.name} ({user.role}, cameras: {_grant_text(user.cameras)})")
    return 0


def cmd_user_passwd(args: argparse.Namespace, locate: Locate) -> int:
    from edgenvr.web.accounts import AccountError, check_name

    home = locate(args)
    try:
        name = check_name(args.name)
        password = _new_password(name, args.password_stdin)
    except (AccountError, _Refused) as exc:
        return _fail("password not changed", exc, 2)
    try:
        with (home.audited(actor(args.by), "user_password", detail=f"user {name}"),
              _accounts(home) as accounts):
            accounts.set_password(name, password)
    except AccountError as exc:
        return _fail("password not changed", exc, 1)
    print(f"password of {name} changed; its browser sessions are ended")
    return 0


def cmd_user_remove(args: argparse.Namespace, locate: Locate) -> int:
    from edgenvr.web.accounts import AccountError, check_name

    home = locate(args)
    try:
        name = check_name(args.name)
    except AccountError as exc:
        return _fail("user not removed", exc, 2)
    try:
        with (home.audited(actor(args.by), "user_remove", detail=f"user {name}"),
              _accounts(home) as accounts):
            accounts.remove_user(name)
    except AccountError as exc:
        return _fail("user not removed", exc, 1)
    print(f"removed user {name}; its tokens are revoked and its sessions ended")
    return 0


def cmd_user_list(args: argparse.Namespace, locate: Locate) -> int:
    from edgenvr.web.accounts import AccountError

    home = locate(args)
    try:
        with _accounts(home) as accounts:
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


def cmd_user_token(args: argparse.Namespace, locate: Locate) -> int:
    from edgenvr.web.accounts import AccountError, check_label, check_name

    home = locate(args)
    try:
        name = check_name(args.name)
        label = check_label(args.label)
    except AccountError as exc:
        return _fail("token not created", exc, 2)
    try:
        with (home.audited(actor(args.by), "token_create", detail=f"user {name}, label {label}"),
              _accounts(home) as accounts):
            token, secret = accounts.create_token(name, label)
    except AccountError as exc:
        return _fail("token not created", exc, 1)
    print(secret, flush=True)   # alone on stdout, for a script to keep
    print(f"edgenvr: token {token.id} for {token.user} ({token.label}): keep it now, it will not be shown again",
          file=sys.stderr)
    return 0


def cmd_user_tokens(args: argparse.Namespace, locate: Locate) -> int:
    from edgenvr.web.accounts import AccountError, check_name

    home = locate(args)
    try:
        name = None if args.name is None else check_name(args.name)
        with _accounts(home) as accounts:
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


def cmd_user_revoke_token(args: argparse.Namespace, locate: Locate) -> int:
    from edgenvr.web.accounts import AccountError

    home = locate(args)
    try:
        with _accounts(home) as accounts:
            found = [token for token in accounts.tokens() if token.id == args.id]
            if not found:
                raise AccountError(f"no token {args.id} (`edgenvr user tokens` lists them)")
            (token,) = found
            with home.audited(actor(args.by), "token_revoke", detail=f"token {token.id} of user {token.user}"):
                revoked = accounts.revoke_token(token.id)
    except AccountError as exc:
        return _fail("token not revoked", exc, 1)
    print(f"token {revoked.id} of {revoked.user} ({revoked.label}) revoked at {format_ms(revoked.revoked_ms or 0)}")
    return 0


def cmd_user_role(args: argparse.Namespace, locate: Locate) -> int:
    """Change a user's role (its camera grant kept; none for an admin, who sees every camera)."""
    from edgenvr.web.accounts import AccountError, Role, check_name, check_role

    home = locate(args)
    try:
        name = check_name(args.name)
        role = check_role(args.role)
    except AccountError as exc:
        return _fail("role not changed", exc, 2)
    try:
        with (home.audited(actor(args.by), "user_role", detail=f"user {name} to {role}"),
              _accounts(home) as accounts):
            user = accounts.user(name)
            if user is None:
                raise AccountError(f"no user {name}")
            changed = accounts.set_role(name, role, None if role is Role.ADMIN else user.cameras)
    except AccountError as exc:
        return _fail("role not changed", exc, 1)
    print(f"{changed.name} is now {changed.role} (cameras: {_grant_text(changed.cameras)})")
    return 0


def _token_id_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} is not a token id: use a number the token list shows")
    return value


# -- the command lines: the box's `edgenvr user ...`, the hub's `edgenvr hub user|token|audit ...` ------------

Command = Callable[[argparse.Namespace, Locate], int]
BOX_ROLES = "viewer: watch; operator: also export and hold; admin: everything"
HUB_ROLES = ("viewer: fleet, clips and playback; operator: also pull requests and evidence downloads; admin: also "
             "users, tokens and the audit trail")


@dataclass(frozen=True)
class _Commands:
    """Makes the leaf commands of one command line: where they work, how --config is given."""
    sub: argparse._SubParsersAction[argparse.ArgumentParser]
    locate: Locate
    text_arg: Callable[[str], str]
    config: dict[str, object]   # the --config argument's settings

    def add(self, name: str, text: str, func: Command, *, changes: bool) -> argparse.ArgumentParser:
        parser = self.sub.add_parser(name, help=text)
        parser.add_argument("--config", **self.config)   # type: ignore[arg-type]
        if changes:
            parser.add_argument("--by", type=self.text_arg, help="who makes the change (default: the login name)")
        locate = self.locate
        parser.set_defaults(func=lambda args: func(args, locate))
        return parser

    def name(self, parser: argparse.ArgumentParser, *, required: bool = True, text: str | None = None) -> None:
        parser.add_argument("--name", type=self.text_arg, required=required, help=text)

    def password(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")

    @staticmethod
    def json(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="one JSON object per line")


def add_user_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], load: Loader,
                      text_arg: Callable[[str], str]) -> None:
    user = sub.add_parser("user", help="the web UI's users: add, passwd, remove, list, API tokens")
    commands = _Commands(user.add_subparsers(dest="user_command", required=True), box_home(load), text_arg,
                         {"required": True})

    add = commands.add("add", "add a user (the password from --password-stdin or asked twice)", cmd_user_add,
                       changes=True)
    commands.name(add)
    add.add_argument("--role", type=text_arg, required=True, help=BOX_ROLES)
    add.add_argument("--cameras", type=text_arg, metavar="A,B",
                     help="the cameras a viewer or operator may see (default: all; \"\" for none)")
    commands.password(add)

    passwd = commands.add("passwd", "set a user's password (ends its browser sessions, clears a lockout)",
                          cmd_user_passwd, changes=True)
    commands.name(passwd)
    commands.password(passwd)

    remove = commands.add("remove", "remove a user (revokes its tokens; never the last admin)", cmd_user_remove,
                          changes=True)
    commands.name(remove)

    commands.json(commands.add("list", "the users, their roles, cameras, lockouts and tokens", cmd_user_list,
                               changes=False))

    token = commands.add("token", "create an API token for a user; printed once", cmd_user_token, changes=True)
    commands.name(token)
    token.add_argument("--label", type=text_arg, required=True, help="what the token is for (shown in lists)")

    tokens = commands.add("tokens", "the API tokens (revoked ones too)", cmd_user_tokens, changes=False)
    commands.name(tokens, required=False, text="only this user's")
    commands.json(tokens)

    revoke = commands.add("revoke-token", "revoke an API token", cmd_user_revoke_token, changes=True)
    revoke.add_argument("--id", type=_token_id_arg, required=True)


def add_hub_people_commands(hub_sub: argparse._SubParsersAction[argparse.ArgumentParser],
                            hub_config: Callable[[argparse.Namespace], HubConfig], text_arg: Callable[[str], str],
                            time_arg: Callable[[str], int], time_forms: str) -> None:
    """`edgenvr hub user ...`, `edgenvr hub token ...` and `edgenvr hub audit [verify]`: the same commands on the
    hub's accounts and trail (`hub_config(args)`: the hub's config, or its problems and exit 2). --config may
    also come before the command (`edgenvr hub --config HUB.toml user list`)."""
    locate = hub_home(hub_config)
    config = {"default": argparse.SUPPRESS, "help": "the hub's config file (HUB.toml)"}

    user = hub_sub.add_parser("user", help="the hub's users (web UI and API): add, list, remove, password, role")
    user.add_argument("--config", **config)   # type: ignore[arg-type]  # `hub user --config X add` too
    users = _Commands(user.add_subparsers(dest="user_command", required=True), locate, text_arg, config)
    add = users.add("add", "add a user (the password from --password-stdin or asked twice)", cmd_user_add,
                    changes=True)
    users.name(add)
    add.add_argument("--role", type=text_arg, required=True, help=HUB_ROLES)
    users.password(add)
    users.json(users.add("list", "the users, their roles, lockouts and tokens", cmd_user_list, changes=False))
    users.name(users.add("remove", "remove a user (revokes its tokens; never the last admin)", cmd_user_remove,
                         changes=True))
    password = users.add("password", "set a user's password (ends its browser sessions, clears a lockout)",
                         cmd_user_passwd, changes=True)
    users.name(password)
    users.password(password)
    role = users.add("role", "change a user's role", cmd_user_role, changes=True)
    users.name(role)
    role.add_argument("--role", type=text_arg, required=True, help=HUB_ROLES)

    token = hub_sub.add_parser("token", help="API tokens of the hub's users: create, list, revoke")
    token.add_argument("--config", **config)   # type: ignore[arg-type]
    tokens = _Commands(token.add_subparsers(dest="token_command", required=True), locate, text_arg, config)
    create = tokens.add("create", "create an API token for a user; printed once", cmd_user_token, changes=True)
    tokens.name(create)
    create.add_argument("--label", type=text_arg, required=True, help="what the token is for (shown in lists)")
    listing = tokens.add("list", "the API tokens (revoked ones too)", cmd_user_tokens, changes=False)
    tokens.name(listing, required=False, text="only this user's")
    tokens.json(listing)
    tokens.add("revoke", "revoke an API token", cmd_user_revoke_token, changes=True).add_argument(
        "--id", type=_token_id_arg, required=True)

    def audit(args: argparse.Namespace) -> int:
        from edgenvr.hub.hub_accounts import hub_layout

        hub = hub_config(args)
        return show_audit(args, hub_layout(hub), hub.receipt_public_key_path)
    add_audit_parser(hub_sub, "what the hub's people did: sign-ins, playback, downloads, pull requests, user "
                              "changes (the hub's audit trail, signed by its key)", time_arg, time_forms, audit,
                     argparse.SUPPRESS)
