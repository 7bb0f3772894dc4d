"""A simulated recording load: days of recording, retention and index batching in seconds, without cameras.

`SimulatedRecordingLoad` runs the real index writer, retention and the supervisor's periodic work
(`runtime.periodic_work.IndexHousekeeping`) on a `SimulatedClock`, for N cameras that each announce a
segment every `segment_seconds` (cut at staggered moments, as real cameras are). Segment files are sparse
stand-ins: the announced size, no data (nothing reads them; the disk is not filled), each carrying its row
in the `user.edgenvr` attribute as a recorder writes it, so the start-up reconcile adopts a file whose row
was lost in a power cut from that attribute, as on a real box. The filesystem the ring measures is a
stand-in too (`disk_bytes`, used = the video indexed), so the quota and the floor act on what was announced.

A simulated recorder times its segments as the real one does: on the stream clock (here the boot-time clock),
anchored to the wall clock, and re-anchored at a cut where the wall clock parted from it by more than 2 s
(core.stream_anchor's rule); each segment carries its clock record (synchronised or not, boot id, boot-time at
start). So a SimulatedClock whose wall clock is stepped (`step_wall_ms`), synchronised later
(`set_synchronised`) or rebooted (`reboot`) gives the index what a box without a real-time clock gives it.

Used by the fast tests (tests/test_simulated_days.py, tests/test_clock_trust.py) and `benchmarks/index_writes.py`. Drive it with
`run(seconds, every=...)`, or `ticks(...)` to look between steps; a tick announces the segments closed by
then and runs one `IndexHousekeeping.step()`, as the supervisor's loop does once a second. Ticks longer than
a second trade the batching's timing (urgent commits within a second) for speed: fine for retention over
weeks, not for measuring commits. Keep them no longer than a segment: retention reckons its headroom from
the write rate of the last minute, which assumes segments trickle in, not a tick's worth at once.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Iterator, NamedTuple

from edgenvr.config.records import Config
from edgenvr.core.clock import SimulatedClock
from edgenvr.core.records import CameraState, SegmentRecord
from edgenvr.index import schema as index_schema
from edgenvr.index.reconcile import ConsistencyReport, reconcile
from edgenvr.index.writer import IndexWriter
from edgenvr.retention.policy import RetentionPolicy
from edgenvr.runtime.periodic_work import IndexHousekeeping
from edgenvr.storage.layout import StorageLayout
from edgenvr.storage.segment_attributes import write_segment_attribute

SIMULATED_FPS = 25   # packets per second of video, as a 25 fps camera sends them
MAX_CLOCK_DRIFT_MS = 2000   # as recording.recorder re-anchors a stream at a cut


class SimulatedDisk(NamedTuple):
    """The stand-in filesystem's size, shaped like `shutil.disk_usage`'s answer."""
    total: int
    used: int
    free: int


class SimulatedRecordingLoad:
    """Cameras of `config` (the enabled ones) recording into its data dir on `clock` (see the module docstring)."""

    def __init__(self, config: Config, clock: SimulatedClock | None = None, *, segment_bytes: int = 5_000_000,
                 disk_bytes: int = 10**13) -> None:
        self.config = config
        self.clock = clock if clock is not None else SimulatedClock()
        self.layout = StorageLayout(config.storage.data_dir)
        self.segment_bytes = segment_bytes
        self.disk_bytes = disk_bytes
        self.segment_ms = round(config.recording.segment_seconds * 1000)
        self.cameras = [camera.id for camera in config.enabled_cameras]
        self.announced: list[SegmentRecord] = []   # every segment announced, oldest first
        self.started_ms = self.clock.now_ms()
        self._start_recorders()
        self._open()
        for camera in self.cameras:
            self.writer.set_state(CameraState(camera, "recording", self.started_ms, "", {}))

    def _open(self) -> None:
        """The supervisor's index side, as `edgenvr run` builds it (minus the disk reserve: the disk is a stand-in)."""
        storage = self.config.storage
        self.conn: sqlite3.Connection = index_schema.connect(self.layout.index_path)
        self.writer = IndexWriter(self.conn, event_padding_ms=(int(storage.event_pre_seconds * 1000),
                                                               int(storage.event_post_seconds * 1000)),
                                  clock=self.clock)
        self.retention = RetentionPolicy(self.config, self.layout, self.writer, clock=self.clock,
                                         disk_space=self.disk_space)
        self.housekeeping = IndexHousekeeping(self.writer, self.retention, storage, clock=self.clock)

    def _start_recorders(self) -> None:
        """Every camera connects now: its stream clock is anchored to the wall clock as it reads now."""
        boot_ms = self.clock.boot_ms()
        segment_s = self.segment_ms // 1000
        # camera i cuts i/N of a segment after camera 0, in whole seconds; its first segment starts then
        self._next_end_boot_ms = {camera: boot_ms + (index * segment_s // max(1, len(self.cameras))) * 1000
                                  + self.segment_ms for index, camera in enumerate(self.cameras)}
        self._wall_minus_boot_ms = {camera: self.clock.now_ms() - boot_ms for camera in self.cameras}
        self._synchronised = {camera: self.clock.synchronised() for camera in self.cameras}   # at segment start

    def disk_space(self, path: Path) -> SimulatedDisk:
        """The stand-in filesystem: `disk_bytes`, of which the indexed video is used."""
        used = self.writer.indexed_bytes
        return SimulatedDisk(self.disk_bytes, used, self.disk_bytes - used)

    # -- driving it ---------------------------------------------------------------------------------

    def tick(self) -> list[SegmentRecord]:
        """What happens at this moment: recorders announce the segments they closed since the last tick (oldest
        first), then the periodic work runs once. Returns the segments announced."""
        boot_ms = self.clock.boot_ms()
        closed: list[tuple[int, str]] = []
        for camera in self.cameras:
            while self._next_end_boot_ms[camera] <= boot_ms:
                closed.append((self._next_end_boot_ms[camera], camera))
                self._next_end_boot_ms[camera] += self.segment_ms
        announced = [self._announce(camera, end_boot_ms) for end_boot_ms, camera in sorted(closed)]
        self.housekeeping.step()
        return announced

    def ticks(self, seconds: float, every: float = 1.0) -> Iterator[list[SegmentRecord]]:
        """`seconds` of simulated time, a tick every `every` seconds; yields each tick's segments before the
        clock moves on (the caller's moment to look)."""
        for _ in range(round(seconds / every)):
            yield self.tick()
            self.clock.advance(every)

    def run(self, seconds: float, every: float = 1.0) -> None:
        for _ in self.ticks(seconds, every):
            pass

    def power_cut(self) -> None:
        """The box loses power: the batch the writer had not committed is gone; the files stay (a recorder
        makes each durable before announcing it). Call `restart()` to start again."""
        self.conn.close()

    def restart(self) -> ConsistencyReport:
        """Start again as `edgenvr run` does: open the index and reconcile it with the disk first."""
        self._open()
        return reconcile(self.writer, self.layout)

    def reboot(self, boot_id: str, wall_ms: int, *, synchronised: bool = False) -> ConsistencyReport:
        """The box loses power and boots again (`SimulatedClock.reboot`: a new boot id, the wall clock at
        `wall_ms`, not synchronised unless said); edgenvr starts again and the cameras reconnect."""
        self.power_cut()
        self.clock.reboot(boot_id, wall_ms, synchronised=synchronised)
        report = self.restart()
        self._start_recorders()
        return report

    def close(self) -> None:
        """Stop as `edgenvr run` does on SIGTERM: commit what is pending, close the index."""
        self.writer.commit()
        self.conn.close()

    # -- a recorder, as far as the index sees one ---------------------------------------------------

    def _announce(self, camera: str, end_boot_ms: int) -> SegmentRecord:
        start_boot_ms = end_boot_ms - self.segment_ms
        start_ms = start_boot_ms + self._wall_minus_boot_ms[camera]
        while True:   # as the recorder's SegmentWriter.close: never replace a recording (a clock set back)
            path = self.layout.segment_path(camera, start_ms)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileNotFoundError:   # a new hour directory (the ring removes emptied ones)
                path.parent.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                start_ms += 1
                start_boot_ms += 1
        end_ms = start_ms + self.segment_ms
        try:
            os.ftruncate(fd, self.segment_bytes)   # sparse: the size, no data written
        finally:
            os.close(fd)
        record = SegmentRecord(camera, start_ms, end_ms, self.layout.relative(path), self.segment_bytes,
                               hashlib.sha256(f"{camera}{start_ms}".encode()).hexdigest(), "h264", 1920, 1080,
                               self.segment_ms * SIMULATED_FPS // 1000, end_ms,
                               clock_synchronised=self._synchronised[camera], boot_id=self.clock.boot_id(),
                               boot_ms=start_boot_ms)
        # The cut: the next segment starts now, re-anchored if the wall clock parted from the stream's (>2 s)
        wall_minus_boot = self.clock.now_ms() - self.clock.boot_ms()
        if abs(wall_minus_boot - self._wall_minus_boot_ms[camera]) > MAX_CLOCK_DRIFT_MS:
            self._wall_minus_boot_ms[camera] = wall_minus_boot
        self._synchronised[camera] = self.clock.synchronised()
        write_segment_attribute(path, record)
        self.housekeeping.note_segment(record)
        self.announced.append(record)
        return record
