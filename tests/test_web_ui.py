"""The web UI as a site's staff use it, in a real headless Chromium against a real site: `edgenvr run` with [web]
recording two RTSP test cameras (2 s segments), users made by `edgenvr user`. The operator signs in through the
form, watches both cameras live, plays the last minute from the timeline, seeks across segment boundaries, exports
30 s with a reason; the screens fit a phone and a monitor in both languages; a viewer granted one camera sees only
it and cannot export. Every page fails its test on a console error, an uncaught exception or a CSP violation.

Pictures are read back from the page (canvas drawImage of the <video>, getImageData) and the frame counter the
test clip carries is decoded from their luma, so "it plays" means the right frames are on screen.
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import edgenvr
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Response,
    expect,
    sync_playwright,
)
from web_site import (
    COUNTER_CLIP_SECONDS,
    COUNTER_FPS,
    PASSWORDS,
    PLAYING_JS,
    Site,
    counter_clip,
    running_site,
)

from edgenvr.simulator import decode_frame_counter
from edgenvr.simulator.screen_reading import VIDEO_FRAME_JS, luma_on_screen

# The site is a real `edgenvr run` (through running_site, which the conftest's name scan does not look into).
pytestmark = pytest.mark.slow

STATIC = Path(__file__).resolve().parent.parent / "edgenvr" / "web" / "static"
CATALOGUES = {lang: json.loads((STATIC / "i18n" / f"{lang}.json").read_text(encoding="utf-8")) for lang in ("id", "en")}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
FPS = COUNTER_FPS
CLIP_SECONDS = COUNTER_CLIP_SECONDS
CLIP_FRAMES = FPS * CLIP_SECONDS
PHONE = {"viewport": {"width": 360, "height": 800}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
MONITOR = {"viewport": {"width": 1366, "height": 768}}
SEEK_MS = 10_000            # five 2 s segments further on
REASON = "Laporan polisi 17/XI: motor hilang di gerbang"



def t(lang: str, key: str, **values: Any) -> str:
    text = CATALOGUES[lang][key]
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), text)


# --- the site and the browser --------------------------------------------------------------------------------

@pytest.fixture(scope="module", name="counter_clip")
def counter_clip_fixture() -> Path:
    return counter_clip()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, counter_clip: Path, simulator_ready: None) -> Iterator[Site]:
    yield from running_site(tmp_path_factory.mktemp("web-ui"), counter_clip, cameras=("gate", "yard"),
                            record_seconds=25)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("EDGENVR_SCREENSHOTS")
    folder = Path(wanted) if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Visit:
    """One browser context and its page, with everything that went wrong in it."""

    site: Site
    page: Page
    lang: str = "id"
    signed_in: bool = False
    problems: list[str] = field(default_factory=list)
    video_starts: dict[str, int] = field(default_factory=dict)   # video.mp4 URL -> its X-Edgenvr-Start-Ms

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.site.port}"

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        # Signed out, the page asks /api/me whether it has a session and gets 401 (its documented way to learn
        # it must show the sign-in form); Chromium logs every 4xx answer as a console error. Only that one passes.
        if (not self.signed_in and message.location.get("url", "").endswith("/api/me")
                and message.text.startswith("Failed to load resource: the server responded with a status of 401")):
            return
        self.problems.append(f"console error: {message.text} at {message.location}")

    def on_response(self, response: Response) -> None:
        if "/video.mp4?" in response.url and response.request.method == "HEAD" and response.ok:
            self.video_starts[response.url] = int(response.headers["x-edgenvr-start-ms"])


@contextmanager
def browsing(browser: Browser, site: Site, size: dict[str, Any] = MONITOR) -> Iterator[Visit]:
    context = browser.new_context(**size)
    # CSP violations also reach the console: Chromium reports them there, and this listener makes sure
    context.add_init_script("document.addEventListener('securitypolicyviolation', (e) => "
                            "console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI}`));")
    page = context.new_page()
    visit = Visit(site, page)
    page.on("console", visit.on_console)
    page.on("pageerror", lambda error: visit.problems.append(f"uncaught exception: {error}"))
    page.on("response", visit.on_response)
    page.set_default_timeout(20_000)
    try:
        yield visit
        assert not visit.problems, "\n".join(visit.problems)
    finally:
        context.close()


def sign_in(visit: Visit, name: str) -> None:
    """Open the box's address and sign in through the form, typing as a person does."""
    page, lang = visit.page, visit.lang
    page.goto(visit.base + "/")
    page.get_by_role("heading", name=t(lang, "signin.title")).wait_for()
    page.get_by_label(t(lang, "signin.name")).press_sequentially(name)
    page.get_by_label(t(lang, "signin.password")).press_sequentially(PASSWORDS[name])
    visit.signed_in = True
    page.get_by_role("button", name=t(lang, "signin.submit")).click()
    page.locator("#topbar .user-name").filter(has_text=name).wait_for()
    page.get_by_role("heading", name=t(lang, "cameras.title")).wait_for()


