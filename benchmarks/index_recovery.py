"""Index recovery benchmark: rebuilding a lost index of a month of video, against systemd's start timeout.

This script owns the figures for issue 9's "a lost index of 1 million rows rebuilt within the start timeout
at bounded memory". It builds a data dir of stand-in segments (default 8 cameras x ~35 days of 10 s
segments = 1,000,000 files): sparse files of the size a 10 s 1080p segment has (no data written), each
carrying its row in the `user.edgenvr` attribute exactly as a recorder writes it
(`storage.segment_attributes.write_segment_attribute`), in the layout's hour directories. Then, each in a
fresh process so that its peak RSS is its own:

1. rebuild: the index is missing; `index.recovery.open_or_rebuild` + `index.reconcile.reconcile`, as
   `edgenvr run` starts (batched commits, progress every few seconds), until every file is indexed;
2. start: the next ordinary start on that complete index (open with `PRAGMA quick_check`, then the
   reconcile pass over index and tree that every start-up makes).

It prints wall time, rows/s, commits and peak RSS (and the interpreter's RSS before the work, so the
growth is visible) for each, with PASS/FAIL against the unit's TimeoutStartSec (systemd/edgenvr.service).
The figures are warm-cache: the tree was just written, so its inodes are in memory. A Pi after a power cut
reads them from the card first; `--drop-caches` (root) drops the page cache before each phase to see that.

    .venv/bin/python benchmarks/index_recovery.py                        # 1,000,000 segments in $TMPDIR
    .venv/bin/python benchmarks/index_recovery.py --segments 200000 --dir /dev/shm

Needs about 1 KB of inode per segment on the chosen filesystem (1 GB of RAM on tmpfs for a million) and
a filesystem with user extended attributes (ext4, tmpfs). Everything is deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgenvr.core.records import SegmentRecord
from edgenvr.core.units import DAY_MS, SECOND_MS
from edgenvr.storage.layout import StorageLayout
from edgenvr.storage.segment_attributes import write_segment_attribute

SEGMENT_SECONDS = 10
SEGMENT_BYTES = 5_000_000   # a 10 s segment of a 1080p 4 Mbit/s camera (sparse: no data is written)
FPS = 25
START_MS = 1_767_225_600_000   # 2026-01-01T00:00:00Z
UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edgenvr.service"


def start_timeout_seconds() -> float:
    found = re.search(r"^TimeoutStartSec=(\d+)", UNIT.read_text(), flags=re.MULTILINE)
    return float(found[1]) if found else 90.0   # systemd's default


def build(layout: StorageLayout, cameras: int, segments: int) -> float:
    """Write the stand-in segment files, oldest first for every camera. Returns the seconds it took."""
    started = time.monotonic()
    per_camera = -(-segments // cameras)
    made = 0
    for camera_index in range(cameras):
        camera = f"cam-{camera_index}"
        directory = None
        for n in range(min(per_camera, segments - made)):
            start_ms = START_MS + n * SEGMENT_SECONDS * SECOND_MS + camera_index * SECOND_MS
            end_ms = start_ms + SEGMENT_SECONDS * SECOND_MS
            path = layout.segment_path(camera, start_ms)
            if path.parent != directory:
                directory = path.parent
                directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                os.ftruncate(fd, SEGMENT_BYTES)
            finally:
                os.close(fd)
            write_segment_attribute(path, SegmentRecord(
                camera, start_ms, end_ms, layout.relative(path), SEGMENT_BYTES,
                hashlib.sha256(f"{camera}{start_ms}".encode()).hexdigest(), "h264", 1920, 1080,
                SEGMENT_SECONDS * FPS, end_ms))
            made += 1
        print(f"  built {made:,} of {segments:,} segments ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return time.monotonic() - started


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KB on Linux


def phase(data_dir: Path, name: str) -> dict[str, object]:
    """One start-up, in this (fresh) process: `rebuild` (the index is missing) or `start` (it is complete)."""
    from edgenvr.index.reconcile import ReconcileProgress, reconcile
    from edgenvr.index.recovery import open_or_rebuild
    from edgenvr.index.writer import IndexWriter

    logging.basicConfig(level=logging.WARNING, format="  %(levelname)s %(message)s")
    layout = StorageLayout(data_dir)
    baseline = maxrss_mb()
    told: list[ReconcileProgress] = []
    told_at: list[float] = []
    shown = [time.monotonic()]

    def tell(progress: ReconcileProgress) -> None:
        told.append(progress)
        told_at.append(time.monotonic())
        if time.monotonic() - shown[0] >= 10:
            shown[0] = time.monotonic()
            print(f"  {name}: {progress.describe()}", file=sys.stderr)

    started = time.monotonic()
    opened = open_or_rebuild(layout)
    opened_s = time.monotonic() - started
    writer = IndexWriter(opened.conn)
    report = reconcile(writer, layout, progress=tell)
    seconds = time.monotonic() - started
    rows = opened.conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
    opened.conn.close()
    return {"phase": name, "seconds": seconds, "open_seconds": opened_s, "rows": rows, "files": report.files,
            "added": told[-1].added if told else 0, "commits": writer.commits, "baseline_rss_mb": baseline,
            "peak_rss_mb": maxrss_mb(), "rebuilt": opened.rebuild,
            # the longest time systemd heard nothing (the supervisor passes each report on)
            "longest_silence_s": max(b - a for a, b in zip([started, *told_at], told_at)) if told_at else seconds}


def run_phase(data_dir: Path, name: str, drop_caches: bool) -> dict[str, object]:
    if drop_caches:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    result = subprocess.run([sys.executable, __file__, "--phase", name, "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=1_000_000)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    parser.add_argument("--drop-caches", action="store_true", help="drop the page cache before each phase (root)")
    parser.add_argument("--json", action="store_true", help="all figures as one JSON object on the last line")
    parser.add_argument("--phase", choices=["rebuild", "start"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.data_dir, args.phase)))
        return 0

    root = Path(tempfile.mkdtemp(prefix="edgenvr-index-recovery-", dir=args.dir))
    layout = StorageLayout(root / "data")
    timeout = start_timeout_seconds()
    try:
        days = args.segments / args.cameras * SEGMENT_SECONDS * SECOND_MS / DAY_MS
        print(f"building {args.segments:,} stand-in segments: {args.cameras} cameras x {days:.1f} days of "
              f"{SEGMENT_SECONDS} s segments in {root}", file=sys.stderr)
        build_s = build(layout, args.cameras, args.segments)
        results = {"segments": args.segments, "cameras": args.cameras, "days": days, "build_seconds": build_s,
                   "dir": str(root), "start_timeout_s": timeout}
        for name in ("rebuild", "start"):
            results[name] = figures = run_phase(layout.data_dir, name, args.drop_caches)
            rate = figures["rows"] / figures["seconds"] if figures["seconds"] else 0.0
            verdict = "PASS" if figures["seconds"] <= timeout else "FAIL"
            print(f"{name:8s} {figures['seconds']:7.1f} s ({rate:,.0f} rows/s; opening {figures['open_seconds']:.1f} s),"
                  f" {figures['rows']:,} rows, {figures['added']:,} added in {figures['commits']} commits; peak RSS"
                  f" {figures['peak_rss_mb']:.0f} MB (interpreter {figures['baseline_rss_mb']:.0f} MB); longest"
                  f" silence {figures['longest_silence_s']:.1f} s"
                  f"  {verdict} against TimeoutStartSec={timeout:.0f}")
        assert results["rebuild"]["rows"] == args.segments, "every segment indexed"
        print(f"build {build_s:.0f} s; index {os.path.getsize(layout.index_path) / 1e6:.0f} MB")
        if args.json:
            print(json.dumps(results))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
