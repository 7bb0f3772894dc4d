"""Labelled synthetic scenes for motion and tamper detection, with their ground truth.

This module owns
  * ``make_scene_clip``: encoding one named scene (a warehouse-like view with people walking,
    light switching, an IR day/night switch, a covered, blurred or moved camera, ...) with
    PyAV/libx264 into a raw Annex-B H.264 file, cached by a JSON sidecar like
    ``simulator.camera.make_clip``, and returning its ``SceneTruth``: when something moves
    and where, and when the camera is tampered with;
  * ``counter_ignore_polygon``: the part of the picture taken by the frame-counter barcode and
    digits that every frame carries (so an end-to-end test can map frame numbers to wall
    time); detectors must be told to ignore it, as users mask an on-screen clock;
  * ``analysis_frames``: decoding a clip back into small grey pictures at the analysis rate,
    the way a detector process gets them (Y plane view + ``cv2.resize(INTER_AREA)``).

Every scene ends in the state it starts in, so a test camera looping the clip adds no
event at the loop point, except the busy camera re-aimed for good (``busy_to_calm``,
``busy_to_busy``), which tests feed picture by picture. The busy scenes (a street where
people and cars cover a third of the picture at all times) never give a calm moment.
Truth times are seconds since the start of the clip; frame ``i`` is at ``i / fps`` seconds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from edgenvr.config.records import Polygon

# The barcode is the project's one frame-counter format; drawn by the simulator's own code
# so decode_frame_counter reads our clips too. Private names: simulator.camera is not ours
# to change, and this is the only other module that draws pictures.
from edgenvr.detection.analysis_picture import analysis_image
from edgenvr.simulator.camera import counter_geometry, draw_counter, encode_cached

__all__ = [
    "LEFT_THIRD",
    "RIGHT_THIRD",
    "SCENES",
    "MotionTruth",
    "SceneTruth",
    "TamperTruth",
    "analysis_frames",
    "counter_ignore_polygon",
    "make_scene_clip",
    "private_room",
]

# Bump when picture content or encoder settings change, so cached clips are redone.
_SCENE_FORMAT_VERSION = 2

LEFT_THIRD: Polygon = ((0.0, 0.0), (1 / 3, 0.0), (1 / 3, 1.0), (0.0, 1.0))
RIGHT_THIRD: Polygon = ((2 / 3, 0.0), (1.0, 0.0), (1.0, 1.0), (2 / 3, 1.0))

_LUMA_MIN, _LUMA_MAX = 16, 235
_DAY_NOISE = 2.5  # sensor noise, luma levels (sigma) at the clip's size
_NIGHT_NOISE = 6.0


@dataclass(frozen=True)
class MotionTruth:
    """Something moves from ``start_s`` to ``end_s`` (first and last frame in which it is
    visible), inside ``region``: "left" / "right" (that third of the picture only),
    "across" (crosses the picture), "front" (fills most of it)."""

    start_s: float
    end_s: float
    region: str


@dataclass(frozen=True)
class TamperTruth:
    """The camera is ``kind`` ("covered" | "defocused" | "moved") from ``start_s`` until
    ``end_s`` (the first frame that looks normal again)."""

    kind: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class SceneTruth:
    """What a generated clip shows. ``motion_labelled`` is False for the tamper scenes:
    covering, blurring or panning a camera changes the whole picture, and when a motion
    detector should call that over is a matter of taste, so those clips have no motion
    truth to score against (their ``motion`` is empty)."""

    scene: str
    path: Path
    width: int
    height: int
    fps: int
    frames: int
    motion: tuple[MotionTruth, ...]
    tamper: tuple[TamperTruth, ...]
    motion_labelled: bool = True

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


# ---------------------------------------------------------------------------
# Clip cache
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _SceneParams:
    """Everything that determines a clip's bytes; stored in the sidecar as the cache key."""

    version: int
    scene: str
    width: int
    height: int
    fps: int
    gop: int
    crf: int
    preset: str


def make_scene_clip(
    path: Path,
    scene: str,
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 10,
    gop_seconds: float = 2.0,
    crf: int = 27,
) -> SceneTruth:
    """Encode ``scene`` (one of ``SCENES``) to ``path`` as Annex-B H.264 and return its truth.

    Key frames exactly every ``gop_seconds``, no B-frames, constant quality ``crf``. A clip
    whose sidecar ``<path>.json`` records identical parameters is not encoded again.
    """
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {sorted(SCENES)}, not {scene!r}")
    if width % 2 or height % 2 or width < 160 or height < 90:
        raise ValueError("width and height must be even and at least 160x90")
    if fps <= 0 or gop_seconds <= 0:
        raise ValueError("fps and gop_seconds must be positive")
    params = _SceneParams(
        version=_SCENE_FORMAT_VERSION, scene=scene, width=width, height=height, fps=fps,
        gop=max(1, round(gop_seconds * fps)), crf=crf, preset="veryfast",
    )
    spec = SCENES[scene](width, height, fps)
    path = Path(path)
    truth = SceneTruth(
        scene=scene, path=path, width=width, height=height, fps=fps, frames=spec.frames,
        motion=spec.motion_truth(), tamper=spec.tamper, motion_labelled=spec.motion_labelled,
    )
    encode_cached(path, asdict(params), lambda target: _encode(target, params, spec))
    return truth


