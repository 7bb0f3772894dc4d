"""Live view's glass-to-glass latency (issue 11: "under 2 s glass to glass on the LAN"), measured with real
components: the RTSP test camera, `edgenvr run` with [web] recording it (tests/web_site.running_site), and the UI's
own live tile in a headless Chromium.

The camera's clock is in the picture: every frame of the test clip carries its index as a barcode
(`decode_frame_counter`), and the camera writes when it sent each index (`SimulatedCamera(push_log=...)`: a line
`FRAME_INDEX WALL_TIME_NS` per access unit pushed into its RTSP pipeline). The test reads the tile's picture in the
page (drawImage of its <video> into a canvas, getImageData) together with the page's `Date.now()`, decodes the
counter, and takes latency = that screen time - when the camera sent that frame (its latest push before the screen
time; the 120 s clip does not wrap within the window). Both times are the same machine's CLOCK_REALTIME (the camera
process's time.time_ns(), Chromium's Date.now()); the test checks that the page's clock agrees with its own.

Screen time here is when the page can read the frame the <video> presents (what a canvas copies is the frame
being shown); the compositor's last vsync (<= 17 ms) is not in it. benchmarks/live_latency.py makes the same
measurement with the floor (the camera read directly over RTSP) and where the time goes.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from web_site import (
    COUNTER_CLIP_SECONDS,
    COUNTER_FPS,
    PASSWORDS,
    PLAYING_JS,
    Site,
    counter_clip,
    running_site,
)

from edgenvr.simulator import (
    SimulatedCamera,
    decode_frame_counter,
)
from edgenvr.simulator.screen_reading import VIDEO_FRAME_JS, counter_on_screen

pytestmark = pytest.mark.slow

FPS = COUNTER_FPS
CLIP_SECONDS = COUNTER_CLIP_SECONDS
TARGET_MS = 2000
SAMPLES = 20
SAMPLE_EVERY_MS = 500        # 20 samples over ~10 s
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
STATIC = Path(__file__).resolve().parent.parent / "edgenvr" / "web" / "static"
LABELS = json.loads((STATIC / "i18n" / "id.json").read_text(encoding="utf-8"))   # the UI's default language



@pytest.fixture(scope="module", name="counter_clip")
def counter_clip_fixture() -> Path:
    return counter_clip()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, counter_clip: Path, simulator_ready: None) -> Iterator[Site]:
    yield from running_site(tmp_path_factory.mktemp("live-latency"), counter_clip, cameras=("gate",),
                            record_seconds=4, push_logs=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def sign_in(page: Page, site: Site, name: str) -> None:
    page.goto(f"http://127.0.0.1:{site.port}/")
    page.get_by_role("heading", name=LABELS["signin.title"]).wait_for()
    page.get_by_label(LABELS["signin.name"]).fill(name)
    page.get_by_label(LABELS["signin.password"]).fill(PASSWORDS[name])
    page.get_by_role("button", name=LABELS["signin.submit"]).click()
    page.get_by_role("heading", name=LABELS["cameras.title"]).wait_for()


def screen_counter(shot: dict[str, Any]) -> int:
    number = counter_on_screen(shot)
    assert number is not None, "the live picture carries no readable frame counter"
    return number


def read_push_log(path: Path) -> dict[int, list[int]]:
    """Frame index -> the wall times (ns) the camera sent it, in order."""
    pushes: dict[int, list[int]] = {}
    for line in path.read_text().splitlines():
        index, wall_ns = line.split()
        pushes.setdefault(int(index), []).append(int(wall_ns))
    return pushes


def sent_ns(pushes: dict[int, list[int]], index: int, seen_ms: int) -> int:
    """When the camera sent the frame `index` shown at `seen_ms`: its latest push before then."""
    earlier = [ns for ns in pushes.get(index, []) if ns <= seen_ms * 1_000_000]
    assert earlier, f"frame {index} is on screen at {seen_ms} but the camera never sent it before"
    return max(earlier)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def test_the_push_log_is_the_camera_clock_in_the_picture(counter_clip: Path, tmp_path: Path,
                                                        simulator_ready: None) -> None:
    """A frame index in the push log is the number burned into that frame's picture: every frame the camera
    serves, read directly over RTSP, shows the index it pushed last (<= 0.5 s earlier), and the log counts
    the clip's frames in order, one line per frame period."""
    push_log = tmp_path / "main.push"
    with SimulatedCamera({"main": (counter_clip, "h264")}, push_log=push_log, log_path=tmp_path / "cam.log") as camera:
        container = av.open(camera.url("main"), options={"rtsp_transport": "tcp"}, timeout=(10, 5))
        opened_ns = time.time_ns()   # libav's stream probe (inside av.open) held the first frames until now
        seen: list[tuple[int, int]] = []
        try:
            stream = container.streams.video[0]
            deadline = time.monotonic() + 4
            for packet in container.demux(stream):
                for frame in packet.decode():
                    number = decode_frame_counter(frame.to_ndarray(format="gray"))
                    assert number is not None
                    seen.append((number, time.time_ns()))
                if time.monotonic() > deadline:
                    break
        finally:
            container.close()
        time.sleep(1.2)   # flushed at least once a second
        lines = [tuple(map(int, line.split())) for line in push_log.read_text().splitlines()]
    indices = [index for index, _ in lines]
    assert indices == list(range(len(indices))), "one line per frame, in the clip's order from its first frame"
    periods = np.diff([wall_ns for _, wall_ns in lines]) / 1e6
    assert abs(float(np.median(periods)) - 1000 / FPS) < 2, periods
    pushes = read_push_log(push_log)
    assert len(seen) > 2 * FPS
    for number, arrived_ns in seen:
        sent = sent_ns(pushes, number, arrived_ns // 1_000_000)
        # the first frames come out of libav's stream probe (~1.1 s here, longer on a loaded machine): they are
        # counted from the probe's end; a wrong index would be a multiple of 40 ms off at every frame, not only
        # at the first ones (the steady median below)
        assert arrived_ns >= sent and (arrived_ns - max(sent, opened_ns)) / 1e6 < 1500, \
            (number, (arrived_ns - sent) / 1e6, (opened_ns - sent) / 1e6)
    steady = [(arrived_ns - sent_ns(pushes, n, arrived_ns // 1_000_000)) / 1e6 for n, arrived_ns in seen[2 * FPS:]]
    assert statistics.median(steady) < 100, steady


def test_live_view_glass_to_glass_latency_is_under_2_seconds(browser: Browser, site: Site) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        # The two clocks compared are one: the page's Date.now() lies between two readings of ours.
        before_ms = time.time_ns() / 1e6
        page_ms = page.evaluate("Date.now()")
        after_ms = time.time_ns() / 1e6
        assert before_ms - 1 <= page_ms <= after_ms + 1, (before_ms, page_ms, after_ms)

        sign_in(page, site, "viewer")
        tile = page.locator(".tile").filter(has=page.locator(".tile-name", has_text=re.compile("^gate$")))
        video = tile.locator("video")
        page.wait_for_function(PLAYING_JS, arg=video.element_handle())
        playing_ms = time.time() * 1000

        samples: list[dict[str, Any]] = []
        handle = video.element_handle()
        for _ in range(SAMPLES):
            samples.append(page.evaluate(VIDEO_FRAME_JS, [handle, 16]))
            page.wait_for_timeout(SAMPLE_EVERY_MS)
    finally:
        context.close()
    time.sleep(1.5)   # the camera's push log is flushed at least once a second
    pushes = read_push_log(site.cameras["gate"].push_logs["main"])

    latencies: list[float] = []
    rows: list[str] = []
    for shot in samples:
        assert shot["width"] == 320 and shot["height"] == 240, shot["width"]
        number = screen_counter(shot)
        latency = shot["now"] - sent_ns(pushes, number, shot["now"]) / 1e6
        latencies.append(latency)
        ahead = "-" if shot["end"] is None else f"{(shot['end'] - shot['current']) * 1000:.0f}"
        rows.append(f"  +{(shot['now'] - playing_ms) / 1000:5.1f} s  frame {number:5d}  latency {latency:6.0f} ms"
                    f"  buffered ahead of the playhead {ahead} ms{'  paused' if shot['paused'] else ''}")
    median = statistics.median(latencies)
    print(f"\nlive view glass-to-glass latency over {len(latencies)} samples in "
          f"{(samples[-1]['now'] - samples[0]['now']) / 1000:.1f} s: median {median:.0f} ms, "
          f"p95 {percentile(latencies, 95):.0f} ms, max {max(latencies):.0f} ms (target: median < {TARGET_MS} ms)")
    print("\n".join(rows))
    assert all(latency > 0 for latency in latencies), latencies
    assert median < TARGET_MS, f"median glass-to-glass latency {median:.0f} ms (target < {TARGET_MS} ms)"
