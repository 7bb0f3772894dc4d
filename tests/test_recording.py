"""Recording behaviour a site relies on, from one real ~70 s run of `edgenvr run` against real RTSP cameras.

One supervisor records eight cameras at once, each camera served by its own GStreamer RTSP server process:
two steady cameras (H.264 and H.265), one whose server is stopped for 20 s, one that freezes (SIGSTOP),
one that changes resolution mid-stream, and three that never work (wrong URL, refused port, audio only).
The steady cameras must be untouched by everything the others do.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import av
import pytest
from conftest import CLIP_CACHE, config_text, start_supervisor

from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.index.queries import camera_states, events, gaps, open_readonly, segments
from edgenvr.simulator import SimulatedCamera, make_clip
from edgenvr.storage.layout import StorageLayout

RUN_SECONDS = 70
UNPLUG_AT, UNPLUG_FOR = 15, 20
FREEZE_AT = 12
READ_TIMEOUT_S = 5
FRAME_MS = 40
PASSWORD = "s3cret-pw"


@dataclass
class Scenario:
    layout: StorageLayout
    log: str
    transitions: list[tuple[int, str, str, str]] = field(default_factory=list)  # (seen_ms, camera, state, reason)
    unplugged_ms: int = 0
    replugged_ms: int = 0
    frozen_ms: int = 0
    started_ms: int = 0
    stopped_ms: int = 0
    resolution_clips: tuple[tuple[int, int], ...] = ()

    def segments(self, camera: str) -> list:
        with open_readonly(self.layout) as conn:
            return list(segments(conn, self.layout, camera))

    def gaps(self, camera: str) -> list:
        with open_readonly(self.layout) as conn:
            return [g for g in gaps(conn, self.layout, camera) if g.end_ms is not None]

    def states(self, camera: str) -> list[tuple[int, str, str, str]]:
        return [t for t in self.transitions if t[1] == camera]


def _resolution_change_clip() -> Path:
    """A camera reconfigured between two resolutions: two clips back to back in one elementary stream."""
    small = make_clip(CLIP_CACHE / "res-a.h264", width=320, height=240, fps=25, seconds=3)
    large = make_clip(CLIP_CACHE / "res-b.h264", width=352, height=288, fps=25, seconds=3)
    target = CLIP_CACHE / "res-change.h264"
    target.write_bytes(small.read_bytes() + large.read_bytes())
    return target


def _watch_states(layout: StorageLayout, scenario: Scenario, stop: threading.Event) -> None:
    """What `edgenvr status` would show, sampled twice a second."""
    last: dict[str, tuple[str, str]] = {}
    while not stop.is_set():
        try:
            with open_readonly(layout) as conn:
                for row in camera_states(conn):
                    current = (row["state"], row["state_reason"])
                    if last.get(row["id"]) != current:
                        last[row["id"]] = current
                        scenario.transitions.append((SYSTEM_CLOCK.now_ms(), row["id"], *current))
        except FileNotFoundError:
            pass
        stop.wait(0.5)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, h264_clip: Path, h265_clip: Path,
             simulator_ready: None) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("recording")
    change_clip = _resolution_change_clip()
    servers = {
        "steady": SimulatedCamera({"main": (h264_clip, "h264")}, audio_mounts=["audio"], log_path=root / "steady.log"),
        "h265": SimulatedCamera({"main": (h265_clip, "h265")}, log_path=root / "h265.log"),
        "unplugged": SimulatedCamera({"main": (h264_clip, "h264")}, log_path=root / "unplugged.log"),
        "frozen": SimulatedCamera({"main": (h264_clip, "h264")}, log_path=root / "frozen.log"),
        "reconfigured": SimulatedCamera({"main": (change_clip, "h264")}, log_path=root / "reconfigured.log"),
    }
    for server in servers.values():
        server.start()
    steady = servers["steady"]
    cameras = {
        "steady-h264": steady.url("main"),
        "steady-h265": servers["h265"].url("main"),
        "unplugged": servers["unplugged"].url("main"),
        "frozen": servers["frozen"].url("main"),
        "reconfigured": servers["reconfigured"].url("main"),
        "wrong-url": steady.url("main").replace("127.0.0.1", f"admin:{PASSWORD}@127.0.0.1").replace("/main", "/no-such-path"),
        "refused": "rtsp://127.0.0.1:9/stream",
        "audio-only": steady.url("audio"),
    }
    data_dir = root / "data"
    config_path = root / "edgenvr.toml"
    config_path.write_text(config_text(data_dir, cameras))
    layout = StorageLayout(data_dir)
    scenario = Scenario(layout, "")
    stop_watch = threading.Event()
    watcher = threading.Thread(target=_watch_states, args=(layout, scenario, stop_watch), daemon=True)
    supervisor = start_supervisor(config_path, root / "edgenvr.log")
    try:
        supervisor.wait_for_log("recording 8 cameras")
        scenario.started_ms = SYSTEM_CLOCK.now_ms()
        watcher.start()
        t0 = time.monotonic()

        def at(seconds: float) -> None:
            time.sleep(max(0.0, t0 + seconds - time.monotonic()))

        at(FREEZE_AT)
        servers["frozen"].freeze()
        scenario.frozen_ms = SYSTEM_CLOCK.now_ms()
        at(UNPLUG_AT)
        servers["unplugged"].stop()
        scenario.unplugged_ms = SYSTEM_CLOCK.now_ms()
        at(UNPLUG_AT + UNPLUG_FOR)
        servers["unplugged"].restart()
        scenario.replugged_ms = SYSTEM_CLOCK.now_ms()
        at(FREEZE_AT + 30)
        servers["frozen"].thaw()
        at(RUN_SECONDS)
        scenario.stopped_ms = SYSTEM_CLOCK.now_ms()
        assert supervisor.stop() == 0
    finally:
        stop_watch.set()
        if supervisor.process.poll() is None:
            supervisor.kill()
        for server in servers.values():
            server.stop()
    scenario.log = supervisor.log()
    yield scenario


def _first_frame_is_key_and_decodes(path: str) -> tuple[bool, int, int]:
    """(first frame is a keyframe, frames decoded, decode errors) for a whole segment file."""
    errors = frames = 0
    first_key = None
    with av.open(path) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if first_key is None:
                first_key = packet.is_keyframe
            try:
                frames += len(packet.decode())
            except av.error.FFmpegError:
                errors += 1
    return bool(first_key), frames, errors


@pytest.mark.parametrize("camera", ["steady-h264", "steady-h265"])
def test_steady_cameras_record_contiguous_keyframe_aligned_segments(scenario: Scenario, camera: str) -> None:
    rows = scenario.segments(camera)
    assert len(rows) >= 12, f"{camera}: only {len(rows)} segments in {RUN_SECONDS} s"
    expected_codec = "h264" if camera.endswith("h264") else "hevc"
    for previous, current in zip(rows, rows[1:]):
        assert abs(current.start_ms - previous.end_ms) <= FRAME_MS, (
            f"{camera}: {previous.end_ms} -> {current.start_ms} is a gap or overlap")
    decoded = 0
    for row in rows:
        assert row.codec == expected_codec and (row.width, row.height) == (320, 240)
        key, frames, errors = _first_frame_is_key_and_decodes(row.path)
        assert key, f"{row.path} does not start with a keyframe"
        assert errors == 0, f"{row.path}: {errors} decode errors"
        # the file really holds the time the index says it does (25 fps)
        assert abs(frames * FRAME_MS - (row.end_ms - row.start_ms)) <= 2 * FRAME_MS, row
        decoded += frames
    covered = rows[-1].end_ms - rows[0].start_ms
    assert abs(sum(r.end_ms - r.start_ms for r in rows) - covered) <= FRAME_MS * len(rows)
    # recorded from (about) the first second to the stop, nothing missing in between
    assert covered >= (scenario.stopped_ms - scenario.started_ms) - 3000
    assert abs(decoded * FRAME_MS - covered) <= 1000
    assert scenario.gaps(camera) == []


def test_unplugged_camera_leaves_one_gap_and_resumes_quickly(scenario: Scenario) -> None:
    found = scenario.gaps("unplugged")
    assert len(found) == 1, found
    gap = found[0]
    assert abs((gap.end_ms - gap.start_ms) - UNPLUG_FOR * 1000) <= 3000, gap
    assert abs(gap.start_ms - scenario.unplugged_ms) <= 1500, gap
    assert gap.end_ms - scenario.replugged_ms <= 5000, "recording resumed later than 5 s after the camera returned"
    assert "stream" in gap.reason or "connect" in gap.reason
    after = [r for r in scenario.segments("unplugged") if r.start_ms >= gap.end_ms]
    assert len(after) >= 3, "recording did not go on after the camera came back"
    # offline for more than 15 s: one offline event, closed when the camera came back, with its duration
    with open_readonly(scenario.layout) as conn:
        offline = events(conn, scenario.layout, "unplugged", "offline")
    assert len(offline) == 1, offline
    assert abs(offline[0].start_ms - scenario.unplugged_ms) <= 1500, offline
    assert offline[0].end_ms is not None and abs(offline[0].end_ms - gap.end_ms) <= 3000, (offline, gap)
    assert "back online after" in offline[0].detail


def test_frozen_camera_is_detected_within_the_read_timeout(scenario: Scenario) -> None:
    lost = [t for t in scenario.states("frozen") if t[2] in ("reconnecting", "offline")]
    assert lost, scenario.states("frozen")
    # the status poller samples every 0.5 s and the index commits every 1 s
    assert lost[0][0] - scenario.frozen_ms <= (READ_TIMEOUT_S + 3) * 1000, (lost[0], scenario.frozen_ms)
    found = scenario.gaps("frozen")
    assert len(found) == 1 and abs(found[0].start_ms - scenario.frozen_ms) <= 1500, found
    assert any(r.start_ms >= found[0].end_ms for r in scenario.segments("frozen")), "no recording after thaw"


@pytest.mark.parametrize("camera, expected", [
    ("wrong-url", "404"),
    ("refused", "Connection refused"),
    ("audio-only", "no video track"),
])
def test_broken_cameras_have_a_clear_state_and_log_line(scenario: Scenario, camera: str, expected: str) -> None:
    states = scenario.states(camera)
    assert any(state in ("reconnecting", "offline") and expected in reason for _, _, state, reason in states), states
    assert any(f"camera {camera}: " in line and expected in line for line in scenario.log.splitlines())
    assert scenario.segments(camera) == []


def test_no_recorder_crashed_and_no_password_leaked(scenario: Scenario) -> None:
    assert " exited with code" not in scenario.log
    assert "Traceback" not in scenario.log
    assert PASSWORD not in scenario.log
    index_bytes = b"".join(p.read_bytes() for p in scenario.layout.data_dir.glob("index.sqlite3*"))
    assert PASSWORD.encode() not in index_bytes


def test_resolution_change_starts_a_new_segment(scenario: Scenario) -> None:
    rows = scenario.segments("reconfigured")
    sizes = {(r.width, r.height) for r in rows}
    assert sizes == {(320, 240), (352, 288)}, sizes
    for row in rows:
        with av.open(row.path) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.width, stream.codec_context.height) == (row.width, row.height)
        key, frames, errors = _first_frame_is_key_and_decodes(row.path)
        assert key and errors == 0 and frames > 0, row
    for previous, current in zip(rows, rows[1:]):
        assert abs(current.start_ms - previous.end_ms) <= FRAME_MS, (previous, current)


def test_segments_cli_prints_json_lines(scenario: Scenario, tmp_path: Path) -> None:
    import subprocess
    import sys
    config = tmp_path / "c.toml"
    config.write_text(config_text(scenario.layout.data_dir, {}))
    out = subprocess.run([sys.executable, "-m", "edgenvr", "segments", "--config", str(config), "--camera",
                          "steady-h264", "--json"], capture_output=True, text=True, check=True).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == len(scenario.segments("steady-h264"))
    assert {"camera", "start_ms", "end_ms", "path", "bytes"} <= set(lines[0])
    assert all(Path(line["path"]).stat().st_size == line["bytes"] for line in lines)
    gaps_out = subprocess.run([sys.executable, "-m", "edgenvr", "gaps", "--config", str(config), "--camera",
                               "unplugged", "--json"], capture_output=True, text=True, check=True).stdout
    assert len([json.loads(line) for line in gaps_out.splitlines()]) >= 1