def tile(page: Page, camera: str) -> Locator:
    return page.locator(".tile").filter(has=page.locator(".tile-name", has_text=re.compile(f"^{camera}$")))


# --- reading the picture -------------------------------------------------------------------------------------

@dataclass
class Frame:
    time: float        # the video's currentTime when the picture was read
    luma: np.ndarray   # studio-range luma (16 black, 235 white), as the camera encoded it

    @property
    def counter(self) -> int:
        number = decode_frame_counter(self.luma)
        assert number is not None, "the picture carries no readable frame counter"
        return number


def grab(video: Locator) -> Frame:
    shot = video.evaluate(f"(video) => ({VIDEO_FRAME_JS})([video, 100000])")
    assert shot["width"] == 320 and shot["height"] == 240, shot["width"]
    return Frame(shot["current"], luma_on_screen(shot))


def frames_between(earlier: Frame, later: Frame) -> int:
    """How many frames the counter advanced (the clip loops every CLIP_FRAMES)."""
    return (later.counter - earlier.counter) % CLIP_FRAMES


def wait_playing(page: Page, video: Locator) -> None:
    page.wait_for_function(PLAYING_JS, arg=video.element_handle())


# --- the playback screen -------------------------------------------------------------------------------------

def open_playback(page: Page, lang: str, camera: str, *, tap: bool = False) -> None:
    link = tile(page, camera).get_by_text(t(lang, "cameras.open_playback"))
    link.tap() if tap else link.click()
    page.locator(".pb-title", has_text=re.compile(f"^{camera}$")).wait_for()
    page.locator(".tl-lane-rec .tl-rec").last.wait_for(state="attached")   # the day's timeline is loaded


def timeline_x(page: Page, ms: float) -> tuple[float, float]:
    """Where on screen the timeline shows `ms` (the track's slider values are the span it shows)."""
    track = page.locator(".tl-track")
    box = track.bounding_box()
    assert box is not None
    start, end = int(track.get_attribute("aria-valuemin") or 0), int(track.get_attribute("aria-valuemax") or 0)
    assert start <= ms <= end, (start, ms, end)
    return box["x"] + (ms - start) / (end - start) * box["width"], box["y"] + box["height"] / 2


def press(page: Page, x: float, y: float, tap: bool) -> None:
    if tap:
        page.touchscreen.tap(x, y)
    else:
        page.mouse.click(x, y)


