"""Where the recorder cuts one connection's stream into segments. Pure: plain integers and bytes in, a
decision out; no I/O, no clock.

Rules:
- A segment starts at a key frame: the connection's first one, then each cut.
- The open segment is cut at the first key frame at or after `segment_seconds`, less CUT_SLACK_MS: live RTSP
  timestamps come from a timer, and the slack absorbs its jitter, so a 10 s GOP-aligned camera gets 10 s
  files, not 11 s ones.
- It is also cut at a key frame whose parameter sets (SPS/PPS/VPS) differ from the segment's: a new
  resolution or codec setting starts a new file. A key frame without parameter sets changes nothing.
- A packet that is not a key frame FORCED_CUT_MS after the segment's start means the key frames stopped: the
  connection must end, as the reconnect starts at a fresh one. No segment is longer than that, and the
  index's time-range scans rely on the bound (index.retention_classes.LONGEST_SEGMENT_MS).
Times are in the stream's ticks; the tick counts are derived once per connection (`for_stream`), so the
per-packet check is one integer comparison against `forced_cut_pts`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction

from edgenvr.core.units import MINUTE_MS, SECOND_MS

CUT_SLACK_MS = 100
FORCED_CUT_MS = 15 * MINUTE_MS


class Cut(Enum):
    NONE = "none"                  # the open segment goes on
    FIRST = "first"                # the connection's first segment starts here
    LENGTH = "length"              # the open segment is long enough: it ends, a new one starts here
    PARAMETERS = "parameters"      # the parameter sets changed: it ends, a new one starts with the new ones


@dataclass
class SegmentCutter:
    segment_ticks: int             # a key frame this far after the segment's start cuts it
    forced_cut_ticks: int          # a non-key packet this far after the segment's start ends the connection
    start_pts: int | None = None   # start of the open segment; None before the first key frame
    params: bytes = b""            # the parameter sets of the open segment (the last seen)
    forced_cut_pts: int = sys.maxsize  # a non-key packet at or after this pts ends the connection

    @classmethod
    def for_stream(cls, segment_seconds: float, time_base: Fraction) -> SegmentCutter:
        return cls(segment_ticks=int((segment_seconds - CUT_SLACK_MS / SECOND_MS) / time_base),
                   forced_cut_ticks=int(FORCED_CUT_MS / SECOND_MS / time_base))

    def at_keyframe(self, pts: int, params: bytes) -> Cut:
        """A key frame at `pts` carrying parameter sets `params` (b"" for none): does a segment start here?"""
        changed = bool(self.params and params and params != self.params)
        if params:
            self.params = params
        if self.start_pts is None:
            cut = Cut.FIRST
        elif changed:
            cut = Cut.PARAMETERS
        elif pts - self.start_pts >= self.segment_ticks:
            cut = Cut.LENGTH
        else:
            return Cut.NONE
        self.start_pts = pts
        self.forced_cut_pts = pts + self.forced_cut_ticks
        return cut
