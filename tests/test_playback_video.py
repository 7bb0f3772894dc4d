"""Playback video a user relies on (edgenvr.web.playback_video): a camera's range as one virtual MP4 that plays
and seeks in a `<video>` element, checked on one real ~24 s recording by `edgenvr run` of five RTSP test
cameras (2 s segments, a key frame every second): a steady H.264 camera at 2 Mbit/s, one whose server is
stopped for 5 s, one that switches resolution every 3 s, one switched from H.264 to H.265, and one with a key
frame only every 3 s (so the recorder's 1 s fragments do not all start with one).

The virtual file is read only through `PlaybackVideo.chunks`, the way the web server will serve it, and
compared with the recorded segments themselves: same packets byte for byte, on the recording's UTC timeline,
decodable by ffprobe, PyAV, Chromium and Firefox, seekable with Range requests. Most tests run on both layouts
(progressive, the default, and fragmented); those about the sidx only on the fragmented one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
import re
import shutil
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import CLIP_CACHE
from firefox_browser import Firefox
from mixed_recording import Recording as MixedRecording
from mixed_recording import record_mixed_cameras

from edgenvr.index.queries import SegmentRow, open_readonly
from edgenvr.simulator import make_clip
from edgenvr.web import playback_video
from edgenvr.web.mp4_boxes import (
    KEY,
    MOOF_AT,
    Mp4FormatError,
    SegmentLayout,
    children,
    moov_with_duration,
    parse_moov,
    progressive_header,
    scan_segment,
)
from edgenvr.web.playback_video import (
    CHUNK_BYTES,
    FRAGMENTED,
    PROGRESSIVE,
    NoRecording,
    PlaybackError,
    PlaybackVideo,
    plan_playback_video,
)

FRAME_MS = 40
GOP_MS = 1000


EACH_LAYOUT = pytest.mark.parametrize("layout", [PROGRESSIVE, FRAGMENTED])


class Recording(MixedRecording):
    def plan(self, camera: str, start_ms: int, end_ms: int, layout: str = PROGRESSIVE) -> PlaybackVideo:
        with open_readonly(self.layout) as conn:
            return plan_playback_video(conn, self.layout, camera, start_ms, end_ms, layout)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, h264_clip: Path, h265_clip: Path,
              simulator_ready: None) -> Iterator[Recording]:
    root = tmp_path_factory.mktemp("playback")
    longgop = make_clip(CLIP_CACHE / "qvga-25fps-gop75.h264", fps=25, gop=75, seconds=6)
    yield Recording(record_mixed_cameras(root, h264_clip, h265_clip, {"longgop": longgop}))


# --- reading the virtual file the way a browser does -----------------------------------------------------


def _whole(video: PlaybackVideo) -> bytes:
    pieces = list(video.chunks(0, video.size))
    assert all(0 < len(piece) <= CHUNK_BYTES for piece in pieces)
    return b"".join(pieces)


class RangeRequests(io.RawIOBase):
    """A file whose every read is one `chunks(first, end)` call, as an HTTP Range request would be: what
    libavformat (Chromium's demuxer for `<video src>`) reads is counted."""

    def __init__(self, video: PlaybackVideo) -> None:
        super().__init__()
        self.video = video
        self.position = 0
        self.bytes_read = 0
        self.requests: list[tuple[int, int]] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = {io.SEEK_SET: offset, io.SEEK_CUR: self.position + offset,
                         io.SEEK_END: self.video.size + offset}[whence]
        return self.position

    def read(self, size: int = -1) -> bytes:
        end = self.video.size if size is None or size < 0 else min(self.video.size, self.position + size)
        if self.position >= end:
            return b""
        data = b"".join(self.video.chunks(self.position, end))
        self.requests.append((self.position, end))
        self.bytes_read += len(data)
        self.position = end
        return data


@dataclass(frozen=True)
class Packet:
    payload_sha256: str
    keyframe: bool
    time_ms: float     # presentation time in its file, ms
    duration_ms: float


def _packets(source: Path | io.RawIOBase) -> list[Packet]:
    """The video packets of an MP4 file in decode order."""
    found = []
    with av.open(source if isinstance(source, io.RawIOBase) else str(source)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size:
                found.append(Packet(hashlib.sha256(bytes(packet)).hexdigest(), packet.is_keyframe,
                                    float(packet.pts * stream.time_base) * 1000,
                                    float((packet.duration or 0) * stream.time_base) * 1000))
    return found


@dataclass(frozen=True)
class RecordedPacket:
    payload_sha256: str
    keyframe: bool
    utc_ms: float


def _recorded(rows: list[SegmentRow]) -> list[RecordedPacket]:
    """The recorded packets of segments, each at its segment's UTC start plus its time in the segment."""
    return [RecordedPacket(p.payload_sha256, p.keyframe, row.start_ms + p.time_ms)
            for row in rows for p in _packets(Path(row.path))]


def _overlaps_ms(rows: list[SegmentRow]) -> float:
    """How much the segments' recorded times overlap in all: the end of a segment's last packet after the next
    segment's start. A jittery stream (an RTSP camera under load) gives a frame's worth now and then; the
    video then places the later segment right after the earlier one (decode times must increase), so its
    time runs up to this much behind UTC until a hole in the recording takes it up."""
    total = 0.0
    for row, following in zip(rows, rows[1:]):
        last = _packets(Path(row.path))[-1]
        total += max(0.0, row.start_ms + last.time_ms + last.duration_ms - following.start_ms)
    return total


def _problems(path: Path) -> tuple[int, int, set[str]]:
    """(frames PyAV decodes, its decode errors, what ffprobe `-v error` complains about, numbers and addresses
    left out) for an MP4 file; asserting ffprobe counts the same frames."""
    frames = errors = 0
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            try:
                frames += len(packet.decode())
            except av.error.FFmpegError:
                errors += 1
    if shutil.which("ffprobe") is None:
        return frames, errors, set()
    result = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames",
                             "-of", "json", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert int(json.loads(result.stdout)["streams"][0]["nb_read_frames"]) == frames
    return frames, errors, {re.sub(r"\d+", "#", re.sub(r" @ 0x[0-9a-f]+", "", line))
                            for line in result.stderr.splitlines() if line.strip()}


def _decodes(data: bytes, tmp_path: Path, sources: list[SegmentRow]) -> int:
    """The frames PyAV decodes in the file, asserting it decodes as well as its sources: without an error
    (PyAV, or ffprobe -v error) unless the recording itself has one (a camera under load loses packets: the
    same bytes can only give the same complaints)."""
    path = tmp_path / "video.mp4"
    path.write_bytes(data)
    frames, errors, complaints = _problems(path)
    recorded = [_problems(Path(row.path)) for row in sources]
    assert errors <= sum(r[1] for r in recorded), errors
    assert complaints <= set().union(*(r[2] for r in recorded)), complaints
    return frames


def _duration_probed(data: bytes, tmp_path: Path) -> float | None:
    """The duration ffprobe reports for the file (None without ffprobe)."""
    if shutil.which("ffprobe") is None:
        return None
    path = tmp_path / "probed.mp4"
    path.write_bytes(data)
    result = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json",
                             str(path)], capture_output=True, text=True, timeout=60)
    return float(json.loads(result.stdout)["format"]["duration"])


