"""Motion detection as a user relies on it: people walking by are events with the right start
and end, lights, IR and sensor noise are not, zones and ignore masks do what they say.

Checked on labelled synthetic clips (``edgenvr.simulator.labelled_scenes``) decoded with PyAV and fed
to the detector at 5 fps and 320x180, as the detector process will; no RTSP needed.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLIP_CACHE

from edgenvr.config.records import MotionConfig, Polygon, Zone
from edgenvr.detection.motion_detector import (
    MotionDetector,
    MotionEvent,
    MotionEventTracker,
    MotionResult,
)
from edgenvr.detection.tamper_detector import TamperDetector
from edgenvr.simulator import (
    LEFT_THIRD,
    RIGHT_THIRD,
    SCENES,
    MotionTruth,
    SceneTruth,
    analysis_frames,
    counter_ignore_polygon,
    decode_frame_counter,
    make_scene_clip,
)

WIDTH, HEIGHT = 320, 180  # analysis size
ANALYSIS_FPS = 5.0
TOLERANCE_S = 1.0  # event start and end must be this close to the truth
# Every labelled frame carries a frame-counter barcode and digits; masked like a camera's clock.
COUNTER = counter_ignore_polygon(640, 360)


@functools.cache
def scene(name: str) -> SceneTruth:
    return make_scene_clip(CLIP_CACHE / "scenes" / f"{name}.h264", name)


@functools.cache
def frames(name: str) -> tuple[tuple[int, np.ndarray], ...]:
    truth = scene(name)
    return tuple(analysis_frames(truth.path, truth.fps, fps=ANALYSIS_FPS, width=WIDTH))


def config(*, ignore: tuple[Polygon, ...] = (), zones: tuple[Zone, ...] = (),
           sensitivity: float = 0.5) -> MotionConfig:
    return MotionConfig(ignore=(COUNTER, *ignore), zones=zones, sensitivity=sensitivity)


def detect_events(name: str, motion_config: MotionConfig) -> list[MotionEvent]:
    detector = MotionDetector(motion_config, WIDTH, HEIGHT)
    tracker = MotionEventTracker()
    events: list[MotionEvent] = []
    time_ms = 0
    for time_ms, grey in frames(name):
        events += [c.event for c in tracker.update(time_ms, detector.analyse(grey))
                   if c.kind == "closed"]
    events += [c.event for c in tracker.close(time_ms)]
    return events


def matches(event: MotionEvent, truth: MotionTruth) -> bool:
    start_s, end_s = event.start_ms / 1000, event.end_ms / 1000
    overlap = start_s <= truth.end_s and truth.start_s <= end_s
    return (overlap and abs(start_s - truth.start_s) <= TOLERANCE_S
            and abs(end_s - truth.end_s) <= TOLERANCE_S)


def describe(events: list[MotionEvent]) -> str:
    return ", ".join(f"{e.start_ms / 1000:.1f}-{e.end_ms / 1000:.1f} s {list(e.zones)}"
                     for e in events) or "no events"


@pytest.fixture(scope="module", autouse=True)
def clips() -> None:
    for name in SCENES:  # generated once (cached on disk by their parameters)
        scene(name)


# ---------------------------------------------------------------------------
# Real(istic) video
# ---------------------------------------------------------------------------


def test_a_person_walking_past_is_one_event_per_pass_with_start_and_end_within_a_second() -> None:
    truth = scene("walk").motion
    events = detect_events("walk", config())
    assert len(truth) == 2
    assert len(events) == len(truth), f"truth {truth}, detected {describe(events)}"
    for event, walk in zip(events, truth):
        assert matches(event, walk), f"truth {walk}, detected {describe(events)}"
        assert walk.start_s * 1000 <= event.peak_time_ms <= walk.end_s * 1000
        assert 0 < event.peak_score <= 1


@pytest.mark.parametrize("name", ["noise", "brightness_jump", "light_ramp", "ir_switch"])
def test_sensor_noise_light_changes_and_the_ir_switch_are_no_motion(name: str) -> None:
    events = detect_events(name, config())
    assert events == [], describe(events)


def test_most_sensitive_setting_still_ignores_noise_and_light_changes() -> None:
    for name in ("noise", "brightness_jump", "light_ramp", "ir_switch"):
        events = detect_events(name, config(sensitivity=1.0))
        assert events == [], f"{name}: {describe(events)}"


def test_a_light_switch_is_reported_as_a_global_change() -> None:
    detector = MotionDetector(config(), WIDTH, HEIGHT)
    switched = [t for t, grey in frames("brightness_jump") if detector.analyse(grey).global_change]
    # The lights go on at 10 s and off at 20 s.
    assert any(abs(t - 10_000) <= 400 for t in switched), switched
    assert any(abs(t - 20_000) <= 400 for t in switched), switched


def test_someone_right_in_front_of_the_lens_is_motion() -> None:
    (truth,) = scene("person_in_front").motion
    events = detect_events("person_in_front", config())
    assert len(events) == 1 and matches(events[0], truth), f"truth {truth}, {describe(events)}"


def test_motion_only_inside_ignore_polygons_gives_no_event() -> None:
    events = detect_events("zones", config(ignore=(LEFT_THIRD, RIGHT_THIRD)))
    assert events == [], describe(events)


def test_an_ignored_area_hides_only_its_own_motion() -> None:
    left, right = scene("zones").motion
    assert (left.region, right.region) == ("left", "right")
    events = detect_events("zones", config(ignore=(LEFT_THIRD,)))
    assert len(events) == 1 and matches(events[0], right), describe(events)


def test_with_a_zone_only_motion_inside_it_counts_and_the_event_names_it() -> None:
    left, right = scene("zones").motion
    events = detect_events("zones", config(zones=(Zone("door", LEFT_THIRD),)))
    assert len(events) == 1 and matches(events[0], left), describe(events)
    assert events[0].zones == ("door",)


def test_each_event_lists_the_zones_its_motion_was_in() -> None:
    left, right = scene("zones").motion
    zones = (Zone("door", LEFT_THIRD), Zone("gate", RIGHT_THIRD))
    events = detect_events("zones", config(zones=zones))
    assert len(events) == 2, describe(events)
    assert matches(events[0], left) and events[0].zones == ("door",)
    assert matches(events[1], right) and events[1].zones == ("gate",)


def test_precision_and_recall_on_the_labelled_set() -> None:
    """Every labelled motion found (start and end within 1 s), nothing else reported.
    The tamper clips (covered, defocused, moved) carry no motion labels and are left out."""
    events_total = truths_total = matched = 0
    report = []
    for name in [name for name in SCENES if scene(name).motion_labelled]:
        truth = list(scene(name).motion)
        events = detect_events(name, config())
        unmatched = list(truth)
        for event in events:
            hit = next((t for t in unmatched if matches(event, t)), None)
            if hit is not None:
                unmatched.remove(hit)  # one event per truth interval
        events_total += len(events)
        truths_total += len(truth)
        matched += len(truth) - len(unmatched)
        report.append(f"  {name}: truth {[(t.start_s, t.end_s) for t in truth]}, "
                      f"detected {describe(events)}")
    precision = matched / events_total if events_total else 1.0
    recall = matched / truths_total if truths_total else 1.0
    print("\n" + "\n".join(report))
    print(f"motion events: precision {precision:.2f} ({matched}/{events_total}), "
          f"recall {recall:.2f} ({matched}/{truths_total})")
    assert precision == 1.0 and recall == 1.0, "\n".join(report)


def test_cpu_per_analysed_picture(capsys: pytest.CaptureFixture[str]) -> None:
    """Printed, not asserted: timing depends on the machine and its load."""
    pictures = [grey for _t, grey in frames("walk")] + [grey for _t, grey in frames("zones")]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # as a detector process should run: one camera, no thread pool
    try:
        motion = MotionDetector(config(), WIDTH, HEIGHT)
        tamper = TamperDetector(config(), WIDTH, HEIGHT)
        tamper.set_reference(pictures[0])
        start = time.process_time()
        for grey in pictures:
            motion.analyse(grey)
        motion_s = time.process_time() - start
        start = time.process_time()
        for i, grey in enumerate(pictures):  # analyse_hz=1 would skip most; time real checks
            tamper.analyse(i * 1000, grey)
        tamper_s = time.process_time() - start
    finally:
        cv2.setNumThreads(threads)
    n = len(pictures)
    motion_ms, tamper_ms = 1000 * motion_s / n, 1000 * tamper_s / n
    per_second_ms = ANALYSIS_FPS * motion_ms + tamper_ms  # tamper runs once a second
    with capsys.disabled():
        print(f"\nCPU at {WIDTH}x{HEIGHT}: MotionDetector.analyse {motion_ms:.3f} ms/picture, "
              f"TamperDetector.analyse {tamper_ms:.3f} ms/check; at {ANALYSIS_FPS:.0f} fps with "
              f"1 tamper check/s: {per_second_ms:.2f} ms CPU per second "
              f"= {per_second_ms / 10:.2f} % of one core (decode not included)")


# ---------------------------------------------------------------------------
# Small synthetic pictures: the settings do what they say
# ---------------------------------------------------------------------------


def _still(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 190, size=(HEIGHT // 10, WIDTH // 10)).astype(np.uint8)
    return cv2.resize(base, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)


def _with_square(picture: np.ndarray, x: int, size: int, delta: int) -> np.ndarray:
    out = picture.astype(np.int16)
    out[80:80 + size, x:x + size] += delta
    return np.clip(out, 0, 255).astype(np.uint8)


def _first_motion(motion_config: MotionConfig, size: int, delta: int) -> bool:
    detector = MotionDetector(motion_config, WIDTH, HEIGHT)
    still = _still()
    for _ in range(10):
        detector.analyse(still)
    return detector.analyse(_with_square(still, 100, size, delta)).motion


def test_higher_sensitivity_counts_fainter_changes() -> None:
    faint = 22  # luma levels brighter than the background
    assert not _first_motion(MotionConfig(sensitivity=0.2), 20, faint)
    assert _first_motion(MotionConfig(sensitivity=0.9), 20, faint)


def test_blobs_smaller_than_min_area_are_not_motion() -> None:
    # 20x20 = 400 px = 0.7 % of 320x180
    assert _first_motion(MotionConfig(min_area=0.002), 20, 60)
    assert not _first_motion(MotionConfig(min_area=0.01), 20, 60)


def test_disabled_detection_reports_nothing() -> None:
    assert not _first_motion(MotionConfig(enabled=False), 40, 80)


# ---------------------------------------------------------------------------
# Events from per-picture results
# ---------------------------------------------------------------------------

MOVING = MotionResult(motion=True, score=0.1)
STILL = MotionResult(motion=False, score=0.0)


def _feed(tracker: MotionEventTracker, results: list[tuple[int, MotionResult]]
          ) -> list[tuple[int, str, MotionEvent]]:
    return [(t, c.kind, c.event) for t, r in results for c in tracker.update(t, r)]


def test_a_single_noisy_picture_opens_no_event() -> None:
    tracker = MotionEventTracker(start_frames=2, quiet_seconds=3)
    changes = _feed(tracker, [(0, STILL), (200, MOVING), (400, STILL), (10_000, STILL)])
    assert changes == [] and tracker.close(10_200) == []


def test_short_pauses_stay_one_event_that_ends_at_the_last_motion() -> None:
    tracker = MotionEventTracker(start_frames=2, quiet_seconds=3)
    results = [(t, MOVING) for t in range(1000, 3000, 200)]
    results += [(t, STILL) for t in range(3000, 5000, 200)]  # a 2 s pause: same event
    results += [(t, MOVING) for t in range(5000, 6000, 200)]
    results += [(t, STILL) for t in range(6000, 9600, 200)]
    changes = _feed(tracker, results)
    kinds = [k for _t, k, _e in changes if k != "peak"]
    assert kinds == ["opened", "closed"]
    opened = next(e for _t, k, e in changes if k == "opened")
    closed = next(e for _t, k, e in changes if k == "closed")
    assert opened.start_ms == 1000  # the first motion picture, not the one that confirmed it
    assert (closed.start_ms, closed.end_ms) == (1000, 5800)
    closed_at = next(t for t, k, _e in changes if k == "closed")
    assert closed_at - closed.end_ms > 3000  # closed once 3 s went by without motion


def test_peak_changes_mark_each_picture_to_keep_for_the_snapshot() -> None:
    tracker = MotionEventTracker(start_frames=2, quiet_seconds=3)
    scores = [0.05, 0.1, 0.3, 0.2, 0.4, 0.1]
    results = [(1000 + 200 * i, MotionResult(True, s, ("door",) if i == 4 else ()))
               for i, s in enumerate(scores)]
    changes = _feed(tracker, results)
    peaks = [(t, e.peak_score) for t, k, e in changes if k == "peak"]
    # From the opening picture on, every new maximum is announced at its own picture.
    assert peaks == [(1200, 0.1), (1400, 0.3), (1800, 0.4)]
    (closed,) = tracker.close(99_000)
    assert closed.kind == "closed"
    assert closed.event.peak_score == 0.4 and closed.event.peak_time_ms == 1800
    assert closed.event.zones == ("door",) and closed.event.end_ms == 2000


def test_close_at_shutdown_ends_the_open_event_at_its_last_motion() -> None:
    tracker = MotionEventTracker()
    _feed(tracker, [(0, MOVING), (200, MOVING), (400, MOVING), (600, STILL)])
    assert tracker.open_event is not None
    (change,) = tracker.close(800)
    assert change.kind == "closed" and (change.event.start_ms, change.event.end_ms) == (0, 400)
    assert tracker.open_event is None and tracker.close(1000) == []


def test_clips_of_each_scene_are_cached_by_their_parameters(tmp_path: Path) -> None:
    clip = tmp_path / "noise.h264"
    first = make_scene_clip(clip, "noise", width=320, height=180, fps=5)
    mtime = clip.stat().st_mtime_ns
    again = make_scene_clip(clip, "noise", width=320, height=180, fps=5)
    assert again == first and clip.stat().st_mtime_ns == mtime
    decoded = list(analysis_frames(clip, 5, fps=5, width=160))
    assert len(decoded) == first.frames and decoded[1][0] == 200


def test_scene_frames_carry_the_frame_counter_for_end_to_end_timing() -> None:
    truth = scene("walk")
    full_size = analysis_frames(truth.path, truth.fps, fps=truth.fps,
                                width=truth.width)
    for index, (time_ms, luma) in zip(range(30), full_size):
        assert decode_frame_counter(luma) == index
        assert time_ms == round(index * 1000 / truth.fps)
