"""Live view over HLS (web.live_playlist), the fallback for iPhones before iOS 17.1, with real components: the
RTSP test cameras with the frame counter burned into their picture, `edgenvr run` with [web] recording them
(tests/web_site.running_site), ffmpeg as the HLS player, requests over real loopback sockets.

Also measures how far behind the live edge a player starting now is, and the glass-to-glass latency of the UI's
own live tile on the HLS path (printed): the camera's clock is in the picture (`decode_frame_counter`) and in its
push log (when it sent each frame), as in tests/test_live_latency.py. The tile runs in headless Chromium with
Media Source removed from the page; Chromium (>= 14x) plays HLS natively, as Safari on an old iPhone does (its
start position and buffering are Chromium's own, not AVPlayer's: the figure is indicative for iPhones).
"""

from __future__ import annotations

import io
import json
import re
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from playwright.sync_api import sync_playwright
from web_site import (
    COUNTER_CLIP_SECONDS,
    COUNTER_FPS,
    PASSWORDS,
    PLAYING_JS,
    Answer,
    Session,
    Site,
    counter_clip,
    running_site,
)

from edgenvr.simulator import decode_frame_counter
from edgenvr.simulator.screen_reading import VIDEO_FRAME_JS, counter_on_screen
from edgenvr.web.live_playlist import IDLE_SECONDS

pytestmark = pytest.mark.slow

PLAYLIST = "/api/cameras/{camera}/live.m3u8"
PART = "/api/cameras/{camera}/live/{name}"
WRAP = COUNTER_CLIP_SECONDS * COUNTER_FPS
STATIC = Path(__file__).resolve().parent.parent / "edgenvr" / "web" / "static"
LABELS = json.loads((STATIC / "i18n" / "id.json").read_text(encoding="utf-8"))   # the UI's default language
# An old iPhone's Safari as far as live.js can tell: no Media Source of either kind (native HLS it has).
NO_MEDIA_SOURCE_JS = "delete window.MediaSource; delete window.ManagedMediaSource;"


@pytest.fixture(scope="module", name="counter_clip")
def counter_clip_fixture() -> Path:
    return counter_clip()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, counter_clip: Path, simulator_ready: None) -> Iterator[Site]:
    yield from running_site(tmp_path_factory.mktemp("live-hls"), counter_clip, cameras=("gate", "yard"),
                            record_seconds=4, push_logs=True)


def playlist_segments(text: str) -> list[tuple[float, str]]:
    """(EXTINF seconds, URI) of each media segment of a playlist."""
    lines = text.splitlines()
    return [(float(line.split(":", 1)[1].rstrip(",")), lines[i + 1])
            for i, line in enumerate(lines) if line.startswith("#EXTINF:")]


def playlist_map(text: str) -> str:
    found = re.findall(r'#EXT-X-MAP:URI="([^"]+)"', text)
    assert found, text
    return found[-1]


def get_part(site: Site, camera: str, uri: str, session: Session) -> Answer:
    assert uri.startswith("live/"), uri
    return site.request("GET", PART.format(camera=camera, name=uri[len("live/"):]), session=session)


def counters(video: bytes) -> list[int]:
    """The burned-in counter of every frame of an MP4 (or init + fragments), in decoding order."""
    found: list[int] = []
    with av.open(io.BytesIO(video)) as container:
        for frame in container.decode(video=0):
            number = decode_frame_counter(frame.to_ndarray(format="gray"))
            assert number is not None, "a frame without a readable counter"
            found.append(number)
    return found


