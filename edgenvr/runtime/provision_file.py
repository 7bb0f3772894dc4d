"""The first-boot provisioning file, `edgenvr-provision.toml` on the boot partition: read and checked whole,
before anything is changed (runtime.provisioning applies it). The format is in docs/provisioning.md.

What it holds:
- the box's config tables ([box] id and name, [[cameras]], [sync] hub_url, enrolment_token, hub_fingerprint,
  and any other table of the config file). They are not checked here: each replaces the same table of the
  box's config file (or of `{"web": {}}` when the box has none yet: an appliance serves its UI), and the result
  must pass `config.checking.parse_config`, the one checker of config keys; what it says is shown as it says
  it. [box] id is required: boxes flashed from one image share a host name, so the default id would collide.
- [admin]: `name` (default "admin") with either `password_hash` (Argon2id, as web.accounts stores hashes) or
  `setup_code` (a one-time code to make the admin on the setup page); checked by web.accounts' own rules.
- [ssh]: `authorized_keys` (a non-empty list of OpenSSH public keys, each checked with `ssh-keygen -l`) for
  `user` (default "root"; it must exist in the box's /etc/passwd). SSH is turned on only by this table.
- [time]: `timezone` (an IANA name, checked with zoneinfo) and `ntp_servers` (host names or addresses, the
  config checker's host rule).

Invariants: every problem is found in one pass and named by its key ("admin.password_hash: ..."), like
`edgenvr check-config`; no message ever contains a secret (the enrolment token, the MQTT password, camera
URL passwords, the password hash, the setup code): they are never echoed, and every message is scrubbed of
them again by config.checking.ConfigError. The file's SHA-256 identifies it (runtime.provisioning's marker).
Failure paths: an unreadable file, not UTF-8, bad TOML, an unknown table or key, a wrong value, a config the
checker refuses, a data directory that is not there -> ProvisionError with every problem, nothing changed.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from edgenvr.config.checking import (
    ConfigError,
    config_from_document,
    host_problem,
    parse_config,
)
from edgenvr.config.records import TOP_LEVEL_KEYS, Config
from edgenvr.config.writing import config_to_toml
from edgenvr.web.accounts import (
    AccountError,
    check_name,
    check_password_hash,
    check_setup_code,
)

PROVISION_FILE_NAME = "edgenvr-provision.toml"
ERROR_FILE_NAME = "edgenvr-provision.error"
PROVISION_TABLES: dict[str, tuple[str, ...]] = {
    "admin": ("name", "password_hash", "setup_code"),
    "ssh": ("user", "authorized_keys"),
    "time": ("timezone", "ntp_servers"),
}
DEFAULT_ADMIN = "admin"
DEFAULT_SSH_USER = "root"
MAX_FILE_BYTES = 1024 * 1024   # a provisioning file is a few KB; a bigger one is not one
MAX_KEYS = 64
_KEY_CHECK_TIMEOUT_S = 10
_SECRET_KEYS = (("admin", "password_hash"), ("admin", "setup_code"))


class ProvisionError(Exception):
    """The provisioning file cannot be applied; `problems` lists every reason, none showing a secret."""

    def __init__(self, problems: list[str], secrets: list[str] | None = None) -> None:
        self.problems = ConfigError(problems, secrets=secrets or []).problems   # the config's own scrubbing
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, repr=False)
class AdminProvision:
    name: str
    password_hash: str | None     # exactly one of the two
    setup_code: str | None

    def __repr__(self) -> str:   # never the hash or the code
        return f"AdminProvision(name={self.name!r}, {'password hash' if self.password_hash else 'setup code'})"


@dataclass(frozen=True)
class SshProvision:
    user: str
    uid: int
    gid: int
    home: PurePosixPath           # on the box (under the root the command works in)
    authorized_keys: tuple[str, ...]


@dataclass(frozen=True)
class TimeProvision:
    timezone: str | None
    ntp_servers: tuple[str, ...]


@dataclass(frozen=True, repr=False)
class Provisioning:
    """A checked provisioning file: what runtime.provisioning applies."""

    sha256: str
    config: Config
    config_text: str              # the box's new config file, as config.writing writes it
    admin: AdminProvision | None
    ssh: SshProvision | None
    time: TimeProvision | None
    secrets: list[str] = field(default_factory=list)   # every secret the file holds, kept out of messages

    def __repr__(self) -> str:
        return f"Provisioning(box={self.config.box.box_id!r}, sha256={self.sha256[:12]}...)"


def read_provisioning(path: Path, config_path: PurePosixPath, root: Path) -> Provisioning:
    """The provisioning file at `path`, checked against the box under `root` ("/" on a box; a test's folder):
    its config file at `config_path` (a path on the box) and its /etc/passwd. Nothing is changed."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ProvisionError([f"{path}: cannot read it: {error.strerror or error}"]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ProvisionError([f"{path}: {len(raw)} bytes is too large for a provisioning file"])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ProvisionError([f"{path}: not UTF-8 text (invalid byte at offset {error.start})"]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:   # its message gives the line and column, never the value
        raise ProvisionError([f"{path}: invalid TOML: {error}"]) from None
    secrets = _secrets(document)
    problems: list[str] = []
    unknown = [name for name in document if name not in PROVISION_TABLES and name not in TOP_LEVEL_KEYS]
    for name in unknown:
        known = ", ".join([*TOP_LEVEL_KEYS, *PROVISION_TABLES])
        problems.append(f"{name}: unknown table (known tables: {known})")
    tables = {name: _table(document, name, problems) for name in PROVISION_TABLES}
    admin = _admin(tables["admin"], problems) if "admin" in document else None
    ssh = _ssh(tables["ssh"], root, problems) if "ssh" in document else None
    time = _time(tables["time"], problems) if "time" in document else None
    config, config_text = _config(document, config_path, root, problems)
    if problems or config is None:
        raise ProvisionError(problems, secrets)
    return Provisioning(hashlib.sha256(raw).hexdigest(), config, config_text, admin, ssh, time, secrets)


def under_root(root: Path, path: PurePosixPath | Path) -> Path:
    """Where a path of the box is under `root` (itself when root is "/")."""
    return root / PurePosixPath(path).relative_to("/")


def _secrets(document: dict[str, Any]) -> list[str]:
    found = [document.get(table, {}).get(key) for table, key in _SECRET_KEYS if isinstance(document.get(table), dict)]
    sync, mqtt = document.get("sync"), document.get("mqtt")
    found += [sync.get("enrolment_token") if isinstance(sync, dict) else None,
              mqtt.get("password") if isinstance(mqtt, dict) else None]
    return [value for value in found if isinstance(value, str) and value]


def _table(document: dict[str, Any], name: str, problems: list[str]) -> dict[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, dict):
        problems.append(f"{name}: expected a table ([{name}])")
        return {}
    for key in value:
        if key not in PROVISION_TABLES[name]:
            problems.append(f"{name}.{key}: unknown key (known keys: {', '.join(PROVISION_TABLES[name])})")
    return value


def _admin(table: dict[str, Any], problems: list[str]) -> AdminProvision | None:
    name = table.get("name", DEFAULT_ADMIN)
    found = len(problems)
    try:
        name = check_name(name)
    except AccountError as error:
        problems.append(f"admin.name: {error}")
    password_hash, code = table.get("password_hash"), table.get("setup_code")
    if (password_hash is None) == (code is None):
        problems.append("admin: give either password_hash (an Argon2id hash of the admin's password) or setup_code "
                        "(a one-time code to make the admin on the box's setup page), not both or neither")
    elif password_hash is not None:
        try:
            password_hash = check_password_hash(password_hash)
        except AccountError as error:   # its messages never show the hash
            problems.append(f"admin.password_hash: {error}")
    else:
        try:
            check_setup_code(code)
        except AccountError as error:
            problems.append(f"admin.setup_code: {error} (not shown: it is a secret)")
    if len(problems) > found:
        return None
    return AdminProvision(name, password_hash, code)


def _ssh(table: dict[str, Any], root: Path, problems: list[str]) -> SshProvision | None:
    found = len(problems)
    user = table.get("user", DEFAULT_SSH_USER)
    account = None
    if not isinstance(user, str) or re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user) is None:
        problems.append("ssh.user: a user name of the box (lower-case letters, digits, _ and -)")
    else:
        account = _passwd_entry(under_root(root, PurePosixPath("/etc/passwd")), user)
        if account is None:
            problems.append(f"ssh.user: there is no user {user} on this box (its /etc/passwd)")
    keys = table.get("authorized_keys")
    if not isinstance(keys, list) or not keys or len(keys) > MAX_KEYS:
        problems.append(f"ssh.authorized_keys: a list of 1-{MAX_KEYS} OpenSSH public keys "
                        '("ssh-ed25519 AAAA... name"); without keys, leave [ssh] out and SSH stays off')
    else:
        for index, key in enumerate(keys):
            problem = _public_key_problem(key)
            if problem is not None:
                problems.append(f"ssh.authorized_keys[{index}]: {problem}")
    if len(problems) > found or account is None:
        return None
    uid, gid, home = account
    return SshProvision(str(user), uid, gid, home, tuple(key.strip() for key in keys))