def play_from_timeline(visit: Visit, ms_before_now: int, *, tap: bool = False) -> int:
    """Play from about `ms_before_now` ago, as a person does it: tap the newest end of the recorded bar on the
    day's timeline, zoom in to 10 minutes around it, then tap the time wanted. Returns the time tapped."""
    page, lang = visit.page, visit.lang
    track = page.locator(".tl-track")
    track_box = track.bounding_box()
    newest = page.locator(".tl-lane-rec .tl-rec").last.bounding_box()
    assert track_box is not None and newest is not None
    press(page, newest["x"] + newest["width"] - 0.25, track_box["y"] + track_box["height"] / 2, tap)
    video = page.locator(".pb-video")
    page.wait_for_function("(video) => video.readyState >= 1 && video.getAttribute('src')", arg=video.element_handle())
    zoom_in = page.get_by_role("button", name=t(lang, "timeline.zoom_in"), exact=True)
    for _ in range(3):
        zoom_in.tap() if tap else zoom_in.click()
    expect(page.locator(".zoom-text")).to_have_text(t(lang, "timeline.span_minutes", n=10))
    wanted = visit.site.now_ms() - ms_before_now
    assert wanted >= first_recorded_ms(visit.site) + 1000, "the time wanted is before the recording began"
    press(page, *timeline_x(page, wanted), tap)
    # Tapped outside the loaded window, the player asks the box for a new one (HEAD, "loading" on screen) before
    # it swaps the video's source, and the first window goes on playing until then; inside it, it seeks. Either
    # way, wait until the video plays the time tapped with nothing over it (a pixel of a phone's timeline is
    # under 2 s; the tests check the time closer).
    showing = ("(video) => ({ src: video.currentSrc, time: video.currentTime, playing: (" + PLAYING_JS + ")(video),"
               " clear: document.querySelector('.pb-overlay').hidden })")
    deadline = time.monotonic() + 20
    while True:
        shown = video.evaluate(showing)
        start = visit.video_starts.get(shown["src"])
        if (shown["playing"] and shown["clear"] and start is not None
                and abs(start + shown["time"] * 1000 - wanted) < 3000):
            break
        assert time.monotonic() < deadline, f"the video does not play the time tapped: {shown}, {start}, {wanted}"
        page.wait_for_timeout(100)
    return wanted


def first_recorded_ms(site: Site) -> int:
    now = site.now_ms()
    line = site.request("GET", f"/api/cameras/gate/timeline?start_ms={now - 3_600_000}&end_ms={now}",
                        token=site.tokens["admin"]).json()
    return line["recorded"][0]["start_ms"]


def wait_until_recorded(site: Site, seconds: float) -> None:
    """Wait, only as long as needed, until gate has `seconds` of video behind now (a test run alone comes
    soon after the site started; in the whole module the tests before it have taken that time)."""
    time.sleep(max(0, first_recorded_ms(site) + seconds * 1000 - site.now_ms()) / 1000)


def playing_ms(visit: Visit, video: Locator, frame: Frame) -> float:
    """The UTC time of `frame`: the loaded window's start (the box's X-Edgenvr-Start-Ms) + the video time."""
    source = video.evaluate("(video) => video.currentSrc")
    assert source in visit.video_starts, (source, list(visit.video_starts))
    return visit.video_starts[source] + frame.time * 1000


def segment_start(site: Site, camera: str, ms: float) -> int:
    """The start of the recorded segment file that holds `ms`."""
    starts = sorted(int(p.stem) for p in (site.layout.data_dir / "segments" / camera).rglob("*.mp4"))
    return max(s for s in starts if s <= ms)


# --- the tests -----------------------------------------------------------------------------------------------

def test_an_operator_signs_in_and_both_cameras_play_live_with_their_state(browser: Browser, site: Site) -> None:
    with browsing(browser, site) as visit:
        page = visit.page
        sign_in(visit, "operator")
        expect(page.locator(".tile-name")).to_have_text(["gate", "yard"])
        for camera in ("gate", "yard"):
            item = tile(page, camera)
            assert item.locator(".badge").first.inner_text().strip() == t("id", "state.recording")
            video = item.locator("video")
            wait_playing(page, video)
            expect(item.locator(".live-badge")).to_be_visible()
            expect(item.locator(".live-badge")).to_have_text(t("id", "live.badge"))
            first = grab(video)
            # a second on, or a little later if a fragment comes late (live keeps ~1 s buffered at most)
            page.wait_for_timeout(1000)
            page.wait_for_function("([video, at]) => video.currentTime > at",
                                   arg=[video.element_handle(), first.time + 0.5], timeout=10_000)
            second = grab(video)
            assert second.time > first.time + 0.5, f"{camera}: live video stands still ({first.time} -> {second.time})"
            changed = np.abs(second.luma.astype(int) - first.luma.astype(int)) > 24
            assert changed.mean() > 0.002, f"{camera}: the live picture does not change"
            # the camera's own frame counter moved on as far as the video's clock did
            advanced = frames_between(first, second)
            assert abs(advanced - (second.time - first.time) * FPS) <= FPS / 2, \
                (camera, advanced, first.time, second.time)


