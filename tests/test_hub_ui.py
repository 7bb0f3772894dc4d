"""The city hub's UI (issue 12, point 6): its static files keep the box UI's promises without a browser (same
catalogue keys in both languages, every key the code names and every value the hub sends has its words, no
markup from strings, nothing from the internet, every import names a file the hub serves, each script parses);
and in a real headless Chromium against a real hub (tests/test_hub_web.people_site) with a box syncing to it
(the real sync process's uploader and channel, in a thread of the test: the box dials out, the hub never calls
it), an operator signs in, sees the box in the fleet, finds its clip and plays it, asks the box for a range and
watches the request become a clip it plays; a viewer sees neither pulls nor downloads. Every page fails its test
on a console error, an uncaught exception or a CSP violation.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from edgenvr.core.records import RecorderState, TamperKind
from edgenvr.hub.hub_web import BOX_UI_FILES, STATIC_DIR, catalogues, static_files
from edgenvr.sync.hub_channel import HubChannel
from edgenvr.sync.hub_protocol import PullState
from edgenvr.sync.outbox import ClipKind
from edgenvr.sync.uploader import Uploader
from edgenvr.web.accounts import Role
from edgenvr.web.server import STATIC_DIR as BOX_STATIC_DIR
from tests.synced_box import BOX_ID
from tests.test_hub_web import PASSWORDS, HubSite, people_site
from tests.web_site import PLAYING_JS

LANGUAGES = ("id", "en")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
KEY_LITERAL = re.compile(r"""["'`]([a-z_]+(?:\.[a-z0-9_]+)+)["'`]""")   # a quoted dotted name: "fleet.title"
NOT_KEYS = {"edgenvr.language"}
TENUM_PREFIX = re.compile(r"""tEnum\(\s*["']([a-z_.]+)["']""")
# The scripts the hub's pages run: its own and the box modules it reuses.
SCRIPTS = [*sorted(STATIC_DIR.rglob("*.js")), *(BOX_STATIC_DIR / name for name in BOX_UI_FILES if name.endswith(".js"))]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REASON = "Laporan polisi 22/XII: tabrak lari di gerbang"


def _catalogue(lang: str) -> dict[str, str]:
    """What the hub serves as i18n/<lang>.json: the box's words with the hub's on top."""
    return json.loads(catalogues()[f"i18n/{lang}.json"])


CATALOGUES = {lang: _catalogue(lang) for lang in LANGUAGES}


def t(lang: str, key: str, **values: Any) -> str:
    return PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), CATALOGUES[lang][key])


# --- the files, without a browser ------------------------------------------------------------------------------

def test_catalogues_have_the_same_keys_and_placeholders() -> None:
    own = {lang: json.loads((STATIC_DIR / "i18n" / f"{lang}.json").read_text(encoding="utf-8")) for lang in LANGUAGES}
    assert own["id"].keys() == own["en"].keys(), set(own["id"]) ^ set(own["en"])
    for lang in LANGUAGES:   # the hub's words win over the box's
        assert all(CATALOGUES[lang][key] == text for key, text in own[lang].items())
    indonesian, english = CATALOGUES["id"], CATALOGUES["en"]
    assert indonesian.keys() == english.keys(), set(indonesian) ^ set(english)
    for key, text in indonesian.items():
        assert text.strip() and english[key].strip(), key
        assert set(PLACEHOLDER.findall(text)) == set(PLACEHOLDER.findall(english[key])), key


def test_every_key_the_hub_pages_name_is_in_the_hub_catalogues() -> None:
    code = "\n".join(path.read_text(encoding="utf-8") for path in SCRIPTS)
    prefixes = set(TENUM_PREFIX.findall(code))
    named = {key for key in KEY_LITERAL.findall(code)
             if key not in NOT_KEYS and not re.search(r"\.(js|json|css|png|jpg|svg|mp4|zip|toml)$", key)}
    missing = sorted(key for key in named if key not in CATALOGUES["id"] and key not in prefixes)
    assert not missing, f"keys used by the hub's pages but missing from its catalogues: {missing}"


@pytest.mark.parametrize(("prefix", "values"), [
    ("pull_state", list(PullState)), ("kind", list(ClipKind)), ("role", list(Role)), ("tamper", list(TamperKind)),
    ("state", list(RecorderState)),
])
def test_every_value_the_hub_sends_has_words(prefix: str, values: list[str]) -> None:
    missing = [str(value) for value in values if f"{prefix}.{value}" not in CATALOGUES["id"]]
    assert not missing, f"{prefix}.* lacks {missing}"


