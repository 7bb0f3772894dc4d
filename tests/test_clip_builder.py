"""Evidence clips a user relies on, exported from one real ~24 s recording by `edgenvr run` of four RTSP test
cameras (2 s segments, a key frame every second): a steady H.264 camera at 2 Mbit/s, one whose server is
stopped for 5 s, one that switches resolution every 3 s, and one that is switched from H.264 to H.265.

Every clip is checked against the recorded segments themselves: same packets byte for byte, same times,
decodable by PyAV and by ffprobe.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import av
import pytest
from mixed_recording import OUTAGE_FOR, record_mixed_cameras
from mixed_recording import Recording as MixedRecording

from edgenvr.evidence.clip_builder import (
    Clip,
    ClipError,
    ClipFile,
    SourceSegment,
    build_clip,
)
from edgenvr.index.queries import SegmentRow, open_readonly

FRAME_MS = 40
GOP_MS = 1000


class Recording(MixedRecording):
    def export(self, camera: str, from_ms: int, to_ms: int, out_dir: Path, **options: object) -> Clip:
        out_dir.mkdir(exist_ok=True)
        with open_readonly(self.layout) as conn:
            return build_clip(conn, self.layout, camera, from_ms, to_ms, out_dir, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, h264_clip: Path, h265_clip: Path,
              simulator_ready: None) -> Iterator[Recording]:
    root = tmp_path_factory.mktemp("clips")
    yield Recording(record_mixed_cameras(root, h264_clip, h265_clip))


@dataclass(frozen=True)
class RecordedPacket:
    payload_sha256: str
    keyframe: bool
    utc_ms: float      # presentation time


def _packets(path: Path, start_ms: int) -> list[RecordedPacket]:
    """The packets of an MP4 file in decode order, timed from `start_ms` (the UTC of its first packet)."""
    found: list[RecordedPacket] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        first_pts = None
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            first_pts = packet.pts if first_pts is None else first_pts
            found.append(RecordedPacket(hashlib.sha256(bytes(packet)).hexdigest(), packet.is_keyframe,
                                        start_ms + float((packet.pts - first_pts) * stream.time_base) * 1000))
    return found


def _decodes(path: Path) -> tuple[bool, int, int, tuple[str, int, int]]:
    """(first packet is a key frame at time 0, frames decoded, decode errors, (codec, width, height)) with PyAV."""
    frames = errors = 0
    first_key = None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size and first_key is None:
                first_key = packet.is_keyframe and packet.pts == 0 and packet.dts == 0
            try:
                frames += len(packet.decode())
            except av.error.FFmpegError:
                errors += 1
        context = stream.codec_context
        return bool(first_key), frames, errors, (context.name, context.width, context.height)


def _ffprobe_frames(path: Path) -> int | None:
    """Frames ffprobe decodes in the file (asserting it reports no error); None if ffprobe is not installed."""
    if shutil.which("ffprobe") is None:
        return None
    result = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                             "stream=nb_read_frames", "-of", "json", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return int(json.loads(result.stdout)["streams"][0]["nb_read_frames"])


def _check_file(out_dir: Path, file: ClipFile) -> None:
    """The file is what its record says, starts with a key frame and decodes without an error."""
    path = out_dir / file.name
    data = path.read_bytes()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (file.bytes, file.sha256)
    key, frames, errors, parameters = _decodes(path)
    assert key and errors == 0 and frames == file.packets, (file.name, key, frames, errors)
    assert parameters == (file.codec, file.width, file.height)
    probed = _ffprobe_frames(path)
    assert probed is None or probed == file.packets


def _source_packets(recording: Recording, sources: tuple[SourceSegment, ...]) -> list[RecordedPacket]:
    return [packet for source in sources
            for packet in _packets(recording.layout.absolute(source.path), source.start_ms)]


def test_an_export_across_a_segment_boundary_is_the_recorded_packets_from_the_key_frame_before_its_start(
        recording: Recording, tmp_path: Path) -> None:
    rows = recording.rows("gate")
    assert len(rows) >= 8, rows
    first, second = rows[len(rows) // 2 - 1], rows[len(rows) // 2]
    assert second.start_ms - first.end_ms <= FRAME_MS   # the recording is contiguous there
    # three quarters into a 2 s segment: the key frame before it is the segment's second one, not its start
    from_ms = first.start_ms + (first.end_ms - first.start_ms) * 3 // 4
    to_ms = second.start_ms + 700
    calls: list[tuple[int, int]] = []
    started = time.monotonic()
    clip = recording.export("gate", from_ms, to_ms, tmp_path / "out",
                            progress=lambda done, total: calls.append((done, total)))
    took = time.monotonic() - started

    assert (clip.camera, clip.from_ms, clip.to_ms, clip.gaps) == ("gate", from_ms, to_ms, ())
    assert len(clip.files) == 1, clip.files
    file = clip.files[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [file.name]
    assert file.name.startswith("gate_") and file.name.endswith("Z_1.mp4")
    _check_file(tmp_path / "out", file)
    # within one GOP at the start, from a key frame inside the first segment; to the end of the range
    assert first.start_ms < clip.start_ms <= from_ms < clip.start_ms + GOP_MS + FRAME_MS, (clip.start_ms, from_ms)
    assert to_ms <= clip.end_ms <= to_ms + FRAME_MS + 1, (clip.end_ms, to_ms)
    assert (file.start_ms, file.end_ms) == (clip.start_ms, clip.end_ms)
    assert [s.path for s in file.sources] == [recording.layout.relative(Path(r.path)) for r in (first, second)]
    assert [(s.start_ms, s.end_ms, s.bytes, s.sha256, s.altered) for s in file.sources] == [
        (r.start_ms, r.end_ms, r.bytes, r.sha256, False) for r in (first, second)]

    # byte for byte the recorded packets: from the last key frame at or before from_ms up to to_ms
    recorded = _source_packets(recording, file.sources)
    start = max(i for i, p in enumerate(recorded) if p.keyframe and p.utc_ms <= from_ms)
    expected = [p for p in recorded[start:] if p.utc_ms < to_ms]
    exported = _packets(tmp_path / "out" / file.name, file.start_ms)
    assert [p.payload_sha256 for p in exported] == [p.payload_sha256 for p in expected]
    assert exported[0].keyframe and file.packets == len(expected)
    # the file's own times are the recording's: time t in the file is UTC start_ms + t (to the ms)
    assert max(abs(a.utc_ms - b.utc_ms) for a, b in zip(exported, expected)) <= 1
    assert calls[0] == (0, sum(r.bytes for r in (first, second))) and calls[-1][0] == calls[-1][1]
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    print(f"\n{file.packets} packets, {file.bytes} bytes exported in {took * 1000:.0f} ms")


def test_two_exports_of_the_same_range_are_byte_identical(recording: Recording, tmp_path: Path) -> None:
    rows = recording.rows("gate")
    from_ms, to_ms = rows[1].start_ms + 300, rows[-2].end_ms - 300
    first = recording.export("gate", from_ms, to_ms, tmp_path / "a")
    time.sleep(1.1)   # a creation time from the clock would now differ
    second = recording.export("gate", from_ms, to_ms, tmp_path / "b")
    assert first == second
    for file in first.files:
        a, b = (tmp_path / "a" / file.name).read_bytes(), (tmp_path / "b" / file.name).read_bytes()
        assert a == b
        assert b"Lavf" not in a   # no muxer version string in the container (bitexact)


def _flip_a_payload_byte(path: Path) -> None:
    """Flip one byte inside the segment's tenth packet (so the file still demuxes)."""
    with av.open(str(path)) as container:
        packet = [p for p in container.demux(container.streams.video[0]) if p.size][10]
        offset = packet.pos + packet.size // 2
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_source_segment_altered_on_disk_stops_the_export_naming_it_unless_allowed(
        recording: Recording, tmp_path: Path) -> None:
    rows = recording.rows("gate")
    before, altered, after = rows[3], rows[4], rows[5]
    name = recording.layout.relative(Path(altered.path))
    _flip_a_payload_byte(Path(altered.path))
    try:
        with pytest.raises(ClipError, match=f"{name} was altered since it was recorded"):
            recording.export("gate", before.start_ms, after.end_ms, tmp_path / "refused")
        assert list((tmp_path / "refused").iterdir()) == []   # nothing half-written left behind

        clip = recording.export("gate", before.start_ms, after.end_ms, tmp_path / "allowed", allow_altered=True)
        sources = [s for f in clip.files for s in f.sources]
        assert [(s.path, s.altered) for s in sources] == [
            (recording.layout.relative(Path(r.path)), r is altered) for r in (before, altered, after)]
        # what was exported is what is on disk now, flipped byte included (so it need not decode cleanly)
        exported = _packets(tmp_path / "allowed" / clip.files[0].name, clip.files[0].start_ms)
        assert [p.payload_sha256 for p in exported] == [
            p.payload_sha256 for p in _source_packets(recording, tuple(sources))]
    finally:
        _flip_a_payload_byte(Path(altered.path))   # the same byte flipped back, for the other tests
    assert hashlib.sha256(Path(altered.path).read_bytes()).hexdigest() == altered.sha256


