"""The recorder of one camera: RTSP in (PyAV, TCP, timeouts), packets copied into segment files.

Runs as its own process (one per camera) so a camera whose stream or decoder misbehaves can never stop or
slow another. It never decodes on the normal path. It cuts a segment at the first keyframe after
`segment_seconds`, or at a keyframe whose parameter sets (SPS/PPS/VPS) changed. Packets before the first
keyframe, flush packets, and packets with a missing or non-increasing DTS are dropped and counted.

Failure paths:
- cannot connect / wrong URL / not video: state `reconnecting` then `offline` with the reason; retry with
  capped exponential backoff; nothing is written.
- stream ends, errors or freezes (read timeout): the open segment is closed and announced, the loss shows
  up as a gap in the index, and the camera is retried.
- a segment cannot be written (disk full, I/O error): the partial file is finalised (its readable prefix
  kept) or quarantined, state says why, and recording retries after a pause.
- SIGTERM: the open segment is closed, fsynced and announced, then the process exits.
"""

from __future__ import annotations

import io
import logging
import signal
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import zmq

from edgenvr.annexb import annexb_nal_units
from edgenvr.bus import BusSender
from edgenvr.config import CameraConfig, RecordingConfig
from edgenvr.records import CameraState
from edgenvr.segment_files import PartialNotFinalised, SegmentWriteError, SegmentWriter, finalise_partial
from edgenvr.storage_layout import StorageLayout
from edgenvr.timebase import now_ms
from edgenvr.url_redaction import redact_text

log = logging.getLogger(__name__)

# After this long without a working connection the camera is reported offline rather than reconnecting.
OFFLINE_AFTER_MS = 15_000
# A segment still without a key frame to cut at after this long ends the connection (the reconnect starts at a
# fresh key frame): the index's time-range scans rely on segments being bounded (retention_tiers).
FORCED_CUT_MS = 900_000
# Stream clock vs wall clock disagreement that makes us re-anchor segment times to the wall clock.
MAX_CLOCK_DRIFT_MS = 2_000

_PARAMETER_SET_TYPES = {"h264": {7, 8}, "hevc": {32, 33, 34}}


def parameter_sets(data: bytes, codec: str) -> bytes:
    """The SPS/PPS (and VPS) NAL units at the front of an Annex-B access unit, concatenated.

    Only the first few hundred bytes are passed in: cameras put parameter sets before the slice data."""
    wanted = _PARAMETER_SET_TYPES.get(codec)
    if not wanted:
        return b""
    found: list[bytes] = []
    for nal in annexb_nal_units(data):
        nal_type = nal[0] & 0x1F if codec == "h264" else (nal[0] >> 1) & 0x3F
        if nal_type in wanted:
            found.append(bytes(nal))
        elif found:
            break  # past the parameter sets
    return b"".join(found)


def _ms(ticks: int, time_base: Fraction) -> int:
    return ticks * time_base.numerator * 1000 // time_base.denominator


