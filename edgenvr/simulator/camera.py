"""Built-in test camera: synthetic clips and a simulated RTSP camera process.

This module owns
  * ``make_clip``: encoding labelled synthetic video (moving square, frame counter in
    pixels) with PyAV into raw Annex-B H.264/H.265 files, cached by a JSON sidecar;
  * ``decode_frame_counter``: reading the frame counter back from a decoded picture;
  * ``SimulatedCamera``: starting, stopping, freezing and restarting the GStreamer RTSP
    server in ``rtsp_server.py``, which runs under Debian's own Python
    because PyGObject and GstRtspServer come from Debian packages, not from the venv;
  * ``debian_python`` / ``simulator_available`` / ``simulator_unavailable_reason``:
    finding out whether that interpreter can run the server at all.

It is used by ``edgenvr demo``, the test suite and the benchmarks.
"""

from __future__ import annotations

import functools
import json
import os
import selectors
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from edgenvr.core.process_setup import die_with_parent_preexec

__all__ = [
    "DEBIAN_PACKAGES",
    "SERVER_SCRIPT",
    "SimulatedCamera",
    "SimulatorError",
    "debian_python",
    "decode_frame_counter",
    "encode_cached",
    "make_clip",
    "simulator_available",
    "simulator_unavailable_reason",
]

SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
# Where tests, benchmarks and `scripts/setup test` keep generated clips and fetched footage (EDGENVR_TEST_CLIPS).
CLIP_CACHE = Path(os.environ.get("EDGENVR_TEST_CLIPS", "/tmp/edgenvr-test-clips"))

# What the server needs from Debian; named in error messages so a missing piece is
# one `apt-get install` away.
DEBIAN_PACKAGES = (
    "python3-gi",
    "gir1.2-gst-rtsp-server-1.0",
    "gir1.2-gst-plugins-base-1.0",
    "gstreamer1.0-rtsp",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
)

# Elements the server pipelines use (h26xparse: plugins-bad; rtp payloaders, alawenc:
# plugins-good; appsrc/appsink/audiotestsrc: plugins-base).
_REQUIRED_ELEMENTS = (
    "appsrc", "appsink", "filesrc", "h264parse", "h265parse", "rtph264pay",
    "rtph265pay", "audiotestsrc", "alawenc", "rtppcmapay",
)

_CODECS = {"h264": ("libx264", "h264"), "h265": ("libx265", "hevc")}
_PATTERNS = ("moving", "static")

# Bump when the picture content or encoder settings change, so cached clips are redone.
_CLIP_FORMAT_VERSION = 1

# Frame counter barcode: _COUNTER_BITS cells across the top of the picture, MSB first.
_COUNTER_BITS = 16
_COUNTER_CELLS = _COUNTER_BITS + 2  # one black cell of margin on each side
_LUMA_BLACK = 16
_LUMA_WHITE = 235


class SimulatorError(RuntimeError):
    """The simulated camera could not be started or controlled."""