def test_a_source_segment_gone_from_disk_stops_the_export_naming_it_and_leaves_nothing(
        recording: Recording, tmp_path: Path) -> None:
    """As when the ring deletes the oldest video while it is exported: the files already written go too."""
    rows = recording.rows("gate")
    gone = Path(rows[5].path)
    gone.rename(gone.with_name(gone.name + ".away"))
    try:
        with pytest.raises(ClipError, match=f"{recording.layout.relative(gone)} is unreadable"):
            recording.export("gate", rows[3].start_ms, rows[6].end_ms, tmp_path / "out")
    finally:
        gone.with_name(gone.name + ".away").rename(gone)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_camera_outage_inside_the_range_is_listed_as_a_gap_with_its_reason(recording: Recording,
                                                                             tmp_path: Path) -> None:
    rows = recording.rows("outage")
    holes = [(a, b) for a, b in zip(rows, rows[1:]) if b.start_ms - a.end_ms > 500]
    assert len(holes) == 1, [(r.start_ms, r.end_ms) for r in rows]
    before, after = holes[0]
    assert abs((after.start_ms - before.end_ms) - OUTAGE_FOR * 1000) <= 3000
    [recorded_gap] = [g for g in recording.gap_rows("outage")
                      if g.start_ms < after.start_ms and g.end_ms > before.end_ms]

    clip = recording.export("outage", before.start_ms + 500, after.end_ms - 500, tmp_path / "out")
    assert len(clip.gaps) == 1, clip.gaps
    gap = clip.gaps[0]
    assert (gap.start_ms, gap.end_ms) == (before.end_ms, after.start_ms)
    assert gap.reason == recorded_gap.reason and gap.reason != "no recording", gap
    # the hole stays a hole in the file: the first frame after it is at its UTC time
    assert len(clip.files) == 1, clip.files   # the camera came back with the same stream parameters
    file = clip.files[0]
    _check_file(tmp_path / "out", file)
    exported = _packets(tmp_path / "out" / file.name, file.start_ms)
    resumed = next(p for p in exported if p.utc_ms >= before.end_ms + 500)
    assert resumed.keyframe and abs(resumed.utc_ms - after.start_ms) <= 1, (resumed, after.start_ms)

    # a range starting before the camera's first recording: that part has no recording, and no index gap
    early = recording.export("outage", rows[0].start_ms - 5000, rows[0].start_ms + 3000, tmp_path / "early")
    assert early.gaps[0].start_ms == rows[0].start_ms - 5000 and early.gaps[0].end_ms == rows[0].start_ms
    assert early.gaps[0].reason == "no recording"
    assert early.start_ms == rows[0].start_ms