def wait_for_count(site: Site, text: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while site.supervisor.log().count(text) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    assert site.supervisor.log().count(text) >= count, f"{text!r} not logged {count} times:\n{site.supervisor.log()[-3000:]}"


def read_push_log(site: Site, camera: str) -> dict[int, list[int]]:
    """Frame index -> the wall times (ns) the camera sent it."""
    time.sleep(1.5)   # the camera's push log is flushed at least once a second
    pushes: dict[int, list[int]] = {}
    for line in site.cameras[camera].push_logs["main"].read_text().splitlines():
        index, wall_ns = map(int, line.split())
        pushes.setdefault(index, []).append(wall_ns)
    return pushes


def sent_ms(pushes: dict[int, list[int]], index: int, before_ms: float) -> float:
    """When the camera sent the frame `index` seen at `before_ms`: its latest push before then."""
    return max(ns for ns in pushes[index] if ns <= before_ms * 1e6) / 1e6


def live_audits(site: Site) -> list[dict]:
    return site.request("GET", "/api/audit?action=live_view&camera=gate", token=site.tokens["admin"]).json()["records"]


def test_a_signed_in_viewer_s_playlist_plays_in_ffmpeg_and_ends_when_nobody_asks(site: Site, tmp_path: Path) -> None:
    viewer = site.login("viewer")
    started, ended = "camera gate: live view started", "camera gate: live view ended"
    log = site.supervisor.log()
    started_before, ended_before = log.count(started), log.count(ended)
    audits_before = len(live_audits(site))

    asked = time.monotonic()
    answer = site.request("GET", PLAYLIST.format(camera="gate"), session=viewer)
    assert answer.status == 200, answer.body[:300]
    # nobody watched: subscribe, the recorder's next key frame, the one after it (to know the segment is whole)
    print(f"\nlive HLS: the first playlist came {time.monotonic() - asked:.1f} s after it was asked for")
    assert answer.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    text = answer.body.decode()
    for tag in ("#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS", "#EXT-X-TARGETDURATION:",
                "#EXT-X-MEDIA-SEQUENCE:", "#EXT-X-MAP:URI=", "#EXTINF:"):
        assert tag in text, text
    segments = playlist_segments(text)
    assert segments and all(0 < seconds <= 1.5 for seconds, _ in segments), text
    # the window starts at a key frame and decodes on its own: init + its first segment
    init = get_part(site, "gate", playlist_map(text), viewer)
    first = get_part(site, "gate", segments[0][1], viewer)
    assert init.status == 200 and init.body[4:8] == b"ftyp", init.body[:100]
    assert first.status == 200 and first.body[4:8] == b"moof", first.body[:100]
    assert len(counters(init.body + first.body)) >= COUNTER_FPS * 0.8

    out = tmp_path / "live.mp4"
    url = f"http://127.0.0.1:{site.port}{PLAYLIST.format(camera='gate')}"
    done = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-headers", f"Cookie: edgenvr_session={viewer.cookie}\r\n",
                           "-i", url, "-t", "5", "-c", "copy", str(out)], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(out)],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and probe.stderr == "", probe.stderr
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 320, 240), stream
    assert int(stream["nb_read_frames"]) >= 4 * COUNTER_FPS, stream
    # the picture moves on: the camera's counter advances frame by frame (a lost fragment would skip <= 2 s)
    seen = counters(out.read_bytes())
    steps = [(b - a) % WRAP for a, b in zip(seen, seen[1:])]
    assert all(1 <= step <= 2 * COUNTER_FPS for step in steps), steps
    assert steps.count(1) >= 0.95 * len(steps), steps
    assert len(set(seen)) >= 4 * COUNTER_FPS

    # one recorder subscription, one audit record for the whole session (playlist + ffmpeg's dozens of requests)
    log = site.supervisor.log()
    assert log.count(started) == started_before + 1, log[-3000:]
    audits = live_audits(site)
    assert len(audits) == audits_before + 1, audits
    assert audits[0]["actor"] == "viewer" and audits[0]["camera"] == "gate"
    # nobody asks any more: the window closes and the recorder stops copying
    wait_for_count(site, ended, ended_before + 1, IDLE_SECONDS + 15)
    assert site.request("GET", PART.format(camera="gate", name=segments[-1][1][len("live/"):]),
                        session=viewer).status == 404, "the parts went with the window"