def _encode(target: Path, p: _SceneParams, spec: _SceneSpec) -> None:
    import av  # local: only clip generation needs the encoder

    frame_buf = np.full((p.height * 3 // 2, p.width), 128, np.uint8)  # grey chroma
    with av.open(str(target), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=p.fps)
        stream.width = p.width
        stream.height = p.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = p.gop
        stream.codec_context.max_b_frames = 0
        # Like simulator.camera: key frames exactly every `gop` frames, no B-frames.
        stream.codec_context.options = {
            "preset": p.preset, "crf": str(p.crf),
            "x264-params": f"keyint={p.gop}:min-keyint={p.gop}:scenecut=0:bframes=0",
        }
        for index in range(spec.frames):
            luma = spec.render(index)
            draw_counter(luma, index)
            frame_buf[:p.height] = luma
            frame = av.VideoFrame.from_ndarray(frame_buf, format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# ---------------------------------------------------------------------------
# Frame counter mask and reading clips back
# ---------------------------------------------------------------------------


def counter_ignore_polygon(width: int, height: int) -> Polygon:
    """Normalised polygon over the frame-counter barcode strip and the digits under it,
    with a margin so it still covers them after scaling to a small analysis size."""
    _cell, strip, _left = counter_geometry(width, height)
    # Same text geometry as camera.draw_counter.
    scale = max(0.4, height / 480)
    thickness = max(1, round(scale * 2))
    origin_x, origin_y = max(4, width // 40), strip + round(30 * scale) + 4
    (text_w, _text_h), baseline = cv2.getTextSize("00000", cv2.FONT_HERSHEY_SIMPLEX, scale,
                                                  thickness + 2)
    margin = max(4, width // 80)
    strip_y = (strip + margin) / height
    digits_x = min(width, origin_x + text_w + margin) / width
    digits_y = min(height, origin_y + baseline + thickness + margin) / height
    return ((0.0, 0.0), (1.0, 0.0), (1.0, strip_y), (digits_x, strip_y), (digits_x, digits_y),
            (0.0, digits_y))


def analysis_frames(
    path: Path, clip_fps: int, *, fps: float = 5.0, width: int = 320,
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode ``path`` and yield ``(time_ms, grey)`` at about ``fps`` pictures a second, ``grey`` being
    the picture the motion worker's detectors see (``detection.analysis_picture.analysis_image``) at ``width``.
    ``time_ms`` counts from the clip's first frame (frame ``i`` at ``i * 1000 / clip_fps``)."""
    import av

    step = max(1, round(clip_fps / fps))
    with av.open(str(path), "r", format="h264") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index % step == 0:
                yield round(index * 1000 / clip_fps), analysis_image(frame, width)


# ---------------------------------------------------------------------------
# Picture content
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _panorama(width: int, height: int) -> np.ndarray:
    """A static warehouse-like luma picture twice as wide as the view (the "moved" scene
    pans across it): wall panels, racks with boxes, lamps, a floor with lines, fine
    texture. Values stay within 20..230 so lighting and noise have room."""
    rng = np.random.default_rng(20240603)
    pano_w = 2 * width
    s = height / 360  # drawing is designed at 360 lines
    img = np.zeros((height, pano_w), np.float32)
    floor_y = int(0.64 * height)
    img[:floor_y] = 138
    img[floor_y:] = np.linspace(96, 80, height - floor_y, dtype=np.float32)[:, None]
    # Wall panel seams and a dado band.
    for x in range(0, pano_w, int(44 * s)):
        cv2.line(img, (x, 0), (x, floor_y), 112, max(1, int(2 * s)))
    cv2.rectangle(img, (0, floor_y - int(18 * s)), (pano_w, floor_y), 104, -1)
    # Lamps near the ceiling: bright, so a light switch clips them like a real camera.
    for x in range(int(60 * s), pano_w, int(300 * s)):
        cv2.rectangle(img, (x, int(8 * s) + 30), (x + int(90 * s), int(16 * s) + 30), 226, -1)
    # Racks: posts, beams, boxes of random sizes and shades.
    x = int(20 * s)
    while x < pano_w - int(120 * s):
        rack_w = int(rng.integers(150, 260) * s)
        top = int(rng.integers(70, 100) * s)
        levels = (top, top + int(60 * s), top + int(120 * s), floor_y - int(6 * s))
        for lx in (x, x + rack_w):
            cv2.rectangle(img, (lx, top), (lx + int(7 * s), floor_y + int(4 * s)), 44, -1)
        for ly in levels[1:]:
            cv2.rectangle(img, (x, ly), (x + rack_w, ly + int(6 * s)), 66, -1)
        for y0, y1 in zip(levels[:-1], levels[1:]):
            bx = x + int(9 * s)
            while bx < x + rack_w - int(20 * s):
                bw = int(rng.integers(22, 60) * s)
                bh = int(rng.integers(18, max(20, (y1 - y0) / s - 6)) * s)
                bx1 = min(bx + bw, x + rack_w - 2)
                shade = float(rng.integers(95, 215))
                cv2.rectangle(img, (bx, y1 - bh), (bx1, y1), shade, -1)
                cv2.rectangle(img, (bx, y1 - bh), (bx1, y1), shade - 35, max(1, int(s)))
                if bx1 - bx > 20 * s:  # a label
                    lx0 = bx + int(5 * s)
                    cv2.rectangle(img, (lx0, y1 - bh // 2 - int(4 * s)),
                                  (lx0 + int(12 * s), y1 - bh // 2 + int(4 * s)), 222, -1)
                bx = bx1 + int(rng.integers(2, 10) * s)
        x += rack_w + int(rng.integers(40, 90) * s)
    # Floor: a painted walkway line and perspective seams.
    cv2.rectangle(img, (0, int(0.86 * height)), (pano_w, int(0.86 * height) + int(5 * s)), 176, -1)
    for x in range(-pano_w, 2 * pano_w, int(120 * s)):
        cv2.line(img, (x, height), (pano_w // 2 + (x - pano_w // 2) // 3, floor_y), 70, 1)
    # Fine texture: fixed grain (dust, concrete, cardboard) plus slow shading.
    grain = cv2.GaussianBlur(rng.normal(0, 7, img.shape).astype(np.float32), (0, 0), 0.8)
    yy, xx = np.mgrid[0:height, 0:pano_w].astype(np.float32)
    shading = 10 * np.sin(xx / (97 * s)) * np.cos(yy / (71 * s))
    img = cv2.GaussianBlur(img, (0, 0), 0.6) + grain + shading
    return np.clip(img, 20, 230).astype(np.uint8)


@dataclass(frozen=True)
class _Sprite:
    """A moving object: its luma and where it is opaque."""

    luma: np.ndarray
    mask: np.ndarray  # bool, same shape


@functools.lru_cache(maxsize=16)
def _person(height_px: int, shirt: int, trousers: int, seed: int) -> _Sprite:
    """A person seen from the side-front: head, torso, arms, legs; textured clothes."""
    rng = np.random.default_rng(seed)
    h = height_px
    w = max(12, int(0.36 * h))
    luma = np.zeros((h, w), np.float32)
    mask = np.zeros((h, w), np.uint8)
    cx = w // 2
    head_r = max(3, int(0.07 * h))
    cv2.circle(mask, (cx, head_r + 1), head_r, 1, -1)
    cv2.circle(luma, (cx, head_r + 1), head_r, 165, -1)
    torso = (cx - int(0.11 * h), int(0.16 * h), cx + int(0.11 * h), int(0.55 * h))
    cv2.rectangle(mask, torso[:2], torso[2:], 1, -1)
    cv2.rectangle(luma, torso[:2], torso[2:], shirt, -1)
    for side in (-1, 1):  # arms hang beside the torso, out to the sprite's edges
        ax = cx + side * int(0.14 * h)
        cv2.line(mask, (cx + side * int(0.1 * h), int(0.18 * h)), (ax, int(0.5 * h)), 1,
                 max(2, int(0.05 * h)))
        cv2.line(luma, (cx + side * int(0.1 * h), int(0.18 * h)), (ax, int(0.5 * h)), shirt - 20,
                 max(2, int(0.05 * h)))
        lx = cx + side * int(0.05 * h)
        cv2.rectangle(mask, (lx - int(0.04 * h), int(0.54 * h)), (lx + int(0.04 * h), h - 1), 1, -1)
        cv2.rectangle(luma, (lx - int(0.04 * h), int(0.54 * h)), (lx + int(0.04 * h), h - 1),
                      trousers, -1)
    luma += rng.normal(0, 9, luma.shape).astype(np.float32)  # fabric texture, folds
    luma = cv2.GaussianBlur(luma, (0, 0), 0.7)
    return _Sprite(np.clip(luma, 20, 230).astype(np.uint8), mask.astype(bool))


@functools.lru_cache(maxsize=4)
def _near_object(width: int, height: int) -> _Sprite:
    """Someone's back right in front of the lens: dark, out of focus, most of the picture."""
    rng = np.random.default_rng(7)
    w, h = int(0.9 * width), int(0.94 * height)
    mask = np.zeros((h, w), np.uint8)
    # Head and shoulders from behind: a rounded top over a body that runs off the bottom.
    shoulder_y = int(0.55 * h)
    cv2.ellipse(mask, (w // 2, shoulder_y), (w // 2 - 1, shoulder_y - 1), 0, 180, 360, 1, -1)
    mask[shoulder_y:] = 1
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    folds = 58 + 14 * np.sin(xx / (w / 9) + 0.3 * np.sin(yy / (h / 5)))
    folds += cv2.GaussianBlur(rng.normal(0, 10, (h, w)).astype(np.float32), (0, 0), 6)
    return _Sprite(np.clip(folds, 20, 230).astype(np.uint8), mask.astype(bool))


@functools.lru_cache(maxsize=8)
def _vehicle(width_px: int, height_px: int, body: int, seed: int) -> _Sprite:
    """A car or minibus from the side: body, darker windows, wheels; textured paint."""
    rng = np.random.default_rng(seed)
    w, h = width_px, height_px
    luma = np.full((h, w), float(body), np.float32)
    mask = np.zeros((h, w), np.uint8)
    cv2.rectangle(mask, (0, int(0.35 * h)), (w - 1, int(0.85 * h)), 1, -1)
    cv2.rectangle(mask, (int(0.2 * w), 0), (int(0.85 * w), int(0.4 * h)), 1, -1)
    for x0 in (int(0.24 * w), int(0.56 * w)):
        cv2.rectangle(luma, (x0, int(0.06 * h)), (x0 + int(0.26 * w), int(0.34 * h)), 45, -1)
    for cx in (int(0.2 * w), int(0.8 * w)):
        cv2.circle(mask, (cx, int(0.85 * h)), int(0.15 * h), 1, -1)
        cv2.circle(luma, (cx, int(0.85 * h)), int(0.15 * h), 30, -1)
    luma += cv2.GaussianBlur(rng.normal(0, 8, luma.shape).astype(np.float32), (0, 0), 1.0)
    return _Sprite(np.clip(luma, 20, 230).astype(np.uint8), mask.astype(bool))


@functools.lru_cache(maxsize=4)
def private_room(width: int, height: int) -> np.ndarray:
    """A calm view into someone's room (the picture a city camera must never settle on): a plain wall with
    a door, a framed picture, a curtained window and a bed's headboard."""
    rng = np.random.default_rng(42)
    s = height / 360
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = 150 + 12 * np.sin(xx / (width / 2.3)) - 18 * (yy / height)   # light falling off across the wall
    cv2.rectangle(img, (int(0.06 * width), int(0.18 * height)), (int(0.22 * width), height), 96, -1)   # door
    cv2.rectangle(img, (int(0.06 * width), int(0.18 * height)), (int(0.22 * width), height), 70, max(2, int(4 * s)))
    cv2.circle(img, (int(0.2 * width), int(0.62 * height)), max(2, int(5 * s)), 200, -1)                # handle
    cv2.rectangle(img, (int(0.34 * width), int(0.2 * height)), (int(0.52 * width), int(0.42 * height)), 60, -1)
    cv2.rectangle(img, (int(0.36 * width), int(0.23 * height)), (int(0.50 * width), int(0.39 * height)), 185, -1)
    cv2.rectangle(img, (int(0.64 * width), int(0.1 * height)), (int(0.92 * width), int(0.5 * height)), 210, -1)
    for x0 in (0.64, 0.84):   # curtains
        cv2.rectangle(img, (int(x0 * width), int(0.08 * height)), (int((x0 + 0.08) * width), int(0.56 * height)),
                      118, -1)
    cv2.rectangle(img, (int(0.3 * width), int(0.6 * height)), (int(0.8 * width), int(0.78 * height)), 84, -1)
    cv2.rectangle(img, (int(0.26 * width), int(0.78 * height)), (int(0.84 * width), height), 176, -1)   # bed
    img += cv2.GaussianBlur(rng.normal(0, 4, img.shape).astype(np.float32), (0, 0), 1.2)
    return np.clip(cv2.GaussianBlur(img, (0, 0), 0.8), 20, 230).astype(np.uint8)


def _paste(luma: np.ndarray, sprite: _Sprite, x: int, y: int) -> None:
    """Draw ``sprite`` with its top-left corner at (x, y), clipped to the picture."""
    h, w = luma.shape
    sh, sw = sprite.mask.shape
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + sw), min(h, y + sh)
    if x0 >= x1 or y0 >= y1:
        return
    sub = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    np.copyto(luma[y0:y1, x0:x1], sprite.luma[sub], where=sprite.mask[sub])


def _visible(sprite: _Sprite, x: int, y: int, width: int, height: int) -> bool:
    """Whether any opaque pixel of ``sprite`` at (x, y) is inside the picture."""
    sh, sw = sprite.mask.shape
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + sw), min(height, y + sh)
    return x0 < x1 and y0 < y1 and bool(sprite.mask[y0 - y:y1 - y, x0 - x:x1 - x].any())


# ---------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Placed:
    sprite: _Sprite
    x: int
    y: int
    region: str


class _Noise:
    """Per-frame sensor noise: fields drawn once, used at random offsets per frame
    (drawing a fresh field every frame would dominate generation time)."""

    def __init__(self, width: int, height: int, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._pool = [self._rng.normal(0, 1, (height + 16, width + 16)).astype(np.float32)
                      for _ in range(4)]
        self._shape = (height, width)

    def add(self, picture: np.ndarray, sigma: float, index: int) -> np.ndarray:
        """``picture`` (float32 or uint8) plus noise, clipped and returned as uint8."""
        h, w = self._shape
        dy, dx = self._rng.integers(0, 16, size=2)
        field = self._pool[index % len(self._pool)][dy:dy + h, dx:dx + w]
        out = cv2.scaleAdd(field, sigma, picture.astype(np.float32))
        return np.clip(out, _LUMA_MIN, _LUMA_MAX).astype(np.uint8)


def _light(luma: np.ndarray, gain: float) -> np.ndarray:
    """Scene lighting: luma above black scaled by ``gain`` (clips like a sensor)."""
    return np.float32(_LUMA_MIN) + (luma.astype(np.float32) - _LUMA_MIN) * np.float32(gain)


def _ir_look(luma: np.ndarray) -> np.ndarray:
    """A night/IR picture of the same view: grey, flat (lower contrast), a little soft, lit
    by the camera's own illuminator (a hotspot in the middle, dark corners)."""
    h, w = luma.shape
    soft = cv2.GaussianBlur(luma.astype(np.float32), (0, 0), 0.8)
    return 30 + (soft - _LUMA_MIN) * (np.float32(0.45) * _ir_hotspot(w, h))


@functools.lru_cache(maxsize=4)
def _ir_hotspot(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xx / width - 0.5) ** 2 + (yy / height - 0.55) ** 2) / 0.18
    return (0.7 + 0.5 * np.exp(-r2)).astype(np.float32)


class _SceneSpec:
    """One scene: its length, what is in each frame, and the truth."""

    def __init__(
        self, width: int, height: int, fps: int, seconds: float, *,
        objects: Callable[[int], list[_Placed]] | None = None,
        look: Callable[[int, np.ndarray], np.ndarray] | None = None,
        tamper: tuple[TamperTruth, ...] = (),
        motion_labelled: bool = True,
        noise_sigma: Callable[[int], float] | float = _DAY_NOISE,
        view_x: Callable[[int], int] | None = None,
    ) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.frames = round(seconds * fps)
        self.tamper = tamper
        self.motion_labelled = motion_labelled
        self._objects = objects or (lambda _i: [])
        self._look = look
        self._sigma = noise_sigma
        self._view_x = view_x or (lambda _i: 0)
        self._noise: _Noise | None = None  # made on first use: truth alone needs no pixels

    def render(self, index: int) -> np.ndarray:
        """Frame ``index`` (luma, uint8); frames must be rendered in order (the noise is a
        random sequence)."""
        if self._noise is None:
            self._noise = _Noise(self.width, self.height, seed=self.width * 31 + self.frames)
        x = self._view_x(index)
        luma = np.ascontiguousarray(_panorama(self.width, self.height)[:, x:x + self.width])
        for placed in self._objects(index):
            _paste(luma, placed.sprite, placed.x, placed.y)
        picture: np.ndarray = luma if self._look is None else self._look(index, luma)
        sigma = self._sigma(index) if callable(self._sigma) else self._sigma
        return self._noise.add(picture, sigma, index)

    def motion_truth(self) -> tuple[MotionTruth, ...]:
        """Intervals of consecutive frames in which an object is visible, per region."""
        intervals: list[MotionTruth] = []
        open_since: dict[str, int] = {}
        last_seen: dict[str, int] = {}
        for index in range(self.frames + 1):
            seen = set()
            if index < self.frames:
                seen = {p.region for p in self._objects(index)
                        if _visible(p.sprite, p.x, p.y, self.width, self.height)}
            for region in seen:
                open_since.setdefault(region, index)
                last_seen[region] = index
            for region in [r for r in open_since if r not in seen]:
                intervals.append(MotionTruth(open_since.pop(region) / self.fps,
                                             last_seen[region] / self.fps, region))
        return tuple(sorted(intervals, key=lambda m: m.start_s))


def _walker(fps: int, sprite: _Sprite, t0: float, speed_px_s: float, from_x: float, to_x: float,
            feet_y: int, region: str) -> Callable[[int], list[_Placed]]:
    """An object moving from ``from_x`` to ``to_x`` (left edge, px) starting at ``t0`` s,
    bobbing a little as people do."""
    duration = abs(to_x - from_x) / speed_px_s
    sh = sprite.mask.shape[0]

    def place(index: int) -> list[_Placed]:
        t = index / fps - t0
        if t < 0 or t > duration:
            return []
        x = from_x + (to_x - from_x) * t / duration
        bob = round(2 * abs(np.sin(t * 2 * np.pi * 0.9)))
        return [_Placed(sprite, round(x), feet_y - sh - bob, region)]

    return place


def _both(*movers: Callable[[int], list[_Placed]]) -> Callable[[int], list[_Placed]]:
    return lambda index: [p for m in movers for p in m(index)]


def _scene_walk(w: int, h: int, fps: int) -> _SceneSpec:
    near = _person(int(0.56 * h), shirt=70, trousers=45, seed=1)
    far = _person(int(0.42 * h), shirt=185, trousers=60, seed=2)
    first = _walker(fps, near, 5.0, 0.17 * w, -near.mask.shape[1], w, int(0.95 * h), "across")
    second = _walker(fps, far, 35.0, 0.13 * w, w, -far.mask.shape[1], int(0.8 * h), "across")
    return _SceneSpec(w, h, fps, 60, objects=_both(first, second))


def _scene_noise(w: int, h: int, fps: int) -> _SceneSpec:
    return _SceneSpec(w, h, fps, 20, noise_sigma=3.5)


def _scene_brightness_jump(w: int, h: int, fps: int) -> _SceneSpec:
    def look(index: int, luma: np.ndarray) -> np.ndarray:
        lights_on = 10 <= index / fps < 20
        return _light(luma, 1.0 if lights_on else 1 / 1.6)

    return _SceneSpec(w, h, fps, 30, look=look)


def _scene_light_ramp(w: int, h: int, fps: int) -> _SceneSpec:
    def gain(t: float) -> float:  # dusk 5-30 s down to 35 %, dawn 35-55 s back up
        if t < 5:
            return 1.0
        if t < 30:
            return 1.0 - 0.65 * (t - 5) / 25
        if t < 35:
            return 0.35
        if t < 55:
            return 0.35 + 0.65 * (t - 35) / 20
        return 1.0

    return _SceneSpec(w, h, fps, 60, look=lambda i, luma: _light(luma, gain(i / fps)))


def _scene_ir_switch(w: int, h: int, fps: int) -> _SceneSpec:
    def night(index: int) -> bool:
        return 12 <= index / fps < 28

    def look(index: int, luma: np.ndarray) -> np.ndarray:
        t = index / fps
        # Auto-exposure overshoots for a moment after each switch, then settles.
        since = t - 12 if night(index) else t - 28
        settle = 1.0 + 0.3 * max(0.0, 1.0 - since) if since >= 0 else 1.0
        picture = _ir_look(luma) if night(index) else luma.astype(np.float32)
        return _LUMA_MIN + (picture - _LUMA_MIN) * np.float32(settle)

    return _SceneSpec(w, h, fps, 40, look=look,
                      noise_sigma=lambda i: _NIGHT_NOISE if night(i) else _DAY_NOISE)


def _scene_zones(w: int, h: int, fps: int) -> _SceneSpec:
    body = _person(int(0.4 * h), shirt=80, trousers=50, seed=3)
    bw = body.mask.shape[1]
    feet = int(0.9 * h)
    speed = 0.075 * w
    # In from the edge, to well inside the third, and back out again.
    reach_left, reach_right = int(w / 3) - bw - int(0.03 * w), w - int(w / 3) + int(0.03 * w)
    left_in = _walker(fps, body, 5.0, speed, -bw, reach_left, feet, "left")
    back_at = 5.0 + (reach_left + bw) / speed
    left_out = _walker(fps, body, back_at, speed, reach_left, -bw, feet, "left")
    right_in = _walker(fps, body, 25.0, speed, w, reach_right, feet, "right")
    back_at = 25.0 + (w - reach_right) / speed
    right_out = _walker(fps, body, back_at, speed, reach_right, w, feet, "right")
    return _SceneSpec(w, h, fps, 40, objects=_both(left_in, left_out, right_in, right_out))


# The tamper scenes begin as the camera was installed, for longer than a first reference takes (30 s, see
# detection.background_view), so that a box watching from the clip's start has one when the tamper comes.
_TAMPER_AT = 40.0


def _scene_covered(w: int, h: int, fps: int) -> _SceneSpec:
    start, end = _TAMPER_AT, _TAMPER_AT + 42.0
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    cover = np.broadcast_to(30 + 3 * yy, (h, w)).astype(np.float32)  # a hand / cloth: dark, flat

    def look(index: int, luma: np.ndarray) -> np.ndarray:
        t = index / fps
        if not start - 0.5 <= t < end:
            return luma
        # The cover slides up over the lens in half a second (and off again at `end`).
        reach = 1.0 if t >= start else (t - start + 0.5) / 0.5
        rows = int(round(h * reach))
        out = luma.astype(np.float32)
        out[h - rows:] = cover[h - rows:]
        return out

    return _SceneSpec(w, h, fps, end + 18, look=look, motion_labelled=False,
                      tamper=(TamperTruth("covered", start, end),))


def _scene_defocused(w: int, h: int, fps: int) -> _SceneSpec:
    start, end = _TAMPER_AT, _TAMPER_AT + 42.0
    sigma = 6.0 * h / 360

    def look(index: int, luma: np.ndarray) -> np.ndarray:
        if start <= index / fps < end:
            return cv2.GaussianBlur(luma, (0, 0), sigma)
        return luma

    return _SceneSpec(w, h, fps, end + 18, look=look, motion_labelled=False,
                      tamper=(TamperTruth("defocused", start, end),))


def _scene_moved(w: int, h: int, fps: int) -> _SceneSpec:
    away, back, pan_s = _TAMPER_AT, _TAMPER_AT + 46.0, 1.0
    shift = int(0.75 * w)

    def view_x(index: int) -> int:
        t = index / fps
        if t < away or t >= back + pan_s:
            return 0
        if t < away + pan_s:
            return round(shift * (t - away) / pan_s)
        if t < back:
            return shift
        return round(shift * (1 - (t - back) / pan_s))

    return _SceneSpec(w, h, fps, back + pan_s + 16, view_x=view_x, motion_labelled=False,
                      tamper=(TamperTruth("moved", away, back + pan_s),))


def _scene_person_in_front(w: int, h: int, fps: int) -> _SceneSpec:
    big = _near_object(w, h)
    bw, bh = big.mask.shape[1], big.mask.shape[0]
    rest_x = (w - bw) // 2

    def place(index: int) -> list[_Placed]:
        t = index / fps - 10.0
        if t < 0 or t > 4.0:
            return []
        if t < 0.6:  # steps in from the right
            x = w + (rest_x - w) * t / 0.6
        elif t < 3.4:  # stands, swaying
            x = rest_x + 10 * np.sin((t - 0.6) * 2.2)
        else:  # steps out to the right
            x = rest_x + 10 * np.sin(2.8 * 2.2) + (w - rest_x) * (t - 3.4) / 0.6
        return [_Placed(big, round(x), h - bh, "front")]

    return _SceneSpec(w, h, fps, 30, objects=place)


def _street_traffic(w: int, h: int, fps: int) -> Callable[[int], list[_Placed]]:
    """A busy street at all hours: fourteen lanes of people at their distances from the camera, both ways,
    and cars and minibuses passing in two lanes every few seconds: 28 % of the picture on average, never
    less than 12 % (measured)."""
    rng = np.random.default_rng(11)
    lanes = []
    for lane in range(14):
        feet = int((0.55 + 0.034 * lane) * h)
        sprite = _person(int((0.26 + 0.026 * lane) * h), shirt=int(rng.integers(50, 200)),
                         trousers=int(rng.integers(30, 110)), seed=20 + lane)
        speed = float(rng.uniform(0.07, 0.16)) * w
        period = (w + sprite.mask.shape[1]) / speed + float(rng.uniform(0.2, 1.5))   # one walker after another
        lanes.append((sprite, feet, speed, period, float(rng.uniform(0, period)), lane % 2 == 0))
    vehicles = [(_vehicle(int(0.46 * w), int(0.3 * h), body=int(b), seed=40 + n), h, 3.0, True)
                for n, b in enumerate((70, 190, 130))]
    vehicles += [(_vehicle(int(0.3 * w), int(0.2 * h), body=int(b), seed=50 + n), int(0.72 * h), 4.0, False)
                 for n, b in enumerate((160, 90))]

    def place(index: int) -> list[_Placed]:
        t = index / fps
        placed = []
        for bottom, period, rightwards in sorted({(v[1], v[2], v[3]) for v in vehicles}):   # far lane first
            lane = [v[0] for v in vehicles if v[1] == bottom]
            car = lane[int(t // period) % len(lane)]
            cw, ch = car.mask.shape[1], car.mask.shape[0]
            x = (t % period) / period * (w + cw) - cw
            placed.append(_Placed(car, round(x if rightwards else w - cw - x), bottom - ch, "across"))
        placed.sort(key=lambda p: p.y + p.sprite.mask.shape[0])
        for sprite, feet, speed, period, phase, rightwards in lanes:
            sw, sh = sprite.mask.shape[1], sprite.mask.shape[0]
            x = ((t + phase) % period) * speed - sw
            if x <= w:
                placed.append(_Placed(sprite, round(x if rightwards else w - sw - x), feet - sh, "across"))
        return placed

    return place


def _rain(index: int, luma: np.ndarray) -> np.ndarray:
    """Rain in front of the camera: a grey haze and hundreds of short bright streaks, new in every frame."""
    h, w = luma.shape
    rng = np.random.default_rng(1000 + index)
    out = 0.8 * luma.astype(np.float32) + 30
    streak = max(4, h // 30)
    for x, y in zip(rng.integers(0, w, 400), rng.integers(-streak, h, 400)):
        cv2.line(out, (int(x), int(y)), (int(x) + 1, int(y) + streak), 205, 1)
    return out


def _scene_busy_street(w: int, h: int, fps: int) -> _SceneSpec:
    return _SceneSpec(w, h, fps, 120, objects=_street_traffic(w, h, fps))


def _scene_busy_night_rain(w: int, h: int, fps: int) -> _SceneSpec:
    """The busy street in the rain, through the IR switch at dusk (40 s) and back at dawn (80 s)."""
    def night(index: int) -> bool:
        return 40 <= index / fps < 80

    def look(index: int, luma: np.ndarray) -> np.ndarray:
        picture = _ir_look(luma) if night(index) else luma
        return _rain(index, np.asarray(picture, np.float32))

    return _SceneSpec(w, h, fps, 120, objects=_street_traffic(w, h, fps), look=look,
                      noise_sigma=lambda i: _NIGHT_NOISE if night(i) else _DAY_NOISE)


_REAIMED_AT, _REAIMED_SECONDS = 60.0, 120.0


def _reaimed_view(w: int, h: int, fps: int, view: Callable[[], np.ndarray]) -> Callable[[int, np.ndarray], np.ndarray]:
    """The picture slides over to `view` in one second at _REAIMED_AT (a camera turned on its mount)."""
    def look(index: int, luma: np.ndarray) -> np.ndarray:
        t = index / fps - _REAIMED_AT
        if t < 0:
            return luma
        shown = min(w, round(w * t))   # columns of the new view, coming in from the right
        out = np.empty((h, w), np.float32)
        out[:, :w - shown] = luma[:, shown:]
        out[:, w - shown:] = view()[:, :shown]
        return out

    return look


def _scene_busy_to_calm(w: int, h: int, fps: int) -> _SceneSpec:
    """The busy street, then the camera turned to look into a private room: nothing moves there."""
    street = _street_traffic(w, h, fps)
    room = _reaimed_view(w, h, fps, lambda: private_room(w, h))
    return _SceneSpec(w, h, fps, _REAIMED_SECONDS,
                      objects=lambda i: street(i) if i / fps < _REAIMED_AT else [],
                      look=room, motion_labelled=False,
                      tamper=(TamperTruth("moved", _REAIMED_AT, _REAIMED_SECONDS),))


def _scene_busy_to_busy(w: int, h: int, fps: int) -> _SceneSpec:
    """The busy street, then the camera turned to another part of it, as busy."""
    shift = int(0.75 * w)

    def view_x(index: int) -> int:
        t = index / fps - _REAIMED_AT
        return 0 if t < 0 else min(shift, round(shift * t))

    return _SceneSpec(w, h, fps, _REAIMED_SECONDS, objects=_street_traffic(w, h, fps), view_x=view_x,
                      motion_labelled=False, tamper=(TamperTruth("moved", _REAIMED_AT, _REAIMED_SECONDS),))


SCENES: dict[str, Callable[[int, int, int], _SceneSpec]] = {
    "walk": _scene_walk,
    "noise": _scene_noise,
    "brightness_jump": _scene_brightness_jump,
    "light_ramp": _scene_light_ramp,
    "ir_switch": _scene_ir_switch,
    "zones": _scene_zones,
    "covered": _scene_covered,
    "defocused": _scene_defocused,
    "moved": _scene_moved,
    "person_in_front": _scene_person_in_front,
    "busy_street": _scene_busy_street,
    "busy_night_rain": _scene_busy_night_rain,
    "busy_to_calm": _scene_busy_to_calm,
    "busy_to_busy": _scene_busy_to_busy,
}
