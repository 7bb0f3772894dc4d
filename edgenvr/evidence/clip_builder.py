"""The clip builder: one camera's recorded video of a time range as MP4 files, by stream copy of the recorded
packets (PyAV demux and mux; nothing is ever decoded or re-encoded).

Owns only the video files it writes into the caller's (empty) `out_dir`; the manifest, the signature and the
final rename of the directory are the caller's. What it guarantees:
- Start and end: the first file starts at the key frame at or before `from_ms` (or the first recorded key
  frame after it); the last ends with the last packet whose decode time is before `to_ms`. Decode order is
  what is cut, so every packet copied has the packets it refers to.
- The packets are the recorded packets, byte for byte. Each source segment's SHA-256 is checked against
  the hash recorded when it was written before anything of it is copied, on the same open file the
  packets are then read from.
- One file per parameter set: a change of codec, size or codec extradata (SPS/PPS/VPS) between segments
  starts a new file (`<camera>_<first packet's UTC, basic ISO 8601>_<part>.mp4`, parts numbered from 1).
- Each file's timestamps start at 0 and follow the recording's UTC timeline (segment start times from the
  index, packet times within a segment): a hole in the recording stays a hole (the frame before it is
  shown for its length), so file time t is UTC `start_ms + t`. ClipFile gives each file's UTC start and end.
- Holes in the requested range (between consecutive segments, and before the first or after the last
  segment) are returned as gaps, with the index's gap reason where one overlaps them, else "no recording".
- Deterministic: the same range gives byte-identical files (CLIP_MP4_OPTIONS: no creation time, no
  muxer version string; the timestamps come from the index and the files, never from the clock).
- Flat memory: sources are read one after the other and packets written as they are read; nothing holds
  more than the muxer's current fragment (one GOP). What grows with the length is metadata only: the
  index rows and the returned sources (a few hundred bytes per segment) and libavformat's fragment index
  (about 48 bytes per fragment, i.e. per GOP: ~4 MB for 24 h at 1 s GOPs; measured).
- The index is read only at the start (rows and gaps in two short queries), so a long export never holds a
  read transaction open against the writer's checkpoints.

Failure paths, all leaving `out_dir` as it was given (every file this export created is removed):
- nothing recorded in the range (or an empty range): ClipError;
- a source whose SHA-256 differs from the recorded one: ClipError naming it, unless `allow_altered`, where
  it is exported and its SourceSegment marked `altered` (and a warning logged);
- a source that cannot be opened, read or demuxed (deleted by the ring meanwhile, I/O error, damaged):
  ClipError naming it;
- writing the clip fails (out_dir's disk full, I/O error): the OSError itself, since it is the export's
  destination, not the recording, that failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av

from edgenvr.core.camera_ids import is_camera_id
from edgenvr.core.time_format import basic_utc, format_ms
from edgenvr.core.units import OPEN_END_MS, SECOND_MS
from edgenvr.index.queries import SegmentRow, gaps, segments
from edgenvr.index.writer import GAP_THRESHOLD_MS
from edgenvr.recording.segment_files import HashingFile
from edgenvr.storage.layout import StorageLayout

log = logging.getLogger(__name__)

CLIP_MP4_OPTIONS = {
    # Fragmented, a fragment per GOP: the mov muxer keeps the whole sample table of a plain MP4 in memory
    # until its trailer (measured: +28 MB RSS for 4.4 h at 25 fps, so ~150 MB for 24 h); a fragmented one
    # flushes it with each fragment (+0.8 MB for the same). Every fragment starts at a key frame, so
    # players seek in it quickly.
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    # No "Lavf<version>" encoder tag in the container (the mov muxer's bitexact mode). It writes no creation
    # time unless given one and no random ids, so two runs already match (checked); without the tag they
    # also do not name the libavformat that wrote them.
    "fflags": "+bitexact",
}
# Opening a segment: libav's stream probe would decode frames to estimate the frame rate, which a stream
# copy never needs (the codec parameters are in the file's header): 4 ms a segment instead of 17 (measured).
_SOURCE_OPTIONS = {"fpsprobesize": "0"}
NO_RECORDING = "no recording"
_READ_CHUNK = 1 << 20
_MUX_BUFFER = 1 << 18   # 256 KB: a fragment reaches the file in a few writes
_MS = Fraction(1, SECOND_MS)


class ClipError(Exception):
    """The clip cannot be built: nothing recorded in the range, a source altered since it was recorded (named),
    or a source unreadable (named)."""


@dataclass(frozen=True)
class SourceSegment:
    """A recorded segment some of whose packets are in a clip file, as the index recorded it."""
    start_ms: int
    end_ms: int
    bytes: int
    sha256: str          # hex, as recorded when the segment was written
    path: str            # relative to the data dir
    altered: bool = False   # its SHA-256 differs from the recorded one (exported with allow_altered)


@dataclass(frozen=True)
class ClipFile:
    """One video file of a clip: the packets of one parameter set, its time 0 at UTC `start_ms`."""
    name: str            # file name inside out_dir: "<camera>_<YYYYMMDDTHHMMSSZ of the first packet>_<part>.mp4"
    start_ms: int        # UTC of its first packet (its time 0)
    end_ms: int          # UTC of the end of its last packet
    bytes: int
    sha256: str          # hex
    codec: str
    width: int
    height: int
    packets: int
    sources: tuple[SourceSegment, ...]   # the segments its packets come from, in order


@dataclass(frozen=True)
class ClipGap:
    """A stretch of the requested range with no recording, and why (the index's reason, or NO_RECORDING)."""
    start_ms: int
    end_ms: int
    reason: str


@dataclass(frozen=True)
class Clip:
    """What an export produced: its files in time order and the gaps of the requested range."""
    camera: str
    from_ms: int         # requested
    to_ms: int
    start_ms: int        # actual: the first key frame ..
    end_ms: int          # .. the end of the last packet
    files: tuple[ClipFile, ...]
    gaps: tuple[ClipGap, ...]


def build_clip(conn: sqlite3.Connection, layout: StorageLayout, camera: str, from_ms: int, to_ms: int, out_dir: Path,
               *, allow_altered: bool = False, progress: Callable[[int, int], None] | None = None) -> Clip:
    """Export `camera`'s recording of [from_ms, to_ms) into `out_dir` (exists, empty). See the module docstring
    for what the files hold and every failure. `progress(done_bytes, total_bytes)` is called before the first
    source and after each one (bytes of source segments, each read twice: hashed, then copied), ending at
    (total, total)."""
    if to_ms <= from_ms:
        raise ClipError(f"nothing to export for camera {camera!r}: {format_ms(from_ms)} is not before "
                        f"{format_ms(to_ms)}")
    # Read the rows at once, not lazily: a generator would keep a read transaction open for the whole export.
    rows = list(segments(conn, layout, camera, from_ms, to_ms))
    if not rows:
        raise ClipError(_nothing_recorded(camera, from_ms, to_ms))
    camera_id = rows[0].camera   # from the index: file names are built from it, never from the caller's text
    if not is_camera_id(camera_id):
        raise ClipError(f"camera id {camera_id!r} in the index is not a valid camera id")
    holes = _holes(conn, layout, camera_id, rows, from_ms, to_ms)
    total = sum(row.bytes for row in rows)
    done = 0
    export = _ClipExport(out_dir, camera_id)
    try:
        if progress is not None:
            progress(done, total)
        for number, row in enumerate(rows):
            reached_end = export.copy_source(layout, row, from_ms if number == 0 else None, to_ms, allow_altered)
            done += row.bytes
            if progress is not None:
                progress(done, total)
            if reached_end:
                break
        files = export.finish()
        if progress is not None and done < total:
            progress(total, total)   # the range ended before the last source did
    except BaseException:
        export.discard()
        raise
    if not files:   # segments overlap the range by their index times, but no packet is inside it
        raise ClipError(_nothing_recorded(camera, from_ms, to_ms))
    return Clip(camera=camera_id, from_ms=from_ms, to_ms=to_ms, start_ms=files[0].start_ms, end_ms=files[-1].end_ms,
                files=tuple(files), gaps=holes)


def _nothing_recorded(camera: str, from_ms: int, to_ms: int) -> str:
    return f"nothing recorded for camera {camera!r} between {format_ms(from_ms)} and {format_ms(to_ms)}"


def _holes(conn: sqlite3.Connection, layout: StorageLayout, camera: str, rows: list[SegmentRow], from_ms: int,
           to_ms: int) -> tuple[ClipGap, ...]:
    """Where [from_ms, to_ms) has no recording, with the reason the index gives for it. Holes are measured
    on the segments themselves (the truth of what will be in the files); shorter than the index writer's
    own gap threshold is reconnect jitter, not a gap."""
    found: list[tuple[int, int]] = []
    covered_to = from_ms
    for row in rows:
        if row.start_ms - covered_to > GAP_THRESHOLD_MS:
            found.append((covered_to, row.start_ms))
        covered_to = max(covered_to, row.end_ms)
    if to_ms - covered_to > GAP_THRESHOLD_MS:
        found.append((covered_to, to_ms))
    if not found:
        return ()
    recorded = gaps(conn, layout, camera, from_ms, to_ms)

    def reason(start_ms: int, end_ms: int) -> str:
        # the index's gap that overlaps this hole most (they are the same stretch seen from the writer)
        best, best_overlap = NO_RECORDING, 0
        for gap in recorded:
            overlap = min(end_ms, gap.end_ms if gap.end_ms is not None else OPEN_END_MS) - max(start_ms, gap.start_ms)
            if overlap > best_overlap and gap.reason:
                best, best_overlap = gap.reason, overlap
        return best

    return tuple(ClipGap(start, end, reason(start, end)) for start, end in found)


def _ticks_to_ms(ticks: int, time_base: Fraction) -> int:
    return ticks * time_base.numerator * SECOND_MS // time_base.denominator


def _rescale(value: int, ratio: Fraction) -> int:
    """`value` times `ratio` (one time base over another), rounded to the nearest tick; exact when equal."""
    if ratio == 1:
        return value
    return (2 * value * ratio.numerator + ratio.denominator) // (2 * ratio.denominator)


@dataclass(frozen=True)
class _Parameters:
    """What a decoder must be told before the first packet; a change of any of it starts a new file."""
    codec: str
    width: int
    height: int
    extradata: bytes   # SPS/PPS (VPS): avcC / hvcC as recorded

    @staticmethod
    def of(stream: av.video.stream.VideoStream) -> _Parameters:
        context = stream.codec_context
        return _Parameters(context.name, context.width, context.height, bytes(context.extradata or b""))


class _ClipPart:
    """One output file being written: the packets of one parameter set, timestamps from 0."""

    def __init__(self, path: Path, template: av.video.stream.VideoStream, parameters: _Parameters) -> None:
        self.path = path
        self.parameters = parameters
        self.output = HashingFile(path, exclusive=True)   # out_dir was given empty: never write over anything
        try:
            self.container = av.open(self.output, "w", format="mp4", options=dict(CLIP_MP4_OPTIONS),
                                     buffer_size=_MUX_BUFFER)
            self.stream = self.container.add_stream_from_template(template)
            self.container.start_encoding()   # fixes the stream's time base, which the timestamps are computed in
        except BaseException:
            self.output.close()
            path.unlink(missing_ok=True)
            raise
        self.time_base: Fraction = self.stream.time_base
        self.zero: int | None = None           # the first packet's decode time on the UTC timeline, in ticks
        self.start_ms = 0
        self.end_ms = 0
        self.last_dts: int | None = None
        self.last_duration = 0
        self.packets = 0
        self.sources: list[SourceSegment] = []

    def close(self) -> None:
        """Trailer, fsync, close. Raises OSError / FFmpegError if the file cannot be finished."""
        try:
            self.container.close()
            os.fsync(self.output.fd)
        finally:
            self.output.close()

    def abandon(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the file is removed anyway; the first error is the one raised
            pass
        finally:
            self.output.close()


class _SourceTiming:
    """Where one source segment's packets go on its clip file's timeline. A packet's UTC is the segment's
    start (index) plus its time since the segment's first packet; its file time is that UTC minus the file's
    first packet's, in the file's time base."""

    def __init__(self, row: SegmentRow, time_base: Fraction, reference: int) -> None:
        self.row = row
        self.time_base = time_base
        self.reference = reference   # the first packet's presentation time: the segment's start_ms
        self.offset: int | None = None   # file ticks of this segment's reference, once it has a file
        self.ratio = Fraction(1)

    def utc_ms(self, ticks: int) -> int:
        return self.row.start_ms + _ticks_to_ms(ticks - self.reference, self.time_base)


class _ClipExport:
    """The files of one export, written as the sources are read."""

    def __init__(self, out_dir: Path, camera: str) -> None:
        self.out_dir = out_dir
        self.camera = camera
        self.files: list[ClipFile] = []
        self.part: _ClipPart | None = None
        self.created: list[Path] = []

    def copy_source(self, layout: StorageLayout, row: SegmentRow, from_ms: int | None, to_ms: int,
                    allow_altered: bool) -> bool:
        """Check one source segment and copy its packets in the range. `from_ms` is given for the first source
        only: copying starts at its key frame at or before it. True when the end of the range was reached."""
        path = Path(row.path)   # built by the layout from the index row, never from the caller's text
        name = layout.relative(path)
        try:
            source_file = open(path, "rb")
        except OSError as exc:
            raise ClipError(f"source segment {name} is unreadable: {exc}") from exc
        with source_file:
            try:
                digest = hashlib.sha256()
                while chunk := source_file.read(_READ_CHUNK):
                    digest.update(chunk)
            except OSError as exc:
                raise ClipError(f"source segment {name} is unreadable: {exc}") from exc
            altered = digest.hexdigest() != row.sha256
            if altered:
                if not allow_altered:
                    raise ClipError(f"source segment {name} was altered since it was recorded: its SHA-256 is "
                                    f"{digest.hexdigest()}, recorded {row.sha256}")
                log.warning("exporting source segment %s although it was altered since it was recorded", name)
            source = SourceSegment(row.start_ms, row.end_ms, row.bytes, row.sha256, name, altered)
            start_dts = None
            if from_ms is not None and from_ms > row.start_ms:
                start_dts = _start_key_dts(source_file, name, row, from_ms)
            with _opened(source_file, name) as (container, stream):
                parameters = _Parameters.of(stream)
                timing: _SourceTiming | None = None
                for packet in _packets(container, stream, name):
                    if timing is None:
                        timing = _SourceTiming(row, stream.time_base,
                                               packet.pts if packet.pts is not None else packet.dts)
                    if start_dts is not None and packet.dts < start_dts:
                        continue
                    if timing.utc_ms(packet.dts) >= to_ms:
                        return True
                    self._write(packet, stream, parameters, timing, source)
        return False

    def _write(self, packet: av.Packet, stream: av.video.stream.VideoStream, parameters: _Parameters,
               timing: _SourceTiming, source: SourceSegment) -> None:
        part = self.part
        if part is None or part.parameters != parameters:
            if not packet.is_keyframe:
                return   # a file starts at a key frame (segments do; this guards a damaged one)
            self._close_part()
            first_ms = timing.utc_ms(packet.pts if packet.pts is not None else packet.dts)
            part = self._open_part(stream, parameters, first_ms)
        if timing.offset is None:
            timing.ratio = timing.time_base / part.time_base
            segment_start = _rescale(timing.row.start_ms, _MS / part.time_base)
            if part.zero is None:
                part.zero = segment_start + _rescale(packet.dts - timing.reference, timing.ratio)
            timing.offset = segment_start - part.zero
            first_dts = _rescale(packet.dts - timing.reference, timing.ratio) + timing.offset
            if part.last_dts is not None and first_dts <= part.last_dts:
                # The segment starts before the previous one ended (a start bumped or re-anchored by the
                # recorder): placed right after it, keeping its own packet spacing.
                timing.offset += part.last_dts + max(1, part.last_duration) - first_dts
            part.sources.append(source)
        dts = _rescale(packet.dts - timing.reference, timing.ratio) + timing.offset
        if part.last_dts is not None and dts <= part.last_dts:
            log.debug("%s: packet at %d not after %d: skipped", source.path, dts, part.last_dts)
            return
        pts = _rescale(packet.pts - timing.reference, timing.ratio) + timing.offset if packet.pts is not None else dts
        duration = _rescale(packet.duration or 0, timing.ratio)
        packet_end_ms = (timing.utc_ms(packet.pts if packet.pts is not None else packet.dts)
                         + _ticks_to_ms(packet.duration or 0, timing.time_base))
        packet.dts, packet.pts, packet.duration = dts, pts, duration
        packet.time_base = part.time_base
        packet.stream = part.stream
        part.container.mux(packet)
        part.last_dts, part.last_duration = dts, duration
        part.end_ms = max(part.end_ms, packet_end_ms)
        part.packets += 1

    def _open_part(self, stream: av.video.stream.VideoStream, parameters: _Parameters, start_ms: int) -> _ClipPart:
        number = len(self.files) + 1
        path = self.out_dir / f"{self.camera}_{basic_utc(start_ms)}_{number}.mp4"
        self.part = _ClipPart(path, stream, parameters)   # on failure it leaves nothing behind
        self.created.append(path)
        self.part.start_ms = self.part.end_ms = start_ms
        return self.part

    def _close_part(self) -> None:
        part = self.part
        if part is None:
            return
        self.part = None
        part.close()
        self.files.append(ClipFile(
            name=part.path.name, start_ms=part.start_ms, end_ms=part.end_ms, bytes=part.output.size,
            sha256=part.output.digest.hexdigest(), codec=part.parameters.codec, width=part.parameters.width,
            height=part.parameters.height, packets=part.packets, sources=tuple(part.sources)))

    def finish(self) -> list[ClipFile]:
        self._close_part()
        return self.files

    def discard(self) -> None:
        """After a failure: nothing of this export stays in out_dir."""
        if self.part is not None:
            self.part.abandon()
            self.part = None
        for path in self.created:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot remove %s of a failed export: %s", path, exc)


@contextlib.contextmanager
def _opened(source_file: BinaryIO, name: str) -> Iterator[tuple[av.container.InputContainer,
                                                                 av.video.stream.VideoStream]]:
    """A source segment's container (read from the already open, verified file) and its video stream; an error
    opening it is a ClipError naming the segment."""
    source_file.seek(0)
    try:
        container = av.open(source_file, "r", format="mp4", container_options=dict(_SOURCE_OPTIONS))
    except (av.error.FFmpegError, OSError) as exc:
        raise ClipError(f"source segment {name} is unreadable: {exc}") from exc
    try:
        if not container.streams.video:
            raise ClipError(f"source segment {name} is unreadable: it has no video stream")
        yield container, container.streams.video[0]
    finally:
        container.close()


def _packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
             name: str) -> Iterator[av.Packet]:
    """The segment's timed packets in decode order; a read or demux error is a ClipError naming it."""
    demuxed = container.demux(stream)
    while True:
        try:
            packet = next(demuxed)
        except StopIteration:
            return
        except (av.error.FFmpegError, OSError) as exc:
            raise ClipError(f"source segment {name} is unreadable: {exc}") from exc
        if packet.size == 0 or packet.dts is None:
            continue   # the demuxer's end-of-stream flush packet
        yield packet


def _start_key_dts(source_file: BinaryIO, name: str, row: SegmentRow, from_ms: int) -> int | None:
    """The decode time of the segment's last key frame at or before `from_ms`, None if its first packet is
    after it. A pass of its own over the first segment (demux only, a few MB at most, in the page cache),
    so that no GOP has to be held in memory while looking for where to start."""
    with _opened(source_file, name) as (container, stream):
        timing: _SourceTiming | None = None
        found: int | None = None
        for packet in _packets(container, stream, name):
            if timing is None:
                timing = _SourceTiming(row, stream.time_base, packet.pts if packet.pts is not None else packet.dts)
            if timing.utc_ms(packet.dts) > from_ms:
                break
            if packet.is_keyframe:
                found = packet.dts
        return found
