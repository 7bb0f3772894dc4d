"""A wall clock step while a camera sees motion: the worker's events never span the step (after NTP's first
answer at a box that booted at 1970, an event from 1970 to 2026 would keep 56 years of "event video"). The
open event ends at the last frame before the step and a new one starts after it, both of real length.

The real motion worker loop and detectors, fed decoded frames on a SimulatedClock, and the real bus."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import pytest

from edgenvr.config.checking import parse_config
from edgenvr.core.bus import BusReceiver, BusSender
from edgenvr.core.clock import SimulatedClock
from edgenvr.core.record_validation import MessageRules
from edgenvr.core.records import EventRecord
from edgenvr.core.units import DAY_MS, SECOND_MS
from edgenvr.detection.motion_worker import CameraWorker
from edgenvr.storage.layout import StorageLayout

FPS = 10
TIME_BASE = Fraction(1, 90_000)


class _Stream:
    time_base = TIME_BASE


class _Container:
    """What libav's demuxer hands the worker: decoded frames, arriving at the camera's pace on `clock`; the
    wall clock is stepped by `step_ms` before frame `step_at`."""

    def __init__(self, clock: SimulatedClock, frames: int, step_at: int, step_ms: int) -> None:
        self.clock, self.frames, self.step_at, self.step_ms = clock, frames, step_at, step_ms

    def decode(self, _stream: object) -> Iterator[av.VideoFrame]:
        rng = np.random.default_rng(1)
        background = rng.integers(60, 120, (240, 320), dtype=np.uint8)
        for n in range(self.frames):
            if n == self.step_at:
                self.clock.step_wall_ms(self.step_ms)
            picture = background.copy()
            x = (n * 7) % 260
            picture[80:160, x:x + 60] = 230          # someone walking across, all the time
            frame = av.VideoFrame.from_ndarray(np.vstack([picture, np.full((120, 320), 128, np.uint8)]),
                                               format="yuv420p")
            frame.pts = int(n / FPS / TIME_BASE)
            self.clock.advance(1 / FPS)
            yield frame


@pytest.mark.parametrize("step_ms", [365 * DAY_MS, -365 * DAY_MS])
@pytest.mark.usefixtures("current_event_loop")
def test_an_event_open_while_the_clock_steps_ends_before_the_step(tmp_path: Path, step_ms: int) -> None:
    config = parse_config(f"""
        [storage]
        data_dir = "{tmp_path / 'data'}"
        [motion]
        tamper = false
        [[cameras]]
        id = "gate"
        url = "rtsp://192.0.2.1/main"
        detect_url = "rtsp://192.0.2.1/sub"
        """)
    layout = StorageLayout(config.storage.data_dir)
    clock = SimulatedClock()
    receiver = BusReceiver(MessageRules(frozenset({"gate"}), layout, 60 * SECOND_MS))
    sender = BusSender(receiver.endpoint)
    try:
        worker = CameraWorker(config.cameras[0], config.recording, layout, sender, threading.Event(), clock=clock)
        stepped_at = clock.now_ms() + 30 * SECOND_MS
        worker._analyse_stream(_Container(clock, 60 * FPS, 30 * FPS, step_ms), _Stream())  # type: ignore[arg-type]
        worker._close_motion_event()
        events: list[EventRecord] = []
        deadline = time.monotonic() + 5   # the bus is asynchronous
        while len(events) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            events += [r for r in receiver.receive_waiting() if isinstance(r, EventRecord) and r.end_ms is not None]
    finally:
        sender.close()
        receiver.close()
    assert len(events) == 2, events
    before, after = events   # in the order they were closed
    assert before.start_ms < before.end_ms <= stepped_at, "the first ends at the last frame before the step"
    assert abs(after.start_ms - (stepped_at + step_ms)) <= 3 * SECOND_MS, "the second starts after it, as stepped"
    assert all(e.end_ms - e.start_ms <= 31 * SECOND_MS for e in events), "neither spans the step"
