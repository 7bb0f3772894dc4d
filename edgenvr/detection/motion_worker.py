"""Motion workers: for each camera, decode the detect stream, run motion and tamper detection on a small grey
picture, and announce events (with JPEG snapshots), reference views and heartbeats on the bus.

A worker process runs several cameras, one thread each (libav decoding and OpenCV release the GIL; the thread
group is core.camera_threads). It never touches recording: the supervisor restarts a worker process that dies
or stops sending heartbeats, and the recorders go on regardless. The index is only read here (reference
views, open tamper events); every write goes over the bus to the supervisor's single index writer.

Frame times: the stream clock anchored to the wall clock by core.stream_anchor, as the recorder's segments
are, so an event's times line up with the recording. Time is read from the injected `Clock`, except where
it waits on the camera (socket reads) or on the stop signal.

Which stream: `detect_url` when the camera has one (a small sub-stream, every frame decoded, analysed at
`motion.fps`); otherwise the main stream with only its key frames decoded (libav skips the rest unparsed).

Failure paths:
- camera unreachable, stream ended, read timeout: the open motion event is closed at its last motion frame,
  the camera is retried with capped backoff; heartbeats go on saying `reconnecting`.
- the detector falls behind (a frame is older than MAX_LAG_MS when its turn comes): the frame is skipped and
  counted in `dropped`; nothing queues (frames wait only in the socket buffer, which libav drains).
- the frame clock steps (its anchor moves by more than MAX_LAG_MS: the wall clock was stepped, or the camera's
  clock was found slow): every open event ends at the last frame before the step and the detectors start
  again, raising again what is still true. An event never spans a step: its kept video would span it too
  (56 years of "event video" after NTP's first answer at a box that booted at 1970).
- a snapshot or reference image cannot be written (disk full): logged; the event is announced without one.
- a bug in one camera's loop: logged, that camera's thread restarts after a pause; the others go on.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import av
import cv2
import numpy as np

from edgenvr.config.records import CameraConfig, RecordingConfig
from edgenvr.core.bus import BusSender
from edgenvr.core.camera_threads import RestartBackoff, run_camera_threads
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.process_setup import become_child_process
from edgenvr.core.records import (
    COMMISSIONING,
    DetectionState,
    EventKind,
    EventRecord,
    MotionStatus,
    ReferenceRecord,
    TamperKind,
)
from edgenvr.core.rtsp_input import open_rtsp
from edgenvr.core.stream_anchor import StreamAnchor
from edgenvr.core.units import SECOND_MS
from edgenvr.core.url_redaction import redact_text
from edgenvr.detection.analysis_picture import analysis_image, encode_png
from edgenvr.detection.motion_detector import (
    MotionDetector,
    MotionEventChange,
    MotionEventTracker,
)
from edgenvr.detection.tamper_detector import STREAM_LOST, TamperChange, TamperDetector
from edgenvr.index import schema as index_schema
from edgenvr.index.queries import latest_reference
from edgenvr.storage.durable_writes import write_durably
from edgenvr.storage.layout import StorageLayout

log = logging.getLogger(__name__)

MAX_LAG_MS = 2 * SECOND_MS     # a frame this late is skipped: the detector is behind the camera
PACED_FRAMES_TO_REANCHOR = 10  # late frames in a row at the camera's pace that mean its clock is slow
HEARTBEAT_SECONDS = 5.0
SUMMARY_SECONDS = 60.0         # a per-camera line in the log: frames analysed and dropped
STALLED_AFTER_SECONDS = 30.0   # a camera thread silent this long gets no heartbeat, so the supervisor restarts us
REFERENCE_POLL_SECONDS = 10.0  # how soon a view re-approved from the CLI is picked up
COMMISSION_RETRY_SECONDS = 10.0  # a first reference that could not be stored is tried again after this
SNAPSHOT_MAX_WIDTH = 1280
# A bug that escapes a camera's loop: that camera restarts after 10 s, every time.
RESTART_BACKOFF = RestartBackoff(first_seconds=10.0, max_seconds=10.0)


@dataclass
class CameraWorker:
    camera: CameraConfig
    recording: RecordingConfig
    layout: StorageLayout
    bus: BusSender
    stopping: threading.Event
    analysed: int = 0
    dropped: int = 0
    state: DetectionState = DetectionState.CONNECTING
    reason: str = ""
    clock: Clock = SYSTEM_CLOCK
    progress: float = field(init=False)  # last sign of life of this camera's loop (clock.monotonic)

    def __post_init__(self) -> None:
        self.progress = self.clock.monotonic()
        self.motion = self.camera.motion
        self._detector: MotionDetector | None = None
        self._tamper: TamperDetector | None = None
        self._tracker = MotionEventTracker()
        self._reference_ms: int | None = None
        self._next_reference_poll = 0.0
        self._commission_after = 0.0   # clock.monotonic(): no first reference stored before then (a failed write)
        self._open_tamper: dict[str, EventRecord] = {}   # subkind -> the open tamper event (ours or adopted)
        self._adopted_until_ms: int | None = None
        self._index: sqlite3.Connection | None = None
        self._detector_size = (0, 0)
        self._first_key_ms: int | None = None
        self._last_time_ms = 0
        self._peak_frame: av.VideoFrame | None = None

    @property
    def camera_id(self) -> str:
        return self.camera.id

    # -- main loop --------------------------------------------------------------------------------
    def run(self) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            self._set_state(DetectionState.CONNECTING)
            analysed_before = self.analysed
            reason = self._analyse_one_connection()
            self._close_motion_event()
            if self.stopping.is_set():
                break
            if self.analysed > analysed_before:
                backoff = 1.0
            self._set_state(DetectionState.RECONNECTING, reason)
            log.info("camera %s (motion): %s; retrying in %.0f s", self.camera.id, reason, backoff)
            self.pause(backoff)
            backoff = min(backoff * 2, max(self.recording.max_backoff_seconds, 10.0))

    def stop(self) -> None:
        self.stopping.set()

    def pause(self, seconds: float) -> None:
        """Wait, returning at once on stop. A wait on the stop signal (real time, not self.clock): what it
        waits for is a camera to come back, or SIGTERM."""
        self.stopping.wait(seconds)

    def restarting(self) -> None:
        """Nothing to report: heartbeats go on with the state the camera had."""

    def _set_state(self, state: DetectionState, reason: str = "") -> None:
        self.state, self.reason = state, reason
        self.progress = self.clock.monotonic()

    def _analyse_one_connection(self) -> str:
        url = self.camera.detect_url or self.camera.url
        try:
            # Reads wait on the camera's socket, in real time (not self.clock): see core.rtsp_input.
            container = open_rtsp(url, self.recording.connect_timeout_seconds, self.recording.read_timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - PyAV raises many OSError/FFmpegError subclasses; all mean "retry"
            return f"cannot connect: {type(exc).__name__}: {redact_text(str(exc))}"
        try:
            if not container.streams.video:
                return "stream has no video track"
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1  # many cameras per box: no decoder thread pool per camera
            if self.camera.detect_url is None:
                stream.codec_context.skip_frame = "NONKEY"
            return self._analyse_stream(container, stream)
        except (av.error.FFmpegError, OSError) as exc:  # read/decode errors and timeouts end this connection;
            # anything else is a bug: it reaches core.camera_threads, which logs it with its traceback
            return f"stream error: {type(exc).__name__}: {redact_text(str(exc))}"
        finally:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - closing a dead RTSP session may fail; nothing to keep
                pass

    def _analyse_stream(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> str:
        period_ms = SECOND_MS / self.motion.fps
        # Same clock as the recorder: the stream clock anchored to the wall clock at the smallest arrival
        # delay seen (the first frames come late, out of libav's probe buffer); each frame stands alone, so
        # a smaller delay applies at once (see core.stream_anchor for why the recorder waits).
        anchor = StreamAnchor(self.clock, follow_floor=True)
        next_due_ms = -1.0
        time_base = stream.time_base
        self._first_key_ms = None  # the key-frame interval is measured on this connection
        for frame in container.decode(stream):
            if self.stopping.is_set():
                return "stopping"
            self.progress = self.clock.monotonic()
            if frame.pts is None:
                continue
            stream_ms = int(frame.pts * time_base * SECOND_MS)
            anchored_ms = anchor.offset_ms if anchor.floor_ms is not None else None
            offset_ms = anchor.observe(stream_ms)
            arrived_ms = stream_ms + offset_ms
            lag_ms = anchor.realign_if_slow(stream_ms, offset_ms, MAX_LAG_MS, PACED_FRAMES_TO_REANCHOR)
            if lag_ms is not None:
                # Late, yet frames come at the camera's pace: its clock runs slow, we are not behind.
                log.warning("camera %s (motion): stream clock %d ms behind the wall clock, re-anchoring",
                            self.camera.id, lag_ms)
                next_due_ms = -1.0
            if anchored_ms is not None and abs(anchor.offset_ms - anchored_ms) > MAX_LAG_MS:
                self._frame_clock_stepped(anchor.offset_ms - anchored_ms)
                next_due_ms = -1.0
            time_ms = anchor.wall_ms(stream_ms)
            if time_ms < next_due_ms:
                continue
            next_due_ms = max(next_due_ms + period_ms, time_ms - period_ms / 2) if next_due_ms >= 0 else time_ms + period_ms / 2
            if arrived_ms - time_ms > MAX_LAG_MS:
                # Behind the camera (frames come out of a backlog faster than real time): skip analysis,
                # decoding goes on, until caught up.
                self.dropped += 1
                continue
            if self.state != DetectionState.ANALYSING:
                self._set_state(DetectionState.ANALYSING)
            self._analyse(time_ms, frame)
        return "stream ended"

    # -- detection --------------------------------------------------------------------------------
    def _analyse(self, time_ms: int, frame: av.VideoFrame) -> None:
        grey = analysis_image(frame)
        height, width = grey.shape
        if self._detector is None or self._detector_size != (width, height):
            if not self._make_detectors(time_ms, width, height):
                return
        assert self._detector is not None
        self.analysed += 1
        self._last_time_ms = time_ms
        result = self._detector.analyse(grey)
        for change in self._tracker.update(time_ms, result):
            self._on_motion_change(change, frame)
        if self._tamper is not None:
            self._check_tamper(time_ms, grey, frame)

    def _make_detectors(self, time_ms: int, width: int, height: int) -> bool:
        """Build the detectors for this picture size. Key-frame-only analysis first measures the key-frame
        interval, because the detectors' learning rates follow the real analysis rate."""
        motion = self.motion
        if self._detector is not None:  # the picture size changed: end what the old detectors had open
            self._end_detection(time_ms)
        if self.camera.detect_url is None:
            if self._first_key_ms is None or time_ms <= self._first_key_ms:
                self._first_key_ms = time_ms
                return False
            rate = min(motion.fps, SECOND_MS / (time_ms - self._first_key_ms))
            motion = replace(motion, fps=rate)
            self._tracker = MotionEventTracker(start_frames=1, quiet_seconds=max(3.0, 2.5 / rate))
        self._detector_size = (width, height)
        self._detector = MotionDetector(motion, width, height)
        if motion.tamper:
            self._tamper = TamperDetector(motion, width, height)
            self._reference_ms = None  # the new detector needs the approved view loaded again
            self._poll_reference(force=True)
        return True

    def _end_detection(self, time_ms: int, why: str = STREAM_LOST) -> None:
        """End what the detectors had open at `time_ms` (`why`: for the tamper events) and drop them: the next
        frame builds new ones."""
        self._close_motion_event()
        for change in self._tamper.close(time_ms, why) if self._tamper is not None else []:
            self._on_tamper_change(change, None)
        self._detector = self._tamper = None
        self._first_key_ms = None

    def _frame_clock_stepped(self, step_ms: int) -> None:
        """See the module docstring ("the frame clock steps")."""
        if self._detector is None:
            return
        why = f"the frame clock stepped {step_ms / SECOND_MS:+.1f} s; detection started again"
        log.warning("camera %s (motion): %s", self.camera.id, why)
        self._end_detection(self._last_time_ms, why)
        for kind in list(self._open_tamper):   # "moved" too: raised again against the reference if still true
            self._close_tamper(kind, self._last_time_ms, why)

    # -- motion events ------------------------------------------------------------------------------
    def _on_motion_change(self, change: MotionEventChange, frame: av.VideoFrame | None) -> None:
        event = change.event
        if change.kind == "peak":
            self._peak_frame = frame  # converted to JPEG only when the event closes
            return
        snapshot = None
        if change.kind == "closed":
            snapshot = self._write_snapshot(self._peak_frame, event.start_ms, EventKind.MOTION)
            self._peak_frame = None
        self.bus.send(EventRecord(self.camera.id, EventKind.MOTION, event.start_ms,
                                  event.end_ms if change.kind == "closed" else None,
                                  zones=event.zones, peak_score=round(event.peak_score, 4), snapshot=snapshot))

    def _close_motion_event(self) -> None:
        """The stream is gone: the open event ends at its last motion frame, and the background is stale."""
        for change in self._tracker.close(self._last_time_ms):
            self._on_motion_change(change, None)
        if self._detector is not None:
            self._detector.reset()

    # -- tamper -------------------------------------------------------------------------------------
    def _check_tamper(self, time_ms: int, grey: np.ndarray, frame: av.VideoFrame) -> None:
        assert self._tamper is not None
        self._poll_reference()
        # without a reference only "covered" is checked (a lens cap left on at installation is raised too)
        for change in self._tamper.analyse(time_ms, grey):
            self._on_tamper_change(change, frame)
        self._close_stale_adopted(time_ms)
        view = self._tamper.proposed_reference()
        if view is not None and self.clock.monotonic() >= self._commission_after:
            self._commission(time_ms, view)

    def _on_tamper_change(self, change: TamperChange, frame: av.VideoFrame | None) -> None:
        kind = change.kind
        if change.opened:
            if kind in self._open_tamper:
                return  # adopted from the index after a restart: the event and its snapshot stand
            # the event keeps its opening score, detail and picture (the evidence); a close adds to the detail
            event = EventRecord(self.camera.id, EventKind.TAMPER, change.since_ms, None, kind, peak_score=change.score,
                                snapshot=self._write_snapshot(frame, change.since_ms, EventKind.TAMPER, kind),
                                detail=change.detail)
            self._open_tamper[kind] = event
            self.bus.send(event)
            log.warning("camera %s: tamper: %s (%s)", self.camera.id, kind, change.detail)
        elif kind != TamperKind.MOVED:  # a moved camera stays flagged until its view is re-approved (_poll_reference)
            self._close_tamper(kind, change.time_ms, change.detail)

    def _close_tamper(self, kind: str, time_ms: int, why: str) -> None:
        event = self._open_tamper.pop(kind, None)
        if event is not None:
            self.bus.send(replace(event, end_ms=max(event.start_ms, time_ms), detail=f"{event.detail}; ended: {why}"))
            log.info("camera %s: tamper %s over (%s)", self.camera.id, kind, why)

    def _close_stale_adopted(self, time_ms: int) -> None:
        """Covered/defocused events adopted from the index that this worker has not seen again are over."""
        if self._adopted_until_ms is None or time_ms < self._adopted_until_ms:
            return
        active = self._tamper.active_kinds if self._tamper is not None else set()
        for kind in [k for k in self._open_tamper if k not in active and k != TamperKind.MOVED]:
            self._close_tamper(kind, time_ms, "not seen again after a restart")
        self._adopted_until_ms = None

    def _commission(self, time_ms: int, view: np.ndarray) -> None:
        """No reference yet: the camera's background view becomes one (first commissioning), used at once and
        shown as "not approved" until a person approves a view (`edgenvr reference approve`)."""
        path = self.layout.reference_path(self.camera.id, time_ms)
        try:
            write_durably(path, encode_png(view))
        except (OSError, ValueError) as exc:
            log.error("camera %s: cannot store the reference view: %s; will retry", self.camera.id, exc)
            self._commission_after = self.clock.monotonic() + COMMISSION_RETRY_SECONDS
            return
        assert self._tamper is not None
        self._tamper.set_reference(view)
        self._reference_ms = time_ms
        self.bus.send(ReferenceRecord(self.camera.id, time_ms, self.layout.relative(path), COMMISSIONING))
        log.warning("camera %s: reference view taken automatically (%s); used for detection, but not approved until"
                    " someone looks at it and runs `edgenvr reference approve --camera %s`",
                    self.camera.id, path, self.camera.id)

    def _poll_reference(self, force: bool = False) -> None:
        """Pick up a view approved from the CLI (it writes the index; we only read it)."""
        now = self.clock.monotonic()
        if not force and now < self._next_reference_poll:
            return
        self._next_reference_poll = now + REFERENCE_POLL_SECONDS
        try:
            if self._index is None:
                self._index = index_schema.connect(self.layout.index_path, readonly=True)
                self._adopt_open_tamper_events(self._index)
            row = latest_reference(self._index, self.camera.id)
        except sqlite3.Error as exc:  # the index may not exist yet on a brand-new box; try again later
            log.debug("camera %s: cannot read reference views: %s", self.camera.id, exc)
            self._index = None
            return
        if row is None or (self._reference_ms is not None and row["approved_ms"] <= self._reference_ms):
            return
        image = cv2.imread(str(self.layout.absolute(row["image"])), cv2.IMREAD_GRAYSCALE)
        if image is None:
            log.error("camera %s: reference view %s is missing or unreadable", self.camera.id, row["image"])
            return
        assert self._tamper is not None and self._detector is not None
        width, height = self._detector_size
        if image.shape != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        if self._reference_ms is not None:
            log.info("camera %s: re-approved reference view loaded", self.camera.id)
        self._tamper.set_reference(image)
        self._reference_ms = row["approved_ms"]
        moved = self._open_tamper.get(TamperKind.MOVED)
        if moved is not None and moved.start_ms < row["approved_ms"]:  # also when approved while we were down
            self._close_tamper("moved", row["approved_ms"], f"view re-approved by {row['approved_by']}")

    def _adopt_open_tamper_events(self, conn: sqlite3.Connection) -> None:
        for row in conn.execute("SELECT subkind, start_ms, peak_score, snapshot, detail FROM events"
                                " WHERE camera = ? AND kind = 'tamper' AND end_ms IS NULL", (self.camera.id,)):
            self._open_tamper.setdefault(row["subkind"], EventRecord(
                self.camera.id, EventKind.TAMPER, row["start_ms"], None, row["subkind"], peak_score=row["peak_score"],
                snapshot=row["snapshot"], detail=row["detail"]))
        if self._open_tamper:
            # give the detector time to see the condition again before calling the adopted events over
            self._adopted_until_ms = self.clock.now_ms() + int((self.motion.tamper_seconds + 20) * SECOND_MS)

    # -- files --------------------------------------------------------------------------------------
    def _write_snapshot(self, frame: av.VideoFrame | None, start_ms: int, kind: str, subkind: str = "") -> str | None:
        if frame is None:
            return None
        try:
            picture = frame.to_ndarray(format="bgr24")
            if picture.shape[1] > SNAPSHOT_MAX_WIDTH:
                scale = SNAPSHOT_MAX_WIDTH / picture.shape[1]
                picture = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            ok, data = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 80])
            if not ok:
                raise ValueError("JPEG encoding failed")
            path = self.layout.snapshot_path(self.camera.id, start_ms, kind, subkind)
            write_durably(path, data.tobytes())
        except (OSError, ValueError) as exc:
            log.error("camera %s: snapshot not written (%s); the event is kept without one", self.camera.id, exc)
            return None
        return self.layout.relative(path)

    def heartbeat(self) -> MotionStatus | None:
        """None when this camera's loop has shown no sign of life for a while: the supervisor then restarts us."""
        if self.clock.monotonic() - self.progress > STALLED_AFTER_SECONDS:
            return None
        return MotionStatus(self.camera.id, self.clock.now_ms(), self.state, self.analysed, self.dropped, self.reason)


