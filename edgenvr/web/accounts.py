"""The box's user accounts: who may use the web UI and API, with which role and which cameras, and how they
prove it (password, API token, browser session). Owns `<data>/users.sqlite3` (`layout.users_path`), its own
file like the audit trail, so accounts outlive an index rebuild.

What is stored, and what never is:
- Passwords: Argon2id (`argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)`: OWASP's
  minimum, sized for a Raspberry Pi with 2 GB: 19 MiB per check, so a burst of logins fits beside the
  recorders; ~30 ms a check measured on x86, several times that on a Pi's cores). A hash made with other
  parameters is re-hashed at the next good login.
  Passwords are NFKC-normalised first (NIST SP 800-63B), so the same password typed on a phone and a laptop
  matches.
- API tokens (`envr_` + 32 random bytes, the prefix makes a leaked one recognisable in logs and scanners)
  and session ids (32 random bytes): only their SHA-256. A slow hash protects guessable secrets; these have
  256 bits of entropy, so a fast hash is as safe and costs nothing per request. Looking a secret up by its
  hash also means no comparison an attacker can time. The token secret is returned once, by `create_token`.
- A session's CSRF token is stored as is: it is useless without the session cookie and must be given back
  to the page with every look-up.
- Nothing secret (password, hash, token, session id, CSRF token) is ever logged, put in an exception
  message or shown by a `repr`.

Invariants:
- User names match `^[a-z0-9][a-z0-9._-]{0,31}$`; camera grants are camera ids (`core.camera_ids`), unique
  and sorted; `cameras` None means every camera, () none; an admin always sees every camera. The store does
  not know the config: the CLI refuses camera names the config does not have.
- There is always an admin once there has been one: removing or demoting the last admin is refused.
- Lockout: `MAX_FAILURES` consecutive wrong passwords lock an account for `LOCKOUT_MS`; while locked every
  attempt is LOCKED without being checked (the right password too) and not counted; a good login resets
  the count. The attempt that locks is LOCKED with `just_locked`. An unknown user is WRONG after a check
  against a dummy hash, so it costs what a real check costs. What can still tell a real name from an
  unknown one: a lock (only real accounts are locked), and on slow storage the few ms of writing a real
  account's count; both are the price of counting only real accounts, in the file, across restarts.
- Sessions end after `SESSION_IDLE_MS` without use or `SESSION_MAX_MS` after login, at logout, when the
  user's password changes and when the user is removed. Tokens work until revoked (removing the user
  revokes them); a password change leaves them alone (they are separate credentials).
- Wall-clock trust (docs/architecture.md, "Clock trust"): a lock or a session is in force only inside its
  window on the wall clock; a clock stepped back before it started ends it (log in again) rather than making
  it last as long as the step. A clock stepped forward ends them early. Neither keeps anyone out for longer.
- Writes are rare and short: one `BEGIN IMMEDIATE` transaction per change (the web server and the CLI may
  write at once; a busy timeout serialises them), never around a password hash; a token's and a session's
  last use is written at most once a minute. WAL, `synchronous=FULL`: a change is durable when its call
  returns.
- The file is created on the first write, 0600 (password hashes are for the service alone, not for the
  data's viewer group), schema version in `PRAGMA user_version`. Created by root (a CLI run with sudo), it is
  given to the data directory's owner, the service user, who must read and write it. An older version is
  brought up to date when it is opened (version 2 added `setup_code`).
- The first admin of a box without one (docs/architecture.md, "Appliance"): either provisioned with an Argon2id
  hash made elsewhere (`put_admin_with_hash`: parameters bounded, so no hash can make each login cost the box
  gigabytes), or made through the web's setup page with a one-time setup code (`complete_setup`). The code is
  stored only as an Argon2id hash (it is typed by people, so guessable in principle), at most one at a time,
  with where it came from (the provisioning file, or the box's console); the admin's creation and the code's
  removal are one transaction, so a code is used once, and none is kept or accepted once an admin exists.

Failure paths: a data directory that is missing or unwritable, a full disk, a file that is not SQLite or was
written by a newer edgenvr, a lock held past the busy timeout: AccountError with the path and the cause, and
the change's transaction rolled back (nothing half-written). Bad input (name, role, camera, password, label),
an unknown user or token, the last admin: AccountError with a message fit for the UI and the CLI. A look-up
with a wrong, expired or revoked secret is not an error: None. A file deleted or replaced while open is
noticed at the next call and the new one used (or none: no users).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Self

import argon2
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from edgenvr.core.camera_ids import CAMERA_ID_RULE, is_camera_id
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.index.schema import write_transaction
from edgenvr.storage.durable_writes import fsync_dir
from edgenvr.storage.layout import StorageLayout

log = logging.getLogger(__name__)

MAX_FAILURES = 20                       # consecutive wrong passwords that lock an account
LOCKOUT_MS = 15 * 60 * 1000             # how long: at most ~1900 guesses a day per account
SESSION_IDLE_MS = 12 * 3600 * 1000      # a session unused this long ends
SESSION_MAX_MS = 7 * 24 * 3600 * 1000   # and any session this long after its login
LAST_USE_WRITE_MS = 60 * 1000           # a token's or session's last use is written at most this often
CLOCK_SLACK_MS = 60 * 1000              # a lock or session starting this far ahead of now: the clock went back
MIN_PASSWORD, MAX_PASSWORD = 10, 1024   # characters
MAX_LABEL = 80
TOKEN_PREFIX = "envr_"
SECRET_BYTES = 32
MAX_SECRET_CHARS = 128                  # longer than any secret made here: refused without a look-up
FILE_MODE = 0o600
BUSY_TIMEOUT_S = 10                     # how long a change waits for another process's (each takes ms)
SCHEMA_VERSION = 2
MIN_SETUP_CODE = 12                     # characters, after normalising (a provisioned code; made ones have 16)
SETUP_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"   # no 0/O, 1/I/L: read off a screen and typed
SETUP_CODE_GROUPS = 4                   # of 4 characters: 16 * log2(31) = 79 bits
# The bounds of a provisioned Argon2id hash: a login checks the password with the hash's own parameters, and
# the box has 2 GB; OWASP's settings and argon2-cffi's default (64 MiB, t=3, p=4) are well inside them.
MAX_HASH_MEMORY_KIB = 256 * 1024
MAX_HASH_TIME_COST = 10
MAX_HASH_PARALLELISM = 8

NAME_RULE = 'use 1-32 characters a-z, 0-9, ".", "_" and "-", starting with a letter or digit'
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")

# Never edit a shipped schema: add a version.
SCHEMA = [
    """CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,               -- Role
        cameras TEXT,                     -- JSON list of camera ids; NULL = every camera
        password_hash TEXT NOT NULL,      -- Argon2id, PHC string
        created_ms INTEGER NOT NULL,
        failures INTEGER NOT NULL,        -- consecutive wrong passwords (a lock's end starts them again)
        locked_until_ms INTEGER           -- the end of the last lock (in force only inside its window)
    )""",
    """CREATE TABLE tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: an id in the audit trail names one token
        user TEXT NOT NULL,
        label TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL UNIQUE,     -- hex
        created_ms INTEGER NOT NULL,
        last_used_ms INTEGER,
        revoked_ms INTEGER
    )""",
    "CREATE INDEX tokens_user ON tokens(user)",
    """CREATE TABLE sessions (
        id_sha256 TEXT PRIMARY KEY,       -- hex
        user TEXT NOT NULL,
        csrf_token TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL
    )""",
    "CREATE INDEX sessions_user ON sessions(user)",
]
# Version -> the statements that bring the version before it up to it.
MIGRATIONS: dict[int, list[str]] = {
    2: ["""CREATE TABLE setup_code (
        id INTEGER PRIMARY KEY CHECK (id = 1),   -- at most one code waits
        code_hash TEXT NOT NULL,                 -- Argon2id of the normalised code
        source TEXT NOT NULL,                    -- SetupCodeSource
        created_ms INTEGER NOT NULL
    )"""],
}


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


class Permission(StrEnum):
    VIEW = "view"                          # live, playback, events and snapshots of the granted cameras
    EXPORT = "export"
    HOLD = "hold"
    MANAGE_USERS = "manage_users"
    APPROVE_REFERENCE = "approve_reference"
    READ_AUDIT = "read_audit"
    # the Prometheus metrics of the box or the hub (web.box_metrics, hub.hub_metrics): looking after the
    # machine (disk, sync, recording health) is an operator's job, not a viewer's
    READ_METRICS = "read_metrics"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.VIEW}),
    Role.OPERATOR: frozenset({Permission.VIEW, Permission.EXPORT, Permission.HOLD, Permission.READ_METRICS}),
    Role.ADMIN: frozenset(Permission),
}


class AccountError(ValueError):
    """A change or look-up that cannot be done; the message is fit for the UI and the CLI, never secret."""


class SetupCodeSource(StrEnum):
    PROVISIONED = "provisioned"   # given in the provisioning file (runtime.provisioning)
    CONSOLE = "console"           # made at boot and shown on the box's console only (runtime.setup_console)


class SetupRefusal(StrEnum):
    WRONG_CODE = "wrong_code"
    NO_CODE = "no_code"           # none waits (none was given or made, or it was used)
    ADMIN_EXISTS = "admin_exists"


class SetupRefused(AccountError):
    """The setup code was not accepted; `refusal` says why (the message never shows the code)."""

    def __init__(self, refusal: SetupRefusal, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    cameras: tuple[str, ...] | None   # None: every camera; (): none
    created_ms: int
    locked_until_ms: int | None       # set only while a lock is in force

    def may(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def may_see(self, camera: str) -> bool:
        return self.cameras is None or camera in self.cameras


@dataclass(frozen=True)
class Token:
    id: int
    user: str
    label: str
    created_ms: int
    last_used_ms: int | None
    revoked_ms: int | None


class LoginOutcome(StrEnum):
    OK = "ok"
    WRONG = "wrong"     # wrong password or unknown user: the same answer after the same Argon2id check
    LOCKED = "locked"   # locked by too many wrong passwords: by this attempt (just_locked), else not checked


@dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    user: User | None               # only when OK
    failures: int                   # consecutive wrong passwords so far (the one that locked included)
    locked_until_ms: int | None
    just_locked: bool               # this attempt locked the account (the server audits it)


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str = field(repr=False)
    expires_ms: int


# -- the rules -----------------------------------------------------------------------------------------------

def check_name(name: object) -> str:
    """The user name, or AccountError saying the rule."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        shown = repr(name) if isinstance(name, str) and name.isprintable() and len(name) <= 64 else "that"
        raise AccountError(f"{shown} is not a user name: {NAME_RULE}")
    return name


