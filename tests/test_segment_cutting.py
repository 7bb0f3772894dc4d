"""Where the recorder cuts segments and which packets it records, on plain values: no camera, no files.

The cutter (recording.segment_cutter) and the timestamp filter (recording.timestamp_filter) are the
recorder's decisions; test_recording.py checks the same rules end to end against real RTSP cameras.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from fractions import Fraction

import pytest

from edgenvr.recording.annexb import parameter_sets
from edgenvr.recording.segment_cutter import FORCED_CUT_MS, Cut, SegmentCutter
from edgenvr.recording.timestamp_filter import filter_timestamps

TIME_BASE = Fraction(1, 90_000)   # RTSP video
SECOND = 90_000                   # ticks
SPS_A, SPS_B = b"sps-1080p", b"sps-720p"


def cutter(segment_seconds: float = 10) -> SegmentCutter:
    return SegmentCutter.for_stream(segment_seconds, TIME_BASE)


# -- segment cutter ---------------------------------------------------------------------------------------

def test_tick_counts_come_from_the_segment_length_less_the_slack_and_the_forced_cut_bound() -> None:
    made = cutter(10)
    assert made.segment_ticks == int(9.9 * SECOND)
    assert made.forced_cut_ticks == FORCED_CUT_MS // 1000 * SECOND == 15 * 60 * SECOND


def test_a_segment_is_cut_at_the_first_key_frame_at_or_after_its_length() -> None:
    made = cutter(10)
    decisions = [made.at_keyframe(t * SECOND, SPS_A) for t in (0, 2, 4, 6, 8, 10, 12, 20)]
    assert decisions == [Cut.FIRST, Cut.NONE, Cut.NONE, Cut.NONE, Cut.NONE, Cut.LENGTH, Cut.NONE, Cut.LENGTH]
    assert made.start_pts == 20 * SECOND


def test_the_100_ms_slack_absorbs_timer_jitter_and_no_more() -> None:
    early_by_50ms = cutter(10)
    early_by_50ms.at_keyframe(0, SPS_A)
    assert early_by_50ms.at_keyframe(int(9.95 * SECOND), SPS_A) is Cut.LENGTH
    early_by_150ms = cutter(10)
    early_by_150ms.at_keyframe(0, SPS_A)
    assert early_by_150ms.at_keyframe(int(9.85 * SECOND), SPS_A) is Cut.NONE


def test_new_parameter_sets_cut_at_once_and_the_same_or_none_do_not() -> None:
    made = cutter(10)
    assert made.at_keyframe(0, SPS_A) is Cut.FIRST
    assert made.at_keyframe(2 * SECOND, SPS_A) is Cut.NONE
    assert made.at_keyframe(3 * SECOND, b"") is Cut.NONE          # a key frame without parameter sets
    assert made.at_keyframe(4 * SECOND, SPS_B) is Cut.PARAMETERS
    assert made.start_pts == 4 * SECOND and made.params == SPS_B
    assert made.at_keyframe(14 * SECOND, SPS_A) is Cut.PARAMETERS  # long enough too: the change is the reason


def test_the_first_key_frame_starts_a_segment_whatever_its_parameter_sets() -> None:
    assert cutter().at_keyframe(5 * SECOND, b"") is Cut.FIRST
    assert cutter().at_keyframe(5 * SECOND, SPS_B) is Cut.FIRST


def test_key_frames_that_stop_for_the_forced_cut_time_end_the_connection() -> None:
    made = cutter(10)
    assert made.forced_cut_pts == sys.maxsize      # before any segment, no packet is overdue
    made.at_keyframe(7 * SECOND, SPS_A)
    assert made.forced_cut_pts == 7 * SECOND + made.forced_cut_ticks
    made.at_keyframe(9 * SECOND, SPS_A)            # no cut: the bound still counts from the segment's start
    assert made.forced_cut_pts == 7 * SECOND + made.forced_cut_ticks
    made.at_keyframe(17 * SECOND, SPS_A)           # cut: it counts from the new segment
    assert made.forced_cut_pts == 17 * SECOND + made.forced_cut_ticks


def test_parameter_sets_are_read_from_the_front_of_an_access_unit() -> None:
    h264 = b"\x00\x00\x00\x01\x67SPS\x00\x00\x00\x01\x68PPS\x00\x00\x01\x65slice\x00\x00\x01\x67late"
    assert parameter_sets(h264, "h264") == b"\x67SPS\x68PPS"
    hevc = b"\x00\x00\x00\x01\x40\x01VPS\x00\x00\x01\x42\x01SPS\x00\x00\x01\x44\x01PPS\x00\x00\x01\x26\x01slice"
    assert parameter_sets(hevc, "hevc") == b"\x40\x01VPS\x42\x01SPS\x44\x01PPS"
    assert parameter_sets(b"\x00\x00\x01\x65slice", "h264") == b""
    assert parameter_sets(h264, "mpeg4") == b""


# -- timestamp filter -------------------------------------------------------------------------------------

@dataclass
class Packet:
    dts: int | None
    key: bool = False
    size: int = 100
    pts: int | None = None

    def __post_init__(self) -> None:
        self.pts = self.dts if self.pts is None else self.pts

    @property
    def is_keyframe(self) -> bool:
        return self.key


def run_filter(packets: list[Packet], frame_ticks: int = 3600) -> tuple[list[tuple[int | None, bool]], dict[str, int]]:
    dropped = {"before_keyframe": 0, "no_dts": 0, "non_increasing_dts": 0, "mux_error": 0}
    passed = [(p.dts, p.key) for p in filter_timestamps(packets, frame_ticks, dropped)]
    return passed, dropped


def test_the_untimed_first_key_frame_is_stamped_one_frame_before_the_next_packet() -> None:
    held = Packet(None, key=True)
    passed, dropped = run_filter([held, Packet(10_000), Packet(13_600)])
    assert passed == [(6_400, True), (10_000, False), (13_600, False)]
    assert held.pts == 6_400
    assert sum(dropped.values()) == 0


def test_an_untimed_packet_after_the_held_key_frame_drops_both_and_recording_starts_at_the_next_key() -> None:
    passed, dropped = run_filter([Packet(None, key=True), Packet(None), Packet(10_000), Packet(13_600, key=True),
                                  Packet(17_200)])
    assert passed == [(13_600, True), (17_200, False)]
    assert dropped["no_dts"] == 2 and dropped["before_keyframe"] == 1


def test_untimed_packets_later_in_the_stream_are_dropped_and_counted() -> None:
    passed, dropped = run_filter([Packet(0, key=True), Packet(None), Packet(3_600), Packet(None, key=True)])
    assert passed == [(0, True), (3_600, False)]
    assert dropped["no_dts"] == 2


def test_packets_before_the_first_key_frame_are_dropped_and_counted() -> None:
    passed, dropped = run_filter([Packet(0), Packet(3_600), Packet(7_200, key=True), Packet(10_800)])
    assert passed == [(7_200, True), (10_800, False)]
    assert dropped["before_keyframe"] == 2


def test_dts_must_strictly_increase_over_what_was_passed_on() -> None:
    passed, dropped = run_filter([Packet(0, key=True), Packet(3_600), Packet(3_600), Packet(1_000),
                                  Packet(7_200), Packet(5_000, key=True), Packet(10_800)])
    assert passed == [(0, True), (3_600, False), (7_200, False), (10_800, False)]
    assert dropped["non_increasing_dts"] == 3


def test_a_packet_dropped_before_the_first_key_frame_does_not_raise_the_dts_floor() -> None:
    passed, dropped = run_filter([Packet(9_000), Packet(7_200, key=True), Packet(10_800)])
    assert passed == [(7_200, True), (10_800, False)]
    assert dropped == {"before_keyframe": 1, "no_dts": 0, "non_increasing_dts": 0, "mux_error": 0}


def test_flush_packets_are_skipped_without_counting() -> None:
    passed, dropped = run_filter([Packet(0, key=True), Packet(None, size=0), Packet(3_600), Packet(None, size=0)])
    assert passed == [(0, True), (3_600, False)]
    assert sum(dropped.values()) == 0


@pytest.mark.parametrize("first", [Packet(None, key=True), Packet(None)])
def test_a_stream_that_ends_on_an_untimed_packet_passes_nothing_on(first: Packet) -> None:
    passed, _ = run_filter([first])
    assert passed == []
