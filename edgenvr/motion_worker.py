"""Motion workers: for each camera, decode the detect stream, run motion and tamper detection on a small grey
picture, and announce events (with JPEG snapshots), reference views and heartbeats on the bus.

A worker process runs several cameras, one thread each (libav decoding and OpenCV release the GIL). It never
touches recording: the supervisor restarts a worker process that dies or stops sending heartbeats, and the
recorders go on regardless. The index is only read here (reference views, open tamper events); every write
goes over the bus to the supervisor's single index writer.

Which stream: `detect_url` when the camera has one (a small sub-stream, every frame decoded, analysed at
`motion.fps`); otherwise the main stream with only its key frames decoded (libav skips the rest unparsed).

Failure paths:
- camera unreachable, stream ended, read timeout: the open motion event is closed at its last motion frame,
  the camera is retried with capped backoff; heartbeats go on saying `reconnecting`.
- the detector falls behind (a frame is older than MAX_LAG_MS when its turn comes): the frame is skipped and
  counted in `dropped`; nothing queues (frames wait only in the socket buffer, which libav drains).
- a snapshot or reference image cannot be written (disk full): logged; the event is announced without one.
- a bug in one camera's loop: logged, that camera's thread restarts after a pause; the others go on.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import cv2
import numpy as np
import zmq

from edgenvr import index_schema
from edgenvr.bus import BusSender
from edgenvr.config import CameraConfig, RecordingConfig
from edgenvr.motion_detector import MotionDetector, MotionEventChange, MotionEventTracker
from edgenvr.records import EventRecord, MotionStatus, ReferenceRecord
from edgenvr.storage_layout import StorageLayout, write_durably
from edgenvr.tamper_detector import TamperChange, TamperDetector
from edgenvr.timebase import now_ms
from edgenvr.url_redaction import redact_text

log = logging.getLogger(__name__)

ANALYSIS_WIDTH = 320           # detectors see a 320-wide grey picture (320x180 for 16:9)
MAX_LAG_MS = 2_000             # a frame this late is skipped: the detector is behind the camera
HEARTBEAT_SECONDS = 5.0
SUMMARY_SECONDS = 60.0         # a per-camera line in the log: frames analysed and dropped
STALLED_AFTER_SECONDS = 30.0   # a camera thread silent this long gets no heartbeat, so the supervisor restarts us
REFERENCE_POLL_SECONDS = 10.0  # how soon a view re-approved from the CLI is picked up
COMMISSION_AFTER_FRAMES = 10   # first reference view: taken after this many calm analysed frames
MIN_REFERENCE_CONTRAST = 8.0   # luma std-dev; a flatter picture (lens cap, covered) is no reference
SNAPSHOT_MAX_WIDTH = 1280
_EIGHT_BIT_Y_FORMATS = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"}


def analysis_image(frame: av.VideoFrame, width: int = ANALYSIS_WIDTH) -> np.ndarray:
    """The picture the detectors see: the luma plane, shrunk. A view of the Y plane plus cv2.resize costs
    about a tenth of a full pixel-format conversion (FIELD-NOTES)."""
    if frame.format.name in _EIGHT_BIT_Y_FORMATS:
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:frame.height, :frame.width]
    else:  # 10-bit HEVC and the like: rare, so the slow conversion is acceptable
        luma = frame.to_ndarray(format="gray")
    height = max(2, round(frame.height * width / frame.width / 2) * 2)
    return cv2.resize(luma, (width, height), interpolation=cv2.INTER_AREA)


def encode_png(grey: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", grey)
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


def latest_reference(conn: sqlite3.Connection, camera: str) -> sqlite3.Row | None:
    return conn.execute("SELECT approved_ms, image, approved_by FROM reference_views WHERE camera = ?"
                        " ORDER BY approved_ms DESC LIMIT 1", (camera,)).fetchone()


@dataclass
class CameraWorker:
    camera: CameraConfig
    recording: RecordingConfig
    layout: StorageLayout
    bus: BusSender
    stopping: threading.Event
    analysed: int = 0
    dropped: int = 0
    state: str = "connecting"
    reason: str = ""
    progress: float = field(default_factory=time.monotonic)  # last sign of life of this camera's loop

    def __post_init__(self) -> None:
        self.motion = self.camera.motion
        self._detector: MotionDetector | None = None
        self._tamper: TamperDetector | None = None
        self._tracker = MotionEventTracker()
        self._reference_ms: int | None = None
        self._next_reference_poll = 0.0
        self._calm_frames = 0
        self._open_tamper: dict[str, EventRecord] = {}   # subkind -> the open tamper event (ours or adopted)
        self._adopted_until_ms: int | None = None
        self._index: sqlite3.Connection | None = None
        self._detector_size = (0, 0)
        self._first_key_ms: int | None = None
        self._last_time_ms = 0
        self._peak_frame: av.VideoFrame | None = None

    # -- main loop --------------------------------------------------------------------------------
    def run(self) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            self._set_state("connecting")
            analysed_before = self.analysed
            reason = self._analyse_one_connection()
            self._close_motion_event()
            if self.stopping.is_set():
                break
            if self.analysed > analysed_before:
                backoff = 1.0
            self._set_state("reconnecting", reason)
            log.info("camera %s (motion): %s; retrying in %.0f s", self.camera.id, reason, backoff)
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, max(self.recording.max_backoff_seconds, 10.0))

    def _set_state(self, state: str, reason: str = "") -> None:
        self.state, self.reason = state, reason
        self.progress = time.monotonic()

    def _analyse_one_connection(self) -> str:
        url = self.camera.detect_url or self.camera.url
        try:
            container = av.open(url, options={"rtsp_transport": "tcp",
                                              "timeout": str(int(self.recording.read_timeout_seconds * 500_000)),
                                              "analyzeduration": "1000000"},
                                timeout=(self.recording.connect_timeout_seconds, None))
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
            # anything else is a bug: it reaches _run_until_stopped, which logs it with its traceback
            return f"stream error: {type(exc).__name__}: {redact_text(str(exc))}"
        finally:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - closing a dead RTSP session may fail; nothing to keep
                pass

    def _analyse_stream(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> str:
        period_ms = 1000 / self.motion.fps
        anchor_ms: int | None = None
        previous: tuple[int, int] | None = None  # (arrived_ms, stream_ms) of the previous frame
        real_time_frames = 0  # frames in a row that arrived at the camera's pace (not out of a backlog)
        next_due_ms = -1.0
        time_base = stream.time_base
        self._first_key_ms = None  # the key-frame interval is measured on this connection
        for frame in container.decode(stream):
            if self.stopping.is_set():
                return "stopping"
            self.progress = time.monotonic()
            if frame.pts is None:
                continue
            stream_ms = int(frame.pts * time_base * 1000)
            arrived_ms = now_ms()
            # Same clock as the recorder: the stream clock anchored to the wall clock at the smallest
            # arrival delay seen (the first frames come late, out of libav's probe buffer).
            offset_ms = arrived_ms - stream_ms
            if anchor_ms is None or offset_ms < anchor_ms:
                anchor_ms = offset_ms
            if previous is not None and arrived_ms - previous[0] >= (stream_ms - previous[1]) / 2:
                real_time_frames += 1
            else:
                real_time_frames = 0
            previous = (arrived_ms, stream_ms)
            if offset_ms - anchor_ms > MAX_LAG_MS and real_time_frames >= 10:
                # Late, yet frames come at the camera's pace: its clock runs slow, we are not behind.
                log.warning("camera %s (motion): stream clock %d ms behind the wall clock, re-anchoring",
                            self.camera.id, offset_ms - anchor_ms)
                anchor_ms, next_due_ms = offset_ms, -1.0
            time_ms = anchor_ms + stream_ms
            if time_ms < next_due_ms:
                continue
            next_due_ms = max(next_due_ms + period_ms, time_ms - period_ms / 2) if next_due_ms >= 0 else time_ms + period_ms / 2
            if arrived_ms - time_ms > MAX_LAG_MS:
                # Behind the camera (frames come out of a backlog faster than real time): skip analysis,
                # decoding goes on, until caught up.
                self.dropped += 1
                continue
            if self.state != "analysing":
                self._set_state("analysing")
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
            self._check_tamper(time_ms, grey, frame, calm=not result.motion and not result.global_change)

    def _make_detectors(self, time_ms: int, width: int, height: int) -> bool:
        """Build the detectors for this picture size. Key-frame-only analysis first measures the key-frame
        interval, because the detectors' learning rates follow the real analysis rate."""
        motion = self.motion
        if self._detector is not None:  # the picture size changed: end what the old detectors had open
            self._close_motion_event()
            for change in self._tamper.close(time_ms) if self._tamper is not None else []:
                self._on_tamper_change(change, None)
            self._detector = self._tamper = None
            self._first_key_ms = None
        if self.camera.detect_url is None:
            if self._first_key_ms is None or time_ms <= self._first_key_ms:
                self._first_key_ms = time_ms
                return False
            rate = min(motion.fps, 1000 / (time_ms - self._first_key_ms))
            motion = replace(motion, fps=rate)
            self._tracker = MotionEventTracker(start_frames=1, quiet_seconds=max(3.0, 2.5 / rate))
        self._detector_size = (width, height)
        self._detector = MotionDetector(motion, width, height)
        if motion.tamper:
            self._tamper = TamperDetector(motion, width, height)
            self._reference_ms = None  # the new detector needs the approved view loaded again
            self._poll_reference(force=True)
        return True

    # -- motion events ------------------------------------------------------------------------------
    def _on_motion_change(self, change: MotionEventChange, frame: av.VideoFrame | None) -> None:
        event = change.event
        if change.kind == "peak":
            self._peak_frame = frame  # converted to JPEG only when the event closes
            return
        snapshot = None
        if change.kind == "closed":
            snapshot = self._write_snapshot(self._peak_frame, event.start_ms, "motion")
            self._peak_frame = None
        self.bus.send(EventRecord(self.camera.id, "motion", event.start_ms,
                                  event.end_ms if change.kind == "closed" else None,
                                  zones=event.zones, peak_score=round(event.peak_score, 4), snapshot=snapshot))

    def _close_motion_event(self) -> None:
        """The stream is gone: the open event ends at its last motion frame, and the background is stale."""
        for change in self._tracker.close(self._last_time_ms):
            self._on_motion_change(change, None)
        if self._detector is not None:
            self._detector.reset()

    # -- tamper -------------------------------------------------------------------------------------
    def _check_tamper(self, time_ms: int, grey: np.ndarray, frame: av.VideoFrame, calm: bool) -> None:
        assert self._tamper is not None
        self._poll_reference()
        # without a reference only "covered" is checked (a lens cap left on at installation is raised too)
        for change in self._tamper.analyse(time_ms, grey):
            self._on_tamper_change(change, frame)
        self._close_stale_adopted(time_ms)
        if not self._tamper.has_reference:
            calm = calm and not self._tamper.active_kinds
            self._calm_frames = self._calm_frames + 1 if calm else 0
            if self._calm_frames >= COMMISSION_AFTER_FRAMES:
                self._commission(time_ms, grey)

    def _on_tamper_change(self, change: TamperChange, frame: av.VideoFrame | None) -> None:
        kind = change.kind
        if change.opened:
            if kind in self._open_tamper:
                return  # adopted from the index after a restart: the event and its snapshot stand
            # the event keeps its opening score, detail and picture (the evidence); a close adds to the detail
            event = EventRecord(self.camera.id, "tamper", change.since_ms, None, kind, peak_score=change.score,
                                snapshot=self._write_snapshot(frame, change.since_ms, "tamper", kind),
                                detail=change.detail)
            self._open_tamper[kind] = event
            self.bus.send(event)
            log.warning("camera %s: tamper: %s (%s)", self.camera.id, kind, change.detail)
        elif kind != "moved":  # a moved camera stays flagged until its view is re-approved (_poll_reference)
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
        for kind in [k for k in self._open_tamper if k not in active and k != "moved"]:
            self._close_tamper(kind, time_ms, "not seen again after a restart")
        self._adopted_until_ms = None

    def _commission(self, time_ms: int, grey: np.ndarray) -> None:
        """No approved view yet: the first calm picture becomes the reference (first commissioning)."""
        if float(grey.std()) < MIN_REFERENCE_CONTRAST:
            if self._calm_frames == COMMISSION_AFTER_FRAMES:  # once, not every frame
                log.warning("camera %s: picture nearly uniform (lens cap? covered?): no reference view taken yet",
                            self.camera.id)
            return
        path = self.layout.reference_path(self.camera.id, time_ms)
        try:
            write_durably(path, encode_png(grey))
        except (OSError, ValueError) as exc:
            log.error("camera %s: cannot store the reference view: %s; will retry", self.camera.id, exc)
            self._calm_frames = 0
            return
        assert self._tamper is not None
        self._tamper.set_reference(grey)
        self._reference_ms = time_ms
        self.bus.send(ReferenceRecord(self.camera.id, time_ms, self.layout.relative(path), "commissioning"))
        log.info("camera %s: reference view taken (first commissioning)", self.camera.id)

    def _poll_reference(self, force: bool = False) -> None:
        """Pick up a view approved from the CLI (it writes the index; we only read it)."""
        now = time.monotonic()
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
        moved = self._open_tamper.get("moved")
        if moved is not None and moved.start_ms < row["approved_ms"]:  # also when approved while we were down
            self._close_tamper("moved", row["approved_ms"], f"view re-approved by {row['approved_by']}")

    def _adopt_open_tamper_events(self, conn: sqlite3.Connection) -> None:
        for row in conn.execute("SELECT subkind, start_ms, peak_score, snapshot, detail FROM events"
                                " WHERE camera = ? AND kind = 'tamper' AND end_ms IS NULL", (self.camera.id,)):
            self._open_tamper.setdefault(row["subkind"], EventRecord(
                self.camera.id, "tamper", row["start_ms"], None, row["subkind"], peak_score=row["peak_score"],
                snapshot=row["snapshot"], detail=row["detail"]))
        if self._open_tamper:
            # give the detector time to see the condition again before calling the adopted events over
            self._adopted_until_ms = now_ms() + int((self.motion.tamper_seconds + 20) * 1000)

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
        if time.monotonic() - self.progress > STALLED_AFTER_SECONDS:
            return None
        return MotionStatus(self.camera.id, now_ms(), self.state, self.analysed, self.dropped, self.reason)