def _runs(rows: list[SegmentRow]) -> list[list[SegmentRow]]:
    """Consecutive rows with the same codec and size."""
    runs: list[list[SegmentRow]] = []
    for row in rows:
        if runs and (runs[-1][-1].codec, runs[-1][-1].width, runs[-1][-1].height) == (row.codec, row.width, row.height):
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


def _box(data: bytes, path: list[bytes], start: int = 0, end: int | None = None) -> tuple[int, int]:
    """(payload start, end) of the box at that path of box types in `data`."""
    for box in children(data, start, len(data) if end is None else end):
        if box.kind == path[0]:
            return (box.payload, box.end) if len(path) == 1 else _box(data, path[1:], box.payload, box.end)
    raise AssertionError(f"no {path[0]!r}")


def _table(data: bytes, path: list[bytes], skip: int, dtype: str) -> np.ndarray:
    """The entries of a sample table box (after `skip` bytes of version, flags, counts...)."""
    payload, end = _box(data, path)
    return np.frombuffer(data[payload + skip:end], dtype)


# --- the tests -------------------------------------------------------------------------------------------


@EACH_LAYOUT
def test_a_range_across_segments_is_one_mp4_of_the_recorded_packets_on_the_utc_timeline(
        recording: Recording, tmp_path: Path, layout: str) -> None:
    rows = recording.rows("gate")
    assert len(rows) >= 8, rows
    from_ms, to_ms = rows[1].start_ms + 300, rows[-2].end_ms - 300
    started = time.perf_counter()
    video = recording.plan("gate", from_ms, to_ms, layout)
    planned_ms = (time.perf_counter() - started) * 1000
    data = _whole(video)
    assert len(data) == video.size
    assert (video.camera, video.codec, video.ends_early_at_ms, video.layout) == ("gate", "h264", None, layout)

    # from the key frame (fragment) at or before the start to the end of the fragment holding end - 1
    slack = _overlaps_ms(rows) + 2   # the recording's own overlaps, and the ms rounding of row starts
    assert from_ms - GOP_MS - FRAME_MS < video.start_ms <= from_ms, (video.start_ms, from_ms)
    assert to_ms <= video.end_ms < to_ms + GOP_MS + FRAME_MS + slack, (video.end_ms, to_ms)
    frames = _decodes(data, tmp_path, rows)
    # the header says how long it is (mvhd / mehd), ffprobe agrees
    probed_duration = _duration_probed(data, tmp_path)
    assert probed_duration is None or abs(probed_duration * 1000 - (video.end_ms - video.start_ms)) <= 1

    # byte for byte the recorded packets, at their recorded UTC times
    recorded = _recorded(rows)
    played = _packets(RangeRequests(video))
    assert frames == len(played)
    first = max(i for i, p in enumerate(recorded) if p.keyframe and p.utc_ms <= from_ms)
    assert [p.payload_sha256 for p in played] == [p.payload_sha256 for p in recorded[first:first + len(played)]]
    after = first + len(played)
    assert after < len(recorded) and recorded[after].keyframe and recorded[after].utc_ms >= to_ms
    assert played[0].keyframe and played[0].time_ms == 0 and abs(recorded[first].utc_ms - video.start_ms) <= 1
    # video time t is UTC start_ms + t: to the ms rounding of segment starts, or later where the recording
    # overlaps itself (never earlier), and in increasing order
    drifts = [video.start_ms + p.time_ms - r.utc_ms for p, r in zip(played, recorded[first:])]
    assert -2 <= min(drifts) and max(drifts) <= slack, (min(drifts), max(drifts), slack)
    assert all(a.time_ms < b.time_ms for a, b in zip(played, played[1:]))
    print(f"\n{layout}: {len(rows)} segments planned in {planned_ms:.1f} ms: {video.size} bytes, {len(played)} "
          f"packets, {video.mime_codecs}")


