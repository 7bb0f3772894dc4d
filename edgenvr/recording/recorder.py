"""The recorder of one camera: RTSP in, packets copied into segment files; and the recorder process, which
runs up to `cameras_per_process` cameras, one thread each.

Owns one camera's connection loop: connect, copy packets, reconnect with backoff, report its state. It never
decodes on the normal path. Its seams: `timestamp_filter` decides which packets may be recorded,
`segment_cutter` where segments end, `core.stream_anchor` what wall-clock time each has; this module only
wires them to the files (`segment_files`) and the bus.

Failure paths:
- cannot connect / wrong URL / not video: state `reconnecting` then `offline` with the reason; retry with
  capped exponential backoff; nothing is written.
- stream ends, errors or freezes (read timeout): the open segment is closed and announced, the loss shows
  up as a gap in the index, and the camera is retried.
- no key frame for FORCED_CUT_MS: the connection is ended and retried (the new session starts at one).
- a segment cannot be written (disk full, I/O error): the partial file is finalised (its readable prefix
  kept) or quarantined, state says why, and recording retries after a pause.
- SIGTERM: the open segment is closed, fsynced and announced, then the process exits.
- a bug in one camera's loop: logged, that camera restarts (core.camera_threads); the others go on.

Per-packet path (`_record_stream`'s loop) is the CPU-critical part of recording: it keeps its state in
locals, and anything per segment or per key frame stays out of the non-key packets' path.
"""

from __future__ import annotations

import io
import logging
from fractions import Fraction
from pathlib import Path

import av

from edgenvr.config.records import CameraConfig, RecordingConfig
from edgenvr.core.bus import BusSender
from edgenvr.core.camera_threads import RestartBackoff, run_camera_threads
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.process_setup import become_child_process
from edgenvr.core.records import CameraState, RecorderState
from edgenvr.core.rtsp_input import open_rtsp
from edgenvr.core.stream_anchor import StreamAnchor
from edgenvr.core.units import MINUTE_MS, SECOND_MS
from edgenvr.core.url_redaction import redact_text
from edgenvr.recording.annexb import parameter_sets
from edgenvr.recording.live_feed import LiveFeed
from edgenvr.recording.segment_cutter import FORCED_CUT_MS, Cut, SegmentCutter
from edgenvr.recording.segment_files import (
    PartialNotFinalised,
    SegmentWriteError,
    SegmentWriter,
    finalise_partial,
)
from edgenvr.recording.timestamp_filter import filter_timestamps
from edgenvr.storage.layout import StorageLayout

log = logging.getLogger(__name__)

# After this long without a working connection the camera is reported offline rather than reconnecting.
OFFLINE_AFTER_MS = 15 * SECOND_MS
# Stream clock vs wall clock disagreement that makes us re-anchor segment times to the wall clock.
MAX_CLOCK_DRIFT_MS = 2 * SECOND_MS
# A bug that escapes a camera's loop: that camera restarts after 1 s, doubling up to 30 s.
RESTART_BACKOFF = RestartBackoff(first_seconds=1.0, max_seconds=30.0)


def _ms(ticks: int, time_base: Fraction) -> int:
    return ticks * time_base.numerator * SECOND_MS // time_base.denominator