def check_role(role: object) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise AccountError(f"no role {role!r}: use one of {', '.join(Role)}") from None


def check_cameras(role: Role, cameras: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The grant as stored (unique, sorted), or AccountError: a camera that is not a camera id, or cameras for
    an admin (who manages users, so could grant itself any camera anyway)."""
    if cameras is None:
        return None
    if role is Role.ADMIN:
        raise AccountError("an admin sees every camera: give no camera list")
    for camera in cameras:
        if not is_camera_id(camera):
            shown = repr(camera) if isinstance(camera, str) and camera.isprintable() and len(camera) <= 64 else "that"
            raise AccountError(f"{shown} is not a camera id: {CAMERA_ID_RULE}")
    return tuple(sorted(set(cameras)))


def check_new_password(name: str, password: object) -> str:
    """The password as it will be hashed (NFKC), or AccountError saying which rule it breaks (never itself)."""
    if not isinstance(password, str):
        raise AccountError("the password must be text")
    normalised = unicodedata.normalize("NFKC", password)
    try:
        normalised.encode("utf-8")
    except UnicodeEncodeError:   # argv and stdin keep undecodable bytes as lone surrogates
        raise AccountError("the password is not valid text in this terminal's encoding") from None
    if len(normalised) < MIN_PASSWORD:
        raise AccountError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if len(normalised) > MAX_PASSWORD:
        raise AccountError(f"the password is too long: use at most {MAX_PASSWORD} characters")
    if normalised.casefold() == name.casefold():
        raise AccountError("the password must not be the user name")
    return normalised


def check_password_hash(password_hash: object) -> str:
    """An Argon2id hash (PHC string) as argon2-cffi and the `argon2` command make one, with parameters a box can
    afford at every login; AccountError saying what is wrong (never the hash itself)."""
    if not isinstance(password_hash, str) or not password_hash.startswith("$argon2id$") or len(password_hash) > 512:
        raise AccountError('the password hash must be an Argon2id hash ("$argon2id$v=19$m=...,t=...,p=...$salt$hash")')
    malformed = AccountError("the password hash is not a well-formed Argon2id hash")
    try:
        parameters = argon2.extract_parameters(password_hash)
    except ValueError:   # InvalidHashError
        raise malformed from None
    if (parameters.memory_cost > MAX_HASH_MEMORY_KIB or parameters.time_cost > MAX_HASH_TIME_COST
            or parameters.parallelism > MAX_HASH_PARALLELISM):
        raise AccountError(f"the password hash's parameters are too costly for the box (at most m={MAX_HASH_MEMORY_KIB}"
                           f" KiB, t={MAX_HASH_TIME_COST}, p={MAX_HASH_PARALLELISM}): every login would pay them")
    try:   # within those bounds: one check parses all of it (salt, digest); a mismatch is the expected answer
        _HASHER.verify(password_hash, "-" * MIN_PASSWORD)
    except VerifyMismatchError:
        pass
    except (VerificationError, ValueError):   # the library could not decode it (salt, digest)
        raise malformed from None
    return password_hash


def normalised_setup_code(code: object) -> str | None:
    """A setup code as compared: NFKC, upper case, without spaces and dashes (people copy "ab12-cd34 ..."); None
    for anything that cannot be one."""
    if not isinstance(code, str) or len(code) > MAX_SECRET_CHARS:
        return None
    normalised = "".join(c for c in unicodedata.normalize("NFKC", code) if not c.isspace() and c != "-").upper()
    return normalised if normalised and normalised.isascii() and normalised.isprintable() else None


def check_setup_code(code: object) -> str:
    """A setup code fit to be given (the provisioning file's), normalised; AccountError saying the rule."""
    normalised = normalised_setup_code(code)
    if normalised is None or len(normalised) < MIN_SETUP_CODE:
        raise AccountError(f"a setup code is {MIN_SETUP_CODE}-{MAX_SECRET_CHARS} letters and digits (spaces and"
                           ' "-" between groups do not count)')
    return normalised


def new_setup_code() -> str:
    """A random setup code for the console, in groups people can read and type: "7KQM-2XWD-R9FH-T4PN"."""
    letters = "".join(secrets.choice(SETUP_CODE_ALPHABET) for _ in range(4 * SETUP_CODE_GROUPS))
    return "-".join(letters[i:i + 4] for i in range(0, len(letters), 4))


def check_label(label: object) -> str:
    if (not isinstance(label, str) or not 1 <= len(label) <= MAX_LABEL or not label.isprintable()
            or not label.strip()):
        raise AccountError(f"a token's label must be 1-{MAX_LABEL} printable characters (what the token is for)")
    return label


# Argon2id sized for a 2 GB Raspberry Pi: OWASP's minimum (19 MiB, 2 passes, 1 lane); see the module docstring.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
_dummy_hash: str | None = None


def _the_dummy_hash() -> str:
    """A hash no password matches, checked for unknown users so that they take as long as known ones."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _HASHER.hash(secrets.token_urlsafe(SECRET_BYTES))
    return _dummy_hash


def _password_matches(stored_hash: str, password: object, user: str) -> bool:
    """Whether the password is the one hashed; any password that could never have been set is checked
    against the dummy hash (the same time) and is wrong."""
    candidate = None
    if isinstance(password, str) and len(password) <= 4 * MAX_PASSWORD:
        candidate = unicodedata.normalize("NFKC", password)
        try:
            candidate.encode("utf-8")
        except UnicodeEncodeError:
            candidate = None
    try:
        if candidate is None:
            _HASHER.verify(_the_dummy_hash(), "-" * MIN_PASSWORD)
            return False
        return _HASHER.verify(stored_hash, candidate)
    except InvalidHashError:
        log.warning("user %s: the stored password hash is unreadable; nobody can log in as %s until a new "
                    "password is set (`edgenvr user passwd`)", user, user)
        return False
    except VerificationError:
        return False


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _plausible_secret(secret: object) -> bool:
    return isinstance(secret, str) and 0 < len(secret) <= MAX_SECRET_CHARS and secret.isascii()


def _lock_in_force(locked_until_ms: int | None, now_ms: int) -> bool:
    return locked_until_ms is not None and locked_until_ms - LOCKOUT_MS - CLOCK_SLACK_MS <= now_ms < locked_until_ms


def _session_expiry(created_ms: int, last_seen_ms: int) -> int:
    return min(last_seen_ms + SESSION_IDLE_MS, created_ms + SESSION_MAX_MS)


def _session_alive(created_ms: int, last_seen_ms: int, now_ms: int) -> bool:
    return created_ms - CLOCK_SLACK_MS <= now_ms < _session_expiry(created_ms, last_seen_ms)


def _due_for_write(last_ms: int | None, now_ms: int) -> bool:
    """Whether a last use is worth a write: never written, a minute old, or stamped ahead of the clock."""
    return last_ms is None or now_ms - last_ms >= LAST_USE_WRITE_MS or now_ms < last_ms


# -- the store ---------------------------------------------------------------------------------------------------

_USER_COLUMNS = "name, role, cameras, password_hash, created_ms, failures, locked_until_ms"
_TOKEN_COLUMNS = "id, user, label, created_ms, last_used_ms, revoked_ms"


class Accounts:
    """The accounts file. One connection, usable from any thread; password hashing runs outside its lock."""

    def __init__(self, layout: StorageLayout, clock: Clock = SYSTEM_CLOCK) -> None:
        self._path = layout.users_path
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None
        self._closed = False
        with self._lock, self._storage("open"):
            self._connection(create=False)   # a file that is not SQLite is refused now, not at the first login

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_connection()

    # -- users ------------------------------------------------------------------------------------------------

    def add_user(self, name: str, role: Role, password: str, cameras: tuple[str, ...] | None = None) -> User:
        name = check_name(name)
        role = check_role(role)
        grant = check_cameras(role, cameras)
        password_hash = _HASHER.hash(check_new_password(name, password))
        with self._write("add the user") as conn:
            if self._user_row(conn, name) is not None:
                raise AccountError(f"user {name} exists already")
            now = self._clock.now_ms()
            conn.execute(f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, 0, NULL)",
                         (name, str(role), _grant_json(grant), password_hash, now))
        return User(name, role, grant, now, None)

    def set_password(self, name: str, password: str) -> None:
        name = check_name(name)
        password_hash = _HASHER.hash(check_new_password(name, password))
        with self._write("change the password") as conn:
            self._existing_user_row(conn, name)
            conn.execute("UPDATE users SET password_hash = ?, failures = 0, locked_until_ms = NULL WHERE name = ?",
                         (password_hash, name))
            conn.execute("DELETE FROM sessions WHERE user = ?", (name,))   # whoever knew the old one is logged out

    def set_role(self, name: str, role: Role, cameras: tuple[str, ...] | None) -> User:
        name = check_name(name)
        role = check_role(role)
        grant = check_cameras(role, cameras)
        with self._write("change the role") as conn:
            row = self._existing_user_row(conn, name)
            if row["role"] == Role.ADMIN and role is not Role.ADMIN and self._admins(conn) == 1:
                raise AccountError(f"{name} is the last admin: make another user admin first")
            conn.execute("UPDATE users SET role = ?, cameras = ? WHERE name = ?", (str(role), _grant_json(grant), name))
            return _user(conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,)).fetchone(),
                         self._clock.now_ms())

    def remove_user(self, name: str) -> None:
        name = check_name(name)
        with self._write("remove the user") as conn:
            row = self._existing_user_row(conn, name)
            if row["role"] == Role.ADMIN and self._admins(conn) == 1:
                raise AccountError(f"{name} is the last admin: make another user admin first")
            conn.execute("UPDATE tokens SET revoked_ms = ? WHERE user = ? AND revoked_ms IS NULL",
                         (self._clock.now_ms(), name))
            conn.execute("DELETE FROM sessions WHERE user = ?", (name,))
            conn.execute("DELETE FROM users WHERE name = ?", (name,))

    def users(self) -> list[User]:
        with self._read() as conn:
            if conn is None:
                return []
            now = self._clock.now_ms()
            return [_user(row, now) for row in conn.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name")]

    def user(self, name: str) -> User | None:
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            return None
        with self._read() as conn:
            row = None if conn is None else self._user_row(conn, name)
            return None if row is None else _user(row, self._clock.now_ms())

    def has_admin(self) -> bool:
        with self._read() as conn:
            return conn is not None and self._admins(conn) > 0

    def put_admin_with_hash(self, name: str, password_hash: str) -> bool:
        """Make `name` an admin (every camera) whose password is the one `password_hash` was made from (the
        provisioning file's): added, or, if the user exists, given that hash and the admin role (its sessions
        end). Any setup code waiting is dropped: an admin exists. True if the user was added. Done again with the
        same arguments it changes nothing further (provisioning resumed after a power cut)."""
        name = check_name(name)
        password_hash = check_password_hash(password_hash)
        with self._write("provision the admin") as conn:
            now = self._clock.now_ms()
            row = self._user_row(conn, name)
            if row is None:
                conn.execute(f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, NULL, ?, ?, 0, NULL)",
                             (name, str(Role.ADMIN), password_hash, now))
            elif (row["role"], row["cameras"], row["password_hash"]) != (str(Role.ADMIN), None, password_hash):
                conn.execute("UPDATE users SET role = ?, cameras = NULL, password_hash = ?, failures = 0,"
                             " locked_until_ms = NULL WHERE name = ?", (str(Role.ADMIN), password_hash, name))
                conn.execute("DELETE FROM sessions WHERE user = ?", (name,))
            conn.execute("DELETE FROM setup_code")
        return row is None

    # -- the first admin, by setup code ---------------------------------------------------------------------

    def set_setup_code(self, code: str, source: SetupCodeSource) -> None:
        """Store the one setup code that may make the first admin (replacing any earlier one), as a hash.
        SetupRefused(ADMIN_EXISTS) if there is an admin already: then nothing may be set up."""
        normalised = check_setup_code(code)
        code_hash = _HASHER.hash(normalised)
        with self._write("store the setup code") as conn:
            if self._admins(conn):
                raise SetupRefused(SetupRefusal.ADMIN_EXISTS, "this box has an admin already: sign in")
            conn.execute("INSERT OR REPLACE INTO setup_code (id, code_hash, source, created_ms) VALUES (1, ?, ?, ?)",
                         (code_hash, str(SetupCodeSource(source)), self._clock.now_ms()))

    def setup_code_source(self) -> SetupCodeSource | None:
        """Where the setup code waiting came from; None when none waits (or an admin exists)."""
        with self._read() as conn:
            row = None if conn is None else conn.execute("SELECT source FROM setup_code").fetchone()
            if row is None or self._admins(conn):
                return None
            return SetupCodeSource(row["source"])

    def complete_setup(self, code: str, name: str, password: str, before: Callable[[], object] = lambda: None) -> User:
        """Make the first admin with the setup code: `name` with `password`, every camera; the code is used up in
        the same transaction. `before` runs once the code matched and before anything is written (the audit
        record: if it raises, nothing is done). SetupRefused: the code is wrong, none waits, or an admin
        exists; AccountError: the name or password breaks a rule (checked before the code, which then stays)."""
        name = check_name(name)
        normalised_password = check_new_password(name, password)
        with self._read() as conn:
            row = None if conn is None else conn.execute("SELECT code_hash FROM setup_code").fetchone()
            admins = 0 if conn is None else self._admins(conn)
        if admins:
            raise SetupRefused(SetupRefusal.ADMIN_EXISTS, "this box has an admin already: sign in")
        candidate = normalised_setup_code(code)
        if row is None:
            raise SetupRefused(SetupRefusal.NO_CODE, "no setup code waits on this box")
        if candidate is None or not _password_matches(row["code_hash"], candidate, "the setup code"):
            raise SetupRefused(SetupRefusal.WRONG_CODE, "wrong setup code")
        before()
        password_hash = _HASHER.hash(normalised_password)
        with self._write("make the first admin") as conn:
            fresh = conn.execute("SELECT code_hash FROM setup_code").fetchone()
            if self._admins(conn):
                raise SetupRefused(SetupRefusal.ADMIN_EXISTS, "this box has an admin already: sign in")
            if fresh is None or fresh["code_hash"] != row["code_hash"]:   # used or replaced meanwhile
                raise SetupRefused(SetupRefusal.NO_CODE, "the setup code was used or replaced meanwhile")
            if self._user_row(conn, name) is not None:
                raise AccountError(f"user {name} exists already")
            now = self._clock.now_ms()
            conn.execute(f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, NULL, ?, ?, 0, NULL)",
                         (name, str(Role.ADMIN), password_hash, now))
            conn.execute("DELETE FROM setup_code")
        return User(name, Role.ADMIN, None, now, None)

    # -- passwords ------------------------------------------------------------------------------------------

    def check_password(self, name: str, password: str) -> LoginResult:
        """A login attempt, counted against the account (see the lockout in the module docstring). The name is
        taken as typed, but trimmed and lower-cased (phones capitalise the first letter)."""
        name = name.strip().lower() if isinstance(name, str) else ""
        wrong = LoginResult(LoginOutcome.WRONG, None, 0, None, False)
        row = None
        if _NAME.fullmatch(name) is not None:
            with self._read() as conn:
                row = None if conn is None else self._user_row(conn, name)
        if row is None:
            _password_matches(_the_dummy_hash(), password, name)
            return wrong
        if _lock_in_force(row["locked_until_ms"], self._clock.now_ms()):
            return LoginResult(LoginOutcome.LOCKED, None, row["failures"], row["locked_until_ms"], False)
        checked_hash = row["password_hash"]
        right = _password_matches(checked_hash, password, name)
        new_hash = None
        if right and _HASHER.check_needs_rehash(checked_hash):
            new_hash = _HASHER.hash(unicodedata.normalize("NFKC", password))
        with self._write("record the login") as conn:
            fresh = self._user_row(conn, name)
            now = self._clock.now_ms()
            if fresh is None:
                return wrong   # removed meanwhile
            if _lock_in_force(fresh["locked_until_ms"], now):
                return LoginResult(LoginOutcome.LOCKED, None, fresh["failures"], fresh["locked_until_ms"], False)
            if fresh["password_hash"] != checked_hash:
                return wrong   # the password changed during the check: this answer is about the old one
            if right:
                if fresh["failures"] or fresh["locked_until_ms"] is not None or new_hash is not None:
                    conn.execute("UPDATE users SET failures = 0, locked_until_ms = NULL, password_hash = ?"
                                 " WHERE name = ?", (new_hash or checked_hash, name))
                return LoginResult(LoginOutcome.OK, _user(fresh, now), 0, None, False)
            # the count starts again after a lock: each lock lets another MAX_FAILURES guesses through
            failures = 1 if fresh["locked_until_ms"] is not None else fresh["failures"] + 1
            if failures < MAX_FAILURES:
                conn.execute("UPDATE users SET failures = ?, locked_until_ms = NULL WHERE name = ?", (failures, name))
                return LoginResult(LoginOutcome.WRONG, None, failures, None, False)
            locked_until = now + LOCKOUT_MS
            conn.execute("UPDATE users SET failures = ?, locked_until_ms = ? WHERE name = ?",
                         (failures, locked_until, name))
        log.warning("user %s locked until %d ms after %d wrong passwords in a row", name, locked_until, failures)
        return LoginResult(LoginOutcome.LOCKED, None, failures, locked_until, True)

    # -- tokens ---------------------------------------------------------------------------------------------

    def create_token(self, name: str, label: str) -> tuple[Token, str]:
        """A new API token for the user; its secret is returned here and never again."""
        name = check_name(name)
        label = check_label(label)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
        with self._write("create the token") as conn:
            self._existing_user_row(conn, name)
            now = self._clock.now_ms()
            cursor = conn.execute("INSERT INTO tokens (user, label, secret_sha256, created_ms) VALUES (?, ?, ?, ?)",
                                  (name, label, _sha256(secret), now))
            token_id = cursor.lastrowid
        assert token_id is not None
        return Token(token_id, name, label, now, None, None), secret

    def tokens(self, name: str | None = None) -> list[Token]:
        """Tokens, revoked ones included, in the order they were made; only the user's if a name is given."""
        with self._read() as conn:
            if conn is None:
                return []
            if name is None:
                rows = conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY id")
            else:
                rows = conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE user = ? ORDER BY id", (name,))
            return [_token(row) for row in rows]

    def revoke_token(self, token_id: int) -> Token:
        """Revoke a token (a revoked one stays as it was); AccountError if there is no such token."""
        if type(token_id) is not int or not 0 < token_id < 2**63:
            raise AccountError(f"{token_id!r} is not a token id")
        with self._write("revoke the token") as conn:
            row = conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id = ?", (token_id,)).fetchone()
            if row is None:
                raise AccountError(f"no token {token_id}")
            if row["revoked_ms"] is not None:
                return _token(row)
            now = self._clock.now_ms()
            conn.execute("UPDATE tokens SET revoked_ms = ? WHERE id = ?", (now, token_id))
        return replace(_token(row), revoked_ms=now)

    def user_for_token(self, secret: str) -> User | None:
        """The user a token authenticates, None for an unknown or revoked one or a removed user."""
        if not _plausible_secret(secret) or not secret.startswith(TOKEN_PREFIX):
            return None
        digest = _sha256(secret)
        with self._read() as conn:
            row = None if conn is None else conn.execute(
                f"SELECT tokens.id, tokens.last_used_ms, {_prefixed('users', _USER_COLUMNS)} FROM tokens"
                " JOIN users ON users.name = tokens.user WHERE tokens.secret_sha256 = ? AND tokens.revoked_ms IS NULL",
                (digest,)).fetchone()
        if row is None:
            return None
        now = self._clock.now_ms()
        if _due_for_write(row["last_used_ms"], now):
            with self._write("record the token's use") as conn:
                conn.execute("UPDATE tokens SET last_used_ms = ? WHERE id = ?", (now, row["id"]))
        return _user(row, now)

    # -- sessions -------------------------------------------------------------------------------------------

    def start_session(self, name: str) -> tuple[str, Session]:
        """A new browser session for the user (after a good login): (its id, for the cookie, and the session)."""
        name = check_name(name)
        session_id = secrets.token_urlsafe(SECRET_BYTES)
        csrf_token = secrets.token_urlsafe(SECRET_BYTES)
        with self._write("start the session") as conn:
            row = self._existing_user_row(conn, name)
            now = self._clock.now_ms()
            # sessions nobody ended pile up otherwise: each login sweeps the dead ones
            conn.execute("DELETE FROM sessions WHERE last_seen_ms + ? <= ? OR created_ms + ? <= ? OR created_ms > ?",
                         (SESSION_IDLE_MS, now, SESSION_MAX_MS, now, now + CLOCK_SLACK_MS))
            conn.execute("INSERT INTO sessions (id_sha256, user, csrf_token, created_ms, last_seen_ms)"
                         " VALUES (?, ?, ?, ?, ?)", (_sha256(session_id), name, csrf_token, now, now))
        return session_id, Session(_user(row, now), csrf_token, _session_expiry(now, now))

    def session(self, session_id: str) -> Session | None:
        """The live session with this id, its idle expiry moved on; None if unknown, ended, expired or its user
        removed."""
        if not _plausible_secret(session_id):
            return None
        digest = _sha256(session_id)
        with self._read() as conn:
            row = None if conn is None else conn.execute(
                f"SELECT sessions.csrf_token, sessions.created_ms AS session_created_ms, sessions.last_seen_ms,"
                f" {_prefixed('users', _USER_COLUMNS)} FROM sessions JOIN users ON users.name = sessions.user"
                " WHERE sessions.id_sha256 = ?", (digest,)).fetchone()
        if row is None:
            return None
        now = self._clock.now_ms()
        created, last_seen = row["session_created_ms"], row["last_seen_ms"]
        if not _session_alive(created, last_seen, now):
            with self._write("end the expired session") as conn:
                conn.execute("DELETE FROM sessions WHERE id_sha256 = ?", (digest,))
            return None
        if _due_for_write(last_seen, now):
            last_seen = now
            with self._write("record the session's use") as conn:
                conn.execute("UPDATE sessions SET last_seen_ms = ? WHERE id_sha256 = ?", (last_seen, digest))
        return Session(_user(row, now), row["csrf_token"], _session_expiry(created, last_seen))

    def end_session(self, session_id: str) -> None:
        """Log out; an unknown or ended session is no error."""
        if not _plausible_secret(session_id):
            return
        with self._write("end the session") as conn:
            conn.execute("DELETE FROM sessions WHERE id_sha256 = ?", (_sha256(session_id),))

    # -- the file ---------------------------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection | None]:
        """The connection for reading (None: no accounts file yet), under the lock."""
        with self._lock, self._storage("read"):
            yield self._connection(create=False)

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (the file created if need be), under the lock; anything raised rolls it back."""
        with self._lock, self._storage(what):
            conn = self._connection(create=True)
            assert conn is not None
            with write_transaction(conn):
                yield conn

    @contextmanager
    def _storage(self, what: str) -> Iterator[None]:
        """The file's failures as AccountError (with the path; SQLite's messages hold no values)."""
        try:
            yield
        except AccountError:
            raise
        except (sqlite3.Error, OSError) as exc:
            # a connection that failed (disk full, file replaced) is opened afresh next time
            self._drop_connection()
            raise AccountError(f"cannot {what}: the user accounts file {self._path} cannot be used ({exc})") from None

    def _connection(self, create: bool) -> sqlite3.Connection | None:
        """The open connection to the file at the path now: reopened if the file was replaced, created (with its
        schema) if `create`, None if there is no file or no schema yet and not `create`. Caller holds the lock."""
        if self._closed:
            raise AccountError("the user accounts are closed")
        current = _file_id(self._path)
        if self._conn is not None and current == self._file_id:
            return self._conn
        self._drop_connection()
        if current is None:
            if not create:
                return None
            current = self._create_file()
        conn = _connect(self._path)
        try:
            version = _version(conn, self._path)
            if version == 0 and not create:
                conn.close()
                return None
            if version < SCHEMA_VERSION:
                _set_up(conn, self._path)   # a new file's schema, or an older one's migrations
        except BaseException:
            conn.close()
            raise
        self._conn, self._file_id = conn, current
        return conn

    def _create_file(self) -> tuple[int, int]:
        """Make the empty file 0600 (SQLite gives its -wal and -shm the same mode) and return its id; another
        process making it at the same moment is no error."""
        directory = self._path.parent
        if not directory.is_dir():
            raise AccountError(f"the data directory {directory} does not exist (check storage.data_dir)")
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            pass
        else:
            try:
                os.fchmod(fd, FILE_MODE)   # whatever the umask
                owner = os.stat(directory)
                if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
                    # made by `sudo edgenvr user ...`: the service, which owns the data dir, must use it
                    os.fchown(fd, owner.st_uid, owner.st_gid)
            finally:
                os.close(fd)
            fsync_dir(directory)
        current = _file_id(self._path)
        if current is None:
            raise AccountError(f"the user accounts file {self._path} disappeared as it was created")
        return current

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
        self._conn, self._file_id = None, None

    @staticmethod
    def _user_row(conn: sqlite3.Connection, name: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,)).fetchone()
        return row

    def _existing_user_row(self, conn: sqlite3.Connection, name: str) -> sqlite3.Row:
        row = self._user_row(conn, name)
        if row is None:
            raise AccountError(f"no user {name}")
        return row

    @staticmethod
    def _admins(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT count(*) FROM users WHERE role = ?", (str(Role.ADMIN),)).fetchone()[0])


def _connect(path: Path) -> sqlite3.Connection:
    # mode=rw: a file removed under us is not silently re-created without its 0600 mode
    conn = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S,
                           isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        conn.close()
        raise
    return conn


def _version(conn: sqlite3.Connection, path: Path) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])   # "file is not a database" comes here
    if version > SCHEMA_VERSION:
        raise AccountError(f"the user accounts file {path} was written by a newer edgenvr (schema version {version};"
                           f" this edgenvr knows up to {SCHEMA_VERSION})")
    return version


def _set_up(conn: sqlite3.Connection, path: Path) -> None:
    """WAL and the schema (or the migrations an older file needs), in one transaction; another process doing it
    at the same time is no error.

    Two processes setting up a new file at once can get "database is locked" at once, without SQLite's busy
    handler (it refuses to wait where both waiting could deadlock; seen in CI): the set-up is then tried
    again until BUSY_TIMEOUT_S has passed, as any other write would wait."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA page_size=1024")   # a change dirties a few small pages (SD-card wear); new files
            if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
                raise sqlite3.OperationalError("cannot switch to WAL")
            with write_transaction(conn):
                version = _version(conn, path)
                statements = SCHEMA if version == 0 else []
                for target in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
                    statements = [*statements, *MIGRATIONS[target]]
                if statements:
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


def _prefixed(table: str, columns: str) -> str:
    return ", ".join(f"{table}.{column.strip()}" for column in columns.split(","))


def _grant_json(cameras: tuple[str, ...] | None) -> str | None:
    return None if cameras is None else json.dumps(list(cameras))


def _user(row: sqlite3.Row, now_ms: int) -> User:
    cameras = None if row["cameras"] is None else tuple(json.loads(row["cameras"]))
    locked_until = row["locked_until_ms"] if _lock_in_force(row["locked_until_ms"], now_ms) else None
    return User(row["name"], Role(row["role"]), cameras, row["created_ms"], locked_until)


def _token(row: sqlite3.Row) -> Token:
    return Token(row["id"], row["user"], row["label"], row["created_ms"], row["last_used_ms"], row["revoked_ms"])