def test_nothing_breaks_the_content_security_policy_or_comes_from_the_internet() -> None:
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assert "<style" not in page.lower() and not re.search(r"\s(style|on[a-z]+)\s*=", page, re.IGNORECASE)
    assert all(not body.strip() for body in re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.DOTALL))
    for path in SCRIPTS:
        source = re.sub(r"(?m)^\s*//.*$", "", re.sub(r"/\*.*?\*/", "", path.read_text(encoding="utf-8"), flags=re.DOTALL))
        for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                          "style.cssText"):
            assert forbidden not in source, f"{path.name} uses {forbidden}"
    for path in STATIC_DIR.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            assert not re.findall(r"https?://[^\s\"')]+", path.read_text(encoding="utf-8")), path.name


def test_imports_and_static_paths_name_files_the_hub_serves() -> None:
    served = static_files()
    for name, path in served.items():
        if not name.endswith(".js"):
            continue
        for target in re.findall(r"""(?:^|\n)\s*import\s[^;]*?from\s+["'](\.{1,2}/[^"']+)["']""",
                                 path.read_text(encoding="utf-8")):
            resolved = (Path("/static") / Path(name).parent / target).resolve().relative_to("/static").as_posix()
            assert resolved in served, f"{name} imports {target}, which the hub does not serve"
    for name in ("index.html", "hub.css", "app.css", *(n for n in served if n.endswith(".js"))):
        for target in re.findall(r"/static/([A-Za-z0-9_./-]+\.[a-z]+)", served[name].read_text(encoding="utf-8")):
            if "${" not in target:
                assert target in served, f"{name} names /static/{target}"
    assert set(catalogues()) == {f"i18n/{lang}.json" for lang in LANGUAGES} <= set(served)


