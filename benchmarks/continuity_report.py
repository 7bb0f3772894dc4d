"""Continuity report benchmark: what `edgenvr report` costs on a large index, against reading the same rows once.

Builds an index of C cameras x D days of 10 s segments in time order (the real schema, one bulk SQL statement as
benchmarks/retention.py and playback.py do), with a 10-minute outage and its gap row every 6 hours per camera, a
motion event every 20 minutes, and the first 2 hours of each day of one camera recorded on an unsynchronised
clock (as after a reboot before NTP answers). Then, on a
read-only connection (as `edgenvr report` opens it), it times and prints:

  * the reference, in the same run: one pass over the same rows through the covering index the web timeline uses
    (`SELECT start_ms, end_ms FROM segments WHERE camera = ? ...` per camera-day, summed in Python): the least any
    per-day figure can cost;
  * the report of every camera over the whole range, as JSON and as HTML (evidence.continuity_report.make_report,
    signing and the audit record included); ms per camera-day; the ratio to the reference;
  * the peak RSS of the process after each (the report reads a day at a time: it must not grow with the range),
    and the files' sizes.

Targets (printed as PASS/FAIL, never asserted): a year of 16 cameras (5,856 camera-days) in under 5 minutes on
this machine, i.e. < 50 ms per camera-day; peak RSS growth under 100 MB.

    python benchmarks/continuity_report.py [--cameras 8] [--days 31] [--dir /var/tmp] [--keep]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgenvr.config.checking import load_config  # noqa: E402
from edgenvr.core.clock import SYSTEM_CLOCK  # noqa: E402
from edgenvr.core.units import DAY_MS  # noqa: E402
from edgenvr.evidence.audit import AuditTrail  # noqa: E402
from edgenvr.evidence.continuity_report import (  # noqa: E402
    ReportRequest,
    TimeZone,
    make_report,
)
from edgenvr.evidence.identity import device_identity  # noqa: E402
from edgenvr.index import schema as index_schema  # noqa: E402
from edgenvr.index.queries import open_readonly  # noqa: E402
from edgenvr.storage.layout import StorageLayout  # noqa: E402

SEGMENT_MS = 10_000
OUTAGE_EVERY_SLOTS = 6 * 360     # every 6 hours ...
OUTAGE_SLOTS = 60                # ... 10 minutes without video
EVENT_EVERY_SLOTS = 120          # a motion event every 20 minutes
TARGET_MS_PER_CAMERA_DAY = 50.0
TARGET_RSS_GROWTH_MB = 100.0


def build_index(layout: StorageLayout, cameras: int, slots: int, t0: int) -> dict[str, int]:
    conn = index_schema.connect(layout.index_path)
    conn.execute("PRAGMA synchronous=OFF")   # building only
    conn.execute("PRAGMA cache_size=-300000")
    common = {"cams": cameras, "t0": t0, "seg": SEGMENT_MS, "slots": slots, "outage_every": OUTAGE_EVERY_SLOTS,
              "outage_slots": OUTAGE_SLOTS}
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        """WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :count)
           INSERT INTO segments (camera, start_ms, end_ms, bytes, sha256, codec, width, height, packets, wall_end_ms,
                                 origin, retention_class, timeline_ms, boot, clock_state)
           SELECT printf('cam-%02d', c), :t0 + slot * :seg, :t0 + (slot + 1) * :seg, 2500000, zeroblob(32), 'h264',
                  1920, 1080, 250, :t0 + (slot + 1) * :seg + 40, 'recorder', 0, :t0 + slot * :seg, 1,
                  CASE WHEN c = 0 AND slot % 8640 < 720 THEN 0 ELSE 1 END
           FROM (SELECT i % :cams AS c, i / :cams AS slot FROM n)
           WHERE (slot + c * 977) % :outage_every >= :outage_slots""",
        {**common, "count": cameras * slots})
    conn.execute(
        """WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :count)
           INSERT INTO gaps (camera, start_ms, end_ms, reason)
           SELECT printf('cam-%02d', c), :t0 + slot * :seg, :t0 + (slot + :outage_slots) * :seg, 'connection refused'
           FROM (SELECT i % :cams AS c, :outage_every * (i / :cams)
                        + ((-(i % :cams) * 977) % :outage_every + :outage_every) % :outage_every AS slot FROM n)
           WHERE slot > 0 AND slot + :outage_slots <= :slots""",
        {**common, "count": cameras * -(-slots // OUTAGE_EVERY_SLOTS)})
    conn.execute(
        """WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :count)
           INSERT INTO events (camera, kind, subkind, start_ms, end_ms, keep_from_ms, keep_to_ms, zones, peak_score,
                               detail, timeline_keep_to_ms)
           SELECT printf('cam-%02d', i % :cams), 'motion', '', :t0 + (i / :cams) * :every * :seg + 3000,
                  :t0 + (i / :cams) * :every * :seg + 33000, NULL, NULL, '[]', 0.4, '', NULL FROM n""",
        {**common, "count": cameras * (slots // EVENT_EVERY_SLOTS), "every": EVENT_EVERY_SLOTS})
    end_ms = t0 + slots * SEGMENT_MS
    conn.executemany("INSERT INTO cameras (id, state, state_since_ms, state_reason, dropped_json, last_end_ms)"
                     " VALUES (?, 'recording', ?, '', '{}', ?)", [(f"cam-{c:02d}", t0, end_ms) for c in range(cameras)])
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    counts = {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in ("segments", "gaps")}
    conn.close()
    return counts


def reference_pass(layout: StorageLayout, cameras: int, t0: int, days: int) -> float:
    """Seconds to read every row of the range once, a camera-day at a time, through the covering index."""
    conn = open_readonly(layout)
    started = time.monotonic()
    total = 0
    for camera in range(cameras):
        for day in range(days):
            start = t0 + day * DAY_MS
            rows = conn.execute("SELECT start_ms, end_ms FROM segments WHERE camera = ? AND deleting = 0"
                                " AND retention_class IN (0, 1, 2, 3) AND start_ms >= ? AND start_ms < ? AND end_ms > ?",
                                (f"cam-{camera:02d}", start - 1_200_000, start + DAY_MS, start)).fetchall()
            total += sum(end - begin for begin, end in rows)
    seconds = time.monotonic() - started
    conn.close()
    assert total > 0
    return seconds


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--dir", default=None, help="where to build the index (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="edgenvr-report-bench-", dir=args.dir))
    try:
        config_path = root / "edgenvr.toml"
        config_path.write_text(f'[box]\nid = "bench"\n[storage]\ndata_dir = "{root / "data"}"\n'
                               + "".join(f'[[cameras]]\nid = "cam-{c:02d}"\nurl = "rtsp://192.0.2.1/{c}"\n'
                                         for c in range(args.cameras)))
        config = load_config(config_path)
        layout = StorageLayout(config.storage.data_dir)
        layout.data_dir.mkdir(parents=True)
        t0 = (SYSTEM_CLOCK.now_ms() // DAY_MS - args.days - 2) * DAY_MS
        started = time.monotonic()
        # built in a process of its own, so that this one's peak RSS is the reports' alone
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            counts = pool.apply(build_index, (layout, args.cameras, args.days * DAY_MS // SEGMENT_MS, t0))
        print(f"index: {counts['segments']:,} segments, {counts['gaps']:,} gaps, {args.cameras} cameras x {args.days}"
              f" days, built in {time.monotonic() - started:.1f} s")
        camera_days = args.cameras * args.days
        reference = reference_pass(layout, args.cameras, t0, args.days)
        print(f"reference (every row of the range read once): {reference:.2f} s,"
              f" {reference * 1000 / camera_days:.1f} ms per camera-day")
        identity = device_identity(layout, "bench", "bench")
        utc = TimeZone("UTC", ZoneInfo("UTC"))
        rss_before = rss_mb()
        for name in ("report.json", "report.html"):
            conn = open_readonly(layout)
            with AuditTrail(layout, identity) as trail:
                started = time.monotonic()
                make_report(conn, config, layout, identity, trail,
                            ReportRequest(t0, t0 + args.days * DAY_MS, root / name, None, "bench"), zone=utc)
                seconds = time.monotonic() - started
            conn.close()
            per_day = seconds * 1000 / camera_days
            print(f"{name}: {seconds:.2f} s, {per_day:.1f} ms per camera-day ({seconds / reference:.1f}x the"
                  f" reference), {(root / name).stat().st_size / 1e6:.2f} MB, peak RSS {rss_mb():.0f} MB"
                  f" [{'PASS' if per_day < TARGET_MS_PER_CAMERA_DAY else 'FAIL'} < {TARGET_MS_PER_CAMERA_DAY:.0f} ms"
                  f" per camera-day; a year of 16 cameras: {per_day * 16 * 366 / 1000:.0f} s]")
        growth = rss_mb() - rss_before
        print(f"peak RSS growth over the reports: {growth:.0f} MB (before them: {rss_before:.0f} MB)"
              f" [{'PASS' if growth < TARGET_RSS_GROWTH_MB else 'FAIL'} < {TARGET_RSS_GROWTH_MB:.0f} MB]")
    finally:
        if args.keep:
            print(f"kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
