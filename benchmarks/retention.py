"""Retention benchmark: one sweep on a large index costs what it deletes, not what is stored.

This script owns the retention benchmark. It builds an index of N segments (default 1,000,000: 8 cameras
of 10 s segments, ~14.5 days) in one bulk transaction, with event video, a hold and old offline events,
creates real small files for the oldest V rows (default 10,000), and then times, on the real
RetentionPolicy with its real IndexWriter:

  * an age sweep: max_age_days set so that exactly the V oldest segments are due;
  * a disk-pressure sweep: a quota about V segments short, so the ring deletes the next V oldest
    (their files are created too);
  * `edgenvr retention` (build_report) on the same index, before and after.

Segment files are tiny (retention never reads them); the index says 2.5 MB each, so the quota figure is
realistic. Targets are printed as PASS/FAIL and never asserted: a benchmark reports, a test decides.

    python benchmarks/retention.py [--segments 1000000] [--victims 10000] [--dir /var/tmp] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgenvr.config.records import Config, Quota, StorageConfig  # noqa: E402
from edgenvr.core.clock import SYSTEM_CLOCK  # noqa: E402
from edgenvr.index import schema as index_schema  # noqa: E402
from edgenvr.index.writer import IndexWriter  # noqa: E402
from edgenvr.retention.policy import DAY_MS, RetentionPolicy  # noqa: E402
from edgenvr.retention.report import build_report, format_report  # noqa: E402
from edgenvr.storage.layout import StorageLayout  # noqa: E402

CAMERAS = 8
SEGMENT_MS = 10_000
SEGMENT_BYTES = 2_500_000   # what the index says (a 2 Mbit/s camera); the files themselves are tiny
FILE_BYTES = 1024
TARGET_SWEEP_SECONDS = 2.0


def build_index(layout: StorageLayout, segments: int, t0: int) -> None:
    """Bulk insert in one transaction, generated inside SQLite (a Python loop would dominate)."""
    conn = index_schema.connect(layout.index_path)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        """
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :count)
        INSERT INTO segments (camera, start_ms, end_ms, bytes, sha256, codec, width, height, packets, wall_end_ms,
                              origin, retention_class, timeline_ms)
        SELECT printf('cam-%d', i % :cameras), :t0 + (i / :cameras) * :seg, :t0 + (i / :cameras + 1) * :seg,
               :bytes, zeroblob(32), 'h264', 1920, 1080, 250, :t0 + (i / :cameras + 1) * :seg, 'recorder',
               -- every 20th segment of the newer half is event video; one hour of cam-0 is held
               CASE WHEN i / :cameras >= :half AND (i / :cameras) % 20 = 0 THEN 1
                    WHEN i % :cameras = 0 AND i / :cameras BETWEEN :held AND :held + 359 THEN 2 ELSE 0 END,
               :t0 + (i / :cameras) * :seg   -- the timeline reads like the wall clock on a box that never jumped
        FROM n
        """,
        {"count": segments, "cameras": CAMERAS, "t0": t0, "seg": SEGMENT_MS, "bytes": SEGMENT_BYTES,
         "half": segments // CAMERAS // 2, "held": segments // CAMERAS * 3 // 4})
    # recorded in this boot, on a clock that never jumped: the timeline reads like the wall clock
    conn.execute("INSERT INTO boots (id, boot_id, base_ms, first_ms) VALUES (1, ?, ?, ?)",
                 (SYSTEM_CLOCK.boot_id(), SYSTEM_CLOCK.now_ms() - SYSTEM_CLOCK.boot_ms(), t0))
    held_from = t0 + segments // CAMERAS * 3 // 4 * SEGMENT_MS
    conn.execute("INSERT INTO holds (camera, from_ms, to_ms, reason, created_ms) VALUES ('cam-0', ?, ?, 'bench', ?)",
                 (held_from, held_from + 360 * SEGMENT_MS, SYSTEM_CLOCK.now_ms()))
    # events for the event video (within event_days), and 1000 old offline events that expire
    conn.execute(
        """INSERT INTO events (camera, kind, start_ms, end_ms, keep_from_ms, keep_to_ms, timeline_keep_to_ms)
           SELECT camera, 'motion', start_ms + 1000, start_ms + 2000, start_ms - 9000, start_ms + 22000, start_ms + 22000
           FROM segments WHERE retention_class = 1""")
    conn.execute(
        """WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < 1000)
           INSERT INTO events (camera, kind, start_ms, end_ms, timeline_keep_to_ms)
           SELECT printf('cam-%d', i % :cameras), 'offline', :t0 + i * 60000, :t0 + i * 60000 + 30000,
                  :t0 + i * 60000 + 30000 FROM n""",
        {"cameras": CAMERAS, "t0": t0 - 40 * DAY_MS})
    conn.execute("COMMIT")
    conn.close()


def create_files(layout: StorageLayout, rows: list[tuple[str, int]]) -> None:
    payload = b"\0" * FILE_BYTES
    made: set[Path] = set()
    for camera, start_ms in rows:
        path = layout.segment_path(camera, start_ms)
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        with open(path, "wb") as f:
            f.write(payload)


def timed_report(conn, config: Config, layout: StorageLayout) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    format_report(build_report(conn, config, layout))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=1_000_000)
    parser.add_argument("--victims", type=int, default=10_000)
    parser.add_argument("--dir", default=None, help="where to build the data dir (default: system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args()
    victims = args.victims - args.victims % CAMERAS   # the same number of segments from every camera

    root = Path(tempfile.mkdtemp(prefix="edgenvr-retention-bench-", dir=args.dir))
    layout = StorageLayout(root / "data")
    try:
        per_camera = args.segments // CAMERAS
        at = SYSTEM_CLOCK.now_ms()
        t0 = at - per_camera * SEGMENT_MS
        started = time.perf_counter()
        build_index(layout, args.segments, t0)
        built = time.perf_counter() - started
        conn = index_schema.connect(layout.index_path)
        oldest = conn.execute("SELECT camera, start_ms FROM segments ORDER BY start_ms LIMIT ?",
                              (2 * victims,)).fetchall()
        started = time.perf_counter()
        create_files(layout, [(r[0], r[1]) for r in oldest])
        files = time.perf_counter() - started
        index_mb = sum(p.stat().st_size for p in layout.data_dir.glob("index.sqlite3*")) / 1e6
        print(f"index: {args.segments:,} segments, 8 cameras, {per_camera * SEGMENT_MS / DAY_MS:.1f} days;"
              f" built in {built:.1f} s ({index_mb:.0f} MB); {2 * victims:,} real files for the oldest rows"
              f" in {files:.1f} s, on {root}")

        # Age: exactly the `victims` oldest segments are older than max_age_days (the cut-off falls in the
        # middle of a segment, so the seconds the benchmark takes do not move it past the next one).
        cutoff = t0 + victims // CAMERAS * SEGMENT_MS - SEGMENT_MS // 2
        storage = StorageConfig(data_dir=layout.data_dir, quota=Quota(bytes=10**18), min_free_bytes=0,
                                max_age_days=(SYSTEM_CLOCK.now_ms() - cutoff) / DAY_MS, event_days=30)
        config = Config(storage=storage)
        report_before = timed_report(conn, config, layout)
        started = time.perf_counter()
        writer = IndexWriter(conn)   # reads the indexed byte total once, as at start-up
        writer_init = time.perf_counter() - started
        storage = StorageConfig(data_dir=layout.data_dir, quota=Quota(bytes=10**18), min_free_bytes=0,
                                max_age_days=(SYSTEM_CLOCK.now_ms() - cutoff) / DAY_MS, event_days=30)
        config = Config(storage=storage)
        policy = RetentionPolicy(config, layout, writer)
        started = time.perf_counter()
        result = policy.sweep()
        age_sweep = time.perf_counter() - started
        print(f"age sweep: deleted {result.deleted:,} segments ({result.reason}), {result.events_deleted} expired"
              f" events, in {age_sweep:.2f} s ({age_sweep / max(result.deleted, 1) * 1e6:.0f} us per segment)"
              f"  [{'PASS' if age_sweep < TARGET_SWEEP_SECONDS and result.deleted == victims else 'FAIL'}:"
              f" {victims:,} in < {TARGET_SWEEP_SECONDS:.0f} s]")

        # Pressure: a quota `victims` segments short (plus half a segment for the index's own growth).
        used = policy.usage().used
        storage = StorageConfig(data_dir=layout.data_dir, quota=Quota(bytes=used - victims * SEGMENT_BYTES
                                                                      + SEGMENT_BYTES // 2),
                                min_free_bytes=0, max_age_days=None, event_days=30)
        config = Config(storage=storage)
        policy = RetentionPolicy(config, layout, writer)
        started = time.perf_counter()
        result = policy.sweep()
        pressure_sweep = time.perf_counter() - started
        ok = pressure_sweep < TARGET_SWEEP_SECONDS and abs(result.deleted - victims) <= 2
        print(f"pressure sweep: deleted {result.deleted:,} segments ({result.reason}) in {pressure_sweep:.2f} s"
              f" ({pressure_sweep / max(result.deleted, 1) * 1e6:.0f} us per segment)"
              f"  [{'PASS' if ok else 'FAIL'}: ~{victims:,} in < {TARGET_SWEEP_SECONDS:.0f} s]")
        started = time.perf_counter()
        nothing = policy.sweep()
        idle_sweep = time.perf_counter() - started
        print(f"sweep with nothing due: {idle_sweep * 1000:.1f} ms (deleted {nothing.deleted})")
        print(f"IndexWriter start (sums indexed bytes once): {writer_init:.2f} s")
        conn.close()

        ro = index_schema.connect(layout.index_path, readonly=True)
        report_after = timed_report(ro, config, layout)
        ro.close()
        config_path = root / "edgenvr.toml"
        config_path.write_text(f'[storage]\ndata_dir = "{layout.data_dir}"\nquota = "{storage.quota}"\n'
                               'min_free = "0"\nevent_days = 30\n')
        started = time.perf_counter()
        cli = subprocess.run([sys.executable, "-m", "edgenvr", "retention", "--config", str(config_path)],
                             capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
        cli_seconds = time.perf_counter() - started
        print(f"retention report (build_report): {report_before:.2f} s before the sweeps, {report_after:.2f} s after;"
              f" `edgenvr retention` command: {cli_seconds:.2f} s (exit {cli.returncode},"
              f" {len(cli.stdout.splitlines())} lines)")
        left = list((layout.segments_dir).glob("*/*/*/*.mp4"))
        print(f"files left of the {2 * victims:,} created: {len(left):,}")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