class StatusReports:
    """The motion process's main-thread tick: a heartbeat per live camera every HEARTBEAT_SECONDS (sent from
    the main thread, which also receives the signals), and every SUMMARY_SECONDS a log line per camera with
    the frames analysed and dropped (what a site check, and benchmarks/motion.py, read from the log)."""

    def __init__(self, workers: Sequence[CameraWorker], sender: BusSender, clock: Clock = SYSTEM_CLOCK) -> None:
        self.workers = workers
        self.sender = sender
        self.clock = clock
        now = clock.monotonic()
        self._next_beat, self._next_summary = now, now + SUMMARY_SECONDS
        self._counted = {worker.camera.id: (0, 0) for worker in workers}

    def __call__(self) -> None:
        now = self.clock.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + HEARTBEAT_SECONDS
            for worker in self.workers:
                status = worker.heartbeat()
                if status is not None:
                    self.sender.send(status)
        if now >= self._next_summary:
            self._next_summary = now + SUMMARY_SECONDS
            for worker in self.workers:
                analysed, dropped = self._counted[worker.camera.id]
                self._counted[worker.camera.id] = (worker.analysed, worker.dropped)
                log.info("camera %s (motion): %s, %d frames analysed, %d dropped in the last %.0f s",
                         worker.camera.id, worker.state, worker.analysed - analysed, worker.dropped - dropped,
                         SUMMARY_SECONDS)


def run_motion_group(cameras: tuple[CameraConfig, ...], recording: RecordingConfig, data_dir: Path,
                     bus_endpoint: str, log_level: str, name: str) -> None:
    """Process entry point (started by the supervisor): motion and tamper detection for `cameras`."""
    layout = StorageLayout(data_dir)
    become_child_process(layout.recorders_lock, name, log_level)
    cv2.setNumThreads(1)  # one thread per camera already; OpenCV's pool would only add contention
    stopping = threading.Event()
    workers = [CameraWorker(camera, recording, layout, BusSender(bus_endpoint), stopping) for camera in cameras]
    heartbeats = BusSender(bus_endpoint)
    # After SIGTERM a camera gets a read timeout (and a little) to stop: one blocked in a read cannot do it
    # sooner, and the supervisor kills what is left.
    run_camera_threads(workers, thread_prefix="motion", what="motion worker", log=log, backoff=RESTART_BACKOFF,
                       tick=StatusReports(workers, heartbeats), join_seconds_after_stop=recording.read_timeout_seconds + 2,
                       senders=[heartbeats])