@pytest.mark.parametrize("camera, when", [("gate", "an hour before"), ("gate", "an hour after"),
                                          ("gate", "backwards"), ("no-such-camera", "during"), ("../gate", "during")])
def test_a_range_with_no_recording_raises_and_leaves_out_dir_empty(recording: Recording, tmp_path: Path,
                                                                   camera: str, when: str) -> None:
    rows = recording.rows("gate")
    from_ms, to_ms = {"an hour before": (rows[0].start_ms - 3_600_000, rows[0].start_ms - 3_000_000),
                      "an hour after": (rows[-1].end_ms + 3_000_000, rows[-1].end_ms + 3_600_000),
                      "backwards": (rows[-1].end_ms, rows[0].start_ms),
                      "during": (rows[0].start_ms, rows[-1].end_ms)}[when]
    with pytest.raises(ClipError, match="nothing (recorded|to export) for camera"):
        recording.export(camera, from_ms, to_ms, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def _runs(rows: list[SegmentRow]) -> list[list[SegmentRow]]:
    """Consecutive rows with the same codec and size."""
    runs: list[list[SegmentRow]] = []
    for row in rows:
        if runs and (runs[-1][-1].codec, runs[-1][-1].width, runs[-1][-1].height) == (row.codec, row.width, row.height):
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


@pytest.mark.parametrize("camera", ["reconfigured", "switching"])
def test_h265_and_a_mid_range_parameter_change_give_one_file_per_parameter_set(recording: Recording, tmp_path: Path,
                                                                               camera: str) -> None:
    rows = recording.rows(camera)
    runs = _runs(rows)
    if camera == "reconfigured":
        assert {(r.width, r.height) for r in rows} == {(320, 240), (352, 288)} and len(runs) >= 4, runs
    else:
        assert [run[0].codec for run in runs] == ["h264", "hevc"], runs
    clip = recording.export(camera, rows[0].start_ms, rows[-1].end_ms, tmp_path / "out")
    assert len(clip.files) == len(runs)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f.name for f in clip.files)
    for number, (file, run) in enumerate(zip(clip.files, runs), start=1):
        assert file.name.endswith(f"_{number}.mp4")
        assert (file.codec, file.width, file.height) == (run[0].codec, run[0].width, run[0].height)
        assert [s.start_ms for s in file.sources] == [r.start_ms for r in run]
        assert file.start_ms == run[0].start_ms and abs(file.end_ms - run[-1].end_ms) <= FRAME_MS
        _check_file(tmp_path / "out", file)
        exported = _packets(tmp_path / "out" / file.name, file.start_ms)
        assert [p.payload_sha256 for p in exported] == [
            p.payload_sha256 for p in _source_packets(recording, file.sources)]
    # the switch to H.265 was a reconnect: its hole is listed
    holes = [(a.end_ms, b.start_ms) for a, b in zip(rows, rows[1:]) if b.start_ms - a.end_ms > 500]
    assert [(g.start_ms, g.end_ms) for g in clip.gaps] == holes