def _run_until_stopped(worker: CameraWorker) -> None:
    """Thread body: a bug in one camera's loop is logged and that camera restarted; the others go on."""
    while not worker.stopping.is_set():
        try:
            worker.run()
            return
        except Exception:  # noqa: BLE001 - last line of defence for one camera's thread
            log.exception("camera %s: motion worker failed; restarting it in 10 s", worker.camera.id)
            worker.stopping.wait(10)


def run_motion_group(cameras: tuple[CameraConfig, ...], recording: RecordingConfig, data_dir: Path,
                     bus_endpoint: str, log_level: str, name: str) -> None:
    """Process entry point (started by the supervisor): motion and tamper detection for `cameras`."""
    from edgenvr.process_setup import become_child_process

    become_child_process(data_dir, name, log_level)
    cv2.setNumThreads(1)  # one thread per camera already; OpenCV's pool would only add contention
    layout = StorageLayout(data_dir)
    stopping = threading.Event()
    workers = [CameraWorker(camera, recording, layout, BusSender(bus_endpoint), stopping) for camera in cameras]
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the supervisor, which stops us in order
    threads = [threading.Thread(target=_run_until_stopped, args=(w,), name=f"motion-{w.camera.id}", daemon=True)
               for w in workers]
    for thread in threads:
        thread.start()
    heartbeats = BusSender(bus_endpoint)
    next_beat, next_summary = time.monotonic(), time.monotonic() + SUMMARY_SECONDS
    counted = {worker.camera.id: (0, 0) for worker in workers}
    # The main thread sends the heartbeats (and receives signals, which Python runs only there).
    while any(thread.is_alive() for thread in threads):
        now = time.monotonic()
        if now >= next_beat:
            next_beat = now + HEARTBEAT_SECONDS
            for worker in workers:
                status = worker.heartbeat()
                if status is not None:
                    heartbeats.send(status)
        if now >= next_summary:
            next_summary = now + SUMMARY_SECONDS
            for worker in workers:  # what a site check (and benchmarks/motion.py) reads from the log
                analysed, dropped = counted[worker.camera.id]
                counted[worker.camera.id] = (worker.analysed, worker.dropped)
                log.info("camera %s (motion): %s, %d frames analysed, %d dropped in the last %.0f s",
                         worker.camera.id, worker.state, worker.analysed - analysed, worker.dropped - dropped,
                         SUMMARY_SECONDS)
        stopping.wait(0.2)
        if stopping.is_set():
            for thread in threads:
                thread.join(recording.read_timeout_seconds + 2)
            break
    for worker in workers:
        worker.bus.close()
    heartbeats.close()
    zmq.Context.instance().term()