class CameraRecorder:
    def __init__(self, camera: CameraConfig, recording: RecordingConfig, layout: StorageLayout,
                 bus: BusSender, clock: Clock = SYSTEM_CLOCK, live_endpoint: str | None = None) -> None:
        self.camera = camera
        self._live_endpoint = live_endpoint   # the web server's live view (None: no [web])
        self._live: LiveFeed | None = None
        self.recording = recording
        self.layout = layout
        self.bus = bus
        self.clock = clock
        self.stopping = False
        self.dropped: dict[str, int] = {"before_keyframe": 0, "no_dts": 0, "non_increasing_dts": 0, "mux_error": 0}
        self._state = ""
        self._state_since = 0
        self._template_container: av.container.InputContainer | None = None
        self._unfinished: list[Path] = []  # partials the disk refused to finalise (full); retried later
        self._last_end_ms: int | None = None  # end of the last segment closed, across connections

    @property
    def camera_id(self) -> str:
        return self.camera.id

    def stop(self) -> None:
        """Ask `run` to return: the open segment is closed first. Safe from a signal handler."""
        self.stopping = True

    # -- state reporting ---------------------------------------------------------------------------
    def set_state(self, state: RecorderState, reason: str = "", since_ms: int | None = None) -> None:
        if state != self._state:
            self._state = state
            self._state_since = since_ms if since_ms is not None else self.clock.now_ms()
            if reason:
                log.warning("camera %s: %s: %s", self.camera.id, state, reason)
            else:
                log.info("camera %s: %s", self.camera.id, state)
        self.bus.send(CameraState(self.camera.id, state, self._state_since, reason, dict(self.dropped)))

    def restarting(self) -> None:
        self.set_state(RecorderState.RECONNECTING, "recorder error, restarting")

    # -- main loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        if self._live_endpoint is not None and self._live is None:   # made in the camera's own thread (zmq)
            self._live = LiveFeed(self._live_endpoint, self.camera.id)
        try:
            self._run()
        finally:
            if self._live is not None:   # an open zmq socket would hold the process at exit
                self._live.close()
                self._live = None

    def _run(self) -> None:
        backoff = 1.0
        lost_since: int | None = None
        self.set_state(RecorderState.CONNECTING)
        while not self.stopping:
            started = self.clock.monotonic()
            reason, recorded = self._record_one_connection()
            if self.stopping:
                break
            if recorded or self.clock.monotonic() - started > 30:
                backoff = 1.0
                lost_since = self.clock.now_ms()
            if lost_since is None:
                lost_since = self.clock.now_ms()
            offline = self.clock.now_ms() - lost_since >= OFFLINE_AFTER_MS
            self.set_state(RecorderState.OFFLINE if offline else RecorderState.RECONNECTING, reason, since_ms=lost_since)
            self.pause(backoff)
            backoff = min(backoff * 2, self.recording.max_backoff_seconds)
        self.set_state(RecorderState.STOPPED)

    def pause(self, seconds: float) -> None:
        """Sleep, but return at once when the recorder is told to stop."""
        deadline = self.clock.monotonic() + seconds
        while not self.stopping and self.clock.monotonic() < deadline:
            self.clock.sleep(min(0.2, deadline - self.clock.monotonic()))

    def _record_one_connection(self) -> tuple[str, bool]:
        """Record until the connection ends. Returns (why it ended, whether any segment was written)."""
        try:
            # Reads wait on the camera's socket, in real time (not self.clock): see core.rtsp_input.
            container = open_rtsp(self.camera.url, self.recording.connect_timeout_seconds,
                                  self.recording.read_timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - PyAV raises many OSError/FFmpegError subclasses; all mean "retry"
            return f"cannot connect: {type(exc).__name__}: {redact_text(str(exc))}", False
        try:
            if not container.streams.video:
                kinds = ", ".join(s.type for s in container.streams) or "nothing"
                return f"stream has no video track (found {kinds})", False
            return self._record_stream(container, container.streams.video[0])
        finally:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - closing a dead RTSP session may fail; nothing to keep from it
                pass

    def _record_stream(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> tuple[str, bool]:
        codec = stream.codec_context.name
        time_base = stream.time_base
        rate = stream.guessed_rate or stream.average_rate or 25
        packets = filter_timestamps(container.demux(stream), max(1, int(1 / (rate * time_base))), self.dropped)
        cutter = SegmentCutter.for_stream(self.recording.segment_seconds, time_base)
        forced_cut_pts = cutter.forced_cut_pts
        # The first segment opens on its first packet's delay; the smallest delay seen during it is applied
        # when it closes (renamed), and to everything after: see core.stream_anchor.
        anchor = StreamAnchor(self.clock)
        settling = True
        first_ms = 0  # stream time of the first segment's start
        writer: SegmentWriter | None = None
        template: av.video.stream.VideoStream = stream  # codec parameters that new segments are created with
        last_pts = 0
        frame_ticks = 0
        recorded = False
        reason = "stream ended"
        self.set_state(RecorderState.CONNECTING)
        try:
            for packet in packets:
                if self.stopping:
                    reason = "stopping"
                    break
                pts = packet.pts
                if pts is None:
                    pts = packet.dts
                if settling:
                    anchor.observe(_ms(pts, time_base))
                if packet.is_keyframe:
                    cut = cutter.at_keyframe(pts, parameter_sets(bytes(memoryview(packet)[:1024]), codec))
                    if cut is not Cut.NONE:
                        stream_ms = _ms(pts, time_base)
                        if writer is None:
                            first_ms = stream_ms
                        else:
                            self._end_segment(writer, anchor, stream_ms, first_ms if settling else None)
                            settling = False
                            writer = None
                            if cut is Cut.PARAMETERS:
                                log.info("camera %s: stream parameters changed, new segment", self.camera.id)
                                template = self._template_from_keyframe(packet, codec) or template
                        writer = SegmentWriter(self.layout, self.camera.id, template, anchor.wall_ms(stream_ms),
                                               packet.dts, time_base, clock=self.clock, live=self._live)
                        forced_cut_pts = cutter.forced_cut_pts
                        if not recorded:
                            self.set_state(RecorderState.RECORDING)
                        recorded = True
                elif pts >= forced_cut_pts:
                    # A new session starts with a fresh key frame: a second lost instead of a GOP, and visible.
                    reason = f"no key frame for {FORCED_CUT_MS // MINUTE_MS} min; reconnecting to get one"
                    break
                if pts > last_pts:
                    frame_ticks = pts - last_pts if last_pts else frame_ticks
                    last_pts = pts
                try:
                    writer.write(packet)  # type: ignore[union-attr]  # open: the filter passes a key frame first
                except av.error.FFmpegError as exc:
                    self.dropped["mux_error"] += 1
                    log.debug("camera %s: muxer refused a packet: %s", self.camera.id, exc)
        except SegmentWriteError as exc:
            reason = f"cannot write segment: {exc}"
            if writer is not None:
                self._salvage(writer)
                writer = None
        except Exception as exc:  # noqa: BLE001 - read errors and timeouts from libav end this connection
            reason = f"stream error: {type(exc).__name__}: {redact_text(str(exc))}"
        if writer is not None:
            start_ms = None
            if settling:
                anchor.settle()
                start_ms = self._corrected_start(anchor.wall_ms(first_ms))
            self._close(writer, anchor.wall_ms(_ms(last_pts + frame_ticks, time_base)), self.clock.now_ms(), start_ms)
        return reason, recorded

    def _end_segment(self, writer: SegmentWriter, anchor: StreamAnchor, end_stream_ms: int,
                     settling_first_ms: int | None) -> None:
        """Close the open segment at a cut. While the anchor is settling (`settling_first_ms` is the first
        segment's start), the anchor settles first and the segment is renamed to its corrected start. Then
        the stream clock is checked against the wall clock at the cut, and re-anchored if it drifted."""
        wall = self.clock.now_ms()
        start_ms = None
        if settling_first_ms is not None:
            anchor.settle()
            start_ms = self._corrected_start(anchor.wall_ms(settling_first_ms))
        self._close(writer, anchor.wall_ms(end_stream_ms), wall, start_ms)
        drift = anchor.realign_if_drifted(end_stream_ms, wall, MAX_CLOCK_DRIFT_MS)
        if drift is not None:
            log.warning("camera %s: stream clock drifted %d ms from wall clock, re-anchoring", self.camera.id, drift)

    def _template_from_keyframe(self, packet: av.Packet, codec: str) -> av.video.stream.VideoStream | None:
        """Codec parameters (size, SPS/PPS as extradata) for a keyframe whose parameter sets changed.

        The RTSP demuxer keeps the parameters from the session start, so the keyframe is parsed on its own
        by libav's elementary-stream demuxer. Rare (a camera reconfigured), so its cost does not matter."""
        try:
            probe = av.open(io.BytesIO(bytes(packet)), format="h264" if codec == "h264" else "hevc")
            self._template_container = probe  # keeps the template's codec parameters alive
            return probe.streams.video[0]
        except (av.error.FFmpegError, IndexError) as exc:
            log.warning("camera %s: cannot read the new stream parameters (%s); keeping the old ones",
                        self.camera.id, exc)
            return None

    def _corrected_start(self, start_ms: int) -> int:
        """A first segment moved earlier by the anchor correction never overlaps this camera's last one
        (a proxy replaying its cached GOP at each session could otherwise make it)."""
        return max(start_ms, self._last_end_ms or start_ms)

    def _close(self, writer: SegmentWriter, end_ms: int, wall_end_ms: int, start_ms: int | None = None) -> None:
        try:
            record = writer.close(end_ms, wall_end_ms, start_ms)
        except SegmentWriteError as exc:
            log.error("camera %s: %s; finalising what was written", self.camera.id, exc)
            self._salvage(writer)
            return
        self._last_end_ms = record.end_ms
        self.bus.send(record)
        self.set_state(self._state)  # refreshes the drop counters the index shows
        for partial in list(self._unfinished):  # the disk works again: finish what it refused earlier
            self._unfinished.remove(partial)
            self._finalise(partial)

    def _salvage(self, writer: SegmentWriter) -> None:
        """After a write failure: keep the readable prefix of the segment, announced like any segment."""
        writer.abort()
        self._finalise(writer.partial_path)

    def _finalise(self, partial: Path) -> None:
        try:
            record = finalise_partial(self.layout, self.camera.id, partial)
        except PartialNotFinalised as exc:
            log.error("camera %s: %s; retrying after the next segment", self.camera.id, exc)
            self._unfinished.append(partial)
            return
        if record is not None:
            self.bus.send(record)


def run_recorder_group(cameras: tuple[CameraConfig, ...], recording: RecordingConfig, data_dir: Path,
                       bus_endpoint: str, log_level: str, name: str, live_endpoint: str | None = None) -> None:
    """Process entry point (started by the supervisor): records `cameras`, one thread each.

    Sharing one interpreter and one copy of libav saves ~45 MB per camera against a process each."""
    layout = StorageLayout(data_dir)
    become_child_process(layout.recorders_lock, name, log_level)
    recorders = [CameraRecorder(camera, recording, layout, BusSender(bus_endpoint), live_endpoint=live_endpoint)
                 for camera in cameras]
    # After SIGTERM every camera closes its open segment, however long that takes: nothing is cut short.
    run_camera_threads(recorders, thread_prefix="camera", what="recorder", log=log, backoff=RESTART_BACKOFF)