def _peak_rss_growth_kb(export: Callable[[], Clip]) -> int:
    """How far the process's peak RSS rises above its RSS before `export`, in KB. The peak is reset first
    (writing 5 to /proc/self/clear_refs resets VmHWM, Linux >= 4.0)."""
    def status(field: str) -> int:
        line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
        return int(line.split()[1])

    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS:")
    assert status("VmHWM:") <= before + 64   # the reset worked
    export()
    return status("VmHWM:") - before


def test_memory_stays_flat_however_long_the_export(recording: Recording, tmp_path: Path) -> None:
    """Peak RSS, not tracemalloc: the packets and the muxer's buffers are libav's memory, which tracemalloc
    does not see, and holding packets (the failure this guards against) would hold exactly that memory."""
    rows = recording.rows("gate")
    short_range = (rows[2].start_ms, rows[2].start_ms + 2000)
    long_range = (rows[0].start_ms, rows[-1].end_ms)
    recording.export("gate", *short_range, tmp_path / "warm-up")   # libraries loaded, allocator pools made
    runs = iter(range(1_000))

    def export(span: tuple[int, int]) -> Clip:
        return recording.export("gate", *span, tmp_path / f"run-{next(runs)}")

    short_growth = min(_peak_rss_growth_kb(lambda: export(short_range)) for _ in range(2))
    started = time.monotonic()
    long_clip = export(long_range)
    long_seconds = time.monotonic() - started
    long_growth = min(_peak_rss_growth_kb(lambda: export(long_range)) for _ in range(2))
    long_bytes = sum(f.bytes for f in long_clip.files)
    long_ms = long_clip.end_ms - long_clip.start_ms
    print(f"\npeak RSS growth: {short_growth} KB for a 2 s export, {long_growth} KB for a {long_ms / 1000:.0f} s "
          f"export of {long_bytes // 1024} KB (copied in {long_seconds * 1000:.0f} ms)")
    assert long_ms >= 8 * 2000
    # Holding the long export's packets would add about its size (measured by holding them on purpose: +5 to 6
    # MB for these ~6 MB); without that the two differ by 0-400 KB (allocator noise, one more fragment buffer).
    assert long_growth - short_growth < long_bytes // 1024 // 3, (short_growth, long_growth, long_bytes)
