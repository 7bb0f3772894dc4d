"""Camera tamper detection: covered, defocused or moved, against an approved reference view.

This module owns ``TamperDetector``: given small grey pictures of one camera (the same ones
the motion detector gets) it raises and clears three conditions:
  * "covered": the picture is nearly uniform (a hand, cloth, paint, a blacked-out lens);
  * "defocused": fine detail collapsed relative to the reference while the picture is not
    uniform (sprayed, smeared or defocused lens);
  * "moved": the scene's structure no longer matches the reference view (camera turned).
    It is judged on the camera's *background view* (detection.background_view: the median of
    pictures a couple of seconds apart), never on one picture: people and cars filling a busy
    street do not make it look moved, and a change of view shows within 10 s.
A condition opens only after it has held for ``tamper_seconds`` (someone standing in front
of the lens for a moment is no tamper); "covered" and "defocused" close once the condition
has been gone for a few seconds; "moved" stays open while the view does not match the
reference and closes when it matches again or when the admin approves a new reference
(``set_reference``).

Without a reference, ``proposed_reference`` offers the first one (first commissioning) as soon
as the background view has enough samples: after the same time on a busy street as on an
empty room (bound in detection.background_view), never waiting for a calm moment. Covered
pictures are never sampled, so neither a reference nor the view is ever a lens cap.

Every measure is normalised (by the picture's own contrast, or a correlation), so lights
switching, slow light ramps and the IR day/night switch do not count. Pictures are analysed
at most ``analyse_hz`` times a second (default 1) on a half-size copy; with the background
view, 0.25 ms per picture on average at 5 pictures a second (x86, benchmarks/tamper.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from edgenvr.config.records import MotionConfig
from edgenvr.core.records import TamperKind
from edgenvr.core.units import SECOND_MS
from edgenvr.detection.background_view import REFERENCE_SAMPLES, BackgroundView
from edgenvr.detection.motion_detector import polygon_mask

__all__ = ["TamperChange", "TamperDetector", "TamperKind", "TamperMeasures"]


# Covered: contrast (std of a blurred quarter-size picture, luma levels) below this share
# of the reference's and below an absolute floor. A night/IR picture keeps ~40 % of the
# day's contrast; a hand or cloth on the lens keeps a few percent.
_COVERED_CONTRAST_SHARE = 0.15
_COVERED_CONTRAST_MAX = 12.0
# Defocused: detail (mean |Laplacian| per unit of contrast) below this share of the
# reference's. Noise (night) raises the measure, so IR cannot fake a blur.
_DEFOCUSED_DETAIL_SHARE = 0.4
# Moved: structure similarity to the reference (correlation of edge orientation fields of
# heavily blurred pictures, 1 = same view) below this.
_MOVED_SIMILARITY = 0.45
# Hysteresis: a condition is gone only when clearly gone, so a value near the threshold
# does not open and close it every few seconds.
_CLEAR_FACTOR = 1.3
_CLEAR_SECONDS = 3.0
# A pixel that changed by this much since the picture before is moving (sensor noise at night: ~8 levels).
_MOVING_LEVELS = 24
STREAM_LOST = "no pictures (stream lost or stopped)"   # why `close` ends what was open, unless told


@dataclass(frozen=True)
class TamperChange:
    """A tamper condition opened or closed.

    ``time_ms``: the picture at which the change was decided. ``since_ms``: when the
    condition began (for an opening; it opens ``tamper_seconds`` later) or when it was first
    seen gone (for a closing). ``score``: the measure that decided, 0..1, lower is worse:
    covered: contrast as a share of the reference's (without a reference: of the absolute
    floor); defocused: fine detail as a share of the reference's; moved: structure
    similarity to the reference. ``detail``: a human-readable sentence for logs and alerts.
    """

    kind: TamperKind
    opened: bool
    time_ms: int
    since_ms: int
    score: float
    detail: str


@dataclass(frozen=True)
class TamperMeasures:
    """What one analysed picture measured (``last_measures``, for logs and tuning).

    ``contrast``: luma std of a blurred small copy; ``detail``: mean |Laplacian| per unit
    of contrast; ``similarity``: structure similarity of the background view to the reference
    (None without one, or before the view has its samples).
    """

    time_ms: int
    contrast: float
    detail: float
    similarity: float | None


@dataclass(frozen=True)
class _Reference:
    contrast: float
    detail: float
    structure: np.ndarray  # doubled-angle gradient field, float32 (2, h, w), unit norm


class _Condition:
    """One condition's debouncing: open after ``hold_ms`` present, close after
    ``clear_ms`` absent."""

    def __init__(self, kind: TamperKind, hold_ms: int, clear_ms: int) -> None:
        self.kind = kind
        self.hold_ms, self.clear_ms = hold_ms, clear_ms
        self.is_open = False
        self._since_ms: int | None = None  # present since (closed) / absent since (open)

    def update(self, time_ms: int, present: bool | None, score: float, detail: str
               ) -> TamperChange | None:
        """``present`` None: not measurable now (keeps an open condition open, restarts the
        wait of a closed one)."""
        if present is None:
            self._since_ms = None
            return None
        if present != self.is_open:
            if self._since_ms is None:
                self._since_ms = time_ms
            waited = time_ms - self._since_ms
            if waited >= (self.hold_ms if present else self.clear_ms):
                since, self._since_ms = self._since_ms, None
                self.is_open = present
                return TamperChange(self.kind, present, time_ms, since, score, detail)
        else:
            self._since_ms = None
        return None

    def force_close(self, time_ms: int, score: float, detail: str) -> TamperChange | None:
        self._since_ms = None
        if not self.is_open:
            return None
        self.is_open = False
        return TamperChange(self.kind, False, time_ms, time_ms, score, detail)


class TamperDetector:
    """One camera's tamper detection on grey uint8 pictures of ``width`` x ``height``.

    Without a reference only "covered" is checked, with an
    absolute contrast floor; give it the approved view with ``set_reference``.
    """

    def __init__(self, config: MotionConfig, width: int, height: int, *,
                 analyse_hz: float = 1.0) -> None:
        if width < 32 or height < 32:
            raise ValueError("analysis pictures must be at least 32x32")
        self.config = config
        self.width, self.height = width, height
        self._interval_ms = round(SECOND_MS / analyse_hz) if analyse_hz > 0 else 0
        hold_ms = round(config.tamper_seconds * SECOND_MS)
        clear_ms = round(_CLEAR_SECONDS * SECOND_MS)
        self._conditions = {kind: _Condition(kind, hold_ms, clear_ms) for kind in TamperKind}
        # Detail is measured at half size (sensor noise halved), structure at a quarter.
        self._half = (max(16, width // 2), max(16, height // 2))
        self._quarter = (max(8, width // 4), max(8, height // 4))
        valid = cv2.bitwise_not(polygon_mask(config.ignore, *self._half))
        # Shrunk so the 3x3 Laplacian and the blur never reach into an ignored overlay
        # (an on-screen clock's sharp digits would look like detail).
        self._valid_half = cv2.erode(valid, np.ones((5, 5), np.uint8))
        quarter_valid = cv2.resize(self._valid_half, self._quarter, interpolation=cv2.INTER_AREA)
        _, self._valid_quarter = cv2.threshold(quarter_valid, 254, 255, cv2.THRESH_BINARY)
        self._valid_quarter_bool = self._valid_quarter > 0
        self._reference: _Reference | None = None
        self._last_ms: int | None = None
        self._reapproved: TamperChange | None = None  # "moved" closed by set_reference, to report
        self.last_measures: TamperMeasures | None = None
        self._view = BackgroundView(width, height)
        # What moves in a sample is what changed since the picture before it or until the one after it (a
        # uniform shirt moving along itself changes only at its edges from one picture to the next).
        self._previous: np.ndarray | None = None   # the picture before
        self._sampled: np.ndarray | None = None    # the newest sample, until the picture after it
        self._proposal: np.ndarray | None = None   # the first reference to propose (proposed_reference)
        self._kernel = np.ones((3, 3), np.uint8)
        self._view_similarity: float | None = None  # of the latest background view to the reference

    @property
    def active_kinds(self) -> frozenset[TamperKind]:
        """The conditions open now (a re-approval's "moved" closing already taken off)."""
        return frozenset(kind for kind, c in self._conditions.items() if c.is_open)

    def set_reference(self, grey: np.ndarray) -> None:
        """Approve ``grey`` as the camera's reference view. An open "moved" condition is
        closed at once; the closing change is returned by the next ``analyse`` call (with
        that picture's time), so every change reaches the caller the same way."""
        self._check(grey)
        half, quarter = self._shrink(grey)
        contrast, detail = self._contrast_detail(half, quarter)
        self._reference = _Reference(contrast, detail, self._structure(quarter))
        self._view_similarity = self._similarity_of_view()
        closed = self._conditions[TamperKind.MOVED].force_close(
            0, 1.0, "camera view re-approved as the reference")
        if closed is not None:
            self._reapproved = closed

    def analyse(self, time_ms: int, grey: np.ndarray) -> list[TamperChange]:
        """Check one picture (skipped if less than 1/analyse_hz s after the last one
        checked); returns the conditions that opened or closed."""
        self._check(grey)
        previous, self._previous = self._previous, grey
        if not self.config.tamper:
            return []
        if self._sampled is not None:   # what moved since the newest sample completes its mask
            self._view.also_moving(self._moving(grey, self._sampled))
            self._sampled = None
            if self._reference is not None:
                self._view_similarity = self._similarity_of_view()
            else:
                self._proposal = self._view.view(REFERENCE_SAMPLES)
        reported: list[TamperChange] = []
        if self._reapproved is not None:
            reported.append(replace(self._reapproved, time_ms=time_ms, since_ms=time_ms))
            self._reapproved = None
        if self._last_ms is not None and 0 <= time_ms - self._last_ms < self._interval_ms:
            return reported
        self._last_ms = time_ms
        half, quarter = self._shrink(grey)
        contrast, detail = self._contrast_detail(half, quarter)
        ref = self._reference
        covered_below = _COVERED_CONTRAST_MAX
        if ref is not None:
            covered_below = min(covered_below, _COVERED_CONTRAST_SHARE * ref.contrast)
        # Blur and view are not measurable on a covered picture: no structure left. Nor is it a sample.
        flat = contrast < covered_below
        if not flat and self._view.offer(time_ms, grey, self._moving(grey, previous)):
            self._sampled = grey
        similarity = self._view_similarity if ref is not None else None
        self.last_measures = TamperMeasures(time_ms, contrast, detail, similarity)

        covered = self._below(TamperKind.COVERED, contrast, covered_below)
        contrast_share = contrast / (ref.contrast if ref else _COVERED_CONTRAST_MAX)
        changes = [self._conditions[TamperKind.COVERED].update(
            time_ms, covered, min(1.0, contrast_share),
            f"picture nearly uniform (contrast {contrast:.1f} luma levels"
            + (f", reference {ref.contrast:.1f})" if ref else ")"))]
        if ref is None:
            return reported + [c for c in changes if c is not None]

        flat = flat or covered
        # Fine detail is compared with the reference's only while the view is the reference's: a camera
        # turned to a smooth wall has less detail, and is "moved", not "defocused" (a blurred lens keeps the
        # big shapes, so its view still matches).
        other_view = similarity is not None and similarity < _MOVED_SIMILARITY * _CLEAR_FACTOR
        defocused = None if flat or other_view else self._below(
            TamperKind.DEFOCUSED, detail, _DEFOCUSED_DETAIL_SHARE * ref.detail)
        detail_share = detail / ref.detail if ref.detail > 0 else 1.0
        changes.append(self._conditions[TamperKind.DEFOCUSED].update(
            time_ms, defocused, detail_share,
            f"fine detail at {detail_share:.0%} of the reference view's"))
        # A blurred picture still shows the big shapes, so "moved" is judged on it too.
        moved = None if flat or similarity is None else self._below(TamperKind.MOVED, similarity, _MOVED_SIMILARITY)
        changes.append(self._conditions[TamperKind.MOVED].update(
            time_ms, moved, similarity or 0.0,
            f"view matches the reference at {similarity or 0.0:.2f} (1 = same view)"))
        return reported + [c for c in changes if c is not None]

    def proposed_reference(self) -> np.ndarray | None:
        """Without a reference: the camera's background view over REFERENCE_SAMPLES samples, once it has
        them (first commissioning: approve it with ``set_reference``); None before, or with a reference."""
        return None if self._reference is not None else self._proposal

    def close(self, time_ms: int, why: str = STREAM_LOST) -> list[TamperChange]:
        """Close every open condition (stream lost, shutdown, a clock step): nothing is known any more."""
        changes = [c.force_close(time_ms, 0.0, why)
                   for c in self._conditions.values()]
        if self._reapproved is not None:  # closed already; report it now rather than never
            changes.insert(0, replace(self._reapproved, time_ms=time_ms, since_ms=time_ms))
            self._reapproved = None
        self._last_ms = None
        self._view.clear()   # the view after a gap may be another one
        self._previous = self._sampled = self._proposal = None
        self._view_similarity = None
        return [c for c in changes if c is not None]

    # -- measures ------------------------------------------------------------

    def _check(self, grey: np.ndarray) -> None:
        if grey.shape != (self.height, self.width) or grey.dtype != np.uint8:
            raise ValueError(f"expected a {self.width}x{self.height} uint8 grey picture, "
                             f"got {grey.dtype} {grey.shape}")

    def _shrink(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        half = cv2.resize(grey, self._half, interpolation=cv2.INTER_AREA)
        quarter = cv2.resize(half, self._quarter, interpolation=cv2.INTER_AREA)
        return half, quarter

    def _contrast_detail(self, half: np.ndarray, quarter: np.ndarray) -> tuple[float, float]:
        # Contrast from the quarter-size picture: averaging leaves sensor noise out of it.
        _, std = cv2.meanStdDev(quarter, mask=self._valid_quarter)
        contrast = float(std[0, 0])
        laplacian = cv2.Laplacian(half, cv2.CV_16S, ksize=1)
        sharpness = cv2.mean(cv2.convertScaleAbs(laplacian), mask=self._valid_half)[0]
        return contrast, sharpness / max(contrast, 1.0)

    def _moving(self, grey: np.ndarray, previous: np.ndarray | None) -> np.ndarray | None:
        """Where something moved since the picture before (a picture apart, not against a background: on a
        street busy for hours a background model takes passers-by in), grown by a few pixels; None without
        a picture before."""
        if previous is None:
            return None
        _, moved = cv2.threshold(cv2.absdiff(grey, previous), _MOVING_LEVELS, 255, cv2.THRESH_BINARY)
        moved = cv2.morphologyEx(moved, cv2.MORPH_OPEN, self._kernel)   # sensor noise specks
        return cv2.dilate(moved, self._kernel, iterations=3)

    def _similarity_of_view(self) -> float | None:
        view = self._view.view()
        if view is None or self._reference is None:
            return None
        return _similarity(self._reference.structure, self._structure(self._shrink(view)[1]))

    def _structure(self, quarter: np.ndarray) -> np.ndarray:
        """Edge orientations of a heavily blurred picture as a doubled-angle vector field
        weighted by edge strength: independent of brightness and contrast (normalised),
        of edges flipping dark/light (IR), and of fine detail (blurred away)."""
        blurred = cv2.GaussianBlur(quarter.astype(np.float32), (0, 0), 1.5)
        gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3)
        magnitude = cv2.magnitude(gx, gy) + np.float32(1e-3)
        field = np.stack([(gx * gx - gy * gy) / magnitude, 2 * gx * gy / magnitude])
        field[:, ~self._valid_quarter_bool] = 0
        norm = float(np.sqrt((field * field).sum()))
        return field / norm if norm > 0 else field

    def _below(self, kind: TamperKind, value: float, threshold: float) -> bool:
        """Whether ``value`` is low enough for ``kind`` to be present, with hysteresis: an
        open condition needs a clearly better value (``_CLEAR_FACTOR`` times the threshold)
        to count as gone."""
        if self._conditions[kind].is_open:
            threshold *= _CLEAR_FACTOR
        return value < threshold


def _similarity(reference: np.ndarray, current: np.ndarray) -> float:
    """Correlation of two unit-norm orientation fields: 1 same view, ~0 unrelated."""
    return max(0.0, float((reference * current).sum()))
