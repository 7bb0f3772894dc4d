"""Playback video: one camera's recording of a time range as ONE virtual MP4 file, for
`GET /api/cameras/{camera}/video.mp4?start_ms=&end_ms=` (a plain `<video src>` that can be seeked anywhere by
HTTP Range requests). Its bytes are computed on demand from the segment files: nothing is copied, written, or
held in memory beyond one piece being read.

Owns: the layouts of the virtual file, producing any byte range of it, and a small cache of parsed segment
layouts. It never writes, deletes or locks anything; the index is read only while planning (the rows, and the
gaps when there is nothing to show).

Two layouts of the same samples (the boxes themselves are edgenvr.web.mp4_boxes):

PROGRESSIVE, the default (moonfire-nvr's): a plain, non-fragmented MP4 that every player seeks in with its
moov alone:
  [ftyp isom] [moov: the first segment's, durations set, no mvex; its stbl the first segment's stsd and the
  sample tables of every included sample: stts, ctts (only if a composition offset is not 0), stss (the sync
  samples; none if all are), stsz, stsc + stco (co64 once a chunk offset passes 2^32), a chunk per recorded
  trun (one per fragment from our recorder)] [one mdat (64-bit size past 4 GB) whose body is every included
  trun's sample bytes, byte for byte as recorded: nothing is patched]
The per-sample values come from each fragment's trun (with tfhd / trex defaults), parsed per segment with
numpy (mp4_boxes.sample_table). A sample keeps its recorded duration, except the last one before a fragment,
which lasts until that fragment's planned decode time (below): that is where a hole, or the rounding of a
row start, is taken, so that sample decode times are exactly the fragmented layout's tfdt times. The moov of
a day at 25 fps is ~9.5 MB (2.16 M samples: 4 bytes each in stsz, plus stts / stss / stsc / stco); a player
reads it first, then the samples it wants with one Range request. Measured with 10 minutes of 1080p (300 MB)
served at 20 MB/s, a seek 9 minutes in: Firefox ESR 153 0.03 s, Chromium 0.07 s, each with one Range request
(Firefox on the fragmented layout: 15.2 s, reading 277 MB sequentially: its MoofParser ignores a sidx).

FRAGMENTED (`layout=fragmented`; Chromium seeks in it with the sidx, Firefox reads up to the time):
  [ftyp of the first segment] [its moov: mvhd/tkhd/mdhd durations set, an mehd (movie timescale, as ISO/IEC
  14496-12 defines it) first in its mvex] [one sidx, version 1] [every included fragment (moof + its mdat) of
  every segment, byte for byte, except mfhd sequence_number (1..N over the file) and tfdt
  baseMediaDecodeTime (one timeline)]
Its size and layout are known before the first byte is sent; a byte range reads only the files it covers.
The sidx is what lets libavformat (Chromium's demuxer for `<video src>`) seek straight to the fragment of a
time. Measured on the 24 s test recording (6.4 MB): with it, opening reads 295 KB whatever the length and a
seek reads the one 32 KB block it needs; without it, opening walks every moof (1.1 MB read here, one request
per fragment: 86,400 requests for a day). Chromium seeked 22.7 s into it with one Range request in 273 ms
while the file was served at 1 MB/s (tests/test_playback_video.py). References: one per fragment that starts
with a sync sample when there are at most 65,535 (a fragment without one, from a camera whose GOP is longer
than the recorder's 1 s fragments, joins the reference before it), else one per source segment, else one per
run of segments; each reference_type 0, starts_with_SAP 1, SAP_type 1, its duration running to the next
reference's start, holes included, so that sidx times and tfdt times agree.

Timeline (the clip builder's rule, edgenvr.evidence.clip_builder): media time 0 is UTC `start_ms`, the start
of the first fragment included. A fragment of a segment whose index row starts at `seg.start_ms` gets decode
time round((seg.start_ms - start_ms) * timescale / 1000) + its own tfdt (computed as round(seg.start_ms *
timescale / 1000) + tfdt minus the same for the first fragment, so that the first is exactly 0), but never
less than the end of the fragment before it (row starts are rounded to the ms and may overlap by a few).
Holes between segments stay holes: video time t is UTC start_ms + t, to the ms. Rounding never adds up (each
push is undone by the next row start's own rounding), but a recording that overlaps itself (a jittery RTSP
stream, seen under CPU load: a segment's last frame ending a frame after the next segment starts) leaves the
following segments that much behind UTC until a hole in the recording takes the push up.

Range cut: from the fragment containing `start_ms` (back to the sync-sample fragment starting its GOP) to the
last fragment starting before `end_ms` (the one containing `end_ms - 1`); a range starting in a hole starts
at the next fragment.

Invariants:
- Every included segment has the first one's timescale, track id, trex defaults, edit list and sample
  description bytes (codec, size, SPS/PPS/VPS): one moov describes them all. The video ENDS before the first
  segment that differs (a camera reconfigured, or switched codec), whose fragments cannot be moved (data at
  absolute file offsets: the same rule in both layouts), whose tfdt is version 0 (32-bit) while its new
  decode time is not (fragmented layout only; handled like a parameter change: nothing is widened, since that
  would move every data offset after it), or that follows a hole longer than a sidx duration or an stts
  sample delta holds (2^32 ticks: 13.2 h at 90 kHz). `ends_early_at_ms` is then that segment's UTC start, so
  the UI can ask for the rest separately.
- Moved fragments stay valid: their data offsets are relative to their moof (default-base-is-moof, or the
  moof of a single track fragment), and each patched field keeps its recorded width. In the progressive
  layout each trun's samples are read from where its data offset says (inside its fragment, after its moof:
  mp4_boxes refuses a file where they are not), so its chunk offsets point at exactly the recorded bytes.
- `size`, the header and every fragment's place in the file are fixed at planning; `chunks` only reads, and
  holds each source file open only while it reads from it.
- A cached segment layout (its fragments and its sample table, what both layouts need) is keyed by (path,
  inode, size, mtime_ns): closed segment files never change, and a file that did is parsed again. The cache
  holds at most _CACHED_BYTES (48 MB) by SegmentLayout.nbytes, least recently used out first: a day of one
  camera (10 s segments, 1 s fragments, 25 fps) is 37 MB of it.
- The ETag hashes the layout's name with the files and fragments included: the two layouts of one range have
  different ETags (an If-Range of one never gets bytes of the other).

Failure paths:
- nothing recorded in the range (no fragment inside it, or no such camera): NoRecording, its message naming
  the gaps in the range and their reasons from the index (edgenvr.index.queries.gaps);
- `end_ms <= start_ms`: ValueError (a bad request: HTTP 400);
- at planning, a segment that is gone, unreadable, of another size than its index row says (truncated,
  replaced), malformed (edgenvr.web.mp4_boxes.Mp4FormatError), or, for the first one, not playable in a
  browser: PlaybackError naming it relative to the data dir. Its SHA-256 is not checked (far too slow per
  request; the export path does that);
- at planning, in the progressive layout, a range whose samples' decode times would not fit stts (not
  expected: the cut above prevents it) or whose moov would pass 4 GB: PlaybackError;
- `kind` not one of LAYOUTS: ValueError (the route answers 400 before planning);
- in `chunks`, a segment deleted after planning (the retention ring deletes the oldest video), replaced or
  shortened: PlaybackError naming it, raised before any byte of that file is yielded (in the progressive
  layout a piece never mixes two files, and the file is checked (inode, size, mtime) before it is read); a `chunks` call
  starting there raises at its first step. Bytes already yielded are right, so the server must ABORT the
  response (close the connection without finishing it): the browser then sees a failed request and plans
  again, never a complete-looking response with a hole in it. A file deleted while it is being read is read
  to the end (an open file outlives its name).

Planning time, measured (page cache warm; a 2-core x86-64 Xeon VM; 1080p segments of 10 s at 25 fps, key
frames every 2 s, fragments every 1 s, as a real camera gives; /tmp benchmark with hard-linked copies of one
segment; the index query left out (rows made by the benchmark): with the index, add ~0.2 s a day for
index.queries.segments building each row's path):
- 60 segments (10 min): progressive 22 ms with the layout cache empty, 2 ms with it warm (median of 5);
  fragmented 19 ms and 1 ms; the progressive header is 64 KB;
- 8,640 segments (24 h, 86,400 fragments, 2.16 M samples): progressive 2.5 s with the cache empty, 0.24 s
  with it warm (header 9.5 MB; 102 MB traced at the peak of a cold plan, the cache's 37 MB included);
  fragmented 2.4 s and 0.18 s (header 0.5 MB). Parsing the sample tables costs ~0.1 ms a segment when the
  cache is empty (fragmented alone was 1.65 s cold before they were parsed).
`chunks` then gives its first piece in 0.01-0.1 ms.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import itertools
import operator
import os
import sqlite3
import struct
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from edgenvr.core.camera_ids import is_camera_id
from edgenvr.index.queries import SegmentRow, camera_states, gaps, segments
from edgenvr.storage.layout import StorageLayout
from edgenvr.web.mp4_boxes import (
    DECODE_TIME,
    DURATION,
    END,
    FIRST_CTS,
    FRAGMENT_FIELDS,
    KEY,
    MOOF_AT,
    SEQUENCE_AT,
    SIDX_REFERENCE_LIMIT,
    TFDT_AT,
    TFDT_WIDE,
    U32_MAX,
    Mp4FormatError,
    SegmentLayout,
    TrackFormat,
    make_sidx,
    moov_with_duration,
    progressive_header,
    scan_segment,
)

CHUNK_BYTES = 256 * 1024           # the most `chunks` yields at once
PROGRESSIVE = "progressive"        # the layouts of the virtual file (module docstring); the first is the default
FRAGMENTED = "fragmented"
LAYOUTS = (PROGRESSIVE, FRAGMENTED)
_LAYOUT_VERSION = 2                # in every etag: a change of how the file is laid out changes them all
_CACHED_BYTES = 48 << 20           # parsed segment layouts kept: a day of one camera at 25 fps is ~37 MB
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class NoRecording(Exception):
    """Nothing recorded in the range; str() names the gap(s) and their reasons (from index.queries.gaps), e.g.
    'no recording from 2026-11-30 10:00:00 to 10:05:00 UTC (camera offline: connection refused)'."""


class PlaybackError(Exception):
    """A segment unreadable/malformed/changed; names the file (relative to the data dir, no secrets)."""


# --- the cache of parsed segment layouts ------------------------------------------------------------------


class _LayoutCache:
    """Least recently used segment layouts, bounded by the bytes they hold (SegmentLayout.nbytes). Thread-safe:
    the server plans in several threads."""

    def __init__(self, max_bytes: int) -> None:
        self._entries: OrderedDict[tuple[str, int, int, int], SegmentLayout] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int, int]) -> SegmentLayout | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple[str, int, int, int], value: SegmentLayout) -> None:
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = value
            self._bytes += value.nbytes
            while self._bytes > self._max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


_LAYOUTS = _LayoutCache(_CACHED_BYTES)


@dataclass(frozen=True)
class _SegmentFile:
    """A source segment as planned: which file (as it was then) and its layout."""
    path: str          # absolute, built by the layout from the index row (never from a request)
    name: str          # relative to the data dir: what messages show
    start_ms: int      # its row's start
    inode: int
    size: int
    mtime_ns: int
    layout: SegmentLayout


def _relative_name(data_dir: str, path: str) -> str:
    """`path` relative to the data dir (string work: pathlib would cost a third of planning a cached day)."""
    if path.startswith(data_dir):
        return path[len(data_dir):]
    return os.path.basename(path)   # not under the data dir (rows the layout built always are): no directories


def _segment_file(data_dir: str, row: SegmentRow) -> _SegmentFile:
    """Open the row's file, check its size against the row, and parse it (or take its cached layout).
    `data_dir`: the data directory with a trailing separator."""
    name = _relative_name(data_dir, row.path)
    try:
        fd = os.open(row.path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise PlaybackError(f"segment {name} is gone (deleted since it was indexed, by the retention ring?)") from exc
    except OSError as exc:
        raise PlaybackError(f"segment {name} cannot be opened: {exc.strerror}") from exc
    try:
        stat = os.fstat(fd)
        if stat.st_size != row.bytes:
            raise PlaybackError(f"segment {name} is {stat.st_size} bytes on disk, but {row.bytes} in the index: "
                                f"it was truncated or replaced since it was recorded")
        key = (row.path, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        parsed = _LAYOUTS.get(key)
        if parsed is None:
            parsed = scan_segment(lambda at, length: os.pread(fd, length, at), stat.st_size)
            _LAYOUTS.put(key, parsed)
    except Mp4FormatError as exc:
        raise PlaybackError(f"segment {name} is not a readable fragmented MP4: {exc}") from exc
    except OSError as exc:
        raise PlaybackError(f"segment {name} cannot be read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    return _SegmentFile(row.path, name, row.start_ms, stat.st_ino, stat.st_size, stat.st_mtime_ns, parsed)


# --- the plan and its bytes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """The fragments [first, first + count) of one segment, at fragments [video_first, ...) of the video."""
    file: _SegmentFile
    first: int
    count: int
    video_first: int


@dataclass(frozen=True)
class _FragmentedPlan:
    """Everything `chunks` needs: the header, and for the N fragments of the video their place in the file
    (`offsets`, N + 1 entries, the last being the size), their new decode times and their sources."""
    header: bytes
    sources: tuple[_Source, ...]
    offsets: array[int]          # 'q'
    decode_times: array[int]     # 'q'
    source_of: array[int]        # 'l': index into sources

    def read(self, first: int, end: int) -> Iterator[bytes]:
        """Bytes [first, end) of the file, in pieces of at most CHUNK_BYTES; each segment file is open only
        while its bytes are read."""
        yield from _header_pieces(self.header, first, end)
        at = max(first, min(end, len(self.header)))
        if at >= end:
            return
        offsets = self.offsets
        fragment = bisect.bisect_right(offsets, at) - 1
        fd = -1
        open_source = -1
        try:
            while at < end:
                number = self.source_of[fragment]
                source = self.sources[number]
                if number != open_source:
                    if fd >= 0:
                        os.close(fd)
                        fd = -1
                    fd = _open_unchanged(source.file)
                    open_source = number
                fields = source.file.layout.fields
                local = source.first + fragment - source.video_first
                stop = min(end, at + CHUNK_BYTES)
                last = fragment
                # Fragments that follow each other in the file too (the usual case) are read in one piece.
                while (offsets[last + 1] < stop and last + 1 < source.video_first + source.count
                       and fields[(local + last - fragment) * FRAGMENT_FIELDS + END]
                       == fields[(local + last - fragment + 1) * FRAGMENT_FIELDS + MOOF_AT]):
                    last += 1
                stop = min(stop, offsets[last + 1])
                file_at = fields[local * FRAGMENT_FIELDS + MOOF_AT] + at - offsets[fragment]
                patches = self._patches(at, stop, fragment, last, source, local)
                try:
                    if patches:   # read into a buffer patched in place: one copy, not two
                        data = bytearray(stop - at)
                        got = os.preadv(fd, [data], file_at)
                    else:
                        data = os.pread(fd, stop - at, file_at)
                        got = len(data)
                except OSError as exc:
                    raise PlaybackError(f"segment {source.file.name} cannot be read: {exc.strerror}") from exc
                if got != stop - at:
                    raise PlaybackError(f"segment {source.file.name} is shorter than when the video was planned")
                if patches:
                    _apply(data, at, patches, source.file.name)
                    data = bytes(data)
                yield data
                at = stop
                fragment = last + 1 if at == offsets[last + 1] else last
        finally:
            if fd >= 0:
                os.close(fd)

    def _patches(self, at: int, end: int, fragment: int, last: int, source: _Source,
                 local: int) -> list[tuple[int, bytes]]:
        """What is written over the recorded bytes of [at, end) (video offsets, within fragments fragment..last
        of `source`): the renumbered mfhd, the shifted tfdt, the size of a last mdat recorded without one; and
        b"" where the bytes must read 'moof' (still the file planned?)."""
        layout = source.file.layout
        fields = layout.fields
        patches: list[tuple[int, bytes]] = []
        for number in range(fragment, last + 1):
            base = (local + number - fragment) * FRAGMENT_FIELDS
            moof_at = self.offsets[number]
            if moof_at >= end:
                break
            tfdt = self.decode_times[number]
            patches.append((moof_at + 4, b""))
            patches.append((moof_at + fields[base + SEQUENCE_AT], _U32.pack(number + 1)))
            patches.append((moof_at + fields[base + TFDT_AT] + 4,
                            _U64.pack(tfdt) if fields[base + TFDT_WIDE] else _U32.pack(tfdt)))
            if fields[base + MOOF_AT] <= layout.open_mdat_at < fields[base + END]:
                patches.append((moof_at + layout.open_mdat_at - fields[base + MOOF_AT],
                                _U32.pack(fields[base + END] - layout.open_mdat_at)))
        return [(offset, value) for offset, value in patches if offset < end and offset + max(len(value), 4) > at]


@dataclass(frozen=True)
class _ProgressivePlan:
    """Everything `chunks` needs for the progressive layout: the header (ftyp, moov, the mdat's header), and
    for the R runs of samples (one per trun: a chunk of the moov) their place in the video (`offsets`, R + 1
    entries, the last being the size), in their file, and their source."""
    header: bytes
    sources: tuple[_Source, ...]
    offsets: array[int]          # 'q'
    file_at: array[int]          # 'q'
    source_of: array[int]        # 'q': index into sources

    def read(self, first: int, end: int) -> Iterator[bytes]:
        """Bytes [first, end) of the file, in pieces of at most CHUNK_BYTES, each from one segment file (so
        that a file found deleted or changed stops the bytes before any of its own); the sample bytes are
        read as recorded, nothing is patched."""
        yield from _header_pieces(self.header, first, end)
        at = max(first, min(end, len(self.header)))
        if at >= end:
            return
        offsets, file_at, source_of = self.offsets, self.file_at, self.source_of
        run = bisect.bisect_right(offsets, at) - 1
        fd = -1
        open_source = -1
        try:
            while at < end:
                number = source_of[run]
                source = self.sources[number]
                if number != open_source:
                    if fd >= 0:
                        os.close(fd)
                        fd = -1
                    fd = _open_unchanged(source.file)   # PlaybackError: gone or changed since planned
                    open_source = number
                limit = min(end, at + CHUNK_BYTES)
                pieces = []
                # The runs of one file, up to a piece's size: each is contiguous in its file (a moof between two)
                while at < limit and source_of[run] == number:
                    stop = min(limit, offsets[run + 1])
                    try:
                        data = os.pread(fd, stop - at, file_at[run] + at - offsets[run])
                    except OSError as exc:
                        raise PlaybackError(f"segment {source.file.name} cannot be read: {exc.strerror}") from exc
                    if len(data) != stop - at:
                        raise PlaybackError(f"segment {source.file.name} is shorter than when the video was "
                                            f"planned")
                    pieces.append(data)
                    at = stop
                    if at == offsets[run + 1]:
                        run += 1
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
        finally:
            if fd >= 0:
                os.close(fd)


def _header_pieces(header: bytes, first: int, end: int) -> Iterator[bytes]:
    """The header's part of bytes [first, end), in pieces of at most CHUNK_BYTES (both layouts start so)."""
    for at in range(first, min(end, len(header)), CHUNK_BYTES):
        yield header[at:min(end, len(header), at + CHUNK_BYTES)]


def _apply(buffer: bytearray, at: int, patches: list[tuple[int, bytes]], name: str) -> None:
    """Write the patches over `buffer` (video bytes from offset `at`), each only as far as it overlaps it."""
    end = at + len(buffer)
    for offset, value in patches:
        expected = value or b"moof"
        lo, hi = max(offset, at), min(offset + len(expected), end)
        if not value:
            if buffer[lo - at:hi - at] != expected[lo - offset:hi - offset]:
                raise PlaybackError(f"segment {name} changed since the video was planned; plan it again")
        else:
            buffer[lo - at:hi - at] = expected[lo - offset:hi - offset]


def _open_unchanged(file: _SegmentFile) -> int:
    """A descriptor of the segment file, if it is still the file that was planned."""
    try:
        fd = os.open(file.path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise PlaybackError(f"segment {file.name} was deleted after the video was planned (by the retention "
                            f"ring?); plan it again") from exc
    except OSError as exc:
        raise PlaybackError(f"segment {file.name} cannot be opened: {exc.strerror}") from exc
    try:
        stat = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise PlaybackError(f"segment {file.name} cannot be read: {exc.strerror}") from exc
    if (stat.st_ino, stat.st_size, stat.st_mtime_ns) != (file.inode, file.size, file.mtime_ns):
        os.close(fd)
        raise PlaybackError(f"segment {file.name} changed after the video was planned; plan it again")
    return fd


@dataclass(frozen=True)
class PlaybackVideo:
    """A planned virtual MP4 (see the module docstring). Cheap to keep: a few arrays of 8-byte integers per
    fragment and the header bytes; the files are opened only by `chunks`."""
    camera: str
    start_ms: int            # UTC of media time 0 (start of the first fragment)
    end_ms: int              # UTC end of the last fragment included
    size: int                # total bytes of the virtual file
    etag: str                # strong validator, without the quotes of the ETag header: a hash over the
    #                          layout (paths, inodes, sizes, mtimes, fragments included)
    codec: str               # 'h264' or 'hevc' (from the stsd entry: avc1/avc3 -> h264, hvc1/hev1 -> hevc)
    mime_codecs: str         # RFC 6381, e.g. 'avc1.64001f' / 'hev1.1.6.L93.B0', for the UI's canPlayType
    ends_early_at_ms: int | None   # UTC start of the first segment in the range NOT included, None if none
    layout: str              # PROGRESSIVE or FRAGMENTED
    header_size: int         # bytes of the header held in memory (ftyp, moov, sidx / mdat header): what a
    #                          cache of plans is bounded by (a day's progressive moov is ~10 MB)
    _plan: _FragmentedPlan | _ProgressivePlan = field(repr=False, compare=False)

    def chunks(self, first: int, end: int) -> Iterator[bytes]:
        """Bytes [first, end) of the file, in pieces <= 256 KiB; opens each source file only while reading it.
        ValueError at once for a range outside [0, size]; PlaybackError while iterating (module docstring).
        Close the iterator (or let it go) to stop early: that closes the file being read."""
        if not 0 <= first <= end <= self.size:
            raise ValueError(f"bytes [{first}, {end}) are not within the video's {self.size} bytes")
        return self._plan.read(first, end)


# --- planning ---------------------------------------------------------------------------------------------


def _round_div(value: int, divisor: int) -> int:
    return (2 * value + divisor) // (2 * divisor)


class _Builder:
    """Collects the fragments of consecutive segments while they can share the first one's header."""

    def __init__(self, start_ms: int, end_ms: int, kind: str) -> None:
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.kind = kind
        self.track: TrackFormat | None = None
        self.origin = 0                 # ticks of UTC media time 0, as round(ms * timescale / 1000)
        self.video_start_ms = 0
        self.sources: list[_Source] = []
        self.decode_times = array("q")
        self.sizes = array("q")
        self.keys = array("q")
        self.end_ticks = 0              # end of the last fragment so far
        self.ends_early_at_ms: int | None = None

    def add(self, file: _SegmentFile) -> bool:
        """Take the segment's fragments in the range; False if the video ends before it."""
        segment = file.layout
        track = segment.format
        if segment.unmovable:
            if self.track is None:
                raise PlaybackError(f"segment {file.name} cannot be played: {segment.unmovable}")
            self.ends_early_at_ms = file.start_ms
            return False
        chosen = self._in_range(file)
        if not chosen:
            return True   # nothing of it in the range (its row overlaps by a few ms of rounding)
        fields = segment.fields
        if self.track is None:
            if not track.codec:
                raise PlaybackError(f"segment {file.name} holds {track.sample_entry} video, which browsers are not "
                                    f"offered; export it instead")
            first = chosen[0]
            while first > 0 and not fields[first * FRAGMENT_FIELDS + KEY]:
                first -= 1   # back to the fragment that starts the GOP
            if not fields[first * FRAGMENT_FIELDS + KEY]:
                keyed = [number for number in chosen if fields[number * FRAGMENT_FIELDS + KEY]]
                if not keyed:
                    return True   # no key frame of this segment in the range: nothing decodable from it
                first = keyed[0]
            scale = track.timescale
            decode_time = fields[first * FRAGMENT_FIELDS + DECODE_TIME]
            self.origin = _round_div(file.start_ms * scale, 1000) + decode_time
            self.video_start_ms = file.start_ms + _round_div(decode_time * 1000, scale)
            if not self._take(file, first, chosen[-1]):
                raise PlaybackError(f"segment {file.name} cannot be played: its fragments' decode times do not "
                                    f"fit their tfdt boxes")
            self.track = track
            return True
        if track.compatibility != self.track.compatibility or not self._take(file, chosen[0], chosen[-1]):
            self.ends_early_at_ms = file.start_ms
            return False
        return True

    def _in_range(self, file: _SegmentFile) -> range | list[int]:
        """The segment's fragments overlapping [start_ms, end_ms), by their UTC times in ms * timescale (exact
        integers): the row's start plus tfdt / timescale."""
        segment = file.layout
        fields = segment.fields
        scale = segment.format.timescale
        low, high, base = self.start_ms * scale, self.end_ms * scale, file.start_ms * scale
        count = segment.count
        if not count:
            return []
        last = (count - 1) * FRAGMENT_FIELDS
        if (base + fields[DECODE_TIME] * 1000 >= low and fields[DURATION] > 0
                and base + (fields[last + DECODE_TIME] + fields[last + DURATION]) * 1000 <= high):
            return range(count)   # the usual segment in the middle of a range: all of it
        chosen = []
        for number in range(count):
            row = number * FRAGMENT_FIELDS
            start = base + fields[row + DECODE_TIME] * 1000
            duration = fields[row + DURATION] * 1000
            if start < high and (start + duration > low or (duration == 0 and start >= low)):
                chosen.append(number)
        return chosen

    def _take(self, file: _SegmentFile, first: int, last: int) -> bool:
        """Fragments first..last of the segment onto the timeline, unless a decode time does not fit its tfdt
        (fragmented layout only: the progressive one has no tfdt) or follows the previous fragment by more than
        a sidx duration or an stts sample delta holds (then nothing is taken)."""
        fields = file.layout.fields
        tfdt_matters = self.kind == FRAGMENTED
        low, high = first * FRAGMENT_FIELDS, (last + 1) * FRAGMENT_FIELDS
        shift = _round_div(file.start_ms * file.layout.format.timescale, 1000) - self.origin
        times = array("q")
        end = self.end_ticks
        previous = self.decode_times[-1] if self.decode_times else 0
        for decode_time, duration, wide in zip(fields[low + DECODE_TIME:high:FRAGMENT_FIELDS],
                                               fields[low + DURATION:high:FRAGMENT_FIELDS],
                                               fields[low + TFDT_WIDE:high:FRAGMENT_FIELDS]):
            time = shift + decode_time
            if time < end:
                time = end
            if (tfdt_matters and not wide and time > U32_MAX) or time - previous > U32_MAX:
                return False
            times.append(time)
            end = time + duration
            previous = time
        self.sources.append(_Source(file, first, last - first + 1, len(self.decode_times)))
        self.decode_times.extend(times)
        self.sizes.extend(map(operator.sub, fields[low + END:high:FRAGMENT_FIELDS],
                              fields[low + MOOF_AT:high:FRAGMENT_FIELDS]))
        self.keys.extend(fields[low + KEY:high:FRAGMENT_FIELDS])
        self.end_ticks = end
        return True

    def build(self, camera: str) -> PlaybackVideo:
        track = self.track
        assert track is not None and self.decode_times
        total = self.end_ticks
        plan = self._fragmented() if self.kind == FRAGMENTED else self._progressive()
        digest = hashlib.sha256(f"{_LAYOUT_VERSION}\0{self.kind}\0{camera}".encode())
        for source in self.sources:
            file = source.file
            digest.update(f"\0{file.name}\0{file.inode}\0{file.size}\0{file.mtime_ns}\0{source.first}\0"
                          f"{source.count}".encode())
        return PlaybackVideo(
            camera=camera, start_ms=self.video_start_ms,
            end_ms=self.video_start_ms + _round_div(total * 1000, track.timescale), size=plan.offsets[-1],
            etag=digest.hexdigest()[:32], codec=track.codec, mime_codecs=track.mime_codecs,
            ends_early_at_ms=self.ends_early_at_ms, layout=self.kind, header_size=len(plan.header), _plan=plan)

    def _progressive(self) -> _ProgressivePlan:
        """ftyp + moov (complete sample tables) + one mdat of every included run of samples, as recorded.
        Sample decode times follow the fragments' planned times: the last sample before a fragment lasts up to
        that fragment's start, so that holes and the ms rounding of row starts stay on the UTC timeline."""
        track = self.track
        assert track is not None
        durations, sizes, sync, cts, per_fragment, run_samples, run_bytes, run_at, run_source = (
            [], [], [], [], [], [], [], [], [])
        with_cts = any(source.file.layout.samples.cts is not None for source in self.sources)
        for number, source in enumerate(self.sources):
            table = source.file.layout.samples
            runs = table.fragment_runs[source.first:source.first + source.count + 1]
            low, high = int(runs[0]), int(runs[-1])
            firsts = table.run_first[low:high + 1]
            begin, stop = int(firsts[0]), int(firsts[-1])
            durations.append(table.durations[begin:stop])
            sizes.append(table.sizes[begin:stop])
            sync.append(table.sync[begin:stop])
            if with_cts:
                cts.append(table.cts[begin:stop] if table.cts is not None else np.zeros(stop - begin, np.int32))
            per_fragment.append(np.diff(table.run_first[runs]))
            run_samples.append(np.diff(firsts))
            run_bytes.append(table.run_bytes[low:high])
            run_at.append(table.run_at[low:high])
            run_source.append(np.full(high - low, number, np.int64))
        deltas = np.concatenate(durations)   # a copy: the cached tables are not changed below
        if not len(deltas):
            name = self.sources[0].file.name
            raise PlaybackError(f"segment {name} cannot be played: its fragments hold no samples")
        # Each fragment's samples keep their recorded durations but the last, which lasts until the next
        # fragment's planned time (the end, for the last): a hole, or the rounding of row starts, is taken
        # there. Per fragment, not per sample: a day is 86,400 fragments but 2.16 M samples.
        counts = np.concatenate(per_fragment)
        kept = counts > 0   # a fragment without samples has nothing to stretch
        times = np.frombuffer(self.decode_times, np.int64)[kept]
        ends = np.cumsum(counts[kept])
        lasts = ends - 1
        sums = np.add.reduceat(deltas, ends - counts[kept], dtype=np.int64)
        stretched = np.append(times[1:], self.end_ticks) - (times + sums - deltas[lasts])
        if int(stretched.min()) < 0 or int(stretched.max()) > U32_MAX:   # _take keeps them apart by 0..2^32
            raise PlaybackError("the range cannot be one progressive video (sample times out of order or too "
                                "far apart); ask for a shorter one")
        deltas[lasts] = stretched
        chunk_bytes = np.concatenate(run_bytes)
        try:
            header = progressive_header(track, self.end_ticks, deltas, np.concatenate(sizes),
                                        np.concatenate(sync), np.concatenate(cts) if with_cts else None,
                                        np.concatenate(run_samples), chunk_bytes)
        except ValueError as exc:   # not expected: _take keeps fragment starts within 2^32 ticks of each other
            raise PlaybackError(f"the range cannot be one progressive video ({exc}); ask for a shorter one") from exc
        offsets = np.zeros(len(chunk_bytes) + 1, np.int64)
        np.cumsum(chunk_bytes, out=offsets[1:])
        offsets += len(header)
        return _ProgressivePlan(header, tuple(self.sources), array("q", offsets.tobytes()),
                                array("q", np.concatenate(run_at).tobytes()),
                                array("q", np.concatenate(run_source).tobytes()))

    def _fragmented(self) -> _FragmentedPlan:
        """ftyp + moov + sidx + every included fragment, with mfhd / tfdt patched."""
        track = self.track
        assert track is not None
        count = len(self.decode_times)
        total = self.end_ticks
        starts = list(itertools.compress(range(count), self.keys))
        if len(starts) > SIDX_REFERENCE_LIMIT:
            starts = [source.video_first for source in self.sources]
            if len(starts) > SIDX_REFERENCE_LIMIT:
                step = -(-len(starts) // SIDX_REFERENCE_LIMIT)
                starts = starts[::step]
        relative = array("q", [0])
        relative.extend(itertools.accumulate(self.sizes))
        times = self.decode_times
        ends = array("q", starts[1:])
        sizes = array("q", (relative[stop] for stop in ends))
        sizes.append(relative[-1])
        sizes = array("q", map(operator.sub, sizes, (relative[start] for start in starts)))
        ends_at = array("q", (times[stop] for stop in ends))
        ends_at.append(total)
        durations = array("q", map(operator.sub, ends_at, (times[start] for start in starts)))
        first = self.sources[0]
        first_cts = first.file.layout.field(first.first, FIRST_CTS)
        try:
            sidx = make_sidx(track.track_id, track.timescale, times[0] + first_cts, sizes, durations)
        except ValueError as exc:
            raise PlaybackError(f"the range is too long for one video ({exc}); ask for a shorter one") from exc
        header = track.ftyp + moov_with_duration(track, total) + sidx
        offsets = array("q", map(len(header).__add__, relative))
        source_of = array("l")
        for number, source in enumerate(self.sources):
            source_of.extend(array("l", [number]) * source.count)
        return _FragmentedPlan(header, tuple(self.sources), offsets, times, source_of)


def plan_playback_video(conn: sqlite3.Connection, layout: StorageLayout, camera: str, start_ms: int,
                        end_ms: int, kind: str = PROGRESSIVE) -> PlaybackVideo:
    """Plan `camera`'s recording of [start_ms, end_ms) as one virtual MP4 laid out as `kind` (PROGRESSIVE or
    FRAGMENTED; see the module docstring for the layouts, the cut, and every failure: NoRecording,
    PlaybackError, ValueError, also for an unknown `kind`)."""
    if kind not in LAYOUTS:
        raise ValueError(f"no video layout {kind!r}: {' or '.join(LAYOUTS)}")
    if end_ms <= start_ms:
        raise ValueError(f"the range ends ({end_ms}) before it starts ({start_ms})")
    # Read the rows at once: a generator would hold a read transaction while the files are parsed.
    rows = list(segments(conn, layout, camera, start_ms, end_ms)) if is_camera_id(camera) else []
    builder = _Builder(start_ms, end_ms, kind)
    data_dir = os.path.join(str(layout.data_dir), "")
    for row in rows:
        if not builder.add(_segment_file(data_dir, row)):
            break
    if builder.track is None:
        raise NoRecording(_nothing_recorded(conn, layout, camera, start_ms, end_ms))
    return builder.build(rows[0].camera)


def _utc(epoch_ms: int) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(epoch_ms // 1000, dt.timezone.utc)
    except (OverflowError, ValueError, OSError):
        return None


def _span(start_ms: int, end_ms: int | None) -> str:
    """'2026-11-30 10:00:00 to 10:05:00 UTC' (the end's date only when it differs), '... UTC to now'."""
    start, end = _utc(start_ms), _utc(end_ms) if end_ms is not None else None
    start_text = f"{start:%Y-%m-%d %H:%M:%S}" if start is not None else f"{start_ms}ms"
    if end_ms is None:
        return f"{start_text} UTC to now"
    if end is None:
        return f"{start_text} to {end_ms}ms UTC"
    end_text = f"{end:%H:%M:%S}" if start is not None and end.date() == start.date() else f"{end:%Y-%m-%d %H:%M:%S}"
    return f"{start_text} to {end_text} UTC"


def _nothing_recorded(conn: sqlite3.Connection, layout: StorageLayout, camera: str, start_ms: int,
                      end_ms: int) -> str:
    known = is_camera_id(camera) and any(row["id"] == camera for row in camera_states(conn))
    if not known:
        return f"no recording from {_span(start_ms, end_ms)} (no camera {camera!r} has ever recorded)"
    holes = gaps(conn, layout, camera, start_ms, end_ms)
    if not holes:
        return f"no recording from {_span(start_ms, end_ms)} (nothing was recorded then)"
    return "; ".join(f"no recording from {_span(gap.start_ms, gap.end_ms)} ({gap.reason or 'no reason recorded'})"
                     for gap in holes)
