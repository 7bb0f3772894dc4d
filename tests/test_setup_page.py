"""A box without an admin, as the technician who just flashed it meets it: the boot's `edgenvr setup-code` puts a
one-time code on the console (and nowhere else), the real `edgenvr run` with [web] serves the setup page and its
API only, a wrong code is refused and attempts are rate-limited, the right code with a name and password makes
the admin and is used up, and then everything is as on any box: sign in, the other routes answer. The page
itself is driven in a real headless Chromium.

The box's file tree is a folder (`--root`): its config names /var/lib/edgenvr, which is under that folder; the
web process is given the same config with the folder's data directory.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import edgenvr, start_supervisor
from playwright.sync_api import expect, sync_playwright
from web_site import Answer, Site, free_port

from edgenvr.storage.layout import StorageLayout
from edgenvr.web.access import LoginLimiter
from edgenvr.web.server import all_routes

pytestmark = pytest.mark.slow
CODE_LINE = re.compile(r"^\s{4}([0-9A-Z]{4}(?:-[0-9A-Z]{4}){3})$", re.MULTILINE)
SAMPLE_VALUES = {"camera": "gate", "event": "1", "user": "boss", "token": "1", "hold": "1", "name": "app.js"}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@dataclass
class NewBox:
    root: Path            # the box's file tree
    site: Site            # its web server, over loopback
    code: str             # what its console shows

    def console_text(self) -> Path:
        return self.root / "run" / "edgenvr-setup" / "setup.issue"


def _box_config(data_dir: str, port: int) -> str:
    return (f'[storage]\ndata_dir = "{data_dir}"\nmin_free = "0"\n\n[web]\nlisten = "127.0.0.1:{port}"\ntls = false\n')


def _show_code(root: Path) -> tuple[subprocess.CompletedProcess[str], str | None]:
    done = edgenvr("setup-code", "--config", "/etc/edgenvr/edgenvr.toml", "--root", str(root))
    text = (root / "run" / "edgenvr-setup" / "setup.issue")
    found = CODE_LINE.search(text.read_text()) if text.exists() else None
    if found is not None:   # what the journal would keep never holds the code
        assert found.group(1) not in done.stdout + done.stderr
    return done, found.group(1) if found else None


def _new_box(root: Path, log: Path) -> Iterator[NewBox]:
    (root / "etc" / "edgenvr").mkdir(parents=True)
    (root / "var" / "lib" / "edgenvr").mkdir(parents=True)
    port = free_port()
    (root / "etc" / "edgenvr" / "edgenvr.toml").write_text(_box_config("/var/lib/edgenvr", port))
    done, code = _show_code(root)
    assert done.returncode == 0 and code is not None, done.stderr
    served = root / "web.toml"   # the same box, its data directory as this machine sees it
    served.write_text(_box_config(str(root / "var" / "lib" / "edgenvr"), port))
    supervisor = start_supervisor(served, log)
    site = Site(port, served, StorageLayout(root / "var" / "lib" / "edgenvr"), supervisor, {})
    try:
        supervisor.wait_for_log("web UI at", timeout=60)
        yield NewBox(root, site, code)
    finally:
        assert supervisor.stop() == 0, supervisor.log()[-3000:]


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NewBox]:
    root = tmp_path_factory.mktemp("new-box")
    yield from _new_box(root / "box", root / "edgenvr.log")


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: SAMPLE_VALUES[m.group(1)], path)


def _setup(site: Site, code: str, name: str = "boss", password: str = "boss-password-1",
           source: str = "127.0.0.1") -> Answer:
    return site.request("POST", "/api/setup", body={"code": code, "name": name, "password": password}, source=source)


def test_the_code_is_on_the_console_only(box: NewBox) -> None:
    """The console text (root-only, in /run) holds the code and agetty's links lead to it; the command's output,
    which the journal keeps, does not; users.sqlite3 holds only a hash of it."""
    text = box.console_text()
    assert text.stat().st_mode & 0o777 == 0o600 and box.code in text.read_text()
    assert "\\4:" in text.read_text()   # agetty puts the box's address there
    assert "127.x" in text.read_text()   # without a network agetty shows 127.0.1.1: the text says what that means
    for link in (box.root / "etc" / "issue.d" / "50-edgenvr-setup.issue",
                 box.root / "run" / "issue.d" / "50-edgenvr-setup.issue"):
        assert link.is_symlink() and str(link.readlink()) == "/run/edgenvr-setup/setup.issue"
    users = (box.root / "var" / "lib" / "edgenvr" / "users.sqlite3").read_bytes()
    assert box.code.encode() not in users and box.code.replace("-", "").encode() not in users
    assert box.code not in box.site.supervisor.log()


def test_without_an_admin_every_route_but_the_setup_page_gives_the_setup_answer(box: NewBox) -> None:
    routes = all_routes()
    assert sum(not route.during_setup for route in routes) >= 20
    for route in routes:
        url = _concrete(route.path)
        answer = box.site.request(route.method, url, body={} if route.method not in ("GET", "HEAD") else None)
        if route.during_setup:
            assert answer.status != 503, f"{route.method} {url}: {answer.status} {answer.body[:200]!r}"
        else:
            assert answer.status == 503, f"{route.method} {url}: {answer.status} {answer.body[:200]!r}"
            assert answer.json()["setup_required"] is True and "setup code" in answer.json()["error"]
    # a token or a session cookie changes nothing: there is nobody to be
    answer = box.site.request("GET", "/api/cameras", headers={"Authorization": "Bearer envr_x",
                                                             "Cookie": "edgenvr_session=forged"})
    assert answer.status == 503
    status = box.site.request("GET", "/api/setup").json()
    assert status["required"] is True and status["code"] == "console"


def test_wrong_codes_are_refused_and_limited_per_address(box: NewBox) -> None:
    site = box.site
    assert _setup(site, "AAAA-BBBB-CCCC-DDDD", source="127.0.9.1").status == 401
    for _ in range(LoginLimiter.ATTEMPTS):
        assert _setup(site, "AAAA-BBBB-CCCC-DDDD", source="127.0.9.2").status == 401
    # the limit holds for the right code too: this address must wait
    answer = _setup(site, box.code, source="127.0.9.2")
    assert answer.status == 429, answer.body
    # a name or password that breaks a rule is refused before the code is tried, and the code stays
    answer = _setup(site, box.code, password="short", source="127.0.9.3")
    assert answer.status == 400 and "password" in answer.json()["error"]
    assert site.request("GET", "/api/setup").json()["required"] is True


def test_the_right_code_makes_the_admin_once_then_the_box_is_like_any_other(box: NewBox) -> None:
    site = box.site
    assert _setup(site, "WRONG-CODE-0000-0000", source="127.0.9.4").status == 401
    # the code as people type it: lower case, spaces instead of dashes
    answer = _setup(site, box.code.lower().replace("-", " "), source="127.0.9.4")
    assert answer.status == 201, answer.body
    assert answer.json()["user"]["name"] == "boss" and answer.json()["user"]["role"] == "admin"
    # used up
    again = _setup(site, box.code, name="other", source="127.0.9.5")
    assert again.status == 409 and "admin already" in again.json()["error"]
    assert site.request("GET", "/api/setup").json()["required"] is False
    # the gate is open: routes answer as on any box (401 without credentials), and sign-in works
    assert site.request("GET", "/api/cameras").status == 401
    session = site.login("boss", "boss-password-1")
    assert site.request("GET", "/api/me", session=session).json()["user"]["role"] == "admin"
    status = site.request("GET", "/api/status", session=session).json()
    assert set(status["time_sync"]) >= {"synchronised", "server", "last_sync_ms", "offset_ms", "unknown"}
    # every attempt is in the audit trail: the wrong codes and the admin's making
    listing = edgenvr("audit", "--config", str(site.config_path), "--json").stdout
    audit = [json.loads(line) for line in listing.splitlines()]
    made = [r for r in audit if r["action"] == "user_add"]
    assert len(made) == 1 and made[0]["actor"] == "setup code" and "boss as admin" in made[0]["detail"]
    wrong = [r for r in audit if r["action"] == "login_failed" and "wrong setup code from 127.0.9.4" in r["detail"]]
    assert len(wrong) == 1 and wrong[0]["seq"] < made[0]["seq"]
    # the next boot: an admin exists, so the console shows no code
    done, code = _show_code(box.root)
    assert done.returncode == 0 and code is None and not box.console_text().exists()


def test_a_technician_sets_up_the_box_in_a_browser(tmp_path: Path) -> None:
    """On its own new box: the page says where the code is, refuses a wrong one, makes the admin with the right
    one (after a second boot's new code replaced the first), then signs in."""
    boxes = _new_box(tmp_path / "box", tmp_path / "edgenvr.log")
    new = next(boxes)
    first = new.code
    done, second = _show_code(new.root)   # a reboot before anyone used it: a new code, the old one is dead
    assert done.returncode == 0 and second and second != first
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 360, "height": 800})
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(f"uncaught exception: {error}"))
            page.goto(f"http://127.0.0.1:{new.site.port}/")
            page.get_by_role("button", name="Switch to English").click()
            expect(page.get_by_role("heading", name="Set up this box")).to_be_visible()
            page.get_by_label("Setup code").fill(first)
            page.get_by_label("Admin's user name").fill("tech")
            page.get_by_label("Admin's password").fill("tech-password-1")
            page.get_by_label("Repeat the password").fill("tech-password-1")
            page.get_by_role("button", name="Make the admin").click()
            expect(page.get_by_text("Wrong setup code.")).to_be_visible()
            page.get_by_label("Setup code").fill(second)
            page.get_by_role("button", name="Make the admin").click()
            expect(page.get_by_text("The admin tech was made")).to_be_visible()
            page.get_by_role("button", name="Sign in").click()
            page.get_by_label("User name").fill("tech")
            page.get_by_label("Password").fill("tech-password-1")
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator(".user-name")).to_contain_text("tech")
            browser.close()
        assert not problems, problems
    finally:
        next(boxes, None)
