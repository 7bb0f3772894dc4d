"""Watching the wall clock against the boot-time clock, once per step of the supervisor's periodic work
(docs/architecture.md, "Clock trust").

Owns: seeing a clock step and recording it as a `clock_jump` alert event (one per enabled camera, as the
other box-wide alerts), noting the current boot's offset (wall minus boot-time clock) the first time the
clock is synchronised, and running the re-anchoring of segments recorded before that (index.reanchoring).

Invariants:
- `now_ms() - boot_ms()` changes only when the wall clock is stepped: NTP slews at most 0.5 ms per second,
  and CLOCK_BOOTTIME counts a suspend as the wall clock does. A change over WALL_STEP_MS between two steps, or
  since the boot's offset was noted by an earlier run of edgenvr in the same boot, is a jump: first sync after
  a boot at 1970, a false NTP answer, someone setting the date.
- Nothing here deletes or reorders anything: the event says what happened; ages and the ring's order are on
  the timeline (index.recording_timeline), which a jump does not move.
- The boot's offset is the one of its first synchronised observation and is not changed by later jumps (a
  later jump may be the false one as well as the fix; the first synchronisation is what ends "unsynchronised").

Failure paths: reading the clock does not fail (core.clock answers "not synchronised" when it cannot tell);
index trouble while re-anchoring is raised to the caller's TroubleLog and retried at the next interval.
"""

from __future__ import annotations

import logging

from edgenvr.config.records import Config
from edgenvr.core.clock import WALL_STEP_MS, Clock
from edgenvr.core.records import AlertKind, EventKind, EventRecord
from edgenvr.core.time_format import format_ms
from edgenvr.index.reanchoring import reanchor_segments
from edgenvr.index.recording_timeline import describe_step
from edgenvr.index.writer import IndexWriter
from edgenvr.storage.layout import StorageLayout

log = logging.getLogger(__name__)

class ClockWatch:
    def __init__(self, writer: IndexWriter, layout: StorageLayout, config: Config, clock: Clock) -> None:
        self.writer = writer
        self.layout = layout
        self.config = config
        self.clock = clock
        self._offset_ms: int | None = None   # wall minus boot-time clock at the last step of this run

    def step(self) -> None:
        """Look at the clocks once (see the module docstring); cheap: three clock reads."""
        wall_ms, boot_ms = self.clock.now_ms(), self.clock.boot_ms()
        synchronised = self.clock.synchronised()
        offset = wall_ms - boot_ms
        previous = self._offset_ms if self._offset_ms is not None else self.writer.timeline.current_offset_ms()
        if previous is not None and abs(offset - previous) > WALL_STEP_MS:
            self._jumped(offset - previous, wall_ms, synchronised)
        self._offset_ms = offset
        self.writer.timeline.note_offset(offset)
        if synchronised and self.writer.timeline.note_synchronised(offset):
            log.info("wall clock synchronised (%s); segments recorded before are re-anchored to it", format_ms(wall_ms))

    def reanchor(self) -> None:
        """Move what was recorded before the clock was synchronised (index.reanchoring), a batch at a time."""
        reanchor_segments(self.writer, self.layout)

    def _jumped(self, step_ms: int, wall_ms: int, synchronised: bool) -> None:
        detail = (f"wall clock stepped {describe_step(step_ms)}, from {format_ms(wall_ms - step_ms)} to"
                  f" {format_ms(wall_ms)}; {'synchronised' if synchronised else 'not synchronised'} now."
                  " No video is deleted or reordered for it: retention counts on the boot-time clock")
        log.warning("clock jump: %s", detail)
        for camera in self.config.enabled_cameras:
            self.writer.add_event(EventRecord(camera.id, EventKind.ALERT, wall_ms, wall_ms,
                                              subkind=AlertKind.CLOCK_JUMP, detail=detail))