class CameraRecorder:
    def __init__(self, camera: CameraConfig, recording: RecordingConfig, layout: StorageLayout,
                 bus: BusSender) -> None:
        self.camera = camera
        self.recording = recording
        self.layout = layout
        self.bus = bus
        self.stopping = False
        self.dropped: dict[str, int] = {"before_keyframe": 0, "no_dts": 0, "non_increasing_dts": 0, "mux_error": 0}
        self._state = ""
        self._state_since = 0
        self._template_container: av.container.InputContainer | None = None
        self._unfinished: list[Path] = []  # partials the disk refused to finalise (full); retried later
        self._last_end_ms: int | None = None  # end of the last segment closed, across connections

    # -- state reporting ---------------------------------------------------------------------------
    def set_state(self, state: str, reason: str = "", since_ms: int | None = None) -> None:
        if state != self._state:
            self._state = state
            self._state_since = since_ms if since_ms is not None else now_ms()
            if reason:
                log.warning("camera %s: %s: %s", self.camera.id, state, reason)
            else:
                log.info("camera %s: %s", self.camera.id, state)
        self.bus.send(CameraState(self.camera.id, state, self._state_since, reason, dict(self.dropped)))

    # -- main loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        backoff = 1.0
        lost_since: int | None = None
        self.set_state("connecting")
        while not self.stopping:
            started = time.monotonic()
            reason, recorded = self._record_one_connection()
            if self.stopping:
                break
            if recorded or time.monotonic() - started > 30:
                backoff = 1.0
                lost_since = now_ms()
            if lost_since is None:
                lost_since = now_ms()
            offline = now_ms() - lost_since >= OFFLINE_AFTER_MS
            self.set_state("offline" if offline else "reconnecting", reason, since_ms=lost_since)
            self.pause(backoff)
            backoff = min(backoff * 2, self.recording.max_backoff_seconds)
        self.set_state("stopped")

    def pause(self, seconds: float) -> None:
        """Sleep, but return at once when the recorder is told to stop."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, deadline - time.monotonic()))

    def _open(self) -> av.container.InputContainer:
        # FFmpeg's RTSP demuxer gives up on a silent TCP socket after two of its `timeout` periods
        # (measured: 5 s -> 10 s), so half the configured read timeout makes a frozen camera fail on time.
        # The read side uses only this socket timeout: PyAV's own read timeout would run a Python
        # interrupt callback inside every libav read, a cost paid per packet for nothing.
        socket_timeout_us = int(self.recording.read_timeout_seconds * 1_000_000 / 2)
        return av.open(
            self.camera.url,
            options={
                "rtsp_transport": "tcp",
                "timeout": str(socket_timeout_us),
                # keep the stream-info probe short: we only need codec parameters, not decoded frames
                "analyzeduration": "1000000",
            },
            timeout=(self.recording.connect_timeout_seconds, None),
        )

    def _record_one_connection(self) -> tuple[str, bool]:
        """Record until the connection ends. Returns (why it ended, whether any segment was written)."""
        try:
            container = self._open()
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
        # Cut at the first keyframe at or after segment_seconds; 100 ms of slack absorbs timestamp jitter
        # (live RTSP timestamps come from a timer), so a 10 s GOP-aligned camera gets 10 s, not 11 s, files.
        segment_ticks = int((self.recording.segment_seconds - 0.1) / time_base)
        forced_cut_ticks = int(FORCED_CUT_MS / 1000 / time_base)
        anchor_ms: int | None = None
        writer: SegmentWriter | None = None
        last_dts: int | None = None
        last_pts = 0
        frame_ticks = 0
        params = b""
        template: av.video.stream.VideoStream = stream  # codec parameters that new segments are created with
        writer_first_pts = 0
        # The first packets of a session come out of libav's stream probe buffer up to ~1 s late, so the
        # first anchor is provisional: during the first segment the smallest (arrival - stream time) is
        # tracked, and the first segment is closed, and everything after anchored, with that.
        settling = True
        offset_floor_ms = 2**62
        recorded = False
        reason = "stream ended"
        self.set_state("connecting")
        try:
            for packet in self._timestamped(container, stream):
                if self.stopping:
                    reason = "stopping"
                    break
                dts = packet.dts
                if last_dts is not None and dts <= last_dts:
                    self.dropped["non_increasing_dts"] += 1
                    continue
                pts = packet.pts if packet.pts is not None else dts
                if settling:
                    offset_floor_ms = min(offset_floor_ms, now_ms() - _ms(pts, time_base))
                key = packet.is_keyframe
                if writer is not None and not key and pts - writer_first_pts >= forced_cut_ticks:
                    # A new session starts with a fresh key frame: a second lost instead of a GOP, and visible.
                    reason = f"no key frame for {FORCED_CUT_MS // 60_000} min; reconnecting to get one"
                    break
                if writer is None and not key:
                    self.dropped["before_keyframe"] += 1
                    continue
                if key:
                    new_params = parameter_sets(bytes(memoryview(packet)[:1024]), codec)
                    changed = bool(params and new_params and new_params != params)
                    if writer is not None and (pts - writer_first_pts >= segment_ticks or changed):
                        wall = now_ms()
                        start_ms = None
                        if settling:
                            anchor_ms, settling = offset_floor_ms, False
                            start_ms = self._corrected_start(anchor_ms + _ms(writer_first_pts, time_base))
                        end_ms = anchor_ms + _ms(pts, time_base)
                        self._close(writer, end_ms, wall, start_ms)
                        writer = None
                        if changed:
                            log.info("camera %s: stream parameters changed, new segment", self.camera.id)
                            template = self._template_from_keyframe(packet, codec) or template
                        drift = wall - end_ms
                        if abs(drift) > MAX_CLOCK_DRIFT_MS:
                            log.warning("camera %s: stream clock drifted %d ms from wall clock, re-anchoring",
                                        self.camera.id, drift)
                            anchor_ms = wall - _ms(pts, time_base)
                    if new_params:
                        params = new_params
                    if writer is None:
                        if anchor_ms is None:
                            anchor_ms = now_ms() - _ms(pts, time_base)
                        writer = SegmentWriter(self.layout, self.camera.id, template,
                                               anchor_ms + _ms(pts, time_base), dts, time_base)
                        writer_first_pts = pts
                        if not recorded:
                            self.set_state("recording")
                        recorded = True
                if pts > last_pts:
                    frame_ticks = pts - last_pts if last_pts else frame_ticks
                    last_pts = pts
                last_dts = dts
                try:
                    writer.write(packet)
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
        if writer is not None and anchor_ms is not None:
            start_ms = None
            if settling:
                anchor_ms = offset_floor_ms
                start_ms = self._corrected_start(anchor_ms + _ms(writer_first_pts, time_base))
            self._close(writer, anchor_ms + _ms(last_pts + frame_ticks, time_base), now_ms(), start_ms)
        return reason, recorded

    def _timestamped(self, container: av.container.InputContainer,
                     stream: av.video.stream.VideoStream) -> Iterator[av.Packet]:
        """Packets of the stream that carry a DTS; flush packets and untimed packets are dropped (counted).

        FFmpeg's RTSP demuxer hands over the first packet of a session without timestamps, before it has
        synchronised to RTCP; that packet is usually the keyframe the whole first GOP depends on. It is held
        and stamped one frame before the next packet instead of dropped, so recording starts a GOP earlier."""
        rate = stream.guessed_rate or stream.average_rate or 25
        frame_ticks = max(1, int(1 / (rate * stream.time_base)))
        held: av.Packet | None = None
        first = True
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # flush packet at end of stream
            if packet.dts is None:
                if first and packet.is_keyframe:
                    held = packet
                else:
                    # Frames after the held keyframe are lost, so it would start the file with a hole and
                    # frames that decode wrongly: drop it too and start at the next keyframe.
                    self.dropped["no_dts"] += 1 + (held is not None)
                    held = None
                first = False
                continue
            first = False
            if held is not None:
                held.dts = held.pts = packet.dts - frame_ticks
                yield held
                held = None
            yield packet

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


def _record_until_stopped(recorder: CameraRecorder) -> None:
    """Thread body: a bug that escapes one camera's loop is logged and that camera restarted; the other
    cameras of the process never notice."""
    backoff = 1.0
    while not recorder.stopping:
        try:
            recorder.run()
            return
        except Exception:  # noqa: BLE001 - last line of defence for one camera's thread
            log.exception("camera %s: recorder failed; restarting it in %.0f s", recorder.camera.id, backoff)
            recorder.set_state("reconnecting", "recorder error, restarting")
            recorder.pause(backoff)
            backoff = min(backoff * 2, 30.0)


def run_recorder_group(cameras: tuple[CameraConfig, ...], recording: RecordingConfig, data_dir: Path,
                       bus_endpoint: str, log_level: str, name: str) -> None:
    """Process entry point (started by the supervisor): records `cameras`, one thread each.

    libav releases the GIL while it reads, so a camera blocked on a frozen stream holds up nobody. Sharing
    one interpreter and one copy of libav saves ~45 MB per camera against a process each."""
    from edgenvr.process_setup import become_child_process

    become_child_process(data_dir, name, log_level)
    layout = StorageLayout(data_dir)
    recorders = [CameraRecorder(camera, recording, layout, BusSender(bus_endpoint)) for camera in cameras]

    def on_term(signum: int, frame: object) -> None:
        for recorder in recorders:
            recorder.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the supervisor, which stops us in order
    threads = [threading.Thread(target=_record_until_stopped, args=(r,), name=f"camera-{r.camera.id}", daemon=True)
               for r in recorders]
    for thread in threads:
        thread.start()
    # Join with a timeout: signal handlers run only in the main thread, between bytecodes.
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(0.2)
    for recorder in recorders:
        recorder.bus.close()
    zmq.Context.instance().term()