@pytest.mark.parametrize("script", sorted(STATIC_DIR.rglob("*.js")), ids=lambda path: path.name)
def test_each_script_parses(script: Path) -> None:
    result = subprocess.run(["node", "--input-type=module", "--check"], input=script.read_text(encoding="utf-8"),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


# --- in a browser ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubSite]:
    with people_site(tmp_path_factory.mktemp("hub-ui")) as made:
        yield made


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextmanager
def box_syncing(site: HubSite) -> Iterator[None]:
    """The box's sync process as `edgenvr run` starts it (its uploader and its channel to the hub), in a thread:
    it reports its health, takes pull requests and uploads what they ask for."""
    uploader = Uploader(site.box.config)
    uploader.channel = HubChannel(site.box.config, uploader.identity, uploader.clock, uploader.hub_key)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        assert uploader.channel is not None
        await asyncio.gather(uploader.run(stop), uploader.channel.run(stop))
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="box-sync", daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


@dataclass
class Visit:
    page: Any
    base: str
    lang: str = "id"
    signed_in: bool = False
    problems: list[str] = field(default_factory=list)

    def on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        # signed out, the page learns it must show the sign-in form from /api/me's 401 (logged by Chromium)
        if not self.signed_in and message.location.get("url", "").endswith("/api/me") and "401" in message.text:
            return
        self.problems.append(f"console error: {message.text} at {message.location}")


@contextmanager
def browsing(browser: Any, site: HubSite) -> Iterator[Visit]:
    context = browser.new_context(viewport={"width": 1366, "height": 768}, timezone_id="UTC", accept_downloads=True)
    context.add_init_script("document.addEventListener('securitypolicyviolation', (e) => "
                            "console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI}`));")
    page = context.new_page()
    visit = Visit(page, f"http://127.0.0.1:{site.hub.port}")
    page.on("console", visit.on_console)
    page.on("pageerror", lambda error: visit.problems.append(f"uncaught exception: {error}"))
    page.set_default_timeout(20_000)
    try:
        yield visit
        assert not visit.problems, "\n".join(visit.problems)
    finally:
        context.close()


def sign_in(visit: Visit, name: str) -> None:
    page, lang = visit.page, visit.lang
    page.goto(visit.base + "/")
    page.get_by_role("heading", name=t(lang, "signin.title")).wait_for()
    page.get_by_label(t(lang, "signin.name")).press_sequentially(name)
    page.get_by_label(t(lang, "signin.password")).press_sequentially(PASSWORDS[name])
    visit.signed_in = True
    page.get_by_role("button", name=t(lang, "signin.submit")).click()
    page.locator("#topbar .user-name").filter(has_text=name).wait_for()
    page.get_by_role("heading", name=t(lang, "fleet.title")).wait_for()


def wait_playing(page: Any) -> None:
    video = page.locator(".hub-player video")
    video.wait_for()
    page.wait_for_function(PLAYING_JS, arg=video.element_handle(), timeout=20_000)


def local_input(ms: int) -> str:
    """The value of <input type=datetime-local step=1> for `ms` in the page's zone (UTC here)."""
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


@pytest.mark.slow
def test_an_operator_sees_the_fleet_plays_a_clip_and_asks_a_box_for_video_that_then_plays(
        site: HubSite, browser: Any) -> None:
    with box_syncing(site), browsing(browser, site) as visit:
        page, lang = visit.page, visit.lang
        sign_in(visit, "operator")

        # The fleet: the box, its site, and its report (sent over the channel it opened) once it arrives.
        row = page.locator(f"tr[data-box='{BOX_ID}']")
        row.get_by_text(t(lang, "fleet.reporting"), exact=True).wait_for(timeout=30_000)
        assert "Pos RT 08" in row.inner_text() and t(lang, "fleet.cameras_count", count=1, offline=0) in row.inner_text()

        # Clips: the motion clip the box uploaded, found and played.
        page.get_by_role("link", name=t(lang, "nav.clips")).click()
        page.get_by_role("heading", name=t(lang, "clips.title")).wait_for()
        page.get_by_label(t(lang, "clips.kind"), exact=True).select_option("motion")
        page.get_by_role("button", name=t(lang, "clips.search")).click()
        clip_row = page.locator(f"tr[data-clip='{site.clip['id']}']")
        clip_row.get_by_role("button", name=t(lang, "clips.play")).click()
        wait_playing(page)
        player = page.locator(f".hub-player [data-clip='{site.clip['id']}']")
        assert site.clip["sha256"] in player.inner_text()
        assert player.get_by_role("link", name=t(lang, "clips.download")).get_attribute("href") == \
            f"/api/clips/{site.clip['id']}/evidence.zip"

        # A pull: 8 s of gate the hub does not have yet; the box exports and uploads it; it plays.
        page.get_by_role("link", name=t(lang, "nav.pulls")).click()
        page.get_by_role("heading", name=t(lang, "pulls.title")).wait_for()
        page.get_by_label(t(lang, "pulls.box"), exact=True).select_option(BOX_ID)
        page.get_by_label(t(lang, "pulls.camera"), exact=True).fill("gate")
        page.get_by_label(t(lang, "pulls.from"), exact=True).fill(local_input(site.started_ms + 4_000))
        page.get_by_label(t(lang, "pulls.to"), exact=True).fill(local_input(site.started_ms + 12_000))
        page.get_by_label(t(lang, "pulls.reason"), exact=True).fill(REASON)
        page.get_by_role("button", name=t(lang, "pulls.submit")).click()
        page.get_by_text(t(lang, "pulls.sent")).wait_for()
        asked = page.locator("tr[data-pull]").filter(has_text=REASON)
        asked.wait_for()
        page.locator("tr[data-pull][data-state='ready']").filter(has_text=REASON).wait_for(timeout=40_000)
        asked.get_by_role("link", name=t(lang, "pulls.open_clip")).click()
        page.get_by_role("heading", name=t(lang, "clips.title")).wait_for()
        wait_playing(page)
        assert t(lang, "kind.requested") in page.locator(".hub-player").inner_text()

        # The same screens in English.
        page.get_by_role("button", name=t(lang, "language.switch_label")).click()
        page.get_by_role("heading", name=t("en", "clips.title")).wait_for()

    by_cli = [json.loads(line) for line in site.cli("pulls", "--json").stdout.splitlines()]
    (made,) = [p for p in by_cli if p["reason"] == REASON]
    assert made["state"] == "ready" and made["requested_by"] == "operator" and made["clip_id"]
    actions = [(r["actor"], r["action"]) for r in site.audit()]
    assert ("operator", "login") in actions and ("operator", "playback") in actions
    assert ("operator", "pull_request") in actions


@pytest.mark.slow
def test_a_viewer_watches_but_neither_asks_for_video_nor_downloads_evidence(site: HubSite, browser: Any) -> None:
    with browsing(browser, site) as visit:
        page, lang = visit.page, visit.lang
        sign_in(visit, "viewer")
        assert page.get_by_role("link", name=t(lang, "nav.pulls")).count() == 0
        page.goto(f"{visit.base}/#/clips?clip={site.clip['id']}")
        wait_playing(page)
        assert page.locator(".hub-player").get_by_role("link", name=t(lang, "clips.download")).count() == 0
        page.goto(f"{visit.base}/#/pulls")   # typed in by hand: the fleet instead
        page.get_by_role("heading", name=t(lang, "fleet.title")).wait_for()


@pytest.mark.slow
def test_an_admin_searches_the_hub_audit_trail_by_box_camera(site: HubSite, browser: Any) -> None:
    """The hub's audit trail names a camera box/camera: the filter offers the cameras the boxes reported and
    finds the playbacks of one."""
    viewer = site.login("viewer")
    assert site.request("GET", f"/api/clips/{site.clip['id']}/video.mp4", session=viewer).status == 200
    with box_syncing(site), browsing(browser, site) as visit:
        page, lang = visit.page, visit.lang
        sign_in(visit, "admin")
        reporting = page.locator(f"tr[data-box='{BOX_ID}']").get_by_text(t(lang, "fleet.reporting"), exact=True)
        reporting.wait_for(timeout=30_000)
        page.get_by_role("link", name=t(lang, "nav.audit")).click()
        page.get_by_role("heading", name=t(lang, "hub.audit_title")).wait_for()
        page.get_by_label(t(lang, "audit.camera"), exact=True).select_option(f"{BOX_ID}/gate")
        page.get_by_label(t(lang, "audit.action"), exact=True).select_option("playback")
        page.get_by_role("button", name=t(lang, "audit.search")).click()
        rows = page.locator(".audit-table tbody tr")
        # the unfiltered list (every sign-in) stays on screen, dimmed, until the search's answer replaces it
        page.wait_for_function("([wanted, action]) => { const rows = [...document.querySelectorAll("
                               "'.audit-table tbody tr')].map((row) => row.innerText); return rows.length > 0"
                               " && rows.every((text) => text.includes(wanted) && text.includes(action))"
                               " && rows.some((text) => text.includes('viewer')); }",
                               arg=[f"{BOX_ID}/gate", t(lang, "action.playback")])
        assert page.locator(".table-wrap").get_attribute("aria-busy") is None
        texts = rows.all_inner_texts()
        assert texts and all(f"{BOX_ID}/gate" in text and t(lang, "action.playback") in text for text in texts), texts


def test_an_audit_search_answered_late_never_replaces_the_newer_search_s_rows(site: HubSite, browser: Any) -> None:
    """A person who searches again before a slow answer came sees the rows of what the form now asks: the rows on
    screen are marked as not yet answering it, and the late answer of the first search is dropped."""
    viewer = site.login("viewer")
    assert site.request("GET", f"/api/clips/{site.clip['id']}/video.mp4", session=viewer).status == 200
    with browsing(browser, site) as visit:
        page, lang = visit.page, visit.lang
        held: list[Any] = []
        page.route(re.compile(r"/api/audit\?"), lambda route: held.append(route) if "action=login" in route.request.url
                   else route.continue_())
        sign_in(visit, "admin")
        page.get_by_role("link", name=t(lang, "nav.audit")).click()
        page.get_by_role("heading", name=t(lang, "hub.audit_title")).wait_for()
        page.locator(".table-wrap:not([aria-busy]) .audit-table").wait_for()   # every record of the last day
        action = page.get_by_label(t(lang, "audit.action"), exact=True)
        search = page.get_by_role("button", name=t(lang, "audit.search"))
        action.select_option("login")
        search.click()
        page.wait_for_function("() => document.querySelector('.table-wrap').getAttribute('aria-busy') === 'true'")
        for _ in range(100):   # the first search's request reaches the route (events run while playwright waits)
            if held:
                break
            page.wait_for_timeout(50)
        action.select_option("playback")
        search.click()
        page.locator(".table-wrap:not([aria-busy]) .audit-table").wait_for()
        playbacks = page.locator(".audit-table tbody tr").all_inner_texts()
        assert playbacks and all(t(lang, "action.playback") in text for text in playbacks), playbacks
        assert len(held) == 1, "the first search never asked the hub"
        with page.expect_request_finished(lambda request: "action=login" in request.url):   # its whole body came
            held[0].continue_()
        page.wait_for_timeout(500)   # time for the page to read it (and drop it)
        assert page.locator(".audit-table tbody tr").all_inner_texts() == playbacks
        assert page.locator(".table-wrap").get_attribute("aria-busy") is None
