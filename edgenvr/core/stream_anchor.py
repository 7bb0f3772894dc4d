"""Stream clock to wall clock for one camera connection: the one anchoring rule of the recorder and the
motion worker, so an event's times line up with the recording of the same moment.

Owns: the offset of one connection (wall_ms = stream_ms + offset_ms), how it is found and when it moves.
Invariants:
- The offset comes from the smallest (arrival - stream time) seen. Packets and frames reach us late, never
  early (the first second of a session comes out of libav's stream probe buffer up to ~1 s late,
  measured), so the least delayed one is the closest to the camera's real time.
- Until something is observed the offset means nothing; the first observation sets it.
- It moves again only by one of the two re-anchoring rules below, whose caller logs it.
- Times are int ms. Callers convert their stream ticks: there is no Fraction math here (the recorder
  calls `observe` per packet during its first segment).

Why the two callers differ (each keeps its rule, measured against its needs):
- The recorder (`follow_floor=False`, `realign_if_drifted` at each cut) writes segments that must be exactly
  contiguous and whose start time is their file name, so the offset may change only at a cut: the first
  segment opens on its first packet's offset, the floor found over that segment is applied when it closes
  (`settle`, the file is renamed), and afterwards the offset moves only at a cut where the stream clock has
  parted from the wall clock by more than the limit, either way.
- The motion worker (`follow_floor=True`, `realign_if_slow` every frame) timestamps frames that stand alone,
  so a smaller delay is used at once. A late frame is ambiguous there: either the detector is behind (frames
  then come out of a backlog faster than real time, and are skipped) or the camera's clock runs slow
  (frames come at the camera's pace). Only the latter moves the offset, and only after enough paced frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgenvr.core.clock import SYSTEM_CLOCK, Clock


@dataclass(slots=True)
class StreamAnchor:
    clock: Clock = SYSTEM_CLOCK
    follow_floor: bool = False   # True: every smaller delay moves the offset at once (motion); see above
    offset_ms: int = 0           # in use: wall_ms = stream_ms + offset_ms
    floor_ms: int | None = None  # the smallest (arrival - stream time) seen; None before the first observation
    _paced_frames: int = field(default=0, init=False)  # frames in a row that came at the camera's pace
    _previous_arrival_ms: int = field(default=0, init=False)
    _previous_stream_ms: int | None = field(default=None, init=False)

    def observe(self, stream_ms: int) -> int:
        """A packet or frame of stream time `stream_ms` arrives now. Returns its offset (arrival - stream)."""
        offset = self.clock.now_ms() - stream_ms
        floor = self.floor_ms
        if floor is None:
            self.floor_ms = self.offset_ms = offset
        elif offset < floor:
            self.floor_ms = offset
            if self.follow_floor:
                self.offset_ms = offset
        return offset

    def settle(self) -> None:
        """Apply the smallest delay seen (the recorder, when its first segment closes)."""
        if self.floor_ms is not None:
            self.offset_ms = self.floor_ms

    def wall_ms(self, stream_ms: int) -> int:
        return stream_ms + self.offset_ms

    def realign_if_drifted(self, stream_ms: int, wall_ms: int, max_drift_ms: int) -> int | None:
        """The recorder's rule, at a cut: if the anchored time of `stream_ms` is more than `max_drift_ms` off
        `wall_ms` (either way), re-anchor there. Returns the drift (wall - anchored) when it re-anchored."""
        drift = wall_ms - (stream_ms + self.offset_ms)
        if abs(drift) <= max_drift_ms:
            return None
        self.offset_ms = wall_ms - stream_ms
        return drift

    def realign_if_slow(self, stream_ms: int, offset_ms: int, max_lag_ms: int, paced_frames: int) -> int | None:
        """The motion worker's rule, for every frame (`offset_ms` is what `observe` returned for it): a frame
        more than `max_lag_ms` behind the anchor after `paced_frames` frames in a row that arrived at the
        camera's pace means the camera's clock is slow: re-anchor on it. Returns the lag when it re-anchored."""
        arrival_ms = stream_ms + offset_ms
        previous_stream_ms = self._previous_stream_ms
        # At the camera's pace: at least half the stream time between two frames also passed between their
        # arrivals (a backlog is drained far faster than that).
        if previous_stream_ms is not None and \
                arrival_ms - self._previous_arrival_ms >= (stream_ms - previous_stream_ms) / 2:
            self._paced_frames += 1
        else:
            self._paced_frames = 0
        self._previous_arrival_ms, self._previous_stream_ms = arrival_ms, stream_ms
        lag = offset_ms - self.offset_ms
        if lag > max_lag_ms and self._paced_frames >= paced_frames:
            self.offset_ms = self.floor_ms = offset_ms
            return lag
        return None
