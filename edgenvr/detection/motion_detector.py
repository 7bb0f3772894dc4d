"""Motion detection on small grey pictures, and turning it into debounced motion events.

This module owns
  * ``MotionDetector``: one camera's background model. Each call to ``analyse`` takes one grey
    picture of the analysis size (the caller decodes and resizes) and says whether something
    moved in it, how much, and in which configured zones;
  * ``MotionEventTracker``: per-picture results -> motion events (a person walking past is one
    event, not one per picture), with an explicit signal for the picture to keep as the
    event's snapshot.

It does not decode video, keep pictures or publish anything.

How a picture is judged (all on the small picture, a few OpenCV calls, ~0.3 ms at 320x180):
  1. The background is a running average of past pictures where nothing moves. Where
     something moves it is not learnt (a passer-by leaves no ghost) until the pixel has
     differed for 10 s; then the picture there becomes the background (something put down,
     the camera pointed elsewhere).
  2. Lighting is compensated before differencing: a gain and offset fitted between a
     quarter-size copy of the picture and of the background (robustly, so a person in the
     picture does not bend the fit) map the background to today's light. Slow light ramps
     and auto-exposure never reach the threshold.
  3. A picture whose light changed as a whole (lights switched, IR day/night switch) is a
     *global change*: the structure still matches the background (high correlation) but
     most of the picture changed. It is never motion; the picture becomes the background,
     learnt fast for a second with no motion reported. A large change whose structure does
     NOT match (someone right in front of the lens, the camera panned) is motion.
  4. Pixels differing by more than a threshold (from ``sensitivity``, raised when the sensor
     is noisy) form a mask; ignore polygons are removed; a 3x3 opening removes noise specks;
     a small dilation joins the pieces of one object; blobs are clipped to the zones and
     those smaller than ``min_area`` dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from edgenvr.config.records import MotionConfig, Polygon
from edgenvr.core.units import SECOND_MS

__all__ = [
    "MotionDetector",
    "MotionEvent",
    "MotionEventChange",
    "MotionEventTracker",
    "MotionResult",
    "polygon_mask",
]

# Background time constant where nothing moves: fast enough to follow a cloud.
_BACKGROUND_SECONDS = 4.0
# Under something moving the background is not learnt at all (a passer-by or someone
# standing in front of the lens for a moment leaves no ghost), until a pixel has differed
# for this long: then it is taken as the new background (something put down, a parked car,
# the camera pointed elsewhere, or the ghost of something long there that has gone).
_STILL_SECONDS = 10.0
_RELEARN_SECONDS = 1.0  # after a global change, learn fast (and report no motion)
_RELEARN_RATE = 0.5
# A change over this share of the picture that matches the background's structure (coarse
# correlation at least _SAME_STRUCTURE) is a lighting change, not something moving.
_GLOBAL_SHARE = 0.5
_SAME_STRUCTURE = 0.6
# Threshold at least this many noise sigmas (beyond 4.5 sigma: ~1 Gaussian pixel in 150 000).
_NOISE_SIGMAS = 4.5
_COARSE = 4  # the lighting fit and the structure check use a 1/4-size copy


@dataclass(frozen=True)
class MotionResult:
    """One analysed picture.

    ``motion``: at least one moving blob of ``min_area`` inside the counted area (the zones,
    or the whole picture, minus ignore polygons). ``score``: share of the counted area that
    is moving, 0..1. ``zones``: names of the zones a counted blob touches (empty when no
    zones are configured). ``global_change``: the picture's light changed as a whole (never
    motion). ``threshold``: the luma difference that counted as change in this picture.
    """

    motion: bool
    score: float
    zones: tuple[str, ...] = ()
    global_change: bool = False
    threshold: float = 0.0


_NO_MOTION = MotionResult(motion=False, score=0.0)


def polygon_mask(polygons: tuple[Polygon, ...], width: int, height: int) -> np.ndarray:
    """uint8 mask (255 inside) of normalised polygons rasterised at ``width`` x ``height``."""
    mask = np.zeros((height, width), np.uint8)
    for polygon in polygons:
        points = np.array([[round(x * width), round(y * height)] for x, y in polygon], np.int32)
        cv2.fillPoly(mask, [points], 255)
    return mask


def _threshold_for(sensitivity: float) -> float:
    """Luma difference (0..255) that counts as change: 50 at sensitivity 0, 30 at the default
    0.5 (a common NVR default), 10 at 1."""
    return 50.0 - 40.0 * min(1.0, max(0.0, sensitivity))


class MotionDetector:
    """One camera's motion detection. Feed ``analyse`` pictures of ``width`` x ``height`` at
    about ``config.fps`` pictures a second (the learning rates assume that rate)."""

    def __init__(self, config: MotionConfig, width: int, height: int) -> None:
        if width < 16 or height < 16:
            raise ValueError("analysis pictures must be at least 16x16")
        self.config = config
        self.width, self.height = width, height
        fps = config.fps if config.fps > 0 else 5.0
        self._rate = 1.0 - math.exp(-1.0 / (fps * _BACKGROUND_SECONDS))
        self._relearn_frames = max(1, round(fps * _RELEARN_SECONDS))
        self._still_frames = min(255, max(1, round(fps * _STILL_SECONDS)))
        self._noise_every = max(1, round(fps))
        self._base_threshold = _threshold_for(config.sensitivity)
        self._min_area_px = max(1.0, config.min_area * width * height)

        ignore = polygon_mask(config.ignore, width, height)
        self._valid = cv2.bitwise_not(ignore)  # everything that is not ignored
        self._valid_px = max(1, cv2.countNonZero(self._valid))
        self._zone_names = tuple(zone.name for zone in config.zones)
        self._zone_masks = [cv2.bitwise_and(polygon_mask((zone.polygon,), width, height),
                                            self._valid) for zone in config.zones]
        counted = self._valid
        if self._zone_masks:
            counted = np.zeros_like(self._valid)
            for mask in self._zone_masks:
                counted = cv2.bitwise_or(counted, mask)
        self._counted = counted
        self._counted_px = max(1, cv2.countNonZero(counted))

        self._coarse_size = (max(4, width // _COARSE), max(4, height // _COARSE))
        coarse_valid = cv2.resize(self._valid, self._coarse_size, interpolation=cv2.INTER_AREA)
        # Only coarse pixels with nothing ignored in them take part in the lighting fit.
        _, self._coarse_valid = cv2.threshold(coarse_valid, 254, 255, cv2.THRESH_BINARY)
        self._coarse_valid_px = max(1, cv2.countNonZero(self._coarse_valid))
        self._kernel = np.ones((3, 3), np.uint8)

        self._background: np.ndarray | None = None  # float32, in today's light
        # Per pixel: for how many pictures in a row it has been moving (saturates at 255).
        self._moving_run = np.zeros((height, width), np.uint8)
        self._relearn_left = 0
        self._frames = 0
        self._noise_threshold = 0.0
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the background (e.g. after the stream was lost): the next picture starts it."""
        self._background = None
        self._previous = None
        self._moving_run[:] = 0
        self._relearn_left = 0

    def analyse(self, grey: np.ndarray) -> MotionResult:
        """Judge one grey uint8 picture of the analysis size against the background, then
        learn it into the background."""
        if grey.shape != (self.height, self.width) or grey.dtype != np.uint8:
            raise ValueError(f"expected a {self.width}x{self.height} uint8 grey picture, "
                             f"got {grey.dtype} {grey.shape}")
        if not self.config.enabled:
            return _NO_MOTION
        background = self._background
        if background is None:
            self._background = grey.astype(np.float32)
            return _NO_MOTION
        self._frames += 1

        frame_c = cv2.resize(grey, self._coarse_size,
                             interpolation=cv2.INTER_AREA).astype(np.float32)
        background_c = cv2.resize(background, self._coarse_size, interpolation=cv2.INTER_AREA)
        base = self._base_threshold
        _, raw = cv2.threshold(cv2.absdiff(frame_c, background_c), base, 255, cv2.THRESH_BINARY)
        raw_changed = cv2.countNonZero(cv2.bitwise_and(raw.astype(np.uint8), self._coarse_valid))
        raw_share = raw_changed / self._coarse_valid_px
        structure, gain, offset = _light_fit(frame_c, background_c, self._coarse_valid, base)
        if structure >= _SAME_STRUCTURE:
            # Same view, maybe other light: bring the background to today's light.
            background *= np.float32(gain)
            background += np.float32(offset)

        diff = cv2.absdiff(grey, cv2.convertScaleAbs(background))
        threshold = max(base, self._noise_threshold)
        _, changed = cv2.threshold(diff, threshold, 255, cv2.THRESH_BINARY)
        changed = cv2.bitwise_and(changed, self._valid)
        share = cv2.countNonZero(changed) / self._valid_px

        if structure >= _SAME_STRUCTURE and max(raw_share, share) > _GLOBAL_SHARE:
            # Lights, exposure, IR: take the picture as the background and settle quickly.
            self._adopt(grey)
            return MotionResult(motion=False, score=0.0, global_change=True, threshold=threshold)
        previous, self._previous = self._previous, grey.copy()
        steady_light = abs(gain - 1.0) < 0.02 and abs(offset + (gain - 1.0) * 128.0) < 1.5
        calm = share < 0.2 and steady_light
        if calm and previous is not None and self._frames % self._noise_every == 0:
            # From picture-to-picture differences on calm pictures in steady light: the
            # difference to the background also holds what it has not learnt yet.
            sigma = _noise_sigma(cv2.absdiff(grey, previous), self._valid) / math.sqrt(2)
            self._noise_threshold = _NOISE_SIGMAS * sigma

        moving = cv2.morphologyEx(changed, cv2.MORPH_OPEN, self._kernel)  # drop noise specks
        # Grown a little: the rim of an object is not learnt either, and the pieces of one
        # object (clothes partly matching the wall behind) join into one blob.
        near_moving = cv2.dilate(moving, self._kernel, iterations=2)
        if self._relearn_left > 0:
            self._relearn_left -= 1
            cv2.accumulateWeighted(grey, background, _RELEARN_RATE)
            return MotionResult(motion=False, score=0.0, threshold=threshold)
        cv2.accumulateWeighted(grey, background, self._rate, mask=cv2.bitwise_not(near_moving))
        # ANDing run + 1 with the 0/255 mask keeps the count where moving, zeroes it elsewhere.
        self._moving_run = cv2.bitwise_and(cv2.add(self._moving_run, 1), near_moving)
        _, still = cv2.threshold(self._moving_run, self._still_frames - 1, 255, cv2.THRESH_BINARY)
        if cv2.countNonZero(still):
            np.copyto(background, grey, where=still.astype(bool))
            self._moving_run[still > 0] = 0

        if self._zone_masks:
            near_moving = cv2.bitwise_and(near_moving, self._counted)
        blobs = self._blobs(near_moving)
        if blobs is None:
            return MotionResult(motion=False, score=0.0, threshold=threshold)
        moving_px = cv2.countNonZero(cv2.bitwise_and(moving, blobs))
        zones = tuple(name for name, mask in zip(self._zone_names, self._zone_masks)
                      if cv2.countNonZero(cv2.bitwise_and(blobs, mask)))
        return MotionResult(motion=True, score=min(1.0, moving_px / self._counted_px),
                            zones=zones, threshold=threshold)

    def _adopt(self, grey: np.ndarray) -> None:
        self._background = grey.astype(np.float32)
        self._previous = None  # a picture in the old light is no measure of noise
        self._moving_run[:] = 0
        self._relearn_left = self._relearn_frames

    def _blobs(self, mask: np.ndarray) -> np.ndarray | None:
        """``mask`` without its blobs smaller than min_area (area of the outer contour of
        the grown blob); None if no blob is left."""
        if cv2.countNonZero(mask) < self._min_area_px:
            return None
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        big = [c for c in contours if cv2.contourArea(c) >= self._min_area_px]
        if not big:
            return None
        if len(big) == len(contours):
            return mask
        kept = np.zeros_like(mask)
        cv2.drawContours(kept, big, -1, 255, cv2.FILLED)
        return cv2.bitwise_and(kept, mask)