def test_a_viewer_granted_gate_sees_only_gate_and_cannot_export(browser: Browser, site: Site) -> None:
    with browsing(browser, site) as visit:
        page = visit.page
        sign_in(visit, "viewer")
        page.locator(".tile .badge").first.wait_for()
        expect(page.locator(".tile-name")).to_have_text(["gate"])
        assert page.get_by_role("link", name=t("id", "nav.holds")).count() == 0
        open_playback(page, "id", "gate")
        page.locator(".pb-name .badge").first.wait_for()
        page.get_by_role("button", name=t("id", "playback.play"), exact=True).wait_for()   # the controls are there
        for key in ("playback.export", "playback.hold", "export.download", "hold.only"):
            assert page.get_by_role("button", name=t("id", key)).count() == 0, key
        assert page.locator("button.evidence").count() == 0


def test_the_screens_fit_a_phone_and_a_monitor_in_both_languages(browser: Browser, site: Site,
                                                                 screenshots: Path) -> None:
    for size_name, size in (("phone", PHONE), ("monitor", MONITOR)):
        width = size["viewport"]["width"]
        phone = size_name == "phone"
        with browsing(browser, site, size) as visit:
            page = visit.page
            sign_in(visit, "operator")
            for lang in ("id", "en"):
                if lang == "en":   # the language switch in the header
                    page.get_by_role("button", name=t("id", "language.switch_label")).click()
                    visit.lang = "en"
                    page.get_by_role("heading", name=t("en", "cameras.title")).wait_for()
                assert page.evaluate("document.documentElement.lang") == lang
                # the camera grid, with the live picture playing
                page.locator(".tile .badge").first.wait_for()
                wait_playing(page, tile(page, "gate").locator("video"))
                badges = page.locator(".tile .badges .badge:first-child").all_inner_texts()
                assert [b.strip() for b in badges] == [t(lang, "state.recording")] * 2, badges
                path = screenshots / f"{lang}-{size_name}-cameras.png"
                page.screenshot(path=str(path), full_page=True)
                fits(page, width, path)
                # the playback screen, playing from the timeline
                open_playback(page, lang, "gate", tap=phone)
                page.locator(".pb-name .badge").first.wait_for()
                assert page.locator(".pb-name .badge").first.inner_text().strip() == t(lang, "state.recording")
                play_from_timeline(visit, 20_000, tap=phone)
                wait_playing(page, page.locator(".pb-video"))
                assert page.locator(".play-button").inner_text() == t(lang, "playback.pause")
                path = screenshots / f"{lang}-{size_name}-playback.png"
                page.screenshot(path=str(path), full_page=True)
                fits(page, width, path)
                page.get_by_role("link", name=t(lang, "playback.back")).click()
                page.get_by_role("heading", name=t(lang, "cameras.title")).wait_for()


def fits(page: Page, width: int, path: Path) -> None:
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"{path.name}: the page is {scroll_width} px wide on a {width} px screen"


