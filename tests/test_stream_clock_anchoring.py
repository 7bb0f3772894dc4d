"""Stream time to wall time (core.stream_anchor), on a simulated clock: the recorder's rule (settle after the
first segment, re-anchor on drift at a cut) and the motion worker's (follow the smallest delay, re-anchor
when late frames keep the camera's pace). test_motion_pipeline.py checks end to end that both line up."""

from __future__ import annotations

from edgenvr.core.clock import SimulatedClock
from edgenvr.core.stream_anchor import StreamAnchor

MAX_DRIFT_MS = 2_000
MAX_LAG_MS = 2_000
PACED = 10


EPOCH = 1_764_547_200_000  # the simulated wall clock's start


def arrive(clock: SimulatedClock, anchor: StreamAnchor, at_ms: int, stream_ms: int) -> int:
    """The packet of stream time `stream_ms` arrives `at_ms` after EPOCH; returns its offset."""
    clock.advance((EPOCH + at_ms - clock.now_ms()) / 1000)
    return anchor.observe(stream_ms)


# -- the recorder's rule ----------------------------------------------------------------------------------

def test_the_first_packet_anchors_until_the_smallest_delay_of_the_first_segment_is_settled() -> None:
    clock = SimulatedClock(EPOCH)
    anchor = StreamAnchor(clock)
    # out of the probe buffer: 900 ms late, then 700, then real time (delay 20 ms), then jitter
    for at_ms, stream_ms in [(900, 0), (940, 240), (1_000, 980), (1_060, 1_020), (1_300, 1_240)]:
        arrive(clock, anchor, at_ms, stream_ms)
    assert anchor.wall_ms(0) == EPOCH + 900          # provisional: the first packet's delay
    assert anchor.floor_ms == EPOCH + 20
    anchor.settle()
    assert anchor.wall_ms(0) == EPOCH + 20
    assert anchor.wall_ms(5_000) == EPOCH + 5_020


def test_a_larger_delay_never_moves_the_anchor() -> None:
    clock = SimulatedClock(EPOCH)
    anchor = StreamAnchor(clock)
    arrive(clock, anchor, 100, 0)
    arrive(clock, anchor, 1_500, 200)
    anchor.settle()
    assert anchor.wall_ms(0) == EPOCH + 100


def test_drift_beyond_the_limit_either_way_re_anchors_at_the_cut_and_less_does_not() -> None:
    anchor = StreamAnchor(SimulatedClock(EPOCH), offset_ms=1_000_000)
    assert anchor.realign_if_drifted(10_000, 1_010_000 + MAX_DRIFT_MS, MAX_DRIFT_MS) is None
    assert anchor.realign_if_drifted(10_000, 1_010_000 - MAX_DRIFT_MS, MAX_DRIFT_MS) is None
    assert anchor.offset_ms == 1_000_000
    assert anchor.realign_if_drifted(10_000, 1_012_001, MAX_DRIFT_MS) == 2_001      # camera clock slow
    assert anchor.wall_ms(10_000) == 1_012_001
    assert anchor.realign_if_drifted(20_000, 1_019_000, MAX_DRIFT_MS) == -3_001     # camera clock fast
    assert anchor.wall_ms(20_000) == 1_019_000


# -- the motion worker's rule -----------------------------------------------------------------------------

def test_following_the_floor_uses_a_smaller_delay_at_once() -> None:
    clock = SimulatedClock(EPOCH)
    anchor = StreamAnchor(clock, follow_floor=True)
    arrive(clock, anchor, 900, 0)
    assert anchor.wall_ms(0) == EPOCH + 900
    arrive(clock, anchor, 1_000, 980)
    assert anchor.wall_ms(0) == EPOCH + 20
    arrive(clock, anchor, 2_500, 1_020)                  # late: no change
    assert anchor.wall_ms(0) == EPOCH + 20


def test_late_frames_at_the_cameras_pace_mean_a_slow_camera_clock_and_re_anchor() -> None:
    clock = SimulatedClock(EPOCH)
    anchor = StreamAnchor(clock, follow_floor=True)
    realigned: list[tuple[int, int]] = []
    for n in range(600):                                   # stream 40 ms a frame, wall 44 ms: 10% slow
        offset = arrive(clock, anchor, 44 * n, 40 * n)
        lag = anchor.realign_if_slow(40 * n, offset, MAX_LAG_MS, PACED)
        if lag is not None:
            realigned.append((n, lag))
    assert realigned == [(501, 2_004)]                     # the first frame more than 2 s late
    assert anchor.wall_ms(40 * 501) == EPOCH + 44 * 501


def test_late_frames_drained_from_a_backlog_do_not_re_anchor() -> None:
    clock = SimulatedClock(EPOCH)
    anchor = StreamAnchor(clock, follow_floor=True)
    lags = []
    for n in range(40):                                    # a 3 s stall after the first frame, then frames
        offset = arrive(clock, anchor, 3_000 + n if n else 0, 40 * n)   # read 1 ms apart
        lags.append(anchor.realign_if_slow(40 * n, offset, MAX_LAG_MS, PACED))
    assert lags == [None] * 40
    assert anchor.offset_ms == EPOCH


def test_late_frames_need_enough_paced_frames_in_a_row() -> None:
    clock = SimulatedClock(EPOCH)
    anchor = StreamAnchor(clock, follow_floor=True)
    offset = arrive(clock, anchor, 0, 0)
    assert anchor.realign_if_slow(0, offset, MAX_LAG_MS, PACED) is None
    for n in range(1, PACED):                              # 2.5 s late from the second frame on, at pace
        offset = arrive(clock, anchor, 2_500 + 40 * n, 40 * n)
        assert anchor.realign_if_slow(40 * n, offset, MAX_LAG_MS, PACED) is None
    offset = arrive(clock, anchor, 2_500 + 40 * PACED, 40 * PACED)
    assert anchor.realign_if_slow(40 * PACED, offset, MAX_LAG_MS, PACED) == 2_500
    assert anchor.wall_ms(0) == EPOCH + 2_500