def _light_fit(frame: np.ndarray, background: np.ndarray, valid: np.ndarray, threshold: float
               ) -> tuple[float, float, float]:
    """(correlation, gain, offset) with ``gain * background + offset ~ frame`` over the
    ``valid`` coarse pixels. Robust to a large object in the picture: of "light unchanged"
    and a fit over all pixels, the one that explains more pixels is refitted on just those
    pixels, so a person walking in does not bend the background's light."""
    structure, gain, offset = _moments_fit(frame, background, valid)
    best, best_inliers, best_count = (1.0, 0.0), None, -1
    for candidate in ((1.0, 0.0), (gain, offset)) if structure > 0.0 else ((1.0, 0.0),):
        inliers = _inliers(frame, background, valid, *candidate, threshold / 2)
        count = cv2.countNonZero(inliers)
        if count > best_count:
            best, best_inliers, best_count = candidate, inliers, count
    if best_inliers is None or best_count < cv2.countNonZero(valid) // 2:
        return structure, *best
    _, gain, offset = _moments_fit(frame, background, best_inliers)
    return structure, gain, offset


def _inliers(frame: np.ndarray, background: np.ndarray, valid: np.ndarray, gain: float,
             offset: float, tolerance: float) -> np.ndarray:
    predicted = background if gain == 1.0 and offset == 0.0 else (
        background * np.float32(gain) + np.float32(offset))
    _, close = cv2.threshold(cv2.absdiff(frame, predicted), tolerance, 255, cv2.THRESH_BINARY_INV)
    return cv2.bitwise_and(close.astype(np.uint8), valid)