def _passwd_entry(passwd: Path, user: str) -> tuple[int, int, PurePosixPath] | None:
    """(uid, gid, home) of `user` in a passwd file (the box's, which under a test's root is not this machine's)."""
    try:
        lines = passwd.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 7 and fields[0] == user and fields[2].isdigit() and fields[3].isdigit():
            return int(fields[2]), int(fields[3]), PurePosixPath(fields[5] or "/")
    return None


def _public_key_problem(key: object) -> str | None:
    """Why `key` is not one OpenSSH public key line, in ssh-keygen's own judgement; None when it is one."""
    if not isinstance(key, str) or not key.strip() or "\n" in key.strip() or len(key) > 16 * 1024:
        return 'expected one public key line like "ssh-ed25519 AAAA... technician@laptop"'
    if key.strip().startswith("-----BEGIN"):
        return "this is a private key: give the public one (the .pub file), and keep the private key to yourself"
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        return "ssh-keygen is not installed here, so no key can be checked (the image needs openssh-server)"
    try:
        done = subprocess.run([keygen, "-l", "-f", "/dev/stdin"], input=key.strip() + "\n", capture_output=True,
                              text=True, timeout=_KEY_CHECK_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"ssh-keygen could not check it: {error}"
    return None if done.returncode == 0 else "not an OpenSSH public key (ssh-keygen -l cannot read it)"


def _time(table: dict[str, Any], problems: list[str]) -> TimeProvision | None:
    found = len(problems)
    timezone = table.get("timezone")
    if timezone is not None:
        try:
            if not isinstance(timezone, str) or not timezone or timezone.startswith(("/", ".")):
                raise ValueError
            zoneinfo.ZoneInfo(timezone)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            problems.append(f"time.timezone: {timezone!r} is not a time zone name like \"Asia/Jakarta\"")
    servers = table.get("ntp_servers", [])
    if not isinstance(servers, list) or not all(isinstance(server, str) for server in servers):
        problems.append('time.ntp_servers: a list of NTP servers like ["0.id.pool.ntp.org", "192.168.1.1"]')
        servers = []
    for index, server in enumerate(servers):
        problem = host_problem(server)
        if problem is not None:
            problems.append(f"time.ntp_servers[{index}]: {problem}")
    if len(problems) > found:
        return None
    return TimeProvision(timezone, tuple(servers))


def _config(document: dict[str, Any], config_path: PurePosixPath, root: Path,
            problems: list[str]) -> tuple[Config | None, str]:
    """The box's new config: the provisioning file's config tables over the box's config file (table by table),
    checked by the config checker, written by config.writing and read back equal."""
    provided = {name: value for name, value in document.items() if name in TOP_LEVEL_KEYS}
    box = provided.get("box")
    if not isinstance(box, dict) or not isinstance(box.get("id"), str):
        problems.append("box.id: required in a provisioning file (boxes flashed from one image share a host name, "
                        "so the default id would be the same on all of them)")
    current = under_root(root, config_path)
    base: dict[str, Any] = {"web": {}}   # a box without a config yet: an appliance serves its UI
    if current.exists():
        try:
            base = tomllib.loads(current.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            problems.append(f"{config_path}: the box's config cannot be read ({error}); fix or remove it first")
            return None, ""
    merged = {**base, **provided}
    storage = merged.get("storage")
    data_dir = storage.get("data_dir") if isinstance(storage, dict) else None
    if data_dir is not None and (not isinstance(data_dir, str) or not data_dir.startswith("/")):
        problems.append("storage.data_dir: give an absolute path in a provisioning file")
        return None, ""
    try:
        config = config_from_document(merged, str(config_path))
    except ConfigError as error:
        problems.extend(error.problems)
        return None, ""
    data = under_root(root, PurePosixPath(config.storage.data_dir))
    if not data.is_dir():
        problems.append(f"storage.data_dir: {config.storage.data_dir} does not exist on this box (the image makes it "
                        "and mounts the data partition there)")
    text = config_to_toml(config)
    if parse_config(text, str(config_path)) != config:   # config.writing's promise, checked before it is relied on
        problems.append(f"{config_path}: the config would not read back as given (a bug: nothing was changed)")
    return config, text