def test_a_viewer_without_a_grant_gets_403_and_a_caller_without_credentials_401(site: Site) -> None:
    viewer = site.login("viewer")   # granted gate only
    urls = [PLAYLIST.format(camera="yard"), PART.format(camera="yard", name="init-1.mp4"),
            PART.format(camera="yard", name="1.m4s")]
    log_before = site.supervisor.log().count("camera yard: live view started")
    for url in urls:
        for method in ("GET", "HEAD"):
            for credentials in ({"session": viewer}, {"token": site.tokens["viewer"]}):
                answer = site.request(method, url, **credentials)   # type: ignore[arg-type]
                assert answer.status == 403, f"{method} {url}: {answer.status} {answer.body[:200]!r}"
            answer = site.request(method, url)
            assert answer.status == 401, f"{method} {url}: {answer.status}"
    assert site.request("GET", PLAYLIST.format(camera="gate")).status == 401
    assert site.supervisor.log().count("camera yard: live view started") == log_before, "a refusal subscribes nothing"
    assert site.request("GET", PLAYLIST.format(camera="nosuch"), token=site.tokens["admin"]).status == 404


def test_malformed_or_expired_part_names_get_404_and_never_a_server_error(site: Site) -> None:
    admin = site.login("admin")
    answer = site.request("GET", PLAYLIST.format(camera="gate"), session=admin)   # a window is open
    assert answer.status == 200, answer.body
    newest = int(playlist_segments(answer.body.decode())[-1][1][len("live/"):].split(".")[0])

    def refused(name: str) -> None:
        for method in ("GET", "HEAD"):
            answer = site.request(method, PART.format(camera="gate", name=name), session=admin)
            assert answer.status == 404, f"{method} {name}: {answer.status} {answer.body[:200]!r}"
            assert b"root:" not in answer.body

    # names close to a part that is listed (~WINDOW_SEGMENTS s): first, and the part itself is served after them,
    # so they were refused for their form while it existed, not because it had expired
    for name in (f"{newest}.m4s%2f..", f"{newest}.M4S", f"{newest}.mp4", f"init-{newest}.m4s"):
        refused(name)
    assert site.request("GET", PART.format(camera="gate", name=f"{newest}.m4s"), session=admin).status == 200
    for name in ("..%2f..%2f..%2fetc%2fpasswd", "%2e%2e", "..", "init-.mp4", "init-1.mp4x", "init-1.mp4%00",
                 "-1.m4s", "1e3.m4s", "0x10.m4s", "%D9%A1%D9%A2.m4s", "1" * 13 + ".m4s", "init-" + "9" * 13 + ".mp4",
                 "%201.m4s", f"{newest + 1000}.m4s", "1.m4s", "init-1.mp4", "a" * 2000, "%ff%fe", "live.m3u8",
                 "%00"):
        refused(name)
    # a part outside the caller's own (audited) session is not served, even while the window is open. The newest
    # part is listed ~WINDOW_SEGMENTS s only: it is taken from a playlist fetched just now, and the operator is
    # refused it between that playlist and the admin being served it, so the part existed then (a part never
    # comes back once expired): the 404 is the refusal, not an expiry
    operator = site.login("operator")
    answer = site.request("GET", PLAYLIST.format(camera="gate"), session=admin)
    assert answer.status == 200, answer.body
    current = playlist_segments(answer.body.decode())[-1][1][len("live/"):]
    assert site.request("GET", PART.format(camera="gate", name=current), session=operator).status == 404
    assert site.request("GET", PART.format(camera="gate", name=current), session=admin).status == 200


