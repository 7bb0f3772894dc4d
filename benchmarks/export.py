"""Export benchmark: `edgenvr export` of real recorded segments against `ffmpeg -f concat -safe 0 -i LIST -c copy`
of the same segments, in the same run; then `edgenvr verify` of that export against `sha256sum` of the same
bytes.

The segments are what a box that recorded N minutes holds, made faster than real time: the record
benchmark's 1080p clip (25 fps, GOP 50, ~4 Mbit/s, 10 s; remuxed once to MP4 for its timestamps) written
N x 6 times through the recorder's own SegmentWriter (10 s fragmented MP4 segments with their attributes
and recorded hashes) and indexed by the real IndexWriter.

For each length (default 10 and 120 minutes) it prints wall and CPU seconds of both exporters (best of two
alternating rounds, the page cache warm for both), their ratio, each one's peak RSS (the child's rusage),
and the verify / sha256sum wall times. Targets from issue 10, printed as PASS/FAIL, never asserted:
export <= 1.0x ffmpeg's time, edgenvr's peak RSS < 80 MB at every length, verify <= 1.2x sha256sum.

    python benchmarks/export.py [--minutes 10 120] [--dir /var/tmp] [--keep]

Needs N x ~5 MB x 5 of disk per length (the segments and two rounds of both exports), removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av  # noqa: E402

from edgenvr.core.clock import SYSTEM_CLOCK  # noqa: E402
from edgenvr.index import schema as index_schema  # noqa: E402
from edgenvr.index.writer import IndexWriter  # noqa: E402
from edgenvr.recording.segment_files import SegmentWriter  # noqa: E402
from edgenvr.simulator import CLIP_CACHE, make_clip  # noqa: E402
from edgenvr.storage.layout import StorageLayout  # noqa: E402

SEGMENT_MS = 10_000
CAMERA = "bench"


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float


def measured(command: list[str]) -> Run:
    """Run `command` to its end; its wall time, CPU time (its rusage) and peak RSS: the kernel's high-water
    mark (VmHWM) of its own image, read every 10 ms until it exits. (Its rusage's ru_maxrss would count the
    benchmark's own memory, copied by the fork before the exec.)"""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak_kb = 0
    while True:
        try:   # only once it runs `command` (before the exec it is a copy of this process)
            if Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")[:len(command)] == \
                    [part.encode() for part in command]:
                status_text = Path(f"/proc/{process.pid}/status").read_text()
                peak_kb = max(peak_kb, int(status_text.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            pass   # exiting
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.01)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed with {process.returncode}")
    return Run(wall, usage.ru_utime + usage.ru_stime, peak_kb / 1024)


def clip_mp4() -> Path:
    raw = make_clip(CLIP_CACHE / "bench-1920x1080-25fps-gop50-4mbit.h264", codec="h264", width=1920, height=1080,
                    fps=25, gop=50, bitrate=4_000_000, seconds=10)
    mp4 = raw.with_suffix(".mp4")
    if not mp4.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-r", "25", "-i", str(raw), "-c", "copy", str(mp4)], check=True)
    return mp4


def record(layout: StorageLayout, clip: Path, segments: int, t0: int) -> None:
    """`segments` 10 s segments of CAMERA from t0, written and indexed as the recorder and supervisor do."""
    writer = IndexWriter(index_schema.connect(layout.index_path))
    for n in range(segments):
        start_ms = t0 + n * SEGMENT_MS
        with av.open(str(clip)) as source:   # afresh each time: the segment writer rebases its packets
            stream = source.streams.video[0]
            packets = [p for p in source.demux(stream) if p.size]
            segment = SegmentWriter(layout, CAMERA, stream, start_ms, packets[0].dts, stream.time_base)
            for packet in packets:
                segment.write(packet)
            writer.add_segment(segment.close(start_ms + SEGMENT_MS, SYSTEM_CLOCK.now_ms()))
    writer.commit()
    writer.conn.close()


def best(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: r.wall_s)


def bench(root: Path, minutes: int, clip: Path) -> None:
    data = root / f"data-{minutes}"
    layout = StorageLayout(data)
    segments = minutes * 60_000 // SEGMENT_MS
    t0 = (SYSTEM_CLOCK.now_ms() // 1000 - minutes * 60 - 3600) * 1000
    started = time.perf_counter()
    record(layout, clip, segments, t0)
    paths = sorted(layout.segments_dir.rglob("*.mp4"), key=lambda p: int(p.stem))
    source_mb = sum(p.stat().st_size for p in paths) / 1e6
    print(f"{minutes} min: {segments} segments, {source_mb:,.0f} MB, written and indexed in"
          f" {time.perf_counter() - started:.0f} s")
    config = root / f"edgenvr-{minutes}.toml"
    config.write_text(f'[box]\nid = "bench"\n[storage]\ndata_dir = "{data}"\n[[cameras]]\nid = "{CAMERA}"\n'
                      'url = "rtsp://192.0.2.1/bench"\n')
    listing = root / f"list-{minutes}.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in paths))
    for path in paths:   # the page cache warm for both exporters
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass

    ours, theirs = [], []
    for round_ in range(2):
        out = root / f"export-{minutes}-{round_}"
        ours.append(measured([sys.executable, "-m", "edgenvr", "export", "--config", str(config), "--camera", CAMERA,
                              "--from", f"{t0}ms", "--to", f"{t0 + segments * SEGMENT_MS}ms", "--out", str(out),
                              "--reason", "benchmark", "--by", "benchmark"]))
        target = root / f"ffmpeg-{minutes}-{round_}.mp4"
        theirs.append(measured(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                                "-c", "copy", str(target)]))
    a, b = best(ours), best(theirs)
    ratio = a.wall_s / b.wall_s
    print(f"  export: edgenvr {a.wall_s:.2f} s wall, {a.cpu_s:.2f} s CPU, peak RSS {a.peak_rss_mb:.0f} MB;"
          f" ffmpeg concat {b.wall_s:.2f} s wall, {b.cpu_s:.2f} s CPU, peak RSS {b.peak_rss_mb:.0f} MB;"
          f" ratio {ratio:.2f}  [{'PASS' if ratio <= 1.0 else 'FAIL'}: <= 1.0x]"
          f"  [{'PASS' if a.peak_rss_mb < 80 else 'FAIL'}: RSS < 80 MB]")
    exported = root / f"export-{minutes}-1"
    files = sorted(str(p) for p in exported.iterdir() if p.name != "SHA256SUMS")
    check = best([measured([sys.executable, "-m", "edgenvr", "verify", str(exported)]) for _ in range(2)])
    sums = best([measured(["sha256sum", *files]) for _ in range(2)])
    ratio = check.wall_s / sums.wall_s
    print(f"  verify: edgenvr {check.wall_s:.2f} s, sha256sum of the same files {sums.wall_s:.2f} s; ratio"
          f" {ratio:.2f}  [{'PASS' if ratio <= 1.2 else 'FAIL'}: <= 1.2x]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, nargs="+", default=[10, 120])
    parser.add_argument("--dir", default=None, help="where to work (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="edgenvr-export-bench-", dir=args.dir))
    try:
        clip = clip_mp4()
        for minutes in args.minutes:
            bench(root, minutes, clip)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