@EACH_LAYOUT
def test_a_player_seeks_across_segments_with_range_requests_without_reading_the_file(
        recording: Recording, layout: str) -> None:
    rows = recording.rows("gate")
    video = recording.plan("gate", rows[0].start_ms, rows[-1].end_ms, layout)
    played = _packets(RangeRequests(video))
    reader = RangeRequests(video)
    with av.open(reader, format="mp4") as container:
        stream = container.streams.video[0]
        opened = reader.bytes_read
        assert stream.duration is not None
        assert abs(float(stream.duration * stream.time_base) * 1000 - (video.end_ms - video.start_ms)) <= 1
        for target_utc in (rows[1].start_ms + 1500, rows[-1].start_ms + 600):   # the 2nd and the last segment
            target = target_utc - video.start_ms
            reader.bytes_read = 0
            container.seek(round(Fraction(target, 1000) / stream.time_base), stream=stream, backward=True)
            frame = next(container.decode(stream))
            shown = float(frame.pts * stream.time_base) * 1000
            # the last key frame at or before the target: within one GOP before it
            assert shown == max(p.time_ms for p in played if p.keyframe and p.time_ms <= target), (target, shown)
            assert frame.key_frame and target - GOP_MS - FRAME_MS <= shown <= target, (target, shown)
            # the sidx (fragmented) or the moov's tables (progressive) took it straight there: one read of the
            # fragment / samples, not a scan of every moof before it
            assert reader.bytes_read < video.size / 5, (reader.bytes_read, video.size, reader.requests)
            print(f"\n{layout}: seek to {target} ms: frame at {shown:.0f} ms after reading {reader.bytes_read} of "
                  f"{video.size} bytes (opening read {opened})")
    assert opened < video.size / 5


