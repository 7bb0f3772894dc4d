"""Live view glass-to-glass latency (issue 11: "under 2 s glass to glass on the LAN"), and where it goes.

Real components, one machine: the RTSP test camera (edgenvr.simulator, a clip whose frames carry their index as a
barcode), a real `edgenvr run` with [web] recording it, a viewer made with `edgenvr user add`, and a headless
Chromium (Playwright, /usr/bin/chromium) that signs in through the form and watches the camera grid's live tile,
i.e. the UI's own live.js, Media Source and <video>.

The camera's clock is in the picture: the camera writes a push log (`SimulatedCamera(push_log=...)`: a line
`FRAME_INDEX WALL_TIME_NS` per access unit as it pushes it into its RTSP pipeline). About --rate times a second
(jittered, so samples fall at every phase of the fragment cycle) the page draws the tile's <video> into a canvas,
reads the counter's rows and Date.now() in one go; the counter is decoded in Python (`decode_frame_counter` on the
luma of the browser's RGB); latency = that screen time - the camera's latest push of that frame before it. Both
are the machine's CLOCK_REALTIME (checked: the page's Date.now() lies between two readings of ours).

Printed: median / p95 / max glass-to-glass latency, PASS/FAIL against 2 s (median); and in the same run:
  * the floor: the camera's RTSP stream read directly with PyAV in a process of its own (another client of the
    same shared stream, during the window; frames decoded as they arrive from the first key frame on, one decoder
    thread): latency from push to a decoded frame, the part edgenvr cannot remove as long as it reads cameras with
    libav (the camera, the network, libav's RTSP demuxer and H.264 parser). Its first 5 s are left out of the
    figures (libav's stream probe delivers the first frames up to ~1 s late, once per connection), and shown
    apart. Beside it, the same stream depayloaded by GStreamer (`rtspsrc ! rtph264depay`, under Debian's
    python3 that runs the simulator; an access unit is whole at its RTP marker bit) and decoded with PyAV
    afterwards: the camera and the network alone;
  * where the time goes: an init script in the page notes every binary WebSocket message of the live view
    (Date.now() on arrival, the bytes); afterwards each run of init + fragments is decoded with PyAV, so every
    frame's fragment and arrival is known. Per sample: push -> its fragment in the page (the camera and RTSP, the
    wait for the fragment to close, the recorder's muxer, the live feed, the relay, the WebSocket) and fragment in
    the page -> on screen (Media Source buffering and playout); per fragment: its duration, the age of its oldest
    and newest frame on arrival, and arrival - (push of the frame that closed it + the PyAV floor's packet
    read), i.e. what the recorder's muxer, the live feed, zmq, the relay and the WebSocket add;
  * the player's own events during the window: stalls (`waiting` -> `playing`, how long), seeks (live.js jumping
    to the live edge) and the Media Source buffer ahead of the playhead at each sample.

    .venv/bin/python benchmarks/live_latency.py                       # QVGA 25 fps, GOP 1 s, 30 s window, ~1 min
    .venv/bin/python benchmarks/live_latency.py --gop 50 --seconds 60 # a camera with a 2 s GOP
    .venv/bin/python benchmarks/live_latency.py --hiccup-ms 600       # pause the web process once, mid-window

Options: --seconds (window), --rate (samples per second), --width/--height/--fps/--gop/--bitrate (the clip; cached
under $EDGENVR_TEST_CLIPS), --segment-seconds (recording.segment_seconds, default the config's 10), --hiccup-ms N
(SIGSTOP the web process for N ms from the middle of the window, at a sample with under 200 ms buffered ahead,
i.e. just before a fragment is due, then SIGCONT: a busy box's hiccup that makes that fragment about N ms late, to
see how the player recovers), --keep (keep the run's directory), --json (the figures as one JSON object on the last line).
Targets are printed as PASS/FAIL, never asserted: a benchmark reports, a test decides (tests/test_live_latency.py).

Measured on the 2-core development machine (loopback): QVGA, GOP 1 s, 60 s window: median 1083 ms, p95 1104, max
1116 (PASS); floor 41 ms (of it 40 ms libav's parser; the camera and loopback 0.4 ms). 1080p 4 Mbit/s GOP 2 s:
median 1171 ms, floor 48 ms. The 1 s fragment (recording's `frag_duration`) is ~1000 ms of it; the recorder, live
feed, relay and WebSocket 2 ms (QVGA) to 20 ms (1080p); Chromium's playout 40-110 ms. A hiccup is never made up
unless it puts more than live.js's MAX_LAG_S (2 s) in the buffer: after --hiccup-ms 600 latency stayed for the rest of
the window (16 s) at ~1.62 s, after 950 at ~1.95 s; 1050 went over and live.js jumped (one ~0.7 s freeze, back to ~1.08 s).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgenvr.simulator import (
    CLIP_CACHE,
    SimulatedCamera,
    decode_frame_counter,
    make_clip,
    simulator_unavailable_reason,
)
from edgenvr.simulator.screen_reading import VIDEO_FRAME_JS, counter_on_screen

TARGET_MS = 2000
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "password-1"
FLOOR_WARMUP_S = 5.0
STATIC = Path(__file__).resolve().parent.parent / "edgenvr" / "web" / "static"

# Notes, from the page's first script on, every binary message of the live view's WebSocket and the <video>
# events that tell how playback goes. Listeners only: nothing the page does changes.
INSTRUMENT_JS = """(() => {
  const pieces = [];
  const events = [];
  window.__latency = { pieces, events };
  const Native = window.WebSocket;
  window.WebSocket = function (url, protocols) {
    const socket = protocols === undefined ? new Native(url) : new Native(url, protocols);
    if (String(url).endsWith("/live")) {
      socket.addEventListener("message", (event) => {
        if (typeof event.data !== "string") pieces.push({ t: Date.now(), data: event.data.slice(0) });
      });
    }
    return socket;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  for (const type of ["waiting", "playing", "seeking", "seeked", "stalled", "pause"]) {
    document.addEventListener(type, (event) => {
      if (event.target instanceof HTMLVideoElement) {
        events.push({ type, t: Date.now(), current: event.target.currentTime });
      }
    }, true);
  }
})();"""

COLLECT_JS = """() => {
  const { pieces, events } = window.__latency;
  const encode = (buffer) => {
    const bytes = new Uint8Array(buffer);
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(text);
  };
  return { pieces: pieces.map((p) => ({ t: p.t, data: encode(p.data) })), events };
}"""

PLAYING_JS = "(video) => video.readyState >= 2 && !video.paused && !video.seeking && video.currentTime > 0"

# The floor: a process of its own reads the camera over RTSP with PyAV (TCP, as the recorder does) and notes,
# per decoded frame from the first key frame on, its counter and when the packet and the frame were there.
FLOOR_CHILD = r"""
import sys, time, av
from edgenvr.simulator import decode_frame_counter
url, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
opened = time.time_ns()
container = av.open(url, options={"rtsp_transport": "tcp"}, timeout=(10, 5))
stream = container.streams.video[0]
stream.codec_context.thread_count = 1   # frame threads would hold frames back
lines = [f"opened {opened} {time.time_ns()}"]
deadline = time.monotonic() + seconds
keyed = False
for packet in container.demux(stream):
    arrived = time.time_ns()
    keyed = keyed or packet.is_keyframe
    if keyed:
        for frame in packet.decode():
            number = decode_frame_counter(frame.to_ndarray(format="gray"))
            lines.append(f"{-1 if number is None else number} {arrived} {time.time_ns()}")
    if time.monotonic() > deadline:
        break
container.close()
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
"""

# The camera and the network alone: GStreamer's RTSP client under Debian's python3 (python3-gi, the simulator's
# interpreter), each access unit noted when the depayloader hands it over (at its RTP marker bit), decoded later.
GST_PYTHON = "/usr/bin/python3"
GST_FLOOR_CHILD = r"""
import struct, sys, time
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
from gi.repository import Gst, GstApp
Gst.init(None)
url, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
pipeline = Gst.parse_launch(f"rtspsrc location={url} protocols=tcp latency=0 ! rtph264depay "
                            "! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false")
sink = pipeline.get_by_name("sink")
pipeline.set_state(Gst.State.PLAYING)
deadline = time.monotonic() + seconds
with open(out, "wb") as f:
    while time.monotonic() < deadline:
        sample = sink.try_pull_sample(Gst.SECOND)
        if sample is None:
            continue
        arrived = time.time_ns()
        buffer = sample.get_buffer()
        data = buffer.extract_dup(0, buffer.get_size())
        f.write(struct.pack(">QI", arrived, len(data)) + data)
pipeline.set_state(Gst.State.NULL)
"""


class BenchmarkError(RuntimeError):
    pass


# --- figures ---------------------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    places = 1 if statistics.median(values) < 10 else 0
    return (f"median {statistics.median(values):6.{places}f} ms  p95 {pct(values, 95):6.{places}f} ms  "
            f"max {max(values):6.{places}f} ms")


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- the camera's clock ------------------------------------------------------------------------------------------

class PushLog:
    """Frame index -> the wall times (ms) the camera sent it, sorted."""

    def __init__(self, path: Path) -> None:
        pushes: dict[int, list[float]] = {}
        for line in path.read_text().splitlines():
            index, wall_ns = line.split()
            pushes.setdefault(int(index), []).append(int(wall_ns) / 1e6)
        self.pushes = {index: sorted(times) for index, times in pushes.items()}

    def sent_ms(self, index: int, before_ms: float) -> float | None:
        """When the camera sent frame `index` seen at `before_ms`: its latest push before then."""
        times = self.pushes.get(index, [])
        at = bisect_right(times, before_ms)
        return times[at - 1] if at else None


# --- what reached the page ---------------------------------------------------------------------------------------

@dataclass
class Fragment:
    arrived_ms: float
    counters: list[int] = field(default_factory=list)   # its frames, in order


def box_kind(data: bytes) -> bytes:
    return data[4:8]


def decode_pieces(pieces: list[tuple[float, bytes]]) -> list[Fragment]:
    """Each run of init + fragments decoded with PyAV; every frame put with the fragment its bytes came in."""
    import av

    fragments: list[Fragment] = []
    runs: list[tuple[bytes, list[tuple[float, bytes]]]] = []
    for arrived, data in pieces:
        if box_kind(data) == b"ftyp":
            runs.append((data, []))
        elif box_kind(data) == b"moof" and runs:
            runs[-1][1].append((arrived, data))
    for init, run in runs:
        if not run:
            continue
        ends: list[int] = []   # byte offset where each fragment ends in init + fragments
        offset = len(init)
        for _, data in run:
            offset += len(data)
            ends.append(offset)
        mine = [Fragment(arrived) for arrived, _ in run]
        blob = init + b"".join(data for _, data in run)
        with av.open(io.BytesIO(blob), format="mp4") as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pos is None or packet.pos < 0:
                    continue
                where = bisect_right(ends, packet.pos)
                for frame in packet.decode():
                    number = decode_frame_counter(frame.to_ndarray(format="gray"))
                    if number is not None and where < len(mine):
                        mine[where].counters.append(number)
        fragments += mine
    return fragments


def read_gst_floor(path: Path, pushes: PushLog) -> list[float]:
    """Push -> access unit out of GStreamer's depayloader, per frame from the first key frame on."""
    import av

    codec = av.CodecContext.create("h264", "r")
    codec.thread_count = 1
    data = path.read_bytes()
    offset = 0
    keyed = False
    first_ms: float | None = None
    delays: list[float] = []
    while offset + 12 <= len(data):
        arrived_ns, size = struct.unpack_from(">QI", data, offset)
        unit = data[offset + 12:offset + 12 + size]
        offset += 12 + size
        try:
            frames = codec.decode(av.Packet(unit))
        except av.error.FFmpegError:
            continue
        for frame in frames:
            keyed = keyed or frame.key_frame
            number = decode_frame_counter(frame.to_ndarray(format="gray")) if keyed else None
            sent = pushes.sent_ms(number, arrived_ns / 1e6) if number is not None else None
            if sent is not None:
                first_ms = arrived_ns / 1e6 if first_ms is None else first_ms
                if arrived_ns / 1e6 - first_ms >= FLOOR_WARMUP_S * 1000:   # as the PyAV floor's
                    delays.append(arrived_ns / 1e6 - sent)
    return delays


def read_floor(path: Path, pushes: PushLog) -> dict[str, Any]:
    lines = path.read_text().split("\n")
    _, opened_ns, open_done_ns = lines[0].split()
    opened_ms = int(opened_ns) / 1e6
    steady: list[float] = []
    steady_packet: list[float] = []
    first: float | None = None
    unreadable = 0
    for line in lines[1:]:
        if not line:
            continue
        number, arrived_ns, decoded_ns = (int(x) for x in line.split())
        if number < 0:
            unreadable += 1
            continue
        decoded_ms = decoded_ns / 1e6
        sent = pushes.sent_ms(number, decoded_ms)
        if sent is None:
            continue
        if first is None:
            first = decoded_ms - sent
        if decoded_ms - opened_ms >= FLOOR_WARMUP_S * 1000:
            steady.append(decoded_ms - sent)
            steady_packet.append(arrived_ns / 1e6 - sent)
    return {"frames": len(steady), "decoded_ms": steady, "packet_ms": steady_packet, "first_frame_ms": first,
            "open_ms": int(open_done_ns) / 1e6 - opened_ms, "unreadable": unreadable}


# --- the site ----------------------------------------------------------------------------------------------------

def edgenvr_cli(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "edgenvr", *args], input=stdin, capture_output=True, text=True,
                          check=False, timeout=120)
    if done.returncode != 0:
        raise BenchmarkError(f"edgenvr {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_log(path: Path, process: subprocess.Popen[bytes], text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise BenchmarkError(f"edgenvr exited with {process.returncode}:\n"
                                 f"{path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    raise BenchmarkError(f"{text!r} not logged within {timeout:.0f} s:\n{path.read_text(errors='replace')[-3000:]}")


def web_process(supervisor: subprocess.Popen[bytes]) -> int:
    import psutil

    for child in psutil.Process(supervisor.pid).children(recursive=True):
        try:
            if child.name() == "web":
                return child.pid
        except psutil.Error:
            continue
    raise BenchmarkError("no web process under the supervisor")


# --- the run -----------------------------------------------------------------------------------------------------

def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    gop = args.gop or args.fps
    name = (f"latency-{args.width}x{args.height}-{args.fps}fps-gop{gop}-{args.clip_seconds}s"
            + (f"-{args.bitrate}bps" if args.bitrate else "") + ".h264")
    clip = make_clip(CLIP_CACHE / name, codec="h264", width=args.width, height=args.height, fps=args.fps,
                     seconds=args.clip_seconds, gop=gop, bitrate=args.bitrate)
    push_path = root / "camera.push"
    camera = SimulatedCamera({"main": (clip, "h264", args.fps)}, push_log=push_path, log_path=root / "camera.log")
    camera.start()
    supervisor: subprocess.Popen[bytes] | None = None
    floor_children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        port = free_port()
        config_path = root / "edgenvr.toml"
        config_path.write_text("\n".join([
            "[storage]", f"data_dir = {json.dumps(str(root / 'data'))}", 'quota = "90%"', 'min_free = "0"',
            "[recording]", f"segment_seconds = {args.segment_seconds:g}",
            "[motion]", "enabled = false", "tamper = false",
            "[web]", f'listen = "127.0.0.1:{port}"', "tls = false",
            "[[cameras]]", 'id = "gate"', f"url = {json.dumps(camera.url('main'))}"]) + "\n")
        # the sign-in form shows once the box has an admin; the viewer is who watches
        for user, role in (("admin", "admin"), ("viewer", "viewer")):
            edgenvr_cli("user", "add", "--config", str(config_path), "--name", user, "--role", role,
                        "--password-stdin", stdin=f"{user}-{PASSWORD}\n")
        log_path = root / "edgenvr.log"
        with open(log_path, "ab") as log_file:
            supervisor = subprocess.Popen([sys.executable, "-m", "edgenvr", "run", "--config", str(config_path)],
                                          stdout=log_file, stderr=subprocess.STDOUT)
        wait_for_log(log_path, supervisor, "web UI at")
        wait_for_log(log_path, supervisor, "recording 1 camera")
        time.sleep(3)   # the recorder has its stream (and an init segment to send)

        # The floor, over the same window (started first: the browser needs a few seconds to sign in and play).
        floor_seconds = args.seconds + 15
        for reader, python, code in (("pyav", sys.executable, FLOOR_CHILD), ("gst", GST_PYTHON, GST_FLOOR_CHILD)):
            with open(root / f"floor-{reader}.log", "wb") as floor_log:
                floor_children[reader] = subprocess.Popen(
                    [python, "-c", code, camera.url("main"), str(floor_seconds), str(root / f"floor-{reader}.out")],
                    stdout=subprocess.DEVNULL, stderr=floor_log)
        browser_figures = watch(args, port, supervisor)
        for reader, child in floor_children.items():
            child.wait(timeout=floor_seconds + 60)
            if child.returncode != 0:
                raise BenchmarkError(f"the {reader} floor reader failed:\n"
                                     f"{(root / f'floor-{reader}.log').read_text()[-2000:]}")
        time.sleep(1.5)   # the push log is flushed at least once a second
        pushes = PushLog(push_path)
        floor = read_floor(root / "floor-pyav.out", pushes)
        floor["gst_ms"] = read_gst_floor(root / "floor-gst.out", pushes)
        return analyse(args, gop, browser_figures, pushes, floor)
    finally:
        for child in floor_children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
        if supervisor is not None and supervisor.poll() is None:
            supervisor.send_signal(signal.SIGTERM)
            try:
                supervisor.wait(30)
            except subprocess.TimeoutExpired:
                supervisor.kill()
                supervisor.wait()
        camera.stop()


def watch(args: argparse.Namespace, port: int, supervisor: subprocess.Popen[bytes]) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    labels = json.loads((STATIC / "i18n" / "id.json").read_text(encoding="utf-8"))   # the UI's default language
    rng = random.Random(11)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1366, "height": 768})
            context.add_init_script(INSTRUMENT_JS)
            page = context.new_page()
            page.set_default_timeout(30_000)
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(f"uncaught exception: {error}"))
            page.on("console", lambda message: problems.append(f"console: {message.text}")
                    if message.type == "error" else None)
            before_ms = time.time_ns() / 1e6
            page_ms = page.evaluate("Date.now()")
            after_ms = time.time_ns() / 1e6
            if not before_ms - 1 <= page_ms <= after_ms + 1:
                raise BenchmarkError(f"the page's clock is not ours: {before_ms} <= {page_ms} <= {after_ms} fails")
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_role("heading", name=labels["signin.title"]).wait_for()
            page.get_by_label(labels["signin.name"]).fill("viewer")
            page.get_by_label(labels["signin.password"]).fill(f"viewer-{PASSWORD}")
            page.get_by_role("button", name=labels["signin.submit"]).click()
            page.get_by_role("heading", name=labels["cameras.title"]).wait_for()
            video = page.locator(".tile video").first
            handle = video.element_handle()
            opened_ms = time.time() * 1000
            page.wait_for_function(PLAYING_JS, arg=handle)
            playing_ms = time.time() * 1000
            samples: list[dict[str, Any]] = []
            start = time.monotonic()
            hiccup_at = args.seconds / 2 if args.hiccup_ms else None
            hiccup: dict[str, float] | None = None
            period = 1 / args.rate
            next_at = 0.0
            while time.monotonic() - start < args.seconds:
                samples.append(page.evaluate(VIDEO_FRAME_JS, [handle, max(16, args.height // 16)]))
                due = samples[-1]["end"] is not None and samples[-1]["end"] - samples[-1]["current"] < 0.2
                if hiccup_at is not None and time.monotonic() - start >= hiccup_at and due:
                    hiccup_at = None
                    pid = web_process(supervisor)
                    hiccup = {"start_ms": time.time() * 1000}
                    os.kill(pid, signal.SIGSTOP)
                    try:
                        time.sleep(args.hiccup_ms / 1000)
                    finally:
                        os.kill(pid, signal.SIGCONT)
                    hiccup["end_ms"] = time.time() * 1000
                next_at += period * rng.uniform(0.6, 1.4)
                page.wait_for_timeout(max(0.0, next_at - (time.monotonic() - start)) * 1000)
            collected = page.evaluate(COLLECT_JS)
            context.close()
        finally:
            browser.close()
    pieces = [(p["t"], base64.b64decode(p["data"])) for p in collected["pieces"]]
    return {"samples": samples, "pieces": pieces, "events": collected["events"], "opened_ms": opened_ms,
            "playing_ms": playing_ms, "hiccup": hiccup}


def analyse(args: argparse.Namespace, gop: int, seen: dict[str, Any], pushes: PushLog,
            floor: dict[str, Any]) -> dict[str, Any]:
    frame_ms = 1000 / args.fps
    fragments = decode_pieces(seen["pieces"])
    arrivals: dict[int, list[tuple[float, int]]] = {}   # counter -> (arrival, fragment index)
    for i, fragment in enumerate(fragments):
        for number in fragment.counters:
            arrivals.setdefault(number, []).append((fragment.arrived_ms, i))

    latencies: list[float] = []
    delivery: list[float] = []     # push -> its fragment in the page
    in_page: list[float] = []      # fragment in the page -> on screen
    ahead: list[float] = []
    unreadable = 0
    rows: list[dict[str, Any]] = []
    for shot in seen["samples"]:
        number = counter_on_screen(shot)
        if number is None:
            unreadable += 1
            continue
        sent = pushes.sent_ms(number, shot["now"])
        if sent is None:
            raise BenchmarkError(f"frame {number} on screen at {shot['now']} was never sent before")
        latency = shot["now"] - sent
        latencies.append(latency)
        got = [a for a, _ in arrivals.get(number, []) if sent <= a <= shot["now"]]
        row = {"at_s": (shot["now"] - seen["playing_ms"]) / 1000, "frame": number, "latency_ms": latency}
        if got:
            delivery.append(got[0] - sent)
            in_page.append(shot["now"] - got[0])
            row["delivery_ms"], row["in_page_ms"] = got[0] - sent, shot["now"] - got[0]
        if shot["end"] is not None:
            ahead.append((shot["end"] - shot["current"]) * 1000)
            row["ahead_ms"] = ahead[-1]
        rows.append(row)

    # per fragment: how long, how old its frames were on arrival, and what the recorder and relay added
    packet_floor_ms = med(floor["packet_ms"])
    window = (seen["samples"][0]["now"], seen["samples"][-1]["now"]) if seen["samples"] else (0, 0)
    durations: list[float] = []
    oldest: list[float] = []
    newest: list[float] = []
    added: list[float] = []
    for i, fragment in enumerate(fragments):
        if not fragment.counters or not window[0] - 2000 <= fragment.arrived_ms <= window[1]:
            continue
        first = pushes.sent_ms(fragment.counters[0], fragment.arrived_ms)
        last = pushes.sent_ms(fragment.counters[-1], fragment.arrived_ms)
        if first is None or last is None:
            continue
        durations.append(len(fragment.counters) * frame_ms)
        oldest.append(fragment.arrived_ms - first)
        newest.append(fragment.arrived_ms - last)
        following = fragments[i + 1] if i + 1 < len(fragments) else None
        if following is not None and following.counters:
            # the muxer closes a fragment when the packet after its last frame (the next fragment's first) reaches it
            closer = pushes.pushes.get(following.counters[0], [])
            closer = [t for t in closer if t <= fragment.arrived_ms]
            if closer:
                added.append(fragment.arrived_ms - max(closer) - packet_floor_ms)

    stalls: list[float] = []
    seeks = 0
    waiting_since: float | None = None
    for event in seen["events"]:
        if not window[0] <= event["t"] <= window[1] + 1000:
            continue
        if event["type"] == "waiting" and waiting_since is None:
            waiting_since = event["t"]
        elif event["type"] == "playing" and waiting_since is not None:
            stalls.append(event["t"] - waiting_since)
            waiting_since = None
        elif event["type"] == "seeking":
            seeks += 1

    return {
        "clip": {"width": args.width, "height": args.height, "fps": args.fps, "gop": gop, "bitrate": args.bitrate},
        "segment_seconds": args.segment_seconds, "window_s": (window[1] - window[0]) / 1000,
        "time_to_play_ms": seen["playing_ms"] - seen["opened_ms"], "hiccup": seen["hiccup"],
        "samples": len(latencies), "unreadable_samples": unreadable, "latency_ms": latencies,
        "median_ms": med(latencies), "p95_ms": pct(latencies, 95), "max_ms": max(latencies, default=float("nan")),
        "delivery_ms": delivery, "in_page_ms": in_page, "ahead_ms": ahead,
        "fragments": {"count": len(durations), "duration_ms": durations, "oldest_age_ms": oldest,
                      "newest_age_ms": newest, "recorder_relay_ms": added},
        "stalls_ms": stalls, "seeks": seeks, "floor": floor, "rows": rows,
        "pass": bool(latencies) and med(latencies) < TARGET_MS,
    }


def report(figures: dict[str, Any]) -> None:
    clip = figures["clip"]
    floor = figures["floor"]
    fragments = figures["fragments"]
    hiccup = figures["hiccup"]
    print(f"\nlive view glass to glass: {clip['width']}x{clip['height']} {clip['fps']} fps H.264, GOP {clip['gop']} "
          f"({clip['gop'] / clip['fps']:g} s), {figures['segment_seconds']:g} s segments; one viewer (headless "
          f"Chromium, the camera grid's live tile); {figures['samples']} samples over {figures['window_s']:.1f} s"
          + (f", {figures['unreadable_samples']} unreadable" if figures["unreadable_samples"] else ""))
    if hiccup:
        print(f"  (the web process was paused {hiccup['end_ms'] - hiccup['start_ms']:.0f} ms in the middle of the "
              "window)")
    print(f"  glass to glass (push -> on screen)     {spread(figures['latency_ms'])}")
    print(f"  floor (push -> frame decoded by PyAV)  {spread(floor['decoded_ms'])}   [{floor['frames']} frames; "
          f"first frame after open {floor['first_frame_ms']:.0f} ms, left out with the first {FLOOR_WARMUP_S:g} s]")
    print(f"    of which packet read by libav        {spread(floor['packet_ms'])}")
    print(f"    camera + network alone (GStreamer)   {spread(floor['gst_ms'])}   [{len(floor['gst_ms'])} frames; "
          "rtspsrc ! rtph264depay: an access unit is whole at its RTP marker bit]")
    verdict = "PASS" if figures["pass"] else "FAIL"
    print(f"  target: median glass to glass < {TARGET_MS} ms: {verdict} ({figures['median_ms']:.0f} ms)")
    print("where the time goes (per displayed frame):")
    print(f"  push -> its fragment in the page       {spread(figures['delivery_ms'])}")
    print(f"  fragment in the page -> on screen      {spread(figures['in_page_ms'])}")
    print(f"  Media Source buffered ahead of the playhead at the samples: {spread(figures['ahead_ms'])}")
    print(f"fragments received in the window: {fragments['count']}, duration {spread(fragments['duration_ms'])}")
    print(f"  age of a fragment's oldest frame on arrival {spread(fragments['oldest_age_ms'])}")
    print(f"  age of a fragment's newest frame on arrival {spread(fragments['newest_age_ms'])}")
    print(f"  recorder + live feed + relay + WebSocket   {spread(fragments['recorder_relay_ms'])}  "
          "(arrival - push of the frame that closed the fragment - libav's packet read)")
    camera = med(floor["gst_ms"])
    libav = med(floor["packet_ms"]) - camera
    relay = med(fragments["recorder_relay_ms"])
    filling = med(fragments["oldest_age_ms"]) - med(floor["packet_ms"]) - relay
    playout = figures["median_ms"] - med(fragments["oldest_age_ms"])
    print(f"the median, summed up: camera + network {camera:.1f} ms + libav's H.264 parser (an access unit leaves it "
          f"when the next one starts) {libav:.0f} ms + filling a fragment (from its first frame to the next "
          f"fragment's first, whose arrival closes it) {filling:.0f} ms + recorder, live feed, relay, WebSocket {relay:.0f} ms = the age of a "
          f"fragment's oldest frame on arrival ({med(fragments['oldest_age_ms']):.0f} ms); + playout {playout:.0f} ms "
          "(the playhead behind that frame when its fragment arrives: the browser's decoding and drawing, and the "
          "stalls so far, which playback never makes up)")
    stalls = figures["stalls_ms"]
    print(f"player: {len(stalls)} stalls ({sum(stalls):.0f} ms in all), {figures['seeks']} seeks (live.js jumping to "
          f"the live edge) in the window; first picture {figures['time_to_play_ms']:.0f} ms after the grid opened")
    print("samples (s after playing, frame, latency, push->page, page->screen, buffered ahead):")
    for row in figures["rows"]:
        print(f"  {row['at_s']:6.1f}  {row['frame']:5d}  {row['latency_ms']:6.0f}  {row.get('delivery_ms', float('nan')):6.0f}"
              f"  {row.get('in_page_ms', float('nan')):6.0f}  {row.get('ahead_ms', float('nan')):6.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30, help="sampling window (default 30)")
    parser.add_argument("--rate", type=float, default=2, help="samples per second (default 2)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop", type=int, default=None, help="key frame interval in frames (default: fps, 1 s)")
    parser.add_argument("--bitrate", type=int, default=None, help="bit/s (default: constant quality)")
    parser.add_argument("--clip-seconds", type=int, default=120, help="the counter wraps after this (default 120)")
    parser.add_argument("--segment-seconds", type=float, default=10)
    parser.add_argument("--hiccup-ms", type=float, default=0)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.clip_seconds * args.fps > 65535:
        parser.error("the counter has 16 bits: clip-seconds x fps must stay under 65536 frames")
    reason = simulator_unavailable_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    if not os.access(CHROMIUM, os.X_OK):
        print(f"{CHROMIUM} not found (apt-get install chromium)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="edgenvr-live-latency-"))
    try:
        figures = run(args, root)
    except BenchmarkError as error:
        print(f"live latency benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    report(figures)
    if args.json:
        print(json.dumps({k: v for k, v in figures.items() if k != "rows"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
