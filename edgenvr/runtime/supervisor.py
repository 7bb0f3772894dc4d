"""`edgenvr run`: recorder processes and motion-worker processes for the enabled cameras, and the index
writer and retention in one loop.

Start-up order: take the data-dir lock (one supervisor per data dir) -> wait until no recorder of a previous
run is alive -> open the index (a missing or corrupt one is rebuilt from the segment files: index.recovery)
-> reconcile index and disk (progress to systemd) -> start recorders and motion workers. A process that dies is
restarted with capped backoff; a motion worker that stops sending heartbeats (hung) is killed and restarted.
Recorders and motion workers are separate processes, so detection trouble never touches recording; with a
[web] table, the web server (edgenvr.web.server) is a process of its own too, restarted like the others,
so no web client can delay recording or the index commits; so are the sync process with [sync] and the MQTT
publisher with [mqtt] (edgenvr.home_automation.mqtt_publisher: a broker that is down or slow waits in it).
SIGTERM/SIGINT: recorders close and announce their open segments, the index is committed, then the process
exits.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Callable

from edgenvr.config.records import CameraConfig, Config
from edgenvr.core.bus import BusError, BusReceiver
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.process_setup import lock_file
from edgenvr.core.record_validation import MessageRules
from edgenvr.core.records import (
    CameraState,
    EventRecord,
    MotionStatus,
    Record,
    RecorderState,
    ReferenceRecord,
    SegmentRecord,
    TamperKind,
)
from edgenvr.core.units import DAY_MS, SECOND_MS
from edgenvr.index import schema as index_schema
from edgenvr.index.reconcile import (
    ReconcileProgress,
    finalise_leftover_partials,
    reconcile,
)
from edgenvr.index.recovery import open_or_rebuild
from edgenvr.index.retention_classes import LONGEST_SEGMENT_MS
from edgenvr.index.writer import IndexWriter
from edgenvr.retention.policy import RetentionPolicy
from edgenvr.runtime.config_audit import audit_config_at_start, prune_audit
from edgenvr.runtime.periodic_work import IndexHousekeeping, TroubleLog
from edgenvr.runtime.systemd_notify import notify_progress, sd_notify
from edgenvr.storage.disk_reserve import DiskReserve
from edgenvr.storage.layout import StorageLayout

log = logging.getLogger(__name__)


class SupervisorError(Exception):
    """The supervisor cannot start (data dir locked by another run, unusable index)."""


# A motion worker camera without a heartbeat for this long is hung: its process is killed and restarted.
MOTION_HUNG_AFTER_SECONDS = 30.0
TAMPER_KINDS = tuple(TamperKind)


@dataclass
class _WorkerSlot:
    """One worker process (recorders or motion workers) and the cameras it serves."""
    name: str
    kind: str   # "recorders" | "motion" | "web" | "sync" | "mqtt"
    cameras: tuple[CameraConfig, ...]
    process: BaseProcess | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0
    heartbeats: dict[str, float] = field(default_factory=dict)  # camera -> monotonic time of the last one
    killed: bool = False  # hung and sent SIGKILL; waiting for it to be gone


@dataclass
class Supervisor:
    config: Config
    # Schedules (sweeps, commits, restarts, hang detection) and times written to the index. Waiting for
    # the outside world (child processes, the bus, signals) stays on the machine's clocks.
    clock: Clock = SYSTEM_CLOCK
    layout: StorageLayout = field(init=False)
    stopping: asyncio.Event = field(init=False)

    def __post_init__(self) -> None:
        self.layout = StorageLayout(self.config.storage.data_dir)
        cameras = self.config.enabled_cameras
        self._slots = _slots("recorders", cameras, self.config.recording.cameras_per_process)
        self._slots += _slots("motion", tuple(c for c in cameras if c.motion.enabled or c.motion.tamper),
                              self.config.motion_cameras_per_process)
        if self.config.web.enabled:
            self._slots.append(_WorkerSlot("web", "web", ()))
        if self.config.sync.enabled:
            self._slots.append(_WorkerSlot("sync", "sync", ()))
        if self.config.mqtt.enabled:
            self._slots.append(_WorkerSlot("mqtt", "mqtt", ()))
        self._motion_slot_of = {c.id: slot for slot in self._slots if slot.kind == "motion" for c in slot.cameras}
        # spawn, not fork: a forked child would share the event loop's signal wake-up socket and zmq state.
        # The recorder's parent is then this process, so PR_SET_PDEATHSIG kills it if we are killed.
        self._context = multiprocessing.get_context("spawn")
        self._trouble = TroubleLog(self.clock)
        self.segments_indexed = 0

    # -- start-up ----------------------------------------------------------------------------------
    def _prepare(self) -> None:
        self.layout.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = lock_file(self.layout.supervisor_lock, exclusive=True, wait_seconds=0)
        if self._lock is None:
            raise SupervisorError(f"another edgenvr is already running on {self.layout.data_dir}")
        # Recorders of a killed run die with it (PDEATHSIG), but may take a moment: never reconcile under them.
        previous = lock_file(self.layout.recorders_lock, exclusive=True, wait_seconds=20)
        if previous is None:
            raise SupervisorError("recorders of a previous run are still alive; stop them first")
        previous.close()
        audit_config_at_start(self.config, self.layout, self.clock)   # the key is made at the first start
        self._next_audit_prune = self.clock.monotonic() + DAY_MS / SECOND_MS   # pruned just now
        # systemd kills a start-up silent for this long past TimeoutStartSec; reconcile reports every few
        # seconds, or after one camera-hour of files to probe and hash (no stored rows): a minute on a Pi.
        report_within_s = 120.0
        notify_progress("checking the index", report_within_s)
        try:
            opened = open_or_rebuild(self.layout, clock=self.clock)   # a corrupt one is moved aside, logged
        except (index_schema.IndexVersionError, sqlite3.Error, OSError) as exc:
            # newer schema, locked, I/O error: nothing moved; systemd retries, the log says why
            raise SupervisorError(f"cannot open index {self.layout.index_path}: {exc}") from exc
        self.conn = opened.conn
        self.reserve = DiskReserve(self.layout.data_dir / ".reserve")
        storage = self.config.storage
        self.writer = IndexWriter(self.conn, on_disk_full=self.reserve.release,
                                  event_padding_ms=(int(storage.event_pre_seconds * 1000),
                                                    int(storage.event_post_seconds * 1000)), clock=self.clock)
        started = self.clock.monotonic()
        doing = "rebuilding" if opened.rebuild else "reconciling"
        last: list[ReconcileProgress] = []

        def tell_systemd(progress: ReconcileProgress) -> None:
            last[:] = [progress]
            notify_progress(f"{doing} the index: {progress.describe()}", report_within_s)

        report = reconcile(self.writer, self.layout, progress=tell_systemd)
        seconds = self.clock.monotonic() - started
        log.info("start-up reconcile took %.2f s: %s", seconds, report.summary())
        if opened.rebuild:
            log.warning("index rebuilt (it was %s): %d segments indexed from their files in %.1f s",
                        opened.rebuild, last[-1].added if last else 0, seconds)
        sd_notify("STATUS=index ready; starting recorders")
        self._close_orphaned_events()
        self.retention = RetentionPolicy(self.config, self.layout, self.writer, clock=self.clock)
        self.housekeeping = IndexHousekeeping(self.writer, self.retention, storage, reserve=self.reserve,
                                              clock=self.clock, trouble=self._trouble)

    def _close_orphaned_events(self) -> None:
        """Events left open by the previous run (killed, or its close announcement lost) would keep all later
        video of their camera as event video. Motion events are closed now; tamper events are left to the
        camera's tamper detection, which adopts them, except for cameras that no longer have it."""
        watched = {c.id for c in self.config.enabled_cameras if c.motion.tamper}
        for camera in [row[0] for row in self.conn.execute("SELECT DISTINCT camera FROM events WHERE end_ms IS NULL")]:
            # the real end is unknown: the camera's last recorded video bounds it better than "now"
            now_ms = self.clock.now_ms()
            end_ms = min(now_ms, self.writer.last_end_ms(camera) or now_ms)
            if camera in watched:
                self.writer.close_open_events([camera], end_ms, "edgenvr restarted", keep_subkinds=TAMPER_KINDS)
            else:
                self.writer.close_open_events([camera], end_ms, "tamper detection no longer watches this camera")
        self.writer.commit()

    # -- worker processes ---------------------------------------------------------------------------
    def _start_worker(self, slot: _WorkerSlot) -> None:
        if slot.kind == "web":
            from edgenvr.web.server import run_web_process
            slot.process = self._context.Process(target=run_web_process, name=slot.name,
                                                 args=(self.config, slot.name, self._live_endpoint))
            slot.process.start()
            slot.started_at = self.clock.monotonic()
            log.info("web server started (pid %s) on %s", slot.process.pid, self.config.web.listen)
            return
        if slot.kind == "sync":
            from edgenvr.sync.uploader import run_sync_process
            slot.process = self._context.Process(target=run_sync_process, name=slot.name, args=(self.config, slot.name))
            slot.process.start()
            slot.started_at = self.clock.monotonic()
            log.info("sync to %s started (pid %s)", self.config.sync.hub_url, slot.process.pid)
            return
        if slot.kind == "mqtt":
            from edgenvr.home_automation.mqtt_publisher import run_mqtt_process
            slot.process = self._context.Process(target=run_mqtt_process, name=slot.name, args=(self.config, slot.name))
            slot.process.start()
            slot.started_at = self.clock.monotonic()
            log.info("mqtt to %s:%d started (pid %s)", self.config.mqtt.host, self.config.mqtt.broker_port,
                     slot.process.pid)
            return
        if slot.kind == "recorders":
            from edgenvr.recording.recorder import run_recorder_group as target
        else:
            from edgenvr.detection.motion_worker import run_motion_group as target
        process = self._context.Process(
            target=target, name=slot.name,
            args=(slot.cameras, self.config.recording, self.layout.data_dir, self._endpoint,
                  self.config.log_level, slot.name,
                  *((self._live_endpoint,) if slot.kind == "recorders" and self.config.web.enabled else ())))
        process.start()
        slot.process = process
        slot.killed = False
        slot.started_at = self.clock.monotonic()
        slot.heartbeats = {camera.id: slot.started_at for camera in slot.cameras}
        log.info("%s started (pid %s): %s", slot.name, process.pid, ", ".join(c.id for c in slot.cameras))

    def _supervise_workers(self) -> None:
        now = self.clock.monotonic()
        for slot in self._slots:
            process = slot.process
            if process is not None and process.is_alive():
                silent = [camera for camera, last in slot.heartbeats.items() if now - last > MOTION_HUNG_AFTER_SECONDS]
                if slot.kind == "motion" and silent and not slot.killed:
                    log.error("%s sent no heartbeat for %s in %.0f s: hung, killing it",
                              slot.name, ", ".join(silent), MOTION_HUNG_AFTER_SECONDS)
                    process.kill()
                    slot.killed = True
                continue  # a killed process is handled once it is dead (never block the loop waiting for it)
            if process is not None:
                code = process.exitcode
                process.close()
                slot.process = None
                if now - slot.started_at > 60:
                    slot.restarts = 0  # it ran fine for a while: restart quickly again
                delay = min(2 ** slot.restarts, self.config.recording.max_backoff_seconds)
                slot.restarts += 1
                slot.next_start = now + delay
                log.error("%s exited with code %s; restarting in %.0f s", slot.name, code, delay)
                self._after_exit(slot, code)
            if now >= slot.next_start:
                self._start_worker(slot)

    def _after_exit(self, slot: _WorkerSlot, code: int | None) -> None:
        ids = [camera.id for camera in slot.cameras]
        if slot.kind == "recorders":
            self._guarded("recovering partial segments", finalise_leftover_partials, self.writer, self.layout, ids)
            for camera in ids:
                self.writer.set_state(CameraState(camera, RecorderState.RECONNECTING, self.clock.now_ms(),
                                                  f"recorder exited with code {code}"))
        elif slot.kind == "motion":
            # Its open motion events would otherwise keep all later video as event video. Tamper events stay
            # open: the restarted worker adopts them (and closes covered/defocused if it no longer sees them).
            self._guarded("closing events of a dead motion worker", self.writer.close_open_events, ids,
                          self.clock.now_ms(), "motion worker stopped", TAMPER_KINDS)

    # -- bus ---------------------------------------------------------------------------------------

    def _message_rules(self) -> MessageRules:
        """What a bus message is checked against (core.record_validation): the config's cameras (every
        worker serves enabled ones only) and the storage layout's paths."""
        return MessageRules(frozenset(c.id for c in self.config.enabled_cameras), self.layout, LONGEST_SEGMENT_MS,
                            boot=lambda: (self.clock.boot_id(), self.clock.boot_ms()))

    def _on_record(self, record: Record) -> None:
        """A checked record from the bus (BusReceiver drops and logs the rest)."""
        if isinstance(record, SegmentRecord):
            # The size is what retention counts the disk by: believed only if the file says the same (a
            # forged 2**63 would make every sweep delete all video). One stat per segment, off the recording path.
            try:
                size = os.stat(self.layout.segment_path(record.camera, record.start_ms)).st_size
            except OSError as exc:
                log.error("bus segment of %s at %d dropped: %s", record.camera, record.start_ms, exc)
                return
            if size != record.bytes:
                log.error("bus segment of %s at %d dropped: its file has %d bytes, the message says %d",
                          record.camera, record.start_ms, size, record.bytes)
                return
            self.housekeeping.note_segment(record)
            self.segments_indexed += 1
        elif isinstance(record, CameraState):
            self.writer.set_state(record)
        elif isinstance(record, EventRecord):
            self.writer.add_event(record)
        elif isinstance(record, ReferenceRecord):
            self.writer.add_reference(record)
        elif isinstance(record, MotionStatus):
            slot = self._motion_slot_of.get(record.camera)
            if slot is not None and record.camera in slot.heartbeats:
                slot.heartbeats[record.camera] = self.clock.monotonic()
            self.writer.set_motion_status(record)

    async def _receive(self, bus: BusReceiver) -> None:
        while True:
            record = await bus.receive()
            if record is not None:   # None: dropped and logged by the bus
                self._use_record(record)

    def _use_record(self, record: Record) -> None:
        try:
            self._on_record(record)
        except Exception:  # noqa: BLE001 - a checked record that still fails is a bug: it costs the record, not recording
            log.exception("bus record of %s dropped: using it failed", record.camera)

    # -- main loop ---------------------------------------------------------------------------------
    async def run(self) -> None:
        # Signals first: a SIGTERM during the start-up reconcile is honoured right after it, not fatal in it.
        self.stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        self._prepare()
        try:
            bus = BusReceiver(self._message_rules(), clock=self.clock)
        except BusError as exc:
            raise SupervisorError(str(exc)) from exc
        self._endpoint = bus.endpoint
        self._live_endpoint = bus.live_endpoint
        log.info("bus listening on %s", bus.endpoint)
        receiver = asyncio.create_task(self._receive(bus))
        sd_notify("READY=1")
        log.info("recording %d cameras into %s", len(self.config.enabled_cameras), self.layout.data_dir)
        try:
            while not self.stopping.is_set():
                self._supervise_workers()
                self.housekeeping.step()  # sweeps, disk reserve, batched commit (runtime.periodic_work)
                if self.clock.monotonic() >= self._next_audit_prune:
                    self._next_audit_prune = self.clock.monotonic() + DAY_MS / SECOND_MS
                    prune_audit(self.config, self.layout, self.clock)
                sd_notify("WATCHDOG=1")
                try:
                    # real time: bus messages and signals arrive meanwhile
                    await asyncio.wait_for(self.stopping.wait(), timeout=1.0)
                except asyncio.TimeoutError:
                    pass
                if receiver.done():
                    receiver.result()  # re-raise what killed the receiver
        finally:
            sd_notify("STOPPING=1")
            await self._stop_workers()
            receiver.cancel()
            for record in bus.receive_waiting():
                self._use_record(record)
            self._guarded("final index commit", self.writer.commit)
            bus.close()
            self.conn.close()
            log.info("stopped; %d segments indexed this run", self.segments_indexed)

    def _guarded(self, what: str, action: Callable[..., object], *args: object) -> None:
        """Index and disk trouble is logged (once a minute per kind) and retried at the next tick."""
        self._trouble.run(what, action, *args)

    async def _stop_workers(self) -> None:
        running = [s.process for s in self._slots if s.process is not None and s.process.is_alive()]
        for process in running:
            process.terminate()
        # A recorder blocked on a frozen camera notices SIGTERM after its read timeout. Real time: this
        # waits for child processes, which no simulated clock can speed up.
        deadline = time.monotonic() + self.config.recording.read_timeout_seconds + 5
        while any(p.is_alive() for p in running) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for process in running:
            if process.is_alive():
                log.error("%s did not stop in time; killing it (a partial segment is recovered at start-up)",
                          process.name)
                process.kill()
                process.join(2)
        await asyncio.sleep(0.3)  # let the last announcements arrive


def _slots(kind: str, cameras: tuple[CameraConfig, ...], per_process: int) -> list[_WorkerSlot]:
    groups = [cameras[i:i + per_process] for i in range(0, len(cameras), per_process)]
    return [_WorkerSlot(f"{kind}-{n + 1}", kind, group) for n, group in enumerate(groups)]


def run_supervisor(config: Config) -> None:
    asyncio.run(Supervisor(config).run())