def test_distance_from_the_live_edge(site: Site) -> None:
    """How far behind the camera a player starting now is. A player starts 3 target durations before the end
    of the playlist (RFC 8216 6.3.3; Safari and ffmpeg do): its first frame is the first frame of the third
    segment from the end, shown (at best) when it fetched the playlist. Printed; checked only for sanity."""
    admin = site.login("admin")
    samples: list[tuple[float, float, float]] = []
    assert site.request("GET", PLAYLIST.format(camera="gate"), session=admin).status == 200   # (opens the window)
    for _ in range(6):
        answer = site.request("GET", PLAYLIST.format(camera="gate"), session=admin)
        fetched_ms = time.time() * 1000   # a player could start now
        assert answer.status == 200, answer.body
        text = answer.body.decode()
        target = int(re.search(r"#EXT-X-TARGETDURATION:(\d+)", text)[1])   # type: ignore[index]
        segments = playlist_segments(text)
        # 6 s of 2 s recorder segments, each restarting at 0 with its own init: one timeline, one init
        assert text.count("#EXT-X-MAP:") == 1 and "#EXT-X-DISCONTINUITY\n" not in text, text
        init = get_part(site, "gate", playlist_map(text), admin).body
        start_at, seconds = len(segments) - 1, segments[-1][0]   # the last segment starting >= 3 TD from the end
        while start_at > 0 and seconds < 3 * target - 0.1:       # (0.1: EXTINFs of 0.999 s)
            start_at -= 1
            seconds += segments[start_at][0]
        start = counters(init + get_part(site, "gate", segments[start_at][1], admin).body)
        newest = counters(init + get_part(site, "gate", segments[-1][1], admin).body)
        samples.append((fetched_ms, start[0], newest[-1]))
        time.sleep(1.3)
    pushes = read_push_log(site, "gate")
    start_lags = [fetched - sent_ms(pushes, first, fetched) for fetched, first, _ in samples]
    edge_ages = [fetched - sent_ms(pushes, last, fetched) for fetched, _, last in samples]
    print(f"\nlive HLS, {len(samples)} playlist fetches, target duration {target} s, {len(segments)} segments listed: "
          f"newest frame listed is {statistics.median(edge_ages):.0f} ms old (median; max {max(edge_ages):.0f}); "
          f"a player starting 3 target durations from the end shows a frame {statistics.median(start_lags):.0f} ms "
          f"old (median; max {max(start_lags):.0f}) at best: its glass-to-glass latency from then on")
    assert all(0 < age < 3000 for age in edge_ages), edge_ages
    assert all(age < lag < 8000 for age, lag in zip(edge_ages, start_lags)), start_lags


def test_the_live_tile_plays_hls_where_there_is_no_media_source(site: Site) -> None:
    """live.js's fallback: no MediaSource, native HLS -> the tile's <video> plays the playlist, live."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            context = browser.new_context(viewport={"width": 1366, "height": 768})
            context.add_init_script(NO_MEDIA_SOURCE_JS)
            page = context.new_page()
            page.set_default_timeout(30_000)
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(f"uncaught exception: {error}"))
            page.goto(f"http://127.0.0.1:{site.port}/")
            assert page.evaluate("!window.MediaSource && !window.ManagedMediaSource")
            page.get_by_role("heading", name=LABELS["signin.title"]).wait_for()
            page.get_by_label(LABELS["signin.name"]).fill("viewer")
            page.get_by_label(LABELS["signin.password"]).fill(PASSWORDS["viewer"])
            page.get_by_role("button", name=LABELS["signin.submit"]).click()
            page.get_by_role("heading", name=LABELS["cameras.title"]).wait_for()
            video = page.locator(".tile").filter(
                has=page.locator(".tile-name", has_text=re.compile("^gate$"))).locator("video")
            handle = video.element_handle()
            page.wait_for_function(PLAYING_JS, arg=handle)
            assert page.evaluate("(v) => v.currentSrc", handle).endswith("/api/cameras/gate/live.m3u8")
            # a shot every 0.5 s, at least 16, until 12 different frames were shown: a stall of the native
            # player on a loaded machine delays this but does not fail it; a picture that never moves does
            shots, numbers = [], []
            deadline = time.monotonic() + 20
            while (len(shots) < 16 or len(set(numbers)) < 12) and time.monotonic() < deadline:
                shots.append(page.evaluate(VIDEO_FRAME_JS, [handle, 16]))
                numbers.append(counter_on_screen(shots[-1]))
                page.wait_for_timeout(500)
        finally:
            browser.close()
    assert not problems, problems
    pushes = read_push_log(site, "gate")
    assert None not in numbers, numbers
    assert len(set(numbers)) >= 12, f"the picture moves on: {numbers}"
    latencies = [shot["now"] - sent_ms(pushes, number, shot["now"]) for shot, number in zip(shots, numbers)]
    print(f"\nlive HLS in the UI's tile (Chromium's native HLS, no Media Source): glass-to-glass latency over "
          f"{len(latencies)} samples in {(shots[-1]['now'] - shots[0]['now']) / 1000:.1f} s: median "
          f"{statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms")
    assert all(0 < latency < 10_000 for latency in latencies), latencies
