"""The supervisor's periodic work on the index and the disk, as one step function on an injected clock.

`IndexHousekeeping.step()` is what the supervisor's loop does once a second, and what tests and
`benchmarks/index_writes.py` drive on a `SimulatedClock` (see `edgenvr.simulator.SimulatedRecordingLoad`):
- a retention sweep every `sweep_seconds`: a full one once per `index_commit_seconds`, so that its deletions
  share the batch's commit; urgent-only in between (retention.policy explains why);
- the disk reserve re-created after each sweep if it was given up;
- the batched commit whenever `IndexWriter.commit_due` says so (urgent changes within a second);
- the clock watch (runtime.clock_watch) every step: a wall clock step becomes a `clock_jump` alert event, the
  boot's offset is noted once the clock is synchronised, and, on the sweep schedule, what was recorded before
  that is re-anchored to its true time (index.reanchoring).

Index and disk trouble (disk full, I/O errors) never stops the loop: each piece of work is retried at
the next step, and its trouble logged once a minute per kind (`TroubleLog`): recorders go on writing files
regardless, and nothing pending is dropped.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Callable

from edgenvr.config.records import StorageConfig
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.records import SegmentRecord
from edgenvr.index.writer import IndexWriter
from edgenvr.retention.policy import RetentionPolicy
from edgenvr.runtime.clock_watch import ClockWatch
from edgenvr.storage.disk_reserve import DiskReserve

log = logging.getLogger(__name__)

TROUBLE_LOG_EVERY_S = 60.0  # once a minute per kind of trouble is enough for a disk that stays full for hours


class TroubleLog:
    """Runs a piece of periodic work, catching index and disk errors (sqlite3.Error, OSError): the first is
    logged, then once every TROUBLE_LOG_EVERY_S per kind of work while it keeps failing, and its recovery
    once. Other exceptions are bugs and propagate."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._logged: dict[str, float] = {}   # kind of work -> monotonic time its trouble was last logged

    def run(self, what: str, action: Callable[..., object], *args: object) -> bool:
        """`action(*args)`; returns whether it worked."""
        try:
            action(*args)
        except (sqlite3.Error, OSError) as exc:
            now = self.clock.monotonic()
            last = self._logged.get(what)
            if last is None or now - last >= TROUBLE_LOG_EVERY_S:
                self._logged[what] = now
                log.error("%s failed, will retry every tick: %s", what, exc)
            return False
        if self._logged.pop(what, None) is not None:
            log.info("%s works again", what)
        return True


@dataclass
class SweepCounts:
    """What the sweeps of one IndexHousekeeping have done so far."""
    deleted: int = 0         # segments deleted
    freed_bytes: int = 0
    events_deleted: int = 0


@dataclass
class IndexHousekeeping:
    """The sweep schedule, the disk reserve and the batched commit of one index writer (see the module
    docstring). Call `step()` about once a second; `note_segment()` for every segment announced."""

    writer: IndexWriter
    retention: RetentionPolicy
    storage: StorageConfig
    reserve: DiskReserve | None = None
    clock: Clock = SYSTEM_CLOCK
    trouble: TroubleLog | None = None   # shared with the caller's other guarded work; default: one of its own
    counts: SweepCounts = field(default_factory=SweepCounts)

    def __post_init__(self) -> None:
        if self.trouble is None:
            self.trouble = TroubleLog(self.clock)
        self._last_sweep = self._last_full_sweep = -float("inf")
        self.clock_watch = ClockWatch(self.writer, self.retention.layout, self.retention.config, self.clock)

    def note_segment(self, segment: SegmentRecord) -> None:
        """A recorder announced a closed segment: it joins the batch and the write rate retention plans with."""
        self.writer.add_segment(segment)
        self.retention.note_written(segment.bytes)

    def step(self) -> None:
        assert self.trouble is not None
        self.clock_watch.step()
        now = self.clock.monotonic()
        if now - self._last_sweep >= self.storage.sweep_seconds:
            self._last_sweep = now
            full = now - self._last_full_sweep >= self.storage.index_commit_seconds
            if full:
                self._last_full_sweep = now
            self.trouble.run("retention sweep", self._sweep, full)
            if self.reserve is not None:
                self.trouble.run("disk reserve", self.reserve.ensure)
            self.trouble.run("re-anchoring segments", self.clock_watch.reanchor)
        if self.writer.commit_due(self.storage.index_commit_seconds):
            self.trouble.run("index commit", self.writer.commit)

    def _sweep(self, full: bool) -> None:
        result = self.retention.sweep(urgent_only=not full)
        self.counts.deleted += result.deleted
        self.counts.freed_bytes += result.freed_bytes
        self.counts.events_deleted += result.events_deleted