def test_an_operator_plays_the_last_minute_and_seeks_across_segment_boundaries(browser: Browser, site: Site) -> None:
    with browsing(browser, site) as visit:
        page = visit.page
        sign_in(visit, "operator")
        open_playback(page, "id", "gate")
        video = page.locator(".pb-video")
        wait_until_recorded(site, 64)
        wanted = play_from_timeline(visit, 60_000)   # the last minute
        wait_playing(page, video)
        started = grab(video)
        assert abs(playing_ms(visit, video, started) - wanted) < 1500, "playback did not start at the time tapped"
        page.wait_for_timeout(1500)
        before = grab(video)
        assert before.time > started.time + 1, f"the video stands still ({started.time} -> {before.time})"
        assert frames_between(started, before) > FPS

        # seek: a tap on the timeline 10 s further on, five 2 s segments away
        before_ms = playing_ms(visit, video, before)
        target_ms = before_ms + SEEK_MS
        assert segment_start(site, "gate", target_ms) - segment_start(site, "gate", before_ms) >= 4 * 2000 - 500
        page.mouse.click(*timeline_x(page, target_ms))
        page.wait_for_function("([video, at]) => video.currentTime > at && !video.seeking && video.readyState >= 2",
                               arg=[video.element_handle(), before.time + SEEK_MS / 2000])
        after = grab(video)
        expected_time = before.time + (target_ms - before_ms) / 1000
        assert abs(after.time - expected_time) <= 1, (before.time, after.time, expected_time)
        # the picture is the one recorded 10 s later: the camera's frame counter moved on by 10 s of frames
        jumped = frames_between(before, after)
        assert abs(jumped - (after.time - before.time) * FPS) <= FPS / 2, (jumped, before.time, after.time)
        page.wait_for_timeout(1500)
        later = grab(video)
        assert later.time > after.time + 1, f"playback stopped after the seek ({after.time} -> {later.time})"
        advanced = frames_between(after, later)
        assert abs(advanced - (later.time - after.time) * FPS) <= FPS / 2, (advanced, after.time, later.time)


def test_an_operator_exports_30_seconds_with_a_reason_and_the_zip_verifies(browser: Browser, site: Site,
                                                                          tmp_path: Path) -> None:
    with browsing(browser, site) as visit:
        page = visit.page
        sign_in(visit, "operator")
        open_playback(page, "id", "gate")
        video = page.locator(".pb-video")
        wait_until_recorded(site, 48)
        play_from_timeline(visit, 28_000)   # 30 s around a moment 28 s ago are all recorded by then
        wait_playing(page, video)
        page.get_by_role("button", name=t("id", "playback.pause")).click()
        page.wait_for_function("(video) => video.paused", arg=video.element_handle())
        paused_ms = playing_ms(visit, video, grab(video))

        page.get_by_role("button", name=t("id", "playback.export")).click()
        panel = page.locator(".export-panel")
        panel.get_by_role("heading", name=t("id", "export.title")).wait_for()
        assert panel.locator(".hint").first.inner_text() == t("id", "export.length",
                                                              duration=t("id", "duration.seconds", s=30))
        panel.get_by_label(t("id", "export.reason")).press_sequentially(REASON)
        with page.expect_download(timeout=60_000) as started:
            panel.get_by_role("button", name=t("id", "export.download")).click()
        download = started.value
        zip_path = tmp_path / download.suggested_filename
        download.save_as(zip_path)
        panel.locator(".notice-success").wait_for()

        with zipfile.ZipFile(zip_path) as bundle:
            bundle.extractall(tmp_path / "unzipped")
        (folder,) = (tmp_path / "unzipped").iterdir()
        done = edgenvr("verify", str(folder))
        assert done.returncode == 0, done.stdout + done.stderr
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["reason"] == REASON and manifest["exported_by"] == "operator"
        assert manifest["camera"]["id"] == "gate"
        requested = manifest["requested"]
        assert requested["end_ms"] - requested["start_ms"] == 30_000, requested
        # the 30 s are around the paused playhead (the form shows whole seconds)
        assert abs((requested["start_ms"] + requested["end_ms"]) / 2 - paused_ms) < 1500, (requested, paused_ms)
        actual = manifest["actual"]
        assert actual["start_ms"] <= requested["start_ms"] + 1000 and actual["end_ms"] >= requested["end_ms"] - 1000, \
            (requested, actual)
        assert manifest["files"] and not manifest["gaps"], manifest["gaps"]
