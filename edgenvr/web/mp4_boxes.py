"""ISO BMFF (MP4) boxes, only as far as the virtual playback MP4 (web.playback_video) needs them: reading the
layout of one recorded fragmented segment (its fragments, and every sample of them: `SampleTable`), and writing
the few boxes that change when segments are laid end to end (moov with durations, sidx, the moof fields that
are renumbered or shifted), or the header of a progressive MP4 of their samples (`progressive_header`: ftyp,
a moov with complete sample tables, the mdat's header).

Owns no files and does no I/O of its own: `scan_segment` reads through the `ReadAt` it is given.

What it reads (an mdat's payload never, beyond the 8 bytes that come with a header read as 16 in case the
size is 64-bit):
- top level: ftyp, moov (whole), each moof (whole, with the 16 bytes after it: the next box's header), the
  header of every other box; `free`, `skip`, `udta`, `uuid`, `meta`, `mfra`, ... are passed over;
- moov: mvhd and mdhd timescales, tkhd track_ID, hdlr (must be `vide`), the stsd box (kept as bytes: two
  segments can share one file header only if these bytes are equal), mvex/trex defaults, edts (compared);
- moof: the mfhd sequence number's position, tfhd flags and defaults, tfdt (version, position, value), trun
  sample counts, durations, composition offset of the first sample and whether the first sample is a sync
  sample (the fragment's duration is the sum of its sample durations, from trun, else tfhd's default, else
  trex's); and each trun's per-sample fields (duration, size, flags, composition offset, each else its tfhd
  / trex default) and data offset, parsed per segment at once with numpy (big-endian dtype), never per sample
  in Python.

Invariants of a `SegmentLayout` it returns: fragments are in file order, each is a moof followed (possibly
with other boxes between) by at least one mdat, and spans [moof start, end of its last mdat); nothing else
of the file is part of a fragment (an mfra, a trailing free box). Offsets are absolute in the file.

Failure paths: bytes that are not a well-formed fragmented MP4 (a box running past its parent or the end of
the file, 64-bit sizes that do not fit, a moof whose children do not add up, a trun longer than its box,
an unknown top-level box, an mdat before any moof, a moof without an mdat, no moov / ftyp / mvex / trex,
more than one track, a non-video track, a trun of more than 2^20 samples or whose samples are not inside its
fragment after its moof) raise `Mp4FormatError` saying what and at which byte offset; the
caller adds the file's name. Nothing else is raised for bad bytes (no IndexError / struct.error: every read
is bounds-checked first). A well-formed file whose fragments cannot be moved into another file (an explicit
base-data-offset in tfhd, more than one traf, no tfdt) is not an error here: its layout carries the reason
in `unmovable`, and the planner ends the video before it.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

ReadAt = Callable[[int, int], bytes]
"""(offset, length) -> the bytes there; shorter only at the end of the file."""

_HEADER = struct.Struct(">I4s")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I32 = struct.Struct(">i")

U32_MAX = 0xFFFFFFFF
# In version 0 time fields, all ones means "unknown": the largest value that is a duration is one less.
_V0_DURATION_MAX = 0xFFFFFFFE
# Larger decode times or durations are not a recording's (2^53 ticks of 90 kHz are 3,000 years): refused,
# so that every time fits the signed 64-bit arrays with room for sums.
_TIME_LIMIT = 1 << 53
# A moov or moof this large is not a recording's (ours are ~1 KB and ~0.3-2 KB): refuse rather than allocate.
_LARGEST_HEADER_BOX = 16 << 20

# More samples than this in one trun are not a recording's (11.6 h at 25 fps in one fragment): refused, so that
# a corrupt count in a trun without per-sample fields cannot make sample_table allocate gigabytes.
_LARGEST_RUN = 1 << 20

# Top-level boxes that may sit in a segment and are not part of the video: passed over.
_PASSED_OVER = frozenset({b"free", b"skip", b"udta", b"uuid", b"meta", b"mfra", b"pdin", b"wide", b"prft",
                          b"sidx", b"ssix", b"styp", b"emsg"})

# tfhd flags (ISO/IEC 14496-12 8.8.7)
_TFHD_BASE_DATA_OFFSET = 0x000001
_TFHD_DESCRIPTION_INDEX = 0x000002
_TFHD_DEFAULT_DURATION = 0x000008
_TFHD_DEFAULT_SIZE = 0x000010
_TFHD_DEFAULT_FLAGS = 0x000020
# trun flags (8.8.8)
_TRUN_DATA_OFFSET = 0x000001
_TRUN_FIRST_FLAGS = 0x000004
_TRUN_DURATION = 0x000100
_TRUN_SIZE = 0x000200
_TRUN_FLAGS = 0x000400
_TRUN_CTS = 0x000800
_TRUN_PER_SAMPLE_FLAGS = _TRUN_DURATION | _TRUN_SIZE | _TRUN_FLAGS | _TRUN_CTS
_NON_SYNC_SAMPLE = 0x00010000   # sample_is_non_sync_sample in sample flags

_CODECS = {b"avc1": "h264", b"avc3": "h264", b"hvc1": "hevc", b"hev1": "hevc"}
_VISUAL_SAMPLE_ENTRY = 78   # bytes of a VisualSampleEntry before its child boxes (avcC, hvcC, pasp, ...)


class Mp4FormatError(ValueError):
    """Bytes that are not the fragmented MP4 expected; says what, and at which byte offset of the file."""


def box_name(kind: bytes) -> str:
    """A box type as text for messages: 'moof', or its hex if it is not printable (garbage)."""
    return kind.decode("ascii") if all(0x20 <= b < 0x7F for b in kind) else kind.hex()


class Box(NamedTuple):
    """Where a box is: offsets in the buffer (or file) it was read from. (A NamedTuple: a day's planning
    makes ~10^6 of them, and a frozen dataclass is 3x slower to build.)"""
    kind: bytes
    start: int
    payload: int      # where its contents start: start + 8, or + 16 for a 64-bit size
    end: int
    to_end: bool      # its size field was 0: "to the end of the file"


def _parse_header(data: bytes, at: int, limit: int, base: int) -> Box:
    """The box whose header is at data[at:]; it must end by `limit` (its parent's end). `base` is data[0]'s
    offset in the file, for messages."""
    if limit - at < 8:
        raise Mp4FormatError(f"{limit - at} stray bytes at offset {base + at}, too few for a box header")
    size, kind = _HEADER.unpack_from(data, at)
    header = 8
    to_end = False
    if size == 1:
        if limit - at < 16:
            raise Mp4FormatError(f"box {box_name(kind)} at offset {base + at} has a 64-bit size cut off")
        size = _U64.unpack_from(data, at + 8)[0]
        header = 16
    elif size == 0:
        size = limit - at
        to_end = True
    if size < header or size > limit - at:
        raise Mp4FormatError(f"box {box_name(kind)} at offset {base + at} claims {size} bytes, but only "
                             f"{limit - at} are left in its parent")
    return Box(kind, at, at + header, at + size, to_end)


def children(data: bytes, start: int, end: int, base: int = 0) -> Iterator[Box]:
    """The boxes laid end to end in data[start:end]."""
    at = start
    while at < end:
        box = _parse_header(data, at, end, base)
        yield box
        at = box.end


def _kinds(data: bytes, parent: Box, base: int) -> dict[bytes, list[Box]]:
    """The parent's children by kind, in order."""
    found: dict[bytes, list[Box]] = {}
    for box in children(data, parent.payload, parent.end, base):
        found.setdefault(box.kind, []).append(box)
    return found


def _optional(kinds: dict[bytes, list[Box]], parent: Box, kind: bytes, base: int) -> Box | None:
    """The child box of that kind, None if there is none; Mp4FormatError if there are several."""
    found = kinds.get(kind, ())
    if len(found) > 1:
        raise Mp4FormatError(f"{len(found)} {box_name(kind)} boxes in the {box_name(parent.kind)} at offset "
                             f"{base + parent.start}, expected one")
    return found[0] if found else None


def _one(kinds: dict[bytes, list[Box]], parent: Box, kind: bytes, base: int) -> Box:
    """The child box of that kind; Mp4FormatError if there is none or several."""
    found = _optional(kinds, parent, kind, base)
    if found is None:
        raise Mp4FormatError(f"no {box_name(kind)} box in the {box_name(parent.kind)} at offset "
                             f"{base + parent.start}")
    return found


def _full_box(data: bytes, box: Box, needed: int, base: int) -> tuple[int, int]:
    """(version, flags) of a full box whose payload must hold at least `needed` bytes."""
    if box.end - box.payload < needed:
        raise Mp4FormatError(f"{box_name(box.kind)} at offset {base + box.start} is {box.end - box.start} bytes, "
                             f"too short")
    return data[box.payload], int.from_bytes(data[box.payload + 1:box.payload + 4], "big")


@dataclass(frozen=True)
class TrackFormat:
    """What a file's header says about its one video track. Two segments can be played as one file only if
    their `compatibility` is equal."""
    ftyp: bytes                  # the ftyp box as recorded
    moov: bytes                  # the moov box as recorded
    movie_timescale: int         # mvhd
    timescale: int               # mdhd: the unit of tfdt, trun durations and sidx
    track_id: int
    sample_description: bytes    # the stsd box: codec, size, SPS/PPS/VPS
    trex: bytes                  # trex payload: the defaults fragments fall back on
    edit_list: bytes             # the edts box, b"" if none
    default_duration: int        # trex default_sample_duration
    default_size: int            # trex default_sample_size
    default_flags: int           # trex default_sample_flags
    sample_entry: str            # the stsd entry's type: 'avc1', 'hev1', ...
    codec: str                   # 'h264' | 'hevc' | '' (a codec browsers are not offered)
    mime_codecs: str             # RFC 6381 'codecs' parameter, '' if codec is ''

    @property
    def compatibility(self) -> tuple[int, int, bytes, bytes, bytes]:
        return self.timescale, self.track_id, self.sample_description, self.trex, self.edit_list


def _time_fields(data: bytes, box: Box, middle: int, base: int) -> tuple[int, int]:
    """(the 32-bit field after creation/modification times (mvhd/mdhd timescale, tkhd track_ID), duration)."""
    version, _ = _full_box(data, box, 4, base)
    wide = version == 1
    fields = 4 + (16 if wide else 8)
    if box.end - box.payload < fields + middle + (8 if wide else 4):
        raise Mp4FormatError(f"{box_name(box.kind)} at offset {base + box.start} is too short")
    value = _U32.unpack_from(data, box.payload + fields)[0]
    duration_at = box.payload + fields + middle
    duration = _U64.unpack_from(data, duration_at)[0] if wide else _U32.unpack_from(data, duration_at)[0]
    return value, duration


def parse_moov(ftyp: bytes, moov: bytes, base: int) -> TrackFormat:
    """The format of a segment from its ftyp and moov boxes (each whole, as read; `base`: moov's offset)."""
    top = _parse_header(moov, 0, len(moov), base)
    in_moov = _kinds(moov, top, base)
    movie_timescale, _ = _time_fields(moov, _one(in_moov, top, b"mvhd", base), 4, base)
    traks = in_moov.get(b"trak", [])
    if len(traks) != 1:
        raise Mp4FormatError(f"{len(traks)} tracks in the moov at offset {base}, expected one video track")
    trak = traks[0]
    in_trak = _kinds(moov, trak, base)
    track_id, _ = _time_fields(moov, _one(in_trak, trak, b"tkhd", base), 8, base)
    edts = _optional(in_trak, trak, b"edts", base)
    mdia = _one(in_trak, trak, b"mdia", base)
    in_mdia = _kinds(moov, mdia, base)
    timescale, _ = _time_fields(moov, _one(in_mdia, mdia, b"mdhd", base), 4, base)
    if timescale == 0 or movie_timescale == 0:
        raise Mp4FormatError(f"a timescale of 0 in the moov at offset {base}")
    hdlr = _one(in_mdia, mdia, b"hdlr", base)
    _full_box(moov, hdlr, 12, base)
    handler = moov[hdlr.payload + 8:hdlr.payload + 12]
    if handler != b"vide":
        raise Mp4FormatError(f"the track at offset {base + trak.start} is {box_name(handler)}, not video")
    minf = _one(in_mdia, mdia, b"minf", base)
    stbl = _one(_kinds(moov, minf, base), minf, b"stbl", base)
    stsd = _one(_kinds(moov, stbl, base), stbl, b"stsd", base)
    _full_box(moov, stsd, 8, base)
    entries = list(children(moov, stsd.payload + 8, stsd.end, base))
    if not entries:
        raise Mp4FormatError(f"the stsd at offset {base + stsd.start} describes no sample format")
    entry = entries[0]
    mvex = _optional(in_moov, top, b"mvex", base)
    if mvex is None:
        raise Mp4FormatError(f"the moov at offset {base} has no mvex: not a fragmented MP4")
    trex = next((box for box in _kinds(moov, mvex, base).get(b"trex", []) if box.end - box.payload >= 24
                 and _U32.unpack_from(moov, box.payload + 4)[0] == track_id), None)
    if trex is None:
        raise Mp4FormatError(f"no trex for track {track_id} in the mvex at offset {base + mvex.start}")
    default_duration, default_size, default_flags = struct.unpack_from(">III", moov, trex.payload + 12)
    codec = _CODECS.get(entry.kind, "")
    return TrackFormat(
        ftyp=ftyp, moov=moov, movie_timescale=movie_timescale, timescale=timescale, track_id=track_id,
        sample_description=moov[stsd.start:stsd.end], trex=moov[trex.payload:trex.end],
        edit_list=moov[edts.start:edts.end] if edts is not None else b"",
        default_duration=default_duration, default_size=default_size, default_flags=default_flags, sample_entry=box_name(entry.kind),
        codec=codec, mime_codecs=_mime_codecs(moov, entry, base) if codec else "")


def _mime_codecs(data: bytes, entry: Box, base: int) -> str:
    """The RFC 6381 codecs parameter of an avc1/avc3/hvc1/hev1 sample entry, from its avcC / hvcC."""
    name = box_name(entry.kind)
    if entry.end - entry.payload < _VISUAL_SAMPLE_ENTRY:
        raise Mp4FormatError(f"{name} sample entry at offset {base + entry.start} is too short")
    configs = {box.kind: box for box in children(data, entry.payload + _VISUAL_SAMPLE_ENTRY, entry.end, base)}
    if entry.kind in (b"avc1", b"avc3"):
        avcc = configs.get(b"avcC")
        if avcc is None or avcc.end - avcc.payload < 4:
            raise Mp4FormatError(f"{name} sample entry at offset {base + entry.start} has no usable avcC")
        # profile_idc, constraint flags, level_idc: the bytes after configurationVersion
        return f"{name}.{data[avcc.payload + 1:avcc.payload + 4].hex()}"
    hvcc = configs.get(b"hvcC")
    if hvcc is None or hvcc.end - hvcc.payload < 13:
        raise Mp4FormatError(f"{name} sample entry at offset {base + entry.start} has no usable hvcC")
    at = hvcc.payload
    space, tier, profile = data[at + 1] >> 6, (data[at + 1] >> 5) & 1, data[at + 1] & 0x1F
    compatibility = _U32.unpack_from(data, at + 2)[0]
    reversed_flags = int(f"{compatibility:032b}"[::-1], 2)   # ISO/IEC 14496-15 E.3: in reverse bit order
    constraints = bytearray(data[at + 6:at + 12])
    while constraints and constraints[-1] == 0:   # trailing zero bytes are left out
        constraints.pop()
    parts = [name, f"{'ABC'[space - 1] if space else ''}{profile}", f"{reversed_flags:X}",
             f"{'HL'[tier == 0]}{data[at + 12]}"] + [f"{byte:02X}" for byte in constraints]
    return ".".join(parts)


# One fragment's fields in SegmentLayout.fields, FRAGMENT_FIELDS integers per fragment.
MOOF_AT, END, DECODE_TIME, DURATION, SEQUENCE_AT, TFDT_AT, TFDT_WIDE, KEY, FIRST_CTS = range(9)
FRAGMENT_FIELDS = 9


@dataclass(frozen=True)
class SegmentLayout:
    """Where one segment's fragments are. `fields`: FRAGMENT_FIELDS signed 64-bit integers per fragment (an
    array, not objects: a day of 1 s fragments is 86,400 of them), indexed by the constants above:
    MOOF_AT / END file offsets of the fragment; DECODE_TIME (tfdt) and DURATION in `format.timescale` ticks;
    SEQUENCE_AT (mfhd sequence_number) and TFDT_AT (tfdt's version byte) as offsets inside the moof;
    TFDT_WIDE 1 if tfdt is version 1 (64-bit); KEY 1 if its first sample is a sync sample; FIRST_CTS the
    first sample's composition offset."""
    format: TrackFormat
    fields: array[int]
    size: int                      # of the file
    open_mdat_at: int              # file offset of a last mdat whose size field is 0 ("to the end"), -1 if none
    unmovable: str                 # why its fragments cannot be moved into another file; "" if they can
    samples: SampleTable           # every sample of the fragments in `fields`

    @property
    def nbytes(self) -> int:
        """Roughly what it holds in memory (its arrays; the format is shared)."""
        return self.fields.itemsize * len(self.fields) + self.samples.nbytes + 200

    @property
    def count(self) -> int:
        return len(self.fields) // FRAGMENT_FIELDS

    def field(self, fragment: int, which: int) -> int:
        return self.fields[fragment * FRAGMENT_FIELDS + which]


class TrackRun(NamedTuple):
    """One trun of a moof, as parse_moof saw it: what `sample_table` needs to list its samples."""
    fragment: int          # its fragment's number in the segment
    moof_at: int           # file offset of its moof: the base of data_offset (one traf, no base_data_offset)
    moof_end: int
    flags: int             # which per-sample fields it has (_TRUN_PER_SAMPLE_FLAGS bits)
    version: int           # 1: composition offsets are signed
    count: int             # samples, > 0
    words: bytes           # its per-sample fields, count * (fields) big-endian 32-bit words
    first_flags: int       # first_sample_flags, -1 if absent
    data_offset: int | None    # relative to the moof; None: right after the run before it (or at the moof)
    default_duration: int  # tfhd's, else trex's
    default_size: int
    default_flags: int


@dataclass(frozen=True)
class SampleTable:
    """Every sample of a segment's fragments, in file order, from their truns (with tfhd / trex defaults): what
    a progressive MP4's sample tables are made of. numpy arrays, not objects: a day at 25 fps is 2.16 M samples
    (~9 bytes each here; 13 with composition offsets). A run is a trun's samples, contiguous in the file."""
    durations: np.ndarray      # uint32 per sample, in the track's timescale
    sizes: np.ndarray          # uint32 per sample, bytes
    sync: np.ndarray           # bool per sample: a sync sample (key frame)
    cts: np.ndarray | None     # int32 (or int64) composition offset per sample; None when all are 0
    run_at: np.ndarray         # int64 per run: file offset of its first sample's bytes
    run_bytes: np.ndarray      # int64 per run: bytes of its samples
    run_first: np.ndarray      # int64, runs + 1: each run's first sample; the last is the sample count
    fragment_runs: np.ndarray  # int64, fragments + 1: each fragment's first run; the last is the run count

    @property
    def nbytes(self) -> int:
        arrays = (self.durations, self.sizes, self.sync, self.run_at, self.run_bytes, self.run_first,
                  self.fragment_runs) + ((self.cts,) if self.cts is not None else ())
        return sum(a.nbytes + 112 for a in arrays)   # + what numpy keeps per array


def _empty_samples(fragments: int) -> SampleTable:
    return SampleTable(np.zeros(0, np.uint32), np.zeros(0, np.uint32), np.zeros(0, bool), None,
                       np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(1, np.int64),
                       np.zeros(fragments + 1, np.int64))


def _run_columns(runs: list[TrackRun]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(durations, sizes, flags, composition offsets or None) of the samples of runs that all have the same
    per-sample fields and version: their words parsed at once, big-endian, by numpy."""
    head = runs[0]
    counts = np.fromiter((run.count for run in runs), np.int64, len(runs))
    total = int(counts.sum())
    fields = [bit for bit in (_TRUN_DURATION, _TRUN_SIZE, _TRUN_FLAGS, _TRUN_CTS) if head.flags & bit]
    words = (np.frombuffer(b"".join(run.words for run in runs), dtype=">u4").reshape(total, len(fields))
             if fields else np.zeros((total, 0), np.uint32))

    def column(bit: int, default: Callable[[TrackRun], int]) -> np.ndarray:
        if head.flags & bit:
            return words[:, fields.index(bit)].astype(np.uint32)
        return np.repeat(np.fromiter((default(run) for run in runs), np.uint32, len(runs)), counts)

    durations = column(_TRUN_DURATION, lambda run: run.default_duration)
    sizes = column(_TRUN_SIZE, lambda run: run.default_size)
    flags = column(_TRUN_FLAGS, lambda run: run.default_flags)
    if not head.flags & _TRUN_FLAGS:   # first_sample_flags only stands for a first sample without flags
        starts = np.cumsum(counts) - counts
        given = [(start, run.first_flags) for start, run in zip(starts.tolist(), runs) if run.first_flags >= 0]
        if given:
            at, value = zip(*given)
            flags[list(at)] = value
    cts = None
    if head.flags & _TRUN_CTS:
        raw = words[:, fields.index(_TRUN_CTS)]
        # version 1: signed; version 0: unsigned (a value past 2^31 is kept as such, in 64 bits)
        cts = raw.astype(np.uint32).view(np.int32) if head.version else raw.astype(np.int64)
        if not cts.any():
            cts = None
        elif cts.dtype == np.int64 and int(cts.max()) < 1 << 31:
            cts = cts.astype(np.int32)
    return durations, sizes, flags, cts


def sample_table(runs: list[TrackRun], fragment_ends: array[int], fragments: int) -> SampleTable:
    """The samples of a segment from its truns (in file order) and each fragment's end (`fragment_ends`: END of
    every fragment). Mp4FormatError if a run's bytes are not inside its fragment, after its moof: those of a
    well-formed file always are, and the progressive layout reads them from there."""
    if not runs:
        return _empty_samples(fragments)
    shape = (runs[0].flags, runs[0].version)
    if all((run.flags, run.version) == shape for run in runs):
        durations, sizes, flags, cts = _run_columns(runs)
    else:   # truns of different layouts in one file (never seen from a recorder): one at a time
        parts = [_run_columns([run]) for run in runs]
        durations = np.concatenate([part[0] for part in parts])
        sizes = np.concatenate([part[1] for part in parts])
        flags = np.concatenate([part[2] for part in parts])
        offsets = [part[3] if part[3] is not None else np.zeros(len(part[0]), np.int32) for part in parts]
        cts = np.concatenate(offsets) if any(part[3] is not None for part in parts) else None
    counts = np.fromiter((run.count for run in runs), np.int64, len(runs))
    run_first = np.zeros(len(runs) + 1, np.int64)
    np.cumsum(counts, out=run_first[1:])
    run_bytes = np.add.reduceat(sizes.astype(np.int64), run_first[:-1])
    run_at = np.empty(len(runs), np.int64)
    previous_fragment, previous_end = -1, 0
    for number, run in enumerate(runs):
        if run.data_offset is not None:
            at = run.moof_at + run.data_offset
        elif run.fragment == previous_fragment:
            at = previous_end   # ISO/IEC 14496-12 8.8.8: right after the run before it
        else:
            at = run.moof_at    # the base data offset itself (nonsense, refused below)
        run_at[number] = at
        previous_fragment, previous_end = run.fragment, at + int(run_bytes[number])
    fragment_of = np.fromiter((run.fragment for run in runs), np.int64, len(runs))
    moof_ends = np.fromiter((run.moof_end for run in runs), np.int64, len(runs))
    ends = np.frombuffer(fragment_ends, np.int64)[fragment_of]
    outside = np.flatnonzero((run_at < moof_ends) | (run_at + run_bytes > ends))
    if len(outside):
        bad = runs[int(outside[0])]
        raise Mp4FormatError(f"a trun of the moof at offset {bad.moof_at} places its {bad.count} samples outside "
                             f"its fragment")
    fragment_runs = np.searchsorted(fragment_of, np.arange(fragments + 1), side="left").astype(np.int64)
    return SampleTable(durations, sizes, (flags & _NON_SYNC_SAMPLE) == 0, cts, run_at, run_bytes, run_first,
                       fragment_runs)


def _words(data: bytes, start: int, count: int) -> array[int]:
    """`count` big-endian unsigned 32-bit words from data[start:]."""
    words = array("I")
    words.frombytes(data[start:start + 4 * count])
    if sys.byteorder == "little":
        words.byteswap()
    return words


class _Unmovable(Mp4FormatError):
    """A well-formed fragment whose data offsets depend on where it is in its file (or a layout this module
    does not move); the message says why. A format error to anyone who does not handle it apart (the live
    relay drops such a fragment instead of stopping)."""


def parse_moof(moof: bytes, base: int, track: TrackFormat,
               runs: list[TrackRun] | None = None, fragment: int = 0) -> tuple[int, int, int, int, int, int, int]:
    """(sequence_at, tfdt_at, tfdt_wide, decode_time, duration, key, first_cts) of a whole moof box, offsets
    relative to it (tfdt_at: its version byte). Raises Mp4FormatError if malformed, _Unmovable if it cannot be
    relocated. With `runs`, appends there each trun that has samples, for `sample_table`, as the fragment
    numbered `fragment` of its file. (One pass over each box's children, no dicts: a day of fragments is 86,400
    calls.)"""
    top = _parse_header(moof, 0, len(moof), base)
    mfhd = traf = None
    trafs = 0
    for box in children(moof, top.payload, top.end, base):
        if box.kind == b"traf":
            traf = box
            trafs += 1
        elif box.kind == b"mfhd":
            if mfhd is not None:
                raise Mp4FormatError(f"two mfhd boxes in the moof at offset {base}")
            mfhd = box
    if mfhd is None or mfhd.end - mfhd.payload < 8:
        raise Mp4FormatError(f"the moof at offset {base} has no usable mfhd")
    if traf is None or trafs != 1:
        raise _Unmovable(f"the moof at offset {base} has {trafs} track fragments, expected one")
    tfhd = tfdt = None
    truns = []
    for box in children(moof, traf.payload, traf.end, base):
        if box.kind == b"trun":
            truns.append(box)
        elif box.kind == b"tfhd" or box.kind == b"tfdt":
            if (tfhd if box.kind == b"tfhd" else tfdt) is not None:
                raise Mp4FormatError(f"two {box_name(box.kind)} boxes in the traf at offset {base + traf.start}")
            if box.kind == b"tfhd":
                tfhd = box
            else:
                tfdt = box
    if tfhd is None:
        raise Mp4FormatError(f"no tfhd in the traf at offset {base + traf.start}")
    _, flags = _full_box(moof, tfhd, 8, base)
    at = tfhd.payload + 4
    track_id = _U32.unpack_from(moof, at)[0]
    if track_id != track.track_id:
        raise Mp4FormatError(f"the moof at offset {base} is for track {track_id}, the moov has track "
                             f"{track.track_id}")
    if flags & _TFHD_BASE_DATA_OFFSET:
        # sample data located by file offset: moving the fragment would break it
        raise _Unmovable(f"the moof at offset {base} locates its data by an absolute file offset")
    at += 4
    at += 4 if flags & _TFHD_DESCRIPTION_INDEX else 0
    default_duration, default_size, default_flags = track.default_duration, track.default_size, track.default_flags
    for bit in (_TFHD_DEFAULT_DURATION, _TFHD_DEFAULT_SIZE, _TFHD_DEFAULT_FLAGS):
        if flags & bit:
            if tfhd.end - at < 4:
                raise Mp4FormatError(f"tfhd at offset {base + tfhd.start} is too short for its flags")
            if bit == _TFHD_DEFAULT_DURATION:
                default_duration = _U32.unpack_from(moof, at)[0]
            elif bit == _TFHD_DEFAULT_SIZE:
                default_size = _U32.unpack_from(moof, at)[0]
            else:
                default_flags = _U32.unpack_from(moof, at)[0]
            at += 4
    if tfdt is None:
        raise _Unmovable(f"the moof at offset {base} has no tfdt (its decode time is implicit)")
    version, _ = _full_box(moof, tfdt, 8, base)
    if version > 1:
        raise Mp4FormatError(f"tfdt at offset {base + tfdt.start} has version {version}")
    wide = version == 1
    if tfdt.end - tfdt.payload < (12 if wide else 8):
        raise Mp4FormatError(f"tfdt at offset {base + tfdt.start} is too short")
    decode_time = (_U64 if wide else _U32).unpack_from(moof, tfdt.payload + 4)[0]
    duration = 0
    key = -1
    first_cts = 0
    for trun in truns:
        trun_version, trun_flags = _full_box(moof, trun, 8, base)
        count = _U32.unpack_from(moof, trun.payload + 4)[0]
        at = trun.payload + 8
        data_offset: int | None = None
        if trun_flags & _TRUN_DATA_OFFSET:
            if trun.end - at < 4:
                raise Mp4FormatError(f"trun at offset {base + trun.start} is too short for its flags")
            data_offset = _I32.unpack_from(moof, at)[0]
            at += 4
        first_flags = None
        if trun_flags & _TRUN_FIRST_FLAGS:
            if trun.end - at < 4:
                raise Mp4FormatError(f"trun at offset {base + trun.start} is too short for its flags")
            first_flags = _U32.unpack_from(moof, at)[0]
            at += 4
        per_sample = [bit for bit in (_TRUN_DURATION, _TRUN_SIZE, _TRUN_FLAGS, _TRUN_CTS) if trun_flags & bit]
        stride = len(per_sample)
        if count * stride * 4 > trun.end - at:
            raise Mp4FormatError(f"trun at offset {base + trun.start} lists {count} samples, more than it holds")
        words = _words(moof, at, count * stride) if stride and count else array("I")
        if runs is not None and count:
            if count > _LARGEST_RUN:
                raise Mp4FormatError(f"trun at offset {base + trun.start} lists {count} samples, implausibly many")
            runs.append(TrackRun(fragment, base, base + len(moof), trun_flags & _TRUN_PER_SAMPLE_FLAGS, trun_version,
                                 count, moof[at:at + 4 * count * stride],
                                 -1 if first_flags is None else first_flags, data_offset, default_duration,
                                 default_size, default_flags))
        if trun_flags & _TRUN_DURATION:
            duration += sum(words[per_sample.index(_TRUN_DURATION)::stride])
        else:
            duration += count * default_duration
        if key < 0 and count:
            if first_flags is None:
                first_flags = words[per_sample.index(_TRUN_FLAGS)] if trun_flags & _TRUN_FLAGS else default_flags
            key = 0 if first_flags & _NON_SYNC_SAMPLE else 1
            if trun_flags & _TRUN_CTS:
                cts = words[per_sample.index(_TRUN_CTS)]
                first_cts = cts - (1 << 32) if trun_version and cts >= 1 << 31 else cts
    if decode_time >= _TIME_LIMIT or duration >= _TIME_LIMIT:
        raise Mp4FormatError(f"the moof at offset {base} gives an implausible decode time ({decode_time}) or "
                             f"duration ({duration})")
    return mfhd.payload + 4, tfdt.payload, int(wide), decode_time, duration, max(key, 0), first_cts


def scan_segment(read_at: ReadAt, size: int) -> SegmentLayout:
    """The layout of a fragmented MP4 of `size` bytes: its format and fragments (see the module docstring for
    what is read and what raises)."""
    ftyp = b""
    track: TrackFormat | None = None
    fields = array("q")
    unmovable = ""
    open_mdat_at = -1
    fragment: list[int] | None = None   # the fragment being read: its values, END updated at each mdat
    runs: list[TrackRun] = []
    known: Box | None = None            # a header already read with the moof before it
    at = 0
    while at < size:
        box = known if known is not None and known.start == at else _read_header(read_at, at, size)
        known = None
        if box.kind == b"moof":
            if track is None:
                raise Mp4FormatError(f"moof at offset {at} before the moov")
            if fragment is not None and fragment[END] == 0:
                raise Mp4FormatError(f"moof at offset {fragment[MOOF_AT]} has no mdat")
            if fragment is not None:
                fields.extend(fragment)
            whole = _read_whole(read_at, box, size, extra=16)
            fragment = None
            if not unmovable:
                moof_runs: list[TrackRun] = []   # kept only if the moof is: an unmovable one ends the video
                try:
                    sequence_at, tfdt_at, wide, decode_time, duration, key, cts = parse_moof(
                        whole[:box.end - box.start], at, track, moof_runs, len(fields) // FRAGMENT_FIELDS)
                except _Unmovable as exc:
                    unmovable = str(exc)
                else:
                    fragment = [at, 0, decode_time, duration, sequence_at, tfdt_at, wide, key, cts]
                    runs += moof_runs
            if len(whole) - (box.end - box.start) >= 16:   # the next box's header came with it
                known = _relocated(_parse_header(whole, box.end - box.start, size - at, at), at)
        elif box.kind == b"mdat":
            if track is None or (fragment is None and not unmovable and not fields):
                raise Mp4FormatError(f"mdat at offset {at} before any moof")
            if fragment is not None:
                if box.to_end:
                    if box.end - box.start > U32_MAX:
                        unmovable = f"the last mdat (offset {at}) has no size and is too large to be given one"
                    open_mdat_at = at
                fragment[END] = box.end
        elif box.kind == b"ftyp":
            ftyp = _read_whole(read_at, box, size)
        elif box.kind == b"moov":
            if track is not None:
                raise Mp4FormatError(f"a second moov at offset {at}")
            if not ftyp:
                raise Mp4FormatError("no ftyp before the moov")
            track = _interned_format(ftyp, _read_whole(read_at, box, size), at)
        elif box.kind not in _PASSED_OVER:
            raise Mp4FormatError(f"unexpected box {box_name(box.kind)} at offset {at}")
        at = box.end
    if track is None:
        raise Mp4FormatError("no moov")
    if fragment is not None:
        if fragment[END] == 0:
            raise Mp4FormatError(f"moof at offset {fragment[MOOF_AT]} has no mdat")
        fields.extend(fragment)
    count = len(fields) // FRAGMENT_FIELDS
    samples = sample_table(runs, fields[END::FRAGMENT_FIELDS], count)
    return SegmentLayout(track, fields, size, open_mdat_at, unmovable, samples)


# The formats seen lately, by their header bytes: a camera's segments share one (same bytes), so a day of
# them is parsed once and held once. Bounded; emptied when full (a camera changes format rarely).
_FORMATS: dict[tuple[bytes, bytes], TrackFormat] = {}
_FORMATS_KEPT = 64


def _interned_format(ftyp: bytes, moov: bytes, at: int) -> TrackFormat:
    known = _FORMATS.get((ftyp, moov))
    if known is None:
        known = parse_moov(ftyp, moov, at)
        if len(_FORMATS) >= _FORMATS_KEPT:
            _FORMATS.clear()
        _FORMATS[(ftyp, moov)] = known
    return known


def _read_header(read_at: ReadAt, at: int, size: int) -> Box:
    data = read_at(at, min(16, size - at))
    if len(data) < min(16, size - at):
        raise Mp4FormatError(f"the file ends at offset {at + len(data)}, before its size ({size})")
    return _relocated(_parse_header(data, 0, size - at, at), at)


def _relocated(box: Box, at: int) -> Box:
    return Box(box.kind, box.start + at, box.payload + at, box.end + at, box.to_end)


def _read_whole(read_at: ReadAt, box: Box, size: int, extra: int = 0) -> bytes:
    """The whole box (and up to `extra` bytes after it); it must be small."""
    length = box.end - box.start
    if length > _LARGEST_HEADER_BOX:
        raise Mp4FormatError(f"{box_name(box.kind)} at offset {box.start} claims {length} bytes, too large")
    wanted = min(length + extra, size - box.start)
    data = read_at(box.start, wanted)
    if len(data) < length:
        raise Mp4FormatError(f"{box_name(box.kind)} at offset {box.start} is cut off at the end of the file")
    return data


# --- writing ---------------------------------------------------------------------------------------------


def make_box(kind: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(8 + len(payload), kind) + payload


def _with_duration(payload: bytes, middle: int, duration: int) -> bytes:
    """An mvhd / tkhd / mdhd payload with its duration set; version 1 (64-bit times) when it does not fit 32
    bits, or when it already was. `middle`: bytes between the modification time and the duration."""
    if payload[0] == 1:
        created, modified = _U64.unpack_from(payload, 4)[0], _U64.unpack_from(payload, 12)[0]
        rest_at = 20
        tail = payload[rest_at + middle + 8:]
    else:
        created, modified = _U32.unpack_from(payload, 4)[0], _U32.unpack_from(payload, 8)[0]
        rest_at = 12
        tail = payload[rest_at + middle + 4:]
    between = payload[rest_at:rest_at + middle]
    if payload[0] == 0 and duration <= _V0_DURATION_MAX and created <= U32_MAX and modified <= U32_MAX:
        return payload[:4] + _U32.pack(created) + _U32.pack(modified) + between + _U32.pack(duration) + tail
    return b"\x01" + payload[1:4] + _U64.pack(created) + _U64.pack(modified) + between + _U64.pack(duration) + tail


def moov_with_duration(track: TrackFormat, duration: int) -> bytes:
    """The track's moov with the whole video's duration (`duration` in media timescale ticks) in mvhd, tkhd
    and mdhd, and an mehd (fragment_duration, in the movie timescale as ISO/IEC 14496-12 8.8.2 defines it)
    first in mvex; every other box as recorded. Box sizes are rebuilt up the tree."""
    return _rebuilt_moov(track, duration, None)


def _rebuilt_moov(track: TrackFormat, duration: int, stbl_payload: bytes | None) -> bytes:
    """moov_with_duration's moov; with `stbl_payload`, a progressive one instead: no mvex, and that payload
    in place of the recorded (empty) sample tables."""
    moov = track.moov
    movie_duration = (duration * track.movie_timescale + track.timescale // 2) // track.timescale

    def rebuilt(box: Box) -> bytes:
        payload = moov[box.payload:box.end]
        if box.kind == b"mvhd":
            return make_box(b"mvhd", _with_duration(payload, 4, movie_duration))
        if box.kind == b"tkhd":
            return make_box(b"tkhd", _with_duration(payload, 8, movie_duration))
        if box.kind == b"mdhd":
            return make_box(b"mdhd", _with_duration(payload, 4, duration))
        if box.kind in (b"trak", b"mdia", b"minf"):
            return make_box(box.kind, b"".join(rebuilt(child) for child in children(moov, box.payload, box.end)))
        if box.kind == b"stbl" and stbl_payload is not None:
            return make_box(b"stbl", stbl_payload)
        if box.kind == b"mvex" and stbl_payload is not None:
            return b""   # not fragmented: every sample is in the moov's tables
        if box.kind == b"mvex":
            mehd = (make_box(b"mehd", b"\0\0\0\0" + _U32.pack(movie_duration)) if movie_duration <= _V0_DURATION_MAX
                    else make_box(b"mehd", b"\x01\0\0\0" + _U64.pack(movie_duration)))
            kept = b"".join(moov[child.start:child.end] for child in children(moov, box.payload, box.end)
                            if child.kind != b"mehd")
            return make_box(b"mvex", mehd + kept)
        return moov[box.start:box.end]

    top = _parse_header(moov, 0, len(moov), 0)
    return make_box(b"moov", b"".join(rebuilt(child) for child in children(moov, top.payload, top.end)))


SIDX_REFERENCE_LIMIT = 0xFFFF   # reference_count is 16 bits
_SAP = 0x90000000               # starts_with_SAP 1, SAP_type 1, SAP_delta_time 0


def make_sidx(track_id: int, timescale: int, earliest_presentation_time: int, sizes: array[int],
              durations: array[int]) -> bytes:
    """A version 1 sidx indexing one reference per (referenced_size, subsegment_duration) pair, all media
    references (reference_type 0), each starting with a sync sample, the first right after the sidx.
    ValueError if a value does not fit its field."""
    count = len(sizes)
    if not 0 < count <= SIDX_REFERENCE_LIMIT or len(durations) != count:
        raise ValueError(f"a sidx holds 1 to {SIDX_REFERENCE_LIMIT} references, not {count}")
    if min(sizes) <= 0 or max(sizes) >= 1 << 31 or min(durations) < 0 or max(durations) > U32_MAX:
        raise ValueError("a sidx reference's size or duration does not fit its field")
    table = array("I", [_SAP]) * (3 * count)   # size, duration, SAP for each reference
    table[0::3] = array("I", sizes)
    table[1::3] = array("I", durations)
    if sys.byteorder == "little":
        table.byteswap()
    return make_box(b"sidx", b"\x01\0\0\0" + struct.pack(">IIQQHH", track_id, timescale,
                                                         max(0, earliest_presentation_time), 0, 0, count)
                    + table.tobytes())


# --- a progressive (non-fragmented) MP4's header ----------------------------------------------------------


def _run_lengths(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first of each run of equal values, the run's length)."""
    starts = np.concatenate(([0], np.flatnonzero(values[1:] != values[:-1]) + 1))
    return starts, np.diff(np.append(starts, len(values)))


def _table_box(kind: bytes, head: bytes, columns: list[np.ndarray], dtypes: list[str]) -> list[bytes]:
    """A full box (version and flags in `head`) whose payload is `head`, an entry count and a table of
    big-endian columns, interleaved; as pieces (its header, its table) so that a large one is copied once."""
    count = len(columns[0]) if columns else 0
    table = np.empty(count, dtype=[(f"c{i}", dtype) for i, dtype in enumerate(dtypes)])
    for i, column in enumerate(columns):
        table[f"c{i}"] = column
    body = table.tobytes()
    return [_HEADER.pack(8 + len(head) + 4 + len(body), kind) + head + _U32.pack(count), body]


def _around_stbl(moov: bytes, grown: int) -> tuple[bytes, bytes]:
    """A moov rebuilt with an empty stbl (every box header 8 bytes), split where the stbl's contents go, the
    sizes of the stbl and of the boxes holding it grown by `grown` bytes: moov = before + tables + after,
    with the tables never copied into a box after box."""
    out = bytearray(moov)
    at, end = 0, len(moov)
    for kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
        box = next(box for box in children(moov, at, end) if box.kind == kind)
        size = _U32.unpack_from(out, box.start)[0] + grown
        if size > U32_MAX:
            raise ValueError("the sample tables do not fit a moov")
        _U32.pack_into(out, box.start, size)
        at, end = box.payload, box.end
    return bytes(out[:end]), bytes(out[end:])


def _brands(track: TrackFormat) -> bytes:
    """An ftyp for a progressive file of the track: isom, as plain players expect (the recorded ftyp names
    fragment brands such as iso5)."""
    brands = [b"isom", b"iso2"] + ([b"avc1"] if track.codec == "h264" else []) + [b"mp41"]
    return make_box(b"ftyp", b"isom" + _U32.pack(0x200) + b"".join(brands))


def progressive_header(track: TrackFormat, duration: int, deltas: np.ndarray, sizes: np.ndarray,
                       sync: np.ndarray, cts: np.ndarray | None, chunk_samples: np.ndarray,
                       chunk_bytes: np.ndarray) -> bytes:
    """ftyp + moov + the mdat's header of a progressive MP4 of the track's samples: per sample its decode
    duration (`deltas`, ticks; they add up to `duration`), size, whether it is a sync sample and its
    composition offset (None: all 0); per chunk (its samples contiguous in the mdat, chunks in order, the first
    right after the mdat's header) its number of samples and bytes. The mdat's body (sum of chunk_bytes)
    follows these bytes. stco when every chunk offset fits 32 bits, else co64; a 64-bit mdat size when its
    size does not fit 32 bits. ValueError if a duration does not fit stts."""
    samples = len(sizes)
    if samples == 0 or len(deltas) != samples or len(sync) != samples or int(chunk_samples.sum()) != samples:
        raise ValueError(f"inconsistent sample tables ({samples} samples)")
    if int(deltas.min()) < 0 or int(deltas.max()) > U32_MAX:
        raise ValueError("a sample duration does not fit stts")
    starts, lengths = _run_lengths(deltas)
    tables = [track.sample_description, *_table_box(b"stts", bytes(4), [lengths, deltas[starts]], [">u4", ">u4"])]
    if cts is not None and cts.any():
        signed = int(cts.min()) < 0   # version 1: signed offsets
        starts, lengths = _run_lengths(cts)
        tables += _table_box(b"ctts", b"\1\0\0\0" if signed else bytes(4), [lengths, cts[starts]],
                             [">u4", ">i4" if signed else ">u4"])
    if not sync.all():   # no stss: every sample is a sync sample
        tables += _table_box(b"stss", bytes(4), [np.flatnonzero(sync) + 1], [">u4"])
    if bool((sizes == sizes[0]).all()):
        tables.append(make_box(b"stsz", bytes(4) + _U32.pack(int(sizes[0])) + _U32.pack(samples)))
    else:
        table = sizes.astype(">u4").tobytes()
        tables += [_HEADER.pack(20 + len(table), b"stsz") + bytes(8) + _U32.pack(samples), table]
    starts, _ = _run_lengths(chunk_samples)
    tables += _table_box(b"stsc", bytes(4), [starts + 1, chunk_samples[starts], np.ones(len(starts))],
                         [">u4", ">u4", ">u4"])
    body = int(chunk_bytes.sum())
    ftyp = _brands(track)
    mdat = (_HEADER.pack(8 + body, b"mdat") if 8 + body <= U32_MAX
            else _HEADER.pack(1, b"mdat") + _U64.pack(16 + body))
    frame = _rebuilt_moov(track, duration, b"")   # the moov around empty sample tables
    relative = np.zeros(len(chunk_bytes), np.int64)
    np.cumsum(chunk_bytes[:-1], out=relative[1:])
    chunks = len(chunk_bytes)
    stbl = sum(map(len, tables))
    header = len(ftyp) + len(frame) + stbl + 16 + 4 * chunks + len(mdat)
    if header + int(relative[-1]) <= U32_MAX:
        tables += [make_box(b"stco", bytes(4) + _U32.pack(chunks) + (relative + header).astype(">u4").tobytes())]
    else:
        header += 4 * chunks
        tables += [make_box(b"co64", bytes(4) + _U32.pack(chunks) + (relative + header).astype(">u8").tobytes())]
    before, after = _around_stbl(frame, sum(map(len, tables)))
    whole = b"".join([ftyp, before, *tables, after, mdat])
    if len(whole) != header:
        raise AssertionError(f"the progressive header is {len(whole)} bytes, {header} were planned")
    return whole