@EACH_LAYOUT
def test_any_byte_range_is_the_same_bytes_as_the_whole_file(recording: Recording, layout: str) -> None:
    rows = recording.rows("gate")
    video = recording.plan("gate", rows[2].start_ms + 100, rows[-3].end_ms - 100, layout)
    whole = _whole(video)
    assert len(whole) == video.size
    rng = random.Random(20261130)
    edges = [(0, 0), (0, 1), (0, video.size), (video.size - 1, video.size), (video.size, video.size)]
    slices = edges + [tuple(sorted((rng.randrange(video.size + 1), rng.randrange(video.size + 1))))
                      for _ in range(300)]
    # and a few bytes at every place of the first moofs, cutting through the renumbered and shifted fields
    moofs = [found.start() - 4 for found in re.finditer(b"moof", whole)][:6]
    slices += [(moof + offset, moof + offset + length) for moof in moofs for offset in range(0, 140, 3)
               for length in (1, 2, 5, 9)]
    # and across the places where the bytes come from another run / fragment / file, and the header's end
    offsets = video._plan.offsets   # where each fragment (fragmented) or run of samples (progressive) starts
    edges = list(offsets[:8]) + list(offsets[::max(1, len(offsets) // 20)]) + [offsets[-1]]
    slices += [(max(0, edge - before), min(video.size, edge + after)) for edge in edges
               for before in (0, 1, 7) for after in (1, 3, 9, CHUNK_BYTES + 5)]
    for first, end in slices:
        pieces = list(video.chunks(first, end))
        assert all(0 < len(piece) <= CHUNK_BYTES for piece in pieces)
        assert b"".join(pieces) == whole[first:end], (first, end)
    with pytest.raises(ValueError):
        video.chunks(0, video.size + 1)
    with pytest.raises(ValueError):
        video.chunks(10, 5)
    # the same layout gives the same validator (bare: the server quotes it), another range another one
    assert re.fullmatch(r"[0-9a-f]{32}", video.etag), video.etag
    again = recording.plan("gate", rows[2].start_ms + 100, rows[-3].end_ms - 100, layout)
    assert (again.etag, again.size) == (video.etag, video.size) and _whole(again) == whole
    assert recording.plan("gate", rows[2].start_ms + 100, rows[-4].end_ms - 100, layout).etag != video.etag
    other = FRAGMENTED if layout == PROGRESSIVE else PROGRESSIVE   # the same range laid out otherwise
    assert recording.plan("gate", rows[2].start_ms + 100, rows[-3].end_ms - 100, other).etag != video.etag


@EACH_LAYOUT
def test_a_camera_with_long_gops_starts_and_seeks_at_key_frames_only(recording: Recording, tmp_path: Path,
                                                                    layout: str) -> None:
    """Key frames every 3 s, fragments every second: two fragments in three start without a key frame. A range
    starting in one starts at its GOP's key frame, and the sidx (fragmented) or the stss (progressive: it lists
    exactly the key frames) sends a seek to key frames only."""
    rows = recording.rows("longgop")
    assert len(rows) >= 5, rows
    scanned = scan_segment(lambda at, length: Path(rows[2].path).read_bytes()[at:at + length], rows[2].bytes)
    assert [scanned.field(i, KEY) for i in range(scanned.count)] == [1, 0, 0], "the recording is not what we test"
    video = recording.plan("longgop", rows[1].start_ms + 2500, rows[-1].end_ms, layout)
    assert video.start_ms == rows[1].start_ms
    played = _packets(RangeRequests(video))
    assert [p.payload_sha256 for p in played] == [p.payload_sha256 for p in _recorded(rows[1:])]
    _decodes(_whole(video), tmp_path, rows[1:])
    if layout == PROGRESSIVE:
        stss = _table(_whole(video), [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stss"], 8, ">u4")
        assert stss.tolist() == [i + 1 for i, p in enumerate(played) if p.keyframe]
        assert 0 < len(stss) < len(played) / 50
    reader = RangeRequests(video)
    with av.open(reader, format="mp4") as container:
        stream = container.streams.video[0]
        for row in rows[2:-1]:
            target = row.start_ms + 2200 - video.start_ms   # in the third fragment of the segment
            reader.bytes_read = 0
            container.seek(round(Fraction(target, 1000) / stream.time_base), stream=stream, backward=True)
            frame = next(container.decode(stream))
            shown = float(frame.pts * stream.time_base) * 1000
            # the segment's key frame (GOP = segment here), not the fragment starting without one
            assert shown == max(p.time_ms for p in played if p.keyframe and p.time_ms <= target), (target, shown)
            assert frame.key_frame and target - 3 * GOP_MS - FRAME_MS <= shown <= target - 2 * GOP_MS, (target, shown)
            assert reader.bytes_read < video.size / 3, (reader.bytes_read, video.size)


def test_the_progressive_layout_is_one_moov_indexing_every_recorded_sample_and_one_mdat(
        recording: Recording) -> None:
    """No fragments: ftyp, a moov without mvex whose tables list each recorded sample (its size, decode time
    on the UTC timeline, key frames) and where it is, then one mdat of the samples as recorded, nothing else."""
    rows = recording.rows("outage")
    video = recording.plan("outage", rows[0].start_ms, rows[-1].end_ms)
    data = _whole(video)
    assert [box.kind for box in children(data, 0, len(data))] == [b"ftyp", b"moov", b"mdat"]
    assert video.header_size == _box(data, [b"mdat"])[0]   # the header ends where the samples start
    moov = data[:video.header_size]
    assert b"mvex" not in moov and b"moof" not in moov and b"sidx" not in moov
    stbl = [b"moov", b"trak", b"mdia", b"minf", b"stbl"]
    sizes = _table(data, stbl + [b"stsz"], 12, ">u4").astype(np.int64)
    offsets = _table(data, stbl + [b"stco"], 8, ">u4").astype(np.int64)
    stsc = _table(data, stbl + [b"stsc"], 8, ">u4").reshape(-1, 3).astype(np.int64)
    stts = _table(data, stbl + [b"stts"], 8, ">u4").reshape(-1, 2).astype(np.int64)
    # a chunk per recorded fragment (one trun each here), its samples right after each other
    per_chunk = np.repeat(stsc[:, 1], np.diff(np.append(stsc[:, 0], len(offsets) + 1)))
    first = np.concatenate(([0], np.cumsum(per_chunk)[:-1]))
    starts = np.concatenate([offset + np.concatenate(([0], np.cumsum(sizes[a:a + n])[:-1]))
                             for offset, a, n in zip(offsets, first, per_chunk)])
    recorded = [p for row in rows for p in _packets(Path(row.path))]
    assert len(sizes) == len(recorded) and sum(per_chunk) == len(sizes)
    assert [hashlib.sha256(data[at:at + size]).hexdigest() for at, size in zip(starts, sizes)] == [
        p.payload_sha256 for p in recorded]
    assert int(starts[-1] + sizes[-1]) == video.size
    # decode times add up to the duration; the hole is one long sample duration, not a missing time
    deltas = np.repeat(stts[:, 1], stts[:, 0]).astype(np.int64)
    first = Path(rows[0].path).read_bytes()
    timescale = scan_segment(lambda at, length: first[at:at + length], len(first)).format.timescale
    assert abs(int(deltas.sum()) * 1000 / timescale - (video.end_ms - video.start_ms)) <= 1
    hole = next(b.start_ms - a.end_ms for a, b in zip(rows, rows[1:]) if b.start_ms - a.end_ms > 500)
    assert int(deltas.max()) * 1000 / timescale >= hole
    # the sample before the hole lasts until the first one after it, which is at its UTC time again
    after = next(b for a, b in zip(rows, rows[1:]) if b.start_ms - a.end_ms > 500)
    resumed = sum(len(_packets(Path(row.path))) for row in rows[:rows.index(after)])
    decoded_ms = int(deltas[:resumed].sum()) * 1000 / timescale
    assert abs(video.start_ms + decoded_ms - after.start_ms) <= 1, (video.start_ms + decoded_ms, after.start_ms)
    assert int(deltas[resumed - 1]) * 1000 / timescale >= hole


def test_the_progressive_header_uses_64_bit_offsets_when_the_samples_pass_4_gb(recording: Recording) -> None:
    """Synthetic sample tables (nothing written): 2 h of 25 fps in 1 s chunks of 700 KB each is 5 GB of
    samples. Chunk offsets past 2^32 need co64, and the mdat's size a 64-bit header; below, stco and a 32-bit
    mdat header. Equal durations and sizes are one stts entry and no stsz table."""
    path = Path(recording.rows("gate")[0].path)
    data = path.read_bytes()
    track = scan_segment(lambda at, length: data[at:at + length], len(data)).format
    stbl = [b"moov", b"trak", b"mdia", b"minf", b"stbl"]
    for chunks, chunk_size, wide in ((7200, 700_000, True), (100, 700_000, False)):
        samples = 25 * chunks
        sizes = np.full(samples, chunk_size // 25, np.uint32)
        sync = np.zeros(samples, bool)
        sync[::50] = True
        deltas = np.full(samples, track.timescale // 25, np.int64)
        header = progressive_header(track, int(deltas.sum()), deltas, sizes, sync, None,
                                    np.full(chunks, 25, np.int64), np.full(chunks, chunk_size, np.int64))
        kinds = [box.kind for box in children(header, 0, len(header) - (16 if wide else 8))]
        assert kinds == [b"ftyp", b"moov"], kinds
        mdat = header[-16:] if wide else header[-8:]
        body = chunks * chunk_size
        if wide:
            assert mdat[:8] == b"\0\0\0\x01mdat" and int.from_bytes(mdat[8:], "big") == 16 + body
            offsets = _table(header, stbl + [b"co64"], 8, ">u8")
            assert b"stco" not in header[:len(header) - 16]
        else:
            assert mdat[4:] == b"mdat" and int.from_bytes(mdat[:4], "big") == 8 + body
            offsets = _table(header, stbl + [b"stco"], 8, ">u4")
        assert offsets.tolist() == [len(header) + i * chunk_size for i in range(chunks)]
        assert wide == (int(offsets[-1]) > 0xFFFFFFFF)
        assert _table(header, stbl + [b"stts"], 4, ">u4").tolist() == [1, samples, track.timescale // 25]
        assert _table(header, stbl + [b"stss"], 8, ">u4").tolist() == list(range(1, samples + 1, 50))
        assert _table(header, stbl + [b"stsz"], 4, ">u4").tolist() == [chunk_size // 25, samples]
        assert _table(header, stbl + [b"stsc"], 4, ">u4").tolist() == [1, 1, 25, 1]
        print(f"\n{chunks} chunks, {samples} samples: header {len(header)} bytes, "
              f"{'co64' if wide else 'stco'}")


@pytest.mark.parametrize("limit", [20, 5])
def test_with_more_fragments_than_a_sidx_holds_references_are_whole_segments_or_runs_of_them(
        recording: Recording, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    """A day of 1 s fragments is more than the 65,535 references of a sidx: then a reference covers a segment
    (or a run of segments). Shown here with the limit lowered: 24 fragments of 12 segments, more than 20 (a
    reference per segment) and than 5 (a run of 3 segments each). The bytes after the header are unchanged,
    and a seek still lands on a key frame before its target, within the span of one reference."""
    rows = recording.rows("gate")
    start, end = rows[0].start_ms, rows[-1].end_ms
    usual = recording.plan("gate", start, end, FRAGMENTED)
    monkeypatch.setattr(playback_video, "SIDX_REFERENCE_LIMIT", limit)
    video = recording.plan("gate", start, end, FRAGMENTED)
    played = _packets(RangeRequests(video))
    fragments = sum(p.keyframe for p in played)   # a fragment per key frame (GOP = 1 s = fragment length)
    assert fragments > limit
    step = 1 if len(rows) <= limit else -(-len(rows) // limit)
    references = len(range(0, len(rows), step))
    assert usual.size - video.size == 12 * (fragments - references)   # 12 bytes a sidx reference
    after_header = video.size - 2000   # ftyp + moov + sidx < 2000 bytes
    assert _whole(video)[-after_header:] == _whole(usual)[-after_header:]
    assert [p.payload_sha256 for p in played] == [p.payload_sha256 for p in _packets(RangeRequests(usual))]
    span_ms = step * 2000 + 200   # a reference: one segment, or a run of them
    reader = RangeRequests(video)
    with av.open(reader, format="mp4") as container:
        stream = container.streams.video[0]
        for row in (rows[4], rows[-1]):
            target = row.start_ms + 1500 - video.start_ms
            container.seek(round(Fraction(target, 1000) / stream.time_base), stream=stream, backward=True)
            frame = next(container.decode(stream))
            shown = float(frame.pts * stream.time_base) * 1000
            assert frame.key_frame and target - span_ms <= shown <= target + 1, (target, shown)


def test_a_day_long_duration_widens_the_header_fields_that_need_it(recording: Recording) -> None:
    """24 h at 90 kHz is 7.8e9 ticks, more than mdhd's 32-bit duration holds: mdhd becomes version 1; the
    movie-timescale fields (ms) still fit version 0. The rebuilt moov still parses, sizes up the tree."""
    path = Path(recording.rows("gate")[0].path)
    data = path.read_bytes()
    track = scan_segment(lambda at, length: data[at:at + length], len(data)).format
    day = 24 * 3600 * track.timescale
    assert day > 0xFFFFFFFF
    moov = moov_with_duration(track, day)
    assert parse_moov(track.ftyp, moov, 0).compatibility == track.compatibility

    def payload(kinds: list[bytes], start: int = 8, end: int | None = None) -> int:
        """Where the contents of the box at that path inside the moov start."""
        for box in children(moov, start, len(moov) if end is None else end):
            if box.kind == kinds[0]:
                return box.payload if len(kinds) == 1 else payload(kinds[1:], box.payload, box.end)
        raise AssertionError(f"no {kinds[0]!r}")

    at = payload([b"trak", b"mdia", b"mdhd"])
    assert moov[at] == 1 and int.from_bytes(moov[at + 24:at + 32], "big") == day   # version 1, 64-bit duration
    at = payload([b"mvhd"])
    assert moov[at] == 0 and int.from_bytes(moov[at + 16:at + 20], "big") == 24 * 3600 * track.movie_timescale
    at = payload([b"mvex", b"mehd"])
    assert int.from_bytes(moov[at + 4:at + 8], "big") == 24 * 3600 * track.movie_timescale


@EACH_LAYOUT
def test_a_hole_in_the_recording_stays_a_hole_and_a_range_inside_it_names_its_reason(
        recording: Recording, tmp_path: Path, layout: str) -> None:
    rows = recording.rows("outage")
    holes = [(a, b) for a, b in zip(rows, rows[1:]) if b.start_ms - a.end_ms > 500]
    assert len(holes) == 1, [(r.start_ms, r.end_ms) for r in rows]
    before, after = holes[0]
    [recorded_gap] = [g for g in recording.gap_rows("outage")
                      if g.start_ms < after.start_ms and g.end_ms > before.end_ms]

    video = recording.plan("outage", before.start_ms + 500, after.end_ms - 500, layout)
    assert video.ends_early_at_ms is None
    _decodes(_whole(video), tmp_path, rows[rows.index(before):rows.index(after) + 1])
    played = _packets(RangeRequests(video))
    resumed = next(i for i, p in enumerate(played) if video.start_ms + p.time_ms > before.end_ms + 100)
    jump = played[resumed].time_ms - played[resumed - 1].time_ms
    # the frames jump over the hole, and the first one after it is at its UTC time again
    assert played[resumed].keyframe and jump >= after.start_ms - before.end_ms, (jump, after.start_ms - before.end_ms)
    assert abs(video.start_ms + played[resumed].time_ms - after.start_ms) <= 1

    with pytest.raises(NoRecording) as inside:
        recording.plan("outage", before.end_ms + 1000, after.start_ms - 1000, layout)
    assert recorded_gap.reason and recorded_gap.reason in str(inside.value), (str(inside.value), recorded_gap)
    assert str(inside.value).startswith("no recording from ") and " UTC (" in str(inside.value)
    print(f"\n{inside.value}")

    # a range starting before the first recording and ending after the last: what there is, whole
    whole = recording.plan("outage", rows[0].start_ms - 5000, rows[-1].end_ms + 5000, layout)
    assert whole.start_ms == rows[0].start_ms, (whole, rows[0])
    assert abs(whole.end_ms - rows[-1].end_ms) <= FRAME_MS + _overlaps_ms(rows) + 2, (whole, rows[-1])
    assert whole.ends_early_at_ms is None
    for start_ms, end_ms in ((rows[0].start_ms - 3_600_000, rows[0].start_ms - 3_000_000),
                             (rows[-1].end_ms + 3_000_000, rows[-1].end_ms + 3_600_000)):
        with pytest.raises(NoRecording, match="^no recording from "):
            recording.plan("outage", start_ms, end_ms, layout)
    with pytest.raises(NoRecording, match="no camera 'nobody'"):
        recording.plan("nobody", rows[0].start_ms, rows[-1].end_ms, layout)
    with pytest.raises(ValueError):
        recording.plan("outage", rows[1].start_ms, rows[0].start_ms, layout)
    with pytest.raises(ValueError, match="no video layout 'dash'"):
        recording.plan("outage", rows[0].start_ms, rows[-1].end_ms, "dash")


@EACH_LAYOUT
@pytest.mark.parametrize("camera", ["switching", "reconfigured"])
def test_a_codec_or_size_change_ends_the_video_there_and_says_where_the_rest_starts(
        recording: Recording, tmp_path: Path, camera: str, layout: str) -> None:
    rows = recording.rows(camera)
    runs = _runs(rows)
    if camera == "switching":
        assert [run[0].codec for run in runs] == ["h264", "hevc"], runs
    else:
        assert {(r.width, r.height) for r in rows} == {(320, 240), (352, 288)} and len(runs) >= 3, runs
    video = recording.plan(camera, rows[0].start_ms, rows[-1].end_ms, layout)
    assert video.ends_early_at_ms == runs[1][0].start_ms
    assert video.start_ms == runs[0][0].start_ms
    assert abs(video.end_ms - runs[0][-1].end_ms) <= FRAME_MS + _overlaps_ms(runs[0]) + 2, (video, runs[0][-1])
    assert video.codec == "h264"
    played = _packets(RangeRequests(video))
    assert [p.payload_sha256 for p in played] == [p.payload_sha256 for p in _recorded(runs[0])]
    _decodes(_whole(video), tmp_path, runs[0])

    rest = recording.plan(camera, video.ends_early_at_ms, rows[-1].end_ms, layout)
    assert rest.start_ms == runs[1][0].start_ms
    with av.open(str(runs[1][0].path)) as source:
        context = source.streams.video[0].codec_context
        extradata = bytes(context.extradata or b"")
    if camera == "switching":
        assert (rest.codec, rest.ends_early_at_ms) == ("hevc", None)
        assert re.fullmatch(r"hev1\.\d+\.[0-9A-F]+\.[LH]\d+(\.[0-9A-F]{2})*", rest.mime_codecs), rest.mime_codecs
        assert rest.mime_codecs.split(".")[3] == f"L{extradata[12]}"   # general_level_idc of the hvcC
    else:
        assert rest.codec == "h264" and rest.mime_codecs == f"avc1.{extradata[1:4].hex()}"
    played = _packets(RangeRequests(rest))
    assert [p.payload_sha256 for p in played] == [p.payload_sha256 for p in _recorded(runs[1])]
    _decodes(_whole(rest), tmp_path, runs[1])


@EACH_LAYOUT
def test_a_segment_deleted_after_planning_stops_the_bytes_with_an_error_naming_it(recording: Recording,
                                                                                 layout: str) -> None:
    """As when the ring deletes the oldest video while someone watches it: what came before is right, then
    an error the server turns into an aborted response; never a hang, never bytes of something else."""
    rows = recording.rows("gate")
    video = recording.plan("gate", rows[3].start_ms, rows[6].end_ms, layout)
    whole = _whole(video)
    gone = Path(rows[5].path)
    name = recording.layout.relative(gone)
    gone.rename(gone.with_name(gone.name + ".away"))
    received = bytearray()
    try:
        with pytest.raises(PlaybackError, match=f"segment {re.escape(name)} was deleted after the video was planned"):
            for piece in video.chunks(0, video.size):
                received += piece
        # a Range request starting inside the deleted segment's part fails at once
        with pytest.raises(PlaybackError, match=re.escape(name)):
            next(video.chunks(len(received) + 10, video.size))
        # planning again names it too
        with pytest.raises(PlaybackError, match=f"segment {re.escape(name)} is gone"):
            recording.plan("gate", rows[3].start_ms, rows[6].end_ms, layout)
    finally:
        gone.with_name(gone.name + ".away").rename(gone)
    assert whole.startswith(received)
    assert len(received) >= rows[3].bytes + rows[4].bytes - 4000   # all of the two segments before it
    # once it is back (same file, same inode and times), the same plan reads whole again
    assert _whole(video) == whole


def _second_moof_offset(path: Path) -> int:
    data = path.read_bytes()
    return data.index(b"moof", data.index(b"moof") + 4) - 4


def test_a_damaged_or_truncated_segment_is_refused_at_planning_naming_it(recording: Recording) -> None:
    rows = recording.rows("gate")
    victim = Path(rows[4].path)
    name = recording.layout.relative(victim)
    original = victim.read_bytes()
    try:
        # garbage over the second fragment's moof (the file keeps its size)
        offset = _second_moof_offset(victim)
        victim.write_bytes(original[:offset + 8] + bytes([0xA5]) * 64 + original[offset + 72:])
        with pytest.raises(PlaybackError, match=f"segment {re.escape(name)} is not a readable fragmented MP4"):
            recording.plan("gate", rows[3].start_ms, rows[5].end_ms)
        # cut short (a disk error, a copy interrupted): its size differs from its row's
        victim.write_bytes(original[:len(original) - 1000])
        with pytest.raises(PlaybackError, match=f"segment {re.escape(name)} is {len(original) - 1000} bytes on disk"):
            recording.plan("gate", rows[3].start_ms, rows[5].end_ms)
    finally:
        victim.write_bytes(original)
    assert recording.plan("gate", rows[3].start_ms, rows[5].end_ms).size > 0


@EACH_LAYOUT
def test_a_last_mdat_sized_to_the_end_of_the_file_and_64_bit_box_sizes_are_read(recording: Recording,
                                                                                 tmp_path: Path, layout: str) -> None:
    """A box of size 0 runs to the end of its file: in the virtual file, where more follows, it is given its
    size. A 64-bit size (size field 1) is read like any other."""
    rows = recording.rows("gate")
    victim = Path(rows[6].path)
    original = victim.read_bytes()
    top = list(children(original, 0, len(original)))
    last_mdat = [box for box in top if box.kind == b"mdat"][-1]
    assert top[-1].kind == b"mfra"   # the recorder's mfra follows it: the open mdat takes it in (same size)
    expected = [p.payload_sha256 for p in _recorded(rows[5:8])]
    try:
        victim.write_bytes(original[:last_mdat.start] + bytes(4) + original[last_mdat.start + 4:])
        reopened = scan_segment(lambda at, length: victim.read_bytes()[at:at + length], len(original))
        assert reopened.open_mdat_at == last_mdat.start
        video = recording.plan("gate", rows[5].start_ms, rows[7].end_ms, layout)
        played = _packets(RangeRequests(video))
        assert [p.payload_sha256 for p in played] == expected
        _decodes(_whole(video), tmp_path, rows[5:8])
    finally:
        victim.write_bytes(original)

    moov = next(box for box in top if box.kind == b"moov")
    wide_free = (1).to_bytes(4, "big") + b"free" + (24).to_bytes(8, "big") + bytes(8)
    shifted = original[:moov.end] + wide_free + original[moov.end:]
    intact = scan_segment(lambda at, length: original[at:at + length], len(original))
    wide = scan_segment(lambda at, length: shifted[at:at + length], len(shifted))
    assert [wide.field(i, MOOF_AT) for i in range(wide.count)] == [
        intact.field(i, MOOF_AT) + 24 for i in range(intact.count)]
    too_big = original[:moov.end] + (1).to_bytes(4, "big") + b"free" + (1 << 40).to_bytes(8, "big")
    with pytest.raises(Mp4FormatError, match=f"box free at offset {moov.end} claims {1 << 40} bytes"):
        scan_segment(lambda at, length: too_big[at:at + length], len(too_big))


def test_malformed_segment_bytes_raise_a_format_error_and_nothing_else(recording: Recording) -> None:
    """The parser never crashes on bad bytes (no IndexError, struct.error, MemoryError): every truncation and
    a few thousand corruptions of a real segment either parse or raise Mp4FormatError."""
    original = Path(recording.rows("gate")[2].path).read_bytes()

    def scan(data: bytes) -> SegmentLayout:
        return scan_segment(lambda at, length: data[at:at + length], len(data))

    intact = scan(original)
    assert intact.count >= 2 and not intact.unmovable
    header_end = intact.field(0, MOOF_AT)   # the first moof's offset: ftyp and moov before it
    moofs = [intact.field(i, MOOF_AT) for i in range(intact.count)]
    rng = random.Random(7)
    outcomes = {"parsed": 0, "refused": 0}
    for cut in list(range(0, header_end + 400)) + [rng.randrange(len(original)) for _ in range(300)]:
        try:
            scan(original[:cut])
            outcomes["parsed"] += 1
        except Mp4FormatError:
            outcomes["refused"] += 1
    for _ in range(3000):
        data = bytearray(original)
        at = rng.choice([rng.randrange(header_end), rng.choice(moofs) + rng.randrange(320)])
        value = rng.choice([b"\0\0\0\0", b"\0\0\0\x01", b"\xff\xff\xff\xff", rng.randbytes(4), rng.randbytes(1)])
        data[at:at + len(value)] = value
        try:
            scan(bytes(data))
            outcomes["parsed"] += 1
        except Mp4FormatError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 300, outcomes
    print(f"\n{outcomes}")


@EACH_LAYOUT
def test_streaming_a_long_video_holds_no_more_than_a_chunk_or_two(recording: Recording, layout: str) -> None:
    rows = recording.rows("gate")
    video = recording.plan("gate", rows[0].start_ms, rows[-1].end_ms, layout)
    assert video.size > 4_000_000, video.size   # the whole recording: holding it would show
    for _ in video.chunks(0, video.size):   # warm: files in the page cache, code paths run once
        pass
    tracemalloc.start()
    try:
        streamed = 0
        for piece in video.chunks(0, video.size):
            streamed += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert streamed == video.size
    assert peak < 2_000_000, peak
    print(f"\n{layout}: peak {peak // 1024} KB traced while streaming {video.size // 1024} KB")


class _RangeServer(BaseHTTPRequestHandler):
    """The least an HTTP server does for `<video src>`: a page, and the video with Range requests, sent at
    `bytes_per_second` (a box on a slow link: a browser that wants a far part of the file must ask for it)."""
    video: PlaybackVideo
    bytes_per_second: int
    served: list[tuple[str | None, int]]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/":
            body = b"<!doctype html><video id=v muted preload=auto src='/video.mp4'></video>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        size = self.video.size
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        first, end = (int(asked[1]), min(size, int(asked[2]) + 1 if asked[2] else size)) if asked else (0, size)
        self.send_response(206 if asked else 200)
        if asked:
            self.send_header("Content-Range", f"bytes {first}-{end - 1}/{size}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(end - first))
        self.end_headers()
        self.served.append((self.headers.get("Range"), first))
        step = 16 * 1024
        try:
            for piece in self.video.chunks(first, end):
                for at in range(0, len(piece), step):
                    self.wfile.write(piece[at:at + step])
                    time.sleep(step / self.bytes_per_second)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the browser has what it wanted, or wants another part


BROWSERS = pytest.mark.parametrize("kind", ["chromium", "firefox"])   # issue 11: both play and seek it


class _Browser:
    """Chromium (Playwright) or Firefox (Marionette) showing one video served by _RangeServer."""

    def __init__(self, video: PlaybackVideo, bytes_per_second: int, kind: str) -> None:
        self.handler = type("Handler", (_RangeServer,), {"video": video, "bytes_per_second": bytes_per_second,
                                                         "served": []})
        self.video = video
        self.kind = kind
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self.server.daemon_threads = True
        self._closing = contextlib.ExitStack()   # what __exit__ stops, last started first

    def __enter__(self) -> _Browser:
        with contextlib.ExitStack() as closing:
            threading.Thread(target=self.server.serve_forever, daemon=True).start()
            closing.callback(self.server.server_close)
            closing.callback(self.server.shutdown)
            url = f"http://127.0.0.1:{self.server.server_address[1]}/"
            if self.kind == "firefox":
                firefox = closing.enter_context(Firefox())
                self.evaluate, self.wait_for = firefox.evaluate, firefox.wait_for
                firefox.goto(url)
            else:
                sync_api = pytest.importorskip("playwright.sync_api")
                chromium = shutil.which("chromium") or shutil.which("chromium-browser")
                if chromium is None:
                    pytest.skip("no chromium installed")
                playwright = closing.enter_context(sync_api.sync_playwright())
                browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                closing.callback(browser.close)
                page = browser.new_page()
                self.evaluate = page.evaluate
                self.wait_for = lambda expression, timeout_ms: page.wait_for_function(expression, timeout=timeout_ms)
                page.goto(url)
            self.wait_for("document.getElementById('v').readyState >= 1", 20_000)
            self._closing = closing.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.close()

    @property
    def served(self) -> list[tuple[str | None, int]]:
        return self.handler.served

    def seek(self, utc_ms: int) -> tuple[float, int, int]:
        """Seek to the video time of `utc_ms`; (position, readyState, error code) once 'seeked' fired."""
        return self.evaluate("""async (t) => { const v = document.getElementById('v');
            const seeked = new Promise(ok => v.addEventListener('seeked', ok, {once: true}));
            v.currentTime = t; await seeked;
            return [v.currentTime, v.readyState, v.error ? v.error.code : 0]; }""",
                                  (utc_ms - self.video.start_ms) / 1000)


@pytest.mark.parametrize(("kind", "layout"), [("chromium", PROGRESSIVE), ("firefox", PROGRESSIVE),
                                              ("chromium", FRAGMENTED)])   # Firefox ignores a sidx
def test_a_browser_seeks_far_into_the_video_with_a_range_request(recording: Recording, kind: str,
                                                                 layout: str) -> None:
    rows = recording.rows("gate")
    video = recording.plan("gate", rows[0].start_ms, rows[-1].end_ms, layout)
    rate = 1_000_000   # the whole file would take ~6 s
    with _Browser(video, rate, kind) as browser:
        duration = browser.evaluate("() => document.getElementById('v').duration")
        assert abs(duration * 1000 - (video.end_ms - video.start_ms)) <= 1, duration
        started = time.monotonic()
        target = rows[-1].start_ms + 700
        position, ready, error = browser.seek(target)
        took = time.monotonic() - started
        assert abs(position * 1000 - (target - video.start_ms)) < 10 and ready >= 2 and error == 0
        far = [first for _, first in browser.served if first > video.size * 0.8]
        assert far, browser.served
        assert took < video.size / rate / 2, took
    print(f"\n{kind} seeked {position:.1f} s into {video.size} bytes ({layout}) in {took * 1000:.0f} ms; "
          f"requests {browser.served}")


@BROWSERS
def test_a_browser_plays_on_across_segment_boundaries_and_the_hole(recording: Recording, kind: str) -> None:
    rows = recording.rows("outage")
    video = recording.plan("outage", rows[0].start_ms, rows[-1].end_ms)
    hole = next((a, b) for a, b in zip(rows, rows[1:]) if b.start_ms - a.end_ms > 500)
    with _Browser(video, 50_000_000, kind) as browser:
        for utc_ms in (rows[-1].start_ms + 500, rows[1].start_ms + 700, hole[1].start_ms + 300):
            position, ready, error = browser.seek(utc_ms)
            assert abs(position * 1000 - (utc_ms - video.start_ms)) < 10 and ready >= 2 and error == 0
        # from before a segment boundary and the hole to after both (the hole shows the frame before it)
        browser.seek(hole[0].end_ms - 2600)
        browser.evaluate("() => document.getElementById('v').play()")
        beyond = (hole[1].start_ms + 500 - video.start_ms) / 1000
        # it plays 2.6 s, the hole (as long as the outage and the reconnection made it) and 0.5 s in real time
        playing_s = (hole[1].start_ms + 500 - (hole[0].end_ms - 2600)) / 1000
        browser.wait_for(f"document.getElementById('v').currentTime > {beyond}", (playing_s + 15) * 1000)
        assert browser.evaluate("() => document.getElementById('v').error") is None
