"""Tests for the built-in test camera: clip generation and the RTSP camera process,
checked end to end with PyAV as the recorder will use it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from edgenvr.simulator import (
    SimulatedCamera,
    SimulatorError,
    decode_frame_counter,
    make_clip,
    simulator_unavailable_reason,
)

FPS = 25
WIDTH, HEIGHT = 320, 240
CLIP_FRAMES = 4 * FPS  # make_clip's default 4 s
OPEN_OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000"}
OPEN_TIMEOUT = (10, 5)
# What "the read failed" looks like when the camera stops answering (measured).
READ_FAILURES = (av.error.FFmpegError, TimeoutError, OSError)


@dataclass
class Received:
    """What a client saw: per packet (seconds since open() returned, dts, key, counter)."""

    codec: str
    width: int
    height: int
    time_base: Fraction
    open_seconds: float
    opened_at: float  # time.monotonic() when open() returned
    packets: list[tuple[float, int | None, bool]] = field(default_factory=list)
    counters: list[tuple[float, int]] = field(default_factory=list)

    def first_key_after_open(self) -> float | None:
        return next((t for t, _dts, key in self.packets if key), None)


def open_camera(url: str) -> av.container.InputContainer:
    return av.open(url, options=OPEN_OPTIONS, timeout=OPEN_TIMEOUT)


def receive(container: av.container.InputContainer, seconds: float,
            opened_at: float, open_seconds: float) -> Received:
    """Demux (and decode, to read the frame counters) for ``seconds``."""
    stream = container.streams.video[0]
    got = Received(stream.codec_context.name, stream.width, stream.height,
                   stream.time_base, open_seconds, opened_at)
    decoding = False
    for packet in container.demux(stream):
        now = time.monotonic() - opened_at
        if packet.size == 0:  # flush packet: the stream ended
            break
        got.packets.append((now, packet.dts, packet.is_keyframe))
        # A client joining a shared stream mid-GOP has no reference pictures yet.
        decoding = decoding or packet.is_keyframe
        if decoding:
            for frame in packet.decode():
                luma = np.frombuffer(frame.planes[0], np.uint8).reshape(
                    frame.height, frame.planes[0].line_size)[:, :frame.width]
                counter = decode_frame_counter(luma)
                if counter is not None:
                    got.counters.append((now, counter))
        if now >= seconds:
            break
    return got


def read_url(url: str, seconds: float) -> Received:
    started = time.monotonic()
    with open_camera(url) as container:
        opened_at = time.monotonic()
        return receive(container, seconds, opened_at, opened_at - started)


def wait_for_packets(url: str, deadline_s: float) -> Received:
    """Connect (retrying while the camera boots) and read 1 s; fail after deadline_s."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return read_url(url, 1.0)
        except READ_FAILURES:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def process_alive(pid: int) -> bool:
    """Running and not a zombie (an orphan may wait a while for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def counter_steps(counters: list[tuple[float, int]]) -> list[int]:
    values = [c for _t, c in counters]
    return [(b - a) % CLIP_FRAMES for a, b in zip(values, values[1:])]


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    reason = simulator_unavailable_reason()
    if reason is not None:
        pytest.fail(reason)
    folder = tmp_path_factory.mktemp("clips")
    return {
        "h264": make_clip(folder / "cam.h264", codec="h264", width=WIDTH, height=HEIGHT, fps=FPS),
        "h265": make_clip(folder / "cam.h265", codec="h265", width=WIDTH, height=HEIGHT, fps=FPS),
    }


@pytest.fixture(scope="module")
def camera(clips: dict[str, Path]) -> Iterator[SimulatedCamera]:
    """One server for the read-only tests: H.264, H.265 and audio mounts."""
    with SimulatedCamera({"h264": (clips["h264"], "h264"), "h265": (clips["h265"], "h265")},
                         audio_mounts=["audio"], fps=FPS) as cam:
        yield cam


@pytest.fixture
def lone_camera(clips: dict[str, Path]) -> Iterator[SimulatedCamera]:
    """A server of its own, for tests that freeze or restart it."""
    cam = SimulatedCamera({"cam": (clips["h264"], "h264")})
    cam.start()
    try:
        yield cam
    finally:
        cam.stop()


# ---------------------------------------------------------------------------
# make_clip
# ---------------------------------------------------------------------------


def test_make_clip_content_gop_and_cache(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "c.h264", fps=10, seconds=3.0, gop=7)
    keys, counters, reordered = [], [], False
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 320, 240)
        for index, packet in enumerate(p for p in container.demux(stream) if p.size):
            if packet.is_keyframe:
                keys.append(index)
            for frame in packet.decode():
                counters.append(decode_frame_counter(frame.to_ndarray(format="gray")))
        reordered = bool(stream.codec_context.has_b_frames)
    assert keys == [0, 7, 14, 21, 28]
    assert counters == list(range(30))
    assert not reordered

    mtime = path.stat().st_mtime_ns
    started = time.monotonic()
    assert make_clip(tmp_path / "c.h264", fps=10, seconds=3.0, gop=7) == path
    assert time.monotonic() - started < 0.1
    assert path.stat().st_mtime_ns == mtime  # served from the cache
    make_clip(tmp_path / "c.h264", fps=10, seconds=3.0, gop=5)
    assert path.stat().st_mtime_ns != mtime  # different parameters: re-encoded


def test_make_clip_reaches_requested_bitrate(tmp_path: Path) -> None:
    # Noise is what makes synthetic content cost bits; without it x264 cannot spend them.
    path = make_clip(tmp_path / "hi.h264", width=640, height=360, seconds=2.0,
                     bitrate=2_000_000, preset="ultrafast")
    measured = path.stat().st_size * 8 / 2.0
    assert 1_500_000 < measured < 2_500_000


# ---------------------------------------------------------------------------
# the camera
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mount, codec", [("h264", "h264"), ("h265", "hevc")])
def test_video_mount_streams_live(camera: SimulatedCamera, mount: str, codec: str) -> None:
    got = read_url(camera.url(mount), 3.0)
    assert (got.codec, got.width, got.height) == (codec, WIDTH, HEIGHT)
    first_key = got.first_key_after_open()
    assert first_key is not None and first_key <= 2.0, got.packets[:5]
    assert got.open_seconds < 5.0
    # Packets arriving after the probe backlog come at the live pace.
    live = [t for t, _dts, _key in got.packets if 1.0 <= t < 3.0]
    assert 0.8 * 2 * FPS <= len(live) <= 1.2 * 2 * FPS
    dts = [d for _t, d, _key in got.packets if d is not None]
    increasing = sum(b > a for a, b in zip(dts, dts[1:]))
    assert increasing >= 0.95 * (len(dts) - 1)
    # About one frame interval per packet (do-timestamp jitter is a few ms).
    median_step = float(np.median(np.diff(dts))) * got.time_base
    assert abs(median_step - Fraction(1, FPS)) < 0.005
    # Every picture arrives, in order: the counter drawn by make_clip steps by one,
    # also across the loop from the last frame back to the first.
    steps = counter_steps(got.counters)
    assert len(steps) >= 2 * FPS
    assert steps.count(1) >= 0.98 * len(steps), steps


def test_audio_mount_has_no_video(camera: SimulatedCamera) -> None:
    with open_camera(camera.url("audio")) as container:
        assert not container.streams.video
        assert [s.codec_context.name for s in container.streams.audio] == ["pcm_alaw"]


def test_two_clients_share_one_live_stream(camera: SimulatedCamera) -> None:
    first, second = open_camera(camera.url("h264")), open_camera(camera.url("h264"))
    opened_at = time.monotonic()
    results: list[Received] = [None, None]  # type: ignore[list-item]

    def run(slot: int, container: av.container.InputContainer) -> None:
        results[slot] = receive(container, 2.5, opened_at, 0.0)

    try:
        threads = [threading.Thread(target=run, args=(i, c))
                   for i, c in enumerate((first, second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=15)
    finally:
        first.close()
        second.close()
    for got in results:
        assert got is not None and len(got.packets) >= 2 * FPS
    # Shared media: the same picture reaches both clients at the same moment (a
    # per-client stream would have started at frame 0 about one open() later).
    late = [{c: t for t, c in got.counters if t > 0.5} for got in results]
    common = late[0].keys() & late[1].keys()
    assert len(common) >= FPS
    assert max(abs(late[0][c] - late[1][c]) for c in common) < 0.3


def test_freeze_times_out_reader_and_thaw_resumes(lone_camera: SimulatedCamera) -> None:
    url = lone_camera.url("cam")
    with open_camera(url) as container:
        packets = container.demux(container.streams.video[0])
        for _ in range(2 * FPS):
            next(packets)
        # A short freeze is survived by a connected client.
        lone_camera.freeze()
        time.sleep(1.0)
        lone_camera.thaw()
        resumed = time.monotonic()
        for _ in range(FPS):
            assert next(packets).size > 0
        assert time.monotonic() - resumed < 3.0

        # A long freeze makes the read fail. With a 5 s read timeout that takes two
        # timeouts, ~10 s: the first one only makes FFmpeg's parser release the last
        # picture it was holding, the second raises ExitError.
        lone_camera.freeze()
        assert lone_camera.is_frozen and lone_camera.is_running
        frozen = time.monotonic()
        with pytest.raises((*READ_FAILURES, StopIteration)):
            while time.monotonic() - frozen < 20:
                if next(packets).size == 0:
                    raise StopIteration
        assert time.monotonic() - frozen < 12.0
    lone_camera.thaw()
    got = wait_for_packets(url, 5.0)
    assert got.first_key_after_open() is not None


def test_stop_and_restart_on_same_port(lone_camera: SimulatedCamera) -> None:
    url = lone_camera.url("cam")
    port = lone_camera.port
    with open_camera(url) as container:
        packets = container.demux(container.streams.video[0])
        next(packets)
        lone_camera.stop()
        assert not lone_camera.is_running
        # Killed camera: the demuxer just ends (or errors), it must not hang.
        ended = time.monotonic()
        with pytest.raises((*READ_FAILURES, StopIteration)):
            while time.monotonic() - ended < 15:
                if next(packets).size == 0:
                    raise StopIteration
        assert time.monotonic() - ended < 10.0
    with pytest.raises(READ_FAILURES):
        open_camera(url).close()

    restarted = time.monotonic()
    lone_camera.restart()
    assert lone_camera.port == port and lone_camera.url("cam") == url
    got = wait_for_packets(url, 5.0)
    first_key = got.first_key_after_open()
    assert first_key is not None
    assert got.opened_at + first_key - restarted < 5.0

    lone_camera.kill()
    assert not lone_camera.is_running


def test_start_failures_are_reported_with_server_stderr(
        camera: SimulatedCamera, tmp_path: Path) -> None:
    taken = SimulatedCamera({"cam": (make_clip(tmp_path / "c.h264"), "h264")},
                            port=camera.port)
    with pytest.raises(SimulatorError, match="Address already in use"):
        taken.start()
    assert not taken.is_running

    garbage = tmp_path / "garbage.h264"
    garbage.write_bytes(os.urandom(4096))
    broken = SimulatedCamera({"cam": (garbage, "h264")})
    with pytest.raises(SimulatorError, match="cannot load clip"):
        broken.start()
    assert not broken.is_running


def test_server_dies_with_its_parent(clips: dict[str, Path], tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from edgenvr.simulator import SimulatedCamera
        cam = SimulatedCamera({{"cam": (Path({str(clips["h264"])!r}), "h264")}})
        cam.start()
        print(cam.pid, flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        server_pid = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert process_alive(server_pid)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not process_alive(server_pid):
            return
        time.sleep(0.05)
    os.kill(server_pid, signal.SIGKILL)
    pytest.fail("camera server outlived its parent process")
