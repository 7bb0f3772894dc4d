"""A camera's view without what moves in it: the per-pixel median of pictures sampled a couple of seconds apart.

Owns the samples and the two views made from them: the *current view* (the newest VIEW_SAMPLES, what
"moved" compares with the reference) and a *first reference* (all REFERENCE_SAMPLES, what a camera is
commissioned with). A busy street or a crowded hall is never empty, and where people walk
in many lanes a spot can be covered most of the time; but the caller can tell, around each sample, where
something moves (detection.tamper_detector: what changed since the picture before or until the one after).
A sample keeps that mask, and the median at each pixel is taken over the samples in which nothing moved
there: the street, not its passers-by, even under a spot covered in most samples (where a pixel moved in
every sample, the median of them all stands in). No calm moment is needed, and a calm scene
is not preferred: every camera is commissioned after the same REFERENCE_SAMPLES samples (bound below).

Invariants:
- A sample is taken at most every `sample_ms` (less SAMPLE_SLACK_MS, so a key frame every 2 s is not
  skipped for arriving a millisecond early); a picture that goes back in time (a clock step) is taken.
- A view's pixel is one of its samples' values there (the lower median of the still ones), never a blend of
  two scenes (a camera re-aimed inside the window gives the view it showed in most samples). Each sample is
  first brought to the newest one's light (its mean and contrast), so the lights or the IR switch inside the
  window do not make a patchwork of day and night pixels.
- Bound: a first reference after REFERENCE_SAMPLES samples, (REFERENCE_SAMPLES - 1) sampling intervals
  after the first picture: 28 s with a sub-stream (the tamper detector looks once a second, so a sample
  every 2 s), 30 s on key frames 2 s apart (the picture after the last sample completes its mask), and
  14 key-frame intervals when they come further apart. The current view follows a change of view in
  (VIEW_SAMPLES + 1) / 2 samples: about 10 s.

Cost (320x180, measured on x86): 1.7 MB of samples and masks per camera; a view of 9 samples ~3 ms, made
once per sample (every 2 s).
"""

from __future__ import annotations

import cv2
import numpy as np

from edgenvr.core.units import SECOND_MS

SAMPLE_MS = 2 * SECOND_MS
SAMPLE_SLACK_MS = 250
VIEW_SAMPLES = 9
REFERENCE_SAMPLES = 15


class BackgroundView:
    """Samples of one camera's grey analysis pictures of `width` x `height` (see the module docstring)."""

    def __init__(self, width: int, height: int, sample_ms: int = SAMPLE_MS, keep: int = REFERENCE_SAMPLES) -> None:
        if keep % 2 == 0 or VIEW_SAMPLES > keep:
            raise ValueError("keep an odd number of samples, at least VIEW_SAMPLES")
        self.sample_ms = sample_ms
        self._samples = np.zeros((keep, height, width), np.uint8)
        self._moving = np.zeros((keep, height, width), np.bool_)   # per sample: where something moved
        self._light = np.ones((keep, 2), np.float32)   # per sample: mean and standard deviation
        self._count = 0                   # samples taken; the ring holds the newest `keep`
        self._last_ms: int | None = None  # time of the newest sample

    @property
    def samples(self) -> int:
        """How many samples the views can use."""
        return min(self._count, len(self._samples))

    def offer(self, time_ms: int, grey: np.ndarray, moving: np.ndarray | None = None) -> bool:
        """Take `grey` (with `moving`, where something moves in it: nonzero; None: nothing known) as a sample
        unless the last one was taken less than a sampling interval ago. Returns whether it was taken."""
        last = self._last_ms
        if last is not None and last <= time_ms < last + self.sample_ms - SAMPLE_SLACK_MS:
            return False
        slot = self._count % len(self._samples)
        self._samples[slot] = grey
        if moving is None:
            self._moving[slot] = False
        else:
            np.not_equal(moving, 0, out=self._moving[slot])
        mean, std = cv2.meanStdDev(grey)
        self._light[slot] = (mean[0, 0], max(1.0, std[0, 0]))
        self._count += 1
        self._last_ms = time_ms
        return True

    def also_moving(self, moving: np.ndarray | None) -> None:
        """Where something moved in the newest sample, seen after it was taken (nonzero), is left out too."""
        if moving is not None and self._count:
            newest = self._moving[(self._count - 1) % len(self._samples)]
            np.logical_or(newest, moving != 0, out=newest)

    def view(self, samples: int = VIEW_SAMPLES) -> np.ndarray | None:
        """The median of the newest `samples` samples, pixel by pixel over those in which nothing moved there
        (see the module docstring); None until there are that many."""
        if self.samples < samples:
            return None
        keep = len(self._samples)
        slots = [(self._count - 1 - n) % keep for n in range(samples)]   # newest first
        mean, std = self._light[slots[0]]
        keys = []
        for slot in slots:
            # in the newest sample's light (sample * gain + offset, saturated), then a sort key: the value in the
            # low byte, "moved" above it, so the still values sort first and in order
            gain = std / self._light[slot, 1]
            lit = cv2.addWeighted(self._samples[slot], float(gain), self._samples[slot], 0.0,
                                  float(mean - self._light[slot, 0] * gain), dtype=cv2.CV_8U)
            keys.append(lit.astype(np.uint16) | (self._moving[slot].astype(np.uint16) << 8))
        _sort_planes(keys)
        still = samples - self._moving[slots].sum(axis=0, dtype=np.int16)
        # the lower median of the still values; where it moved in every sample, the median of them all
        middle = np.where(still > 0, (still - 1) // 2, samples // 2)
        return (np.take_along_axis(np.stack(keys), middle[None], axis=0)[0] & 0xFF).astype(np.uint8)

    def clear(self) -> None:
        """Forget every sample."""
        self._count = 0
        self._last_ms = None


def _sort_planes(planes: list[np.ndarray]) -> None:
    """Sort same-shaped arrays element-wise in place (an odd-even transposition network: n rounds of
    compare-exchanges, each two whole-array operations; ~30 times faster than numpy's sort along the first
    axis for the few samples here, measured)."""
    count = len(planes)
    for round_ in range(count):
        for i in range(round_ % 2, count - 1, 2):
            low = np.minimum(planes[i], planes[i + 1])
            np.maximum(planes[i], planes[i + 1], out=planes[i + 1])
            planes[i] = low