def _moments_fit(frame: np.ndarray, background: np.ndarray, mask: np.ndarray
                 ) -> tuple[float, float, float]:
    (mean_f,), (std_f,) = (v.ravel() for v in cv2.meanStdDev(frame, mask=mask))
    (mean_b,), (std_b,) = (v.ravel() for v in cv2.meanStdDev(background, mask=mask))
    if std_f < 1.0 or std_b < 1.0:  # a flat picture (covered lens): no structure to match
        return 0.0, 1.0, float(mean_f - mean_b)
    mean_fb = cv2.mean(cv2.multiply(frame, background), mask=mask)[0]
    correlation = float((mean_fb - mean_f * mean_b) / (std_f * std_b))
    # Ratio of spreads, not least squares: noise in the picture would bias a regression slope.
    gain = float(std_f / std_b)
    return correlation, gain, float(mean_f - gain * mean_b)


def _noise_sigma(diff: np.ndarray, valid: np.ndarray) -> float:
    """Noise sigma of a difference picture from its median (robust to half of it moving)."""
    hist = cv2.calcHist([diff], [0], valid, [256], [0, 256]).ravel()
    total = float(hist.sum())
    if total <= 0:
        return 0.0
    median = float(np.searchsorted(np.cumsum(hist), 0.5 * total))
    # |N(0, s)| has its median at 0.6745 s; +0.5 for the integer histogram bins.
    return (median + 0.5) / 0.6745