# ---------------------------------------------------------------------------
# Synthetic clips
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _ClipParams:
    """Everything that determines a clip's bytes; stored in the sidecar as the cache key."""

    version: int
    codec: str
    width: int
    height: int
    fps: int
    frames: int
    gop: int
    bitrate: int | None
    pattern: str
    preset: str


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_sidecar(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def make_clip(
    path: Path,
    *,
    codec: str = "h264",
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    seconds: float = 4.0,
    gop: int | None = None,
    bitrate: int | None = None,
    pattern: str = "moving",
    preset: str | None = None,
) -> Path:
    """Encode a synthetic clip into a raw Annex-B elementary stream at ``path``.

    ``codec`` is ``"h264"`` or ``"h265"``; ``gop`` (frames, default ``fps`` = 1 s) is a
    fixed key-frame interval; ``bitrate`` in bit/s (default: constant quality, small
    files). ``pattern="moving"`` draws a square circling over a static textured
    background, ``"static"`` leaves the square out; both carry the frame number as
    digits and as a barcode (see ``decode_frame_counter``). When ``bitrate`` asks for
    more bits than clean synthetic content can use, per-frame noise is added so the
    stream really reaches it (a 1080p 4 Mbit/s camera must cost a recorder what a real
    one does). The square's path is periodic over the clip, so a looped clip has no jump.

    A clip whose sidecar ``<path>.json`` records identical parameters is returned
    without re-encoding.
    """
    if codec not in _CODECS:
        raise ValueError(f"codec must be one of {sorted(_CODECS)}, not {codec!r}")
    if pattern not in _PATTERNS:
        raise ValueError(f"pattern must be one of {_PATTERNS}, not {pattern!r}")
    if width % 2 or height % 2 or width < 64 or height < 64:
        raise ValueError("width and height must be even and at least 64 (yuv420p)")
    if fps <= 0 or seconds <= 0:
        raise ValueError("fps and seconds must be positive")
    frames = max(1, round(fps * seconds))
    gop = fps if gop is None else gop
    if gop <= 0:
        raise ValueError("gop must be positive")
    if preset is None:
        # x265 is several times slower than x264 per pixel; ultrafast keeps 1080p clips
        # within seconds rather than minutes.
        preset = "veryfast" if codec == "h264" else "ultrafast"
    params = _ClipParams(
        version=_CLIP_FORMAT_VERSION, codec=codec, width=width, height=height, fps=fps,
        frames=frames, gop=gop, bitrate=bitrate, pattern=pattern, preset=preset,
    )
    path = Path(path)
    encode_cached(path, asdict(params), lambda target: _encode(target, params))
    return path


def encode_cached(path: Path, params: dict[str, object], encode: Callable[[Path], None]) -> None:
    """Run ``encode(target)`` unless ``path`` exists with a sidecar ``<path>.json`` recording the same
    ``params``. Encodes to a private name and renames: concurrent callers (parallel test workers) never
    see a half-written clip, and a crash never leaves one behind under ``path``."""
    if path.is_file() and path.stat().st_size > 0 and _read_sidecar(path) == params:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        encode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar_tmp = _sidecar(path).with_suffix(f".{os.getpid()}.tmp")
    sidecar_tmp.write_text(json.dumps(params, indent=1, sort_keys=True) + "\n")
    os.replace(sidecar_tmp, _sidecar(path))


def _encoder_options(p: _ClipParams) -> dict[str, str]:
    # No B-frames: cameras rarely send them, and without reordering DTS == PTS, which
    # keeps the recorder's timestamp handling honest and simple. keyint == min-keyint
    # and scenecut=0 give key frames exactly every `gop` frames, like a camera's
    # "I-frame interval" setting.
    common = [f"keyint={p.gop}", f"min-keyint={p.gop}", "scenecut=0", "bframes=0"]
    if p.bitrate is not None:
        # A 1 s VBV like a camera's CBR/"capped VBR" mode, so the rate is steady
        # within the clip rather than only right on average.
        kbps = max(1, p.bitrate // 1000)
        common += [f"vbv-maxrate={kbps}", f"vbv-bufsize={kbps}"]
    if p.codec == "h264":
        return {"preset": p.preset, "x264-params": ":".join(common)}
    # open-gop=0: key frames are IDR rather than CRA, so every one is a clean entry
    # point; repeat-headers puts VPS/SPS/PPS before each of them (no global header in
    # a raw stream, so a client may start at any key frame).
    x265 = common + ["open-gop=0", "repeat-headers=1", "log-level=error"]
    return {"preset": p.preset, "x265-params": ":".join(x265)}


def _noise_amplitude(p: _ClipParams) -> int:
    """Per-pixel noise (± luma levels) needed for the encoder to spend ``bitrate``."""
    if p.bitrate is None:
        return 0
    bits_per_pixel = p.bitrate / (p.width * p.height * p.fps)
    # Measured with x264 veryfast: clean synthetic content saturates around
    # 0.01 bit/pixel; amplitude 6 noise lets 1080p25 reach ~4 Mbit/s (0.08 bpp).
    if bits_per_pixel < 0.01:
        return 0
    return int(min(24, max(2, round(bits_per_pixel * 75))))


def _background(width: int, height: int, amplitude: int) -> np.ndarray:
    """Static textured luma, kept within [amplitude, 255 - amplitude] so noise can be
    added in uint8 without clipping."""
    rng = np.random.default_rng(12345)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = (
        118
        + 45 * np.sin(x / max(4.0, width / 23)) * np.cos(y / max(4.0, height / 17))
        + 20 * np.sin((x + 2 * y) / max(3.0, width / 61))
    )
    # Fixed fine detail: gives a key frame a realistic size and a motion detector
    # something to compare (flat synthetic pictures are unrealistically cheap).
    coarse = rng.integers(-12, 13, size=(height // 4 + 1, width // 4 + 1)).astype(np.float32)
    texture += np.kron(coarse, np.ones((4, 4), np.float32))[:height, :width]
    low, high = _LUMA_BLACK + 8 + amplitude, _LUMA_WHITE - 8 - amplitude
    return np.clip(texture, low, high).astype(np.uint8)


def counter_geometry(width: int, height: int) -> tuple[int, int, int]:
    """(cell width, strip height, left margin) of the frame-counter barcode."""
    cell = width // (_COUNTER_CELLS + 2)
    strip = max(8, (height // 24) // 2 * 2)
    left = (width - cell * _COUNTER_CELLS) // 2
    return cell, strip, left


def draw_counter(luma: np.ndarray, number: int) -> None:
    height, width = luma.shape
    cell, strip, left = counter_geometry(width, height)
    luma[:strip, :] = _LUMA_BLACK
    for bit in range(_COUNTER_BITS):
        if (number >> (_COUNTER_BITS - 1 - bit)) & 1:
            x0 = left + (bit + 1) * cell
            luma[:strip, x0:x0 + cell] = _LUMA_WHITE
    import cv2  # local: only clip generation needs OpenCV

    scale = max(0.4, height / 480)
    thickness = max(1, round(scale * 2))
    origin = (max(4, width // 40), strip + round(30 * scale) + 4)
    text = f"{number:05d}"
    # Dark outline under light text: readable on any part of the texture.
    cv2.putText(luma, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, _LUMA_BLACK,
                thickness + 2, cv2.LINE_AA)
    cv2.putText(luma, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, _LUMA_WHITE,
                thickness, cv2.LINE_AA)


def decode_frame_counter(luma: np.ndarray) -> int | None:
    """Frame number drawn by ``make_clip`` into a decoded picture's luma (or gray)
    plane of the clip's size; ``None`` if the barcode's margins are not black (not
    one of our pictures, or badly damaged). Numbers restart at 0 when a clip loops."""
    height, width = luma.shape[:2]
    cell, strip, left = counter_geometry(width, height)
    # Sample the middle of each cell: edges are smeared by chroma/luma compression.
    rows = slice(strip // 4, strip - strip // 4)
    pad = max(1, cell // 4)
    values = [
        float(luma[rows, left + i * cell + pad:left + (i + 1) * cell - pad].mean())
        for i in range(_COUNTER_CELLS)
    ]
    threshold = (_LUMA_BLACK + _LUMA_WHITE) / 2
    if values[0] > threshold or values[-1] > threshold:
        return None
    number = 0
    for value in values[1:-1]:
        number = (number << 1) | int(value > threshold)
    return number


def _encode(target: Path, p: _ClipParams) -> None:
    import av  # local: the camera process side of this module needs no PyAV

    encoder, muxer = _CODECS[p.codec]
    amplitude = _noise_amplitude(p)
    # Pre-offset by -amplitude: adding noise in [0, 2 amplitude] then stays in 0..255.
    base = _background(p.width, p.height, amplitude) - np.uint8(amplitude)
    rng = np.random.default_rng(p.frames * 7919 + p.width)
    # A pool of noise fields, picked per frame with a random offset: generating a
    # fresh 1080p field per frame would dominate encoding time, and fields repeating
    # at random shifts are still incompressible for a motion-compensated encoder.
    noise_pool: list[np.ndarray] = []
    if amplitude:
        noise_pool = [
            rng.integers(0, 2 * amplitude + 1, size=(p.height + 16, p.width + 16), dtype=np.uint8)
            for _ in range(4)
        ]
    chroma_h, chroma_w = p.height // 2, p.width // 2
    side = max(16, min(p.width, p.height) // 5) // 2 * 2
    frame_buf = np.empty((p.height * 3 // 2, p.width), np.uint8)
    luma = frame_buf[:p.height]
    # yuv420p layout as PyAV expects it from from_ndarray: Y, then U and V planes each
    # stored as (height/4) rows of full width.
    u_plane = frame_buf[p.height:p.height + p.height // 4].reshape(chroma_h, chroma_w)
    v_plane = frame_buf[p.height + p.height // 4:].reshape(chroma_h, chroma_w)

    with av.open(str(target), "w", format=muxer) as container:
        stream = container.add_stream(encoder, rate=p.fps)
        stream.width = p.width
        stream.height = p.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = p.gop
        stream.codec_context.max_b_frames = 0
        if p.bitrate is not None:
            stream.codec_context.bit_rate = p.bitrate
        stream.codec_context.options = _encoder_options(p)
        for index in range(p.frames):
            if amplitude:
                noise = noise_pool[index % len(noise_pool)]
                dy, dx = rng.integers(0, 16, size=2)
                np.add(base, noise[dy:dy + p.height, dx:dx + p.width], out=luma)
            else:
                luma[:] = base
            u_plane[:] = 128
            v_plane[:] = 128
            if p.pattern == "moving":
                phase = 2 * np.pi * index / p.frames
                cx = (p.width - side) / 2 * (1 + 0.8 * np.cos(phase))
                cy = (p.height - side) / 2 * (1 + 0.6 * np.sin(phase))
                x0, y0 = int(cx) // 2 * 2, int(cy) // 2 * 2
                luma[y0:y0 + side, x0:x0 + side] = 200
                u_plane[y0 // 2:(y0 + side) // 2, x0 // 2:(x0 + side) // 2] = 60
                v_plane[y0 // 2:(y0 + side) // 2, x0 // 2:(x0 + side) // 2] = 200
            draw_counter(luma, index)
            frame = av.VideoFrame.from_ndarray(frame_buf, format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# ---------------------------------------------------------------------------
# The camera process
# ---------------------------------------------------------------------------


def debian_python() -> str:
    """The interpreter that has Debian's python3-gi (PyGObject is not in the venv)."""
    return "/usr/bin/python3"


_PROBE = f"""
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstApp, GstRtspServer
Gst.init(None)
missing = [e for e in {_REQUIRED_ELEMENTS!r} if Gst.ElementFactory.find(e) is None]
if missing:
    raise SystemExit("missing GStreamer elements: " + ", ".join(missing))
"""


@functools.lru_cache(maxsize=1)
def simulator_unavailable_reason() -> str | None:
    """Why the simulator cannot run here (naming the Debian packages), or ``None``."""
    python = debian_python()
    hint = "install the Debian packages: apt-get install " + " ".join(DEBIAN_PACKAGES)
    if not os.access(python, os.X_OK):
        return f"{python} not found; {hint}"
    try:
        result = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} could not be run ({exc}); {hint}"
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"camera simulator unavailable: {detail}; {hint}"
    return None


def simulator_available() -> bool:
    """True when Debian's Python can import gi + GstRtspServer and has the elements."""
    return simulator_unavailable_reason() is None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _mount_name(name: str) -> str:
    name = name.strip("/")
    if not name or any(c in name for c in "=: ") or "/" in name:
        raise ValueError(f"invalid mount name {name!r}: one path segment without '=', ':' or spaces")
    return name


class SimulatedCamera:
    """One RTSP camera server process serving one or more mounts.

    ``mounts`` maps a mount name to ``(clip path, codec)`` or ``(clip path, codec, fps)``;
    ``audio_mounts`` names audio-only (PCMA) mounts. The frame rate of a mount is, in
    order: the third tuple element, the ``fps`` argument, the rate recorded by
    ``make_clip`` in the clip's sidecar, 25. The port is fixed at construction (a free
    one if not given) and kept across ``restart()``, like a camera that reboots.

    ``start()`` ties the server's life to the *thread* that calls it (Linux
    ``PR_SET_PDEATHSIG``): start it from a thread that outlives the camera.

    ``push_log`` (a path for the only video mount, or a mapping mount name -> path)
    makes the server write, per access unit it pushes, a line ``FRAME_INDEX
    WALL_TIME_NS``: the unit's index in the clip (the number ``decode_frame_counter``
    reads from its picture, for clips made by ``make_clip``) and ``time.time_ns()`` when
    it was sent (see ``rtsp_server.py``; flushed at least once a second). The file is
    emptied by the first ``start()`` and appended to by restarts.
    """

    def __init__(
        self,
        mounts: Mapping[str, tuple[Path, str] | tuple[Path, str, int]],
        *,
        audio_mounts: Iterable[str] = (),
        port: int | None = None,
        fps: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        ready_timeout: float = 20.0,
        push_log: Path | Mapping[str, Path] | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else _free_port(host)
        self.ready_timeout = ready_timeout
        self._video: dict[str, tuple[Path, str, int]] = {}
        for name, spec in mounts.items():
            clip, codec = Path(spec[0]), spec[1]
            if codec not in _CODECS:
                raise ValueError(f"mount {name!r}: codec must be one of {sorted(_CODECS)}")
            if len(spec) > 2:
                rate = int(spec[2])  # type: ignore[misc]
            elif fps is not None:
                rate = fps
            else:
                recorded = (_read_sidecar(clip) or {}).get("fps")
                rate = recorded if isinstance(recorded, int) else 25
            self._video[_mount_name(name)] = (clip.resolve(), codec, rate)
        self._audio = [_mount_name(name) for name in audio_mounts]
        if not self._video and not self._audio:
            raise ValueError("a camera needs at least one mount")
        if len(set(self._video) | set(self._audio)) != len(self._video) + len(self._audio):
            raise ValueError("mount names must be unique")
        self.log_path = Path(log_path) if log_path is not None else Path(
            tempfile.gettempdir(), f"edgenvr-camera-simulator-{self.port}.log")
        self.push_logs: dict[str, Path] = {}
        if isinstance(push_log, Mapping):
            self.push_logs = {_mount_name(name): Path(path) for name, path in push_log.items()}
        elif push_log is not None:
            if len(self._video) != 1:
                raise ValueError("push_log as one path needs exactly one video mount; "
                                 "give a mapping mount name -> path")
            self.push_logs = {next(iter(self._video)): Path(push_log)}
        unknown = sorted(set(self.push_logs) - set(self._video))
        if unknown:
            raise ValueError(f"push_log for mounts that are not video mounts: {unknown}")
        self._proc: subprocess.Popen[bytes] | None = None
        self._frozen = False
        self._started_once = False

    # -- addresses ---------------------------------------------------------

    @property
    def mounts(self) -> list[str]:
        """All mount names, video first."""
        return [*self._video, *self._audio]

    def url(self, mount: str) -> str:
        name = mount.strip("/")
        if name not in self._video and name not in self._audio:
            raise KeyError(f"no mount {mount!r}; have {self.mounts}")
        return f"rtsp://{self.host}:{self.port}/{name}"

    # -- process state -----------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        """The server process exists (a frozen server still counts as running)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_frozen(self) -> bool:
        return self.is_running and self._frozen

    def _command(self) -> list[str]:
        cmd = [debian_python(), str(SERVER_SCRIPT), "--host", self.host, "--port", str(self.port)]
        for name, (clip, codec, rate) in self._video.items():
            cmd += ["--mount", f"/{name}={clip}:{codec}:{rate}"]
        for name in self._audio:
            cmd += ["--audio-mount", f"/{name}"]
        for name, path in self.push_logs.items():
            cmd += ["--push-log", f"/{name}={path.resolve()}"]
        return cmd

    def start(self) -> None:
        """Spawn the server and wait until it listens; raise SimulatorError otherwise."""
        if self.is_running:
            raise SimulatorError(f"camera on port {self.port} is already running")
        for name, (clip, _codec, _rate) in self._video.items():
            if not clip.is_file():
                raise SimulatorError(f"mount {name!r}: clip {clip} does not exist")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for path in self.push_logs.values():
            path.parent.mkdir(parents=True, exist_ok=True)
            if not self._started_once:
                path.write_bytes(b"")   # the server appends: restarts continue the same log
        # Append on restart so one log shows the whole life of the camera.
        log = open(self.log_path, "ab" if self._started_once else "wb")
        self._started_once = True
        try:
            self._proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=log, preexec_fn=die_with_parent_preexec(), close_fds=True,
            )
        finally:
            log.close()  # the child holds its own descriptor
        self._frozen = False
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        deadline = time.monotonic() + self.ready_timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SimulatorError(self._failure("did not report READY within "
                                                       f"{self.ready_timeout:.0f} s"))
                if not selector.select(remaining):
                    continue
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    proc.wait(timeout=5)
                    raise SimulatorError(self._failure(f"exited with code {proc.returncode}"))
                buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode(errors="replace").strip()
        expected = f"READY rtsp://{self.host}:{self.port}"
        if line != expected:
            raise SimulatorError(self._failure(f"printed {line!r} instead of {expected!r}"))
        # The server prints nothing after READY; the pipe would only pin a descriptor.
        proc.stdout.close()

    def _failure(self, what: str) -> str:
        try:
            log = self.log_path.read_text(errors="replace")[-4000:].strip()
        except OSError:
            log = ""
        return (f"camera simulator on port {self.port} {what}.\n"
                f"command: {' '.join(self._command())}\n"
                f"stderr ({self.log_path}):\n{log or '(empty)'}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if the server has not exited after ``timeout`` s."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            # A stopped (frozen) process only acts on SIGTERM once continued.
            proc.send_signal(signal.SIGCONT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL the server at once, like pulling the camera's power."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None
        self._frozen = False

    def restart(self) -> None:
        """Stop if running, then start again on the same port."""
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP the server: connections stay open but nothing more is sent."""
        if not self.is_running:
            raise SimulatorError("cannot freeze a camera that is not running")
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT a frozen server."""
        if not self.is_running:
            raise SimulatorError("cannot thaw a camera that is not running")
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)
        self._frozen = False

    # -- context manager -----------------------------------------------------

    def __enter__(self) -> SimulatedCamera:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "frozen" if self.is_frozen else "running" if self.is_running else "stopped"
        return f"SimulatedCamera({self.host}:{self.port}, mounts={self.mounts}, {state})"
