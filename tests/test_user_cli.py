"""`edgenvr user ...` as a technician setting up a box uses it: add users with a password on stdin, list
them, give a script an API token (printed once), revoke it, change a password, remove a user; a camera the
config does not have is refused; every change is in the audit trail, and no password or token ever is.

The real `edgenvr` console script in a subprocess, a config made by `conftest.config_text` (its cameras
need not run), real files in tmp_path; what the commands did is checked through `Accounts`, as the web
server will see it.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import config_text

from edgenvr.storage.layout import StorageLayout
from edgenvr.web.accounts import Accounts, LoginOutcome, Role

pytestmark = pytest.mark.slow   # every test runs edgenvr processes

EDGENVR = Path(sys.executable).with_name("edgenvr")   # the console script pip installed beside the interpreter
ADMIN_PASSWORD = "sate ayam 2 porsi"
VIEWER_PASSWORD = "es teh manis dingin"


@dataclass
class Box:
    config: Path
    layout: StorageLayout

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """`edgenvr <args> --config <the box's config>`, stdin given (else empty, as from a script)."""
        return subprocess.run([str(EDGENVR), *args, "--config", str(self.config)], input=stdin or "",
                              capture_output=True, text=True, timeout=60, check=False)

    def audit(self) -> list[dict[str, object]]:
        result = self.run("audit", "--json")
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def box(tmp_path: Path) -> Box:
    """A box that has never run (no data directory yet), with two cameras in its config."""
    config = tmp_path / "edgenvr.toml"
    config.write_text(config_text(tmp_path / "data", {"gate": "rtsp://10.0.0.9/main", "yard": "rtsp://10.0.0.10/main"}))
    return Box(config, StorageLayout(tmp_path / "data"))


@pytest.fixture
def set_up(box: Box) -> Box:
    """The box with its first admin, ani, and a viewer of the gate camera, budi."""
    added = box.run("user", "add", "--name", "ani", "--role", "admin", "--password-stdin", "--by", "installer",
                    stdin=ADMIN_PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    added = box.run("user", "add", "--name", "budi", "--role", "viewer", "--cameras", "gate", "--password-stdin",
                    "--by", "ani", stdin=VIEWER_PASSWORD + "\r\n")   # a line typed on Windows works too
    assert added.returncode == 0, added.stderr
    return box


def test_users_added_with_a_password_on_stdin_can_log_in_and_are_listed(set_up: Box) -> None:
    with Accounts(set_up.layout) as accounts:
        assert accounts.check_password("ani", ADMIN_PASSWORD).outcome is LoginOutcome.OK
        budi = accounts.check_password("budi", VIEWER_PASSWORD).user
        assert budi is not None and budi.role is Role.VIEWER and budi.cameras == ("gate",)

    listing = set_up.run("user", "list")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[1:]}
    assert rows["ani"][1:] == ["admin", "-", "0", "all"]
    assert rows["budi"][1:] == ["viewer", "-", "0", "gate"]

    as_json = [json.loads(line) for line in set_up.run("user", "list", "--json").stdout.splitlines()]
    assert [(u["name"], u["role"], u["cameras"], u["locked_until_ms"], u["tokens"]) for u in as_json] == [
        ("ani", "admin", "all", None, 0), ("budi", "viewer", ["gate"], None, 0)]


def test_a_token_is_printed_once_and_works_until_revoked(set_up: Box) -> None:
    made = set_up.run("user", "token", "--name", "budi", "--label", "warung tablet")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert made.stdout == secret + "\n" and secret.startswith("envr_")   # the token alone on stdout
    assert "will not be shown again" in made.stderr and secret not in made.stderr
    with Accounts(set_up.layout) as accounts:
        user = accounts.user_for_token(secret)
        assert user is not None and user.name == "budi"

    listed = set_up.run("user", "tokens", "--json")
    (token,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (token["user"], token["label"], token["revoked_ms"]) == ("budi", "warung tablet", None)
    assert token["last_used_ms"] is not None
    assert secret not in listed.stdout + set_up.run("user", "tokens", "--name", "budi").stdout
    assert set_up.run("user", "list", "--json").stdout.count('"tokens": 1') == 1

    revoked = set_up.run("user", "revoke-token", "--id", str(token["id"]))
    assert revoked.returncode == 0, revoked.stderr
    with Accounts(set_up.layout) as accounts:
        assert accounts.user_for_token(secret) is None
    assert json.loads(set_up.run("user", "tokens", "--json").stdout)["revoked_ms"] is not None

    unknown = set_up.run("user", "revoke-token", "--id", "99")
    assert unknown.returncode == 1 and "no token 99" in unknown.stderr
    assert set_up.run("user", "revoke-token", "--id", "nine").returncode == 2


def test_passwd_replaces_the_password(set_up: Box) -> None:
    changed = set_up.run("user", "passwd", "--name", "budi", "--password-stdin", stdin="kerupuk udang goreng\n")
    assert changed.returncode == 0, changed.stderr
    with Accounts(set_up.layout) as accounts:
        assert accounts.check_password("budi", VIEWER_PASSWORD).outcome is LoginOutcome.WRONG
        assert accounts.check_password("budi", "kerupuk udang goreng").outcome is LoginOutcome.OK
    unknown = set_up.run("user", "passwd", "--name", "zaki", "--password-stdin", stdin="kerupuk udang goreng\n")
    assert unknown.returncode == 1 and "no user zaki" in unknown.stderr


def test_remove_takes_a_user_away_but_never_the_last_admin(set_up: Box) -> None:
    _, secret = Accounts(set_up.layout).create_token("budi", "warung tablet")
    removed = set_up.run("user", "remove", "--name", "budi")
    assert removed.returncode == 0, removed.stderr
    last = set_up.run("user", "remove", "--name", "ani")
    assert last.returncode == 1 and "last admin" in last.stderr and len(last.stderr.splitlines()) == 1
    with Accounts(set_up.layout) as accounts:
        assert [user.name for user in accounts.users()] == ["ani"]
        assert accounts.user_for_token(secret) is None


@pytest.mark.parametrize("args, stdin, says", [
    (("--name", "citra", "--role", "viewer", "--cameras", "gate,lobby", "--password-stdin"), VIEWER_PASSWORD,
     "no camera lobby"),
    (("--name", "citra", "--role", "admin", "--cameras", "gate", "--password-stdin"), VIEWER_PASSWORD,
     "admin sees every camera"),
    (("--name", "citra", "--role", "boss", "--password-stdin"), VIEWER_PASSWORD, "no role 'boss'"),
    (("--name", "Citra", "--role", "viewer", "--password-stdin"), VIEWER_PASSWORD, "not a user name"),
    (("--name", "citra", "--role", "viewer", "--password-stdin"), "pendek", "too short"),
    (("--name", "citra", "--role", "viewer", "--password-stdin"), "", "too short"),
    (("--name", "citra", "--role", "viewer"), VIEWER_PASSWORD, "no terminal"),
])
def test_a_bad_argument_is_refused_before_anything_changes(set_up: Box, args: tuple[str, ...], stdin: str,
                                                         says: str) -> None:
    records = len(set_up.audit())
    refused = set_up.run("user", "add", *args, stdin=stdin + "\n")
    assert refused.returncode == 2 and says in refused.stderr, refused.stderr
    assert len(refused.stderr.splitlines()) == 1 and (not stdin or stdin not in refused.stderr)
    assert Accounts(set_up.layout).user("citra") is None
    assert len(set_up.audit()) == records   # not even attempted


def test_every_change_is_audited_and_no_secret_is(set_up: Box) -> None:
    secret = set_up.run("user", "token", "--name", "budi", "--label", "warung tablet", "--by", "ani").stdout.strip()
    token_id = json.loads(set_up.run("user", "tokens", "--json").stdout)["id"]
    assert set_up.run("user", "revoke-token", "--id", str(token_id), "--by", "ani").returncode == 0
    new_password = "kerupuk udang goreng"
    assert set_up.run("user", "passwd", "--name", "budi", "--password-stdin", "--by", "ani",
                      stdin=new_password).returncode == 0
    assert set_up.run("user", "remove", "--name", "budi", "--by", "ani").returncode == 0
    assert set_up.run("user", "remove", "--name", "ani", "--by", "ani").returncode == 1

    records = set_up.audit()
    assert [(r["actor"], r["action"], r["detail"]) for r in records] == [
        ("installer", "user_add", "user ani, admin, cameras all"),
        ("ani", "user_add", "user budi, viewer, cameras gate"),
        ("ani", "token_create", "user budi, label warung tablet"),
        ("ani", "token_revoke", f"token {token_id} of user budi"),
        ("ani", "user_password", "user budi"),
        ("ani", "user_remove", "user budi"),
        ("ani", "user_remove", "user ani"),
        ("ani", "user_remove", "failed: ani is the last admin: make another user admin first"),
    ]
    trail = b"".join(path.read_bytes() for path in set_up.layout.data_dir.glob("audit.sqlite3*"))
    for text in (secret, ADMIN_PASSWORD, VIEWER_PASSWORD, new_password):
        assert text not in json.dumps(records) and text.encode() not in trail
    verified = set_up.run("audit", "verify")
    assert verified.returncode == 0, verified.stderr


def test_an_accounts_file_that_cannot_be_used_is_one_line_and_exit_1(box: Box) -> None:
    box.layout.data_dir.mkdir()
    box.layout.users_path.write_text("ani:x:1000:1000::/home/ani:/bin/sh\n" * 200)
    for args, stdin in ((("user", "list"), ""),
                        (("user", "add", "--name", "ani", "--role", "admin", "--password-stdin"), ADMIN_PASSWORD)):
        failed = box.run(*args, stdin=stdin)
        assert failed.returncode == 1, failed.stderr
        assert "users.sqlite3 cannot be used" in failed.stderr and len(failed.stderr.splitlines()) == 1
        assert "Traceback" not in failed.stderr
    assert box.layout.users_path.read_text().startswith("ani:x:")


def run_on_a_terminal(box: Box, args: tuple[str, ...], answers: list[str]) -> tuple[int, str]:
    """`edgenvr <args>` with a pseudo-terminal as its controlling terminal (as typed over ssh); each answer is
    typed after the next prompt. Returns the exit code and everything the terminal showed."""
    pid, terminal = pty.fork()
    if pid == 0:   # the child: exec at once, nothing of pytest runs here
        os.execv(str(EDGENVR), [str(EDGENVR), *args, "--config", str(box.config)])
    shown = b""
    pending = list(answers)
    answered_upto = 0   # a prompt is new output ending with ":" (getpass flushes typed-ahead input)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([terminal], [], [], 1)
        if ready:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:   # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            if pending and shown[answered_upto:].strip().endswith(b":"):
                os.write(terminal, pending.pop(0).encode() + b"\n")
                answered_upto = len(shown)
    else:
        os.kill(pid, signal.SIGKILL)   # still waiting after a minute: fail, never hang the suite
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_without_password_stdin_the_password_is_asked_twice_on_the_terminal(box: Box) -> None:
    code, shown = run_on_a_terminal(box, ("user", "add", "--name", "ani", "--role", "admin"),
                                    [ADMIN_PASSWORD, ADMIN_PASSWORD])
    assert code == 0, shown
    assert "new password for ani:" in shown and "the same again:" in shown and ADMIN_PASSWORD not in shown
    code, shown = run_on_a_terminal(box, ("user", "passwd", "--name", "ani"),
                                    ["kerupuk udang goreng", "kerupuk udang gorenk"])
    assert code == 2 and "the two passwords differ" in shown, shown
    with Accounts(box.layout) as accounts:
        assert accounts.check_password("ani", ADMIN_PASSWORD).outcome is LoginOutcome.OK