# ---------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MotionEvent:
    """A motion event as known at one moment. ``start_ms``: the first motion picture of the
    event; ``end_ms``: its last motion picture so far (final once closed); ``zones``: union
    of the zones hit; ``peak_score``/``peak_time_ms``: the picture with the highest score
    among those reported as peaks (see ``MotionEventChange``)."""

    start_ms: int
    end_ms: int
    zones: tuple[str, ...]
    peak_score: float
    peak_time_ms: int


@dataclass(frozen=True)
class MotionEventChange:
    """What happened to the event at this picture.

    ``kind``: "opened" (the event starts; its ``start_ms`` may be a few pictures back),
    "peak" (THIS picture is the event's new peak: keep it for the snapshot; the opening
    picture is always the first peak, so a caller keeping the picture of every "peak" has the
    right snapshot when the event closes), "closed" (``end_ms`` is final).
    """

    kind: Literal["opened", "peak", "closed"]
    event: MotionEvent


@dataclass
class _OpenEvent:
    start_ms: int
    last_motion_ms: int
    zones: set[str] = field(default_factory=set)
    peak_score: float = -1.0
    peak_time_ms: int = 0

    def snapshot(self) -> MotionEvent:
        return MotionEvent(self.start_ms, self.last_motion_ms, tuple(sorted(self.zones)),
                           max(0.0, self.peak_score), self.peak_time_ms)


class MotionEventTracker:
    """Debounces per-picture results into events.

    An event opens after ``start_frames`` consecutive motion pictures (one noisy picture is no
    event) and closes once no motion was seen for ``quiet_seconds``, so a person walking past
    (some pictures without a large enough blob) stays one event.
    """

    def __init__(self, start_frames: int = 2, quiet_seconds: float = 3.0) -> None:
        if start_frames < 1 or quiet_seconds < 0:
            raise ValueError("start_frames must be >= 1 and quiet_seconds >= 0")
        self.start_frames = start_frames
        self.quiet_ms = round(quiet_seconds * SECOND_MS)
        self._pending: list[tuple[int, MotionResult]] = []
        self._open: _OpenEvent | None = None

    @property
    def open_event(self) -> MotionEvent | None:
        return self._open.snapshot() if self._open is not None else None

    def update(self, time_ms: int, result: MotionResult) -> list[MotionEventChange]:
        """Feed the result for the picture taken at ``time_ms`` (non-decreasing)."""
        changes: list[MotionEventChange] = []
        event = self._open
        if event is not None and time_ms - event.last_motion_ms > self.quiet_ms:
            changes.append(MotionEventChange("closed", event.snapshot()))
            event = self._open = None
        if not result.motion:
            self._pending.clear()
            return changes
        if event is not None:
            event.last_motion_ms = time_ms
            event.zones.update(result.zones)
            if result.score > event.peak_score:
                event.peak_score, event.peak_time_ms = result.score, time_ms
                changes.append(MotionEventChange("peak", event.snapshot()))
            return changes
        self._pending.append((time_ms, result))
        if len(self._pending) < self.start_frames:
            return changes
        event = self._open = _OpenEvent(start_ms=self._pending[0][0], last_motion_ms=time_ms,
                                        peak_score=result.score, peak_time_ms=time_ms)
        for _, pending in self._pending:
            event.zones.update(pending.zones)
        self._pending.clear()
        changes.append(MotionEventChange("opened", event.snapshot()))
        changes.append(MotionEventChange("peak", event.snapshot()))
        return changes

    def close(self, time_ms: int) -> list[MotionEventChange]:
        """Close the open event now (shutdown, stream lost); ``end_ms`` stays the time of its
        last motion picture. ``time_ms`` (now) is accepted for symmetry with ``update``."""
        self._pending.clear()
        event, self._open = self._open, None
        return [MotionEventChange("closed", event.snapshot())] if event is not None else []
