"""Metrics benchmark (issue 13, point 4): what one Prometheus scrape of `GET /api/metrics` costs the box, against
an authenticated `GET /api/cameras` (the UI's camera list) and `GET /api/sync` measured in the same run.

The box: an index of --cameras cameras x --days days of 10 s segments on the real schema (benchmarks/playback.py's
bulk SQL: a motion event every 20 min per camera with its event-video tier, a 10 min outage with its gap row every
3 days), the running totals index migration 9 keeps set as a box that recorded it would have them; after the
index's end, --batch-minutes of closed segment files per camera whose batch is not committed yet (sparse stand-ins
carrying their row in the `user.edgenvr` attribute, as benchmarks/index_recovery.py makes them: a scrape reads
them, as every reader of the index does); --queued clips waiting for the hub and --synced ones delivered in the
outbox. The server: edgenvr.web.server.run_web_process (the web process `edgenvr run` starts) in a process of its
own, an admin's bearer token (`edgenvr user add`, `edgenvr user token`).

Measured: request to last byte (p50/p95 over --requests of each, sent one after another on fresh loopback
connections, the three routes interleaved so the machine's noise hits them alike), and the web process's CPU
(user + system, psutil, all its threads) per request over the same requests; the scrape's size. The page cache is
warm, as it is on a box scraped every minute.

    .venv/bin/python benchmarks/metrics.py                       # 16 cameras x 3 days, ~1 min
    .venv/bin/python benchmarks/metrics.py --cameras 32 --days 7 --requests 300
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))
sys.path.insert(0, str(BENCHMARKS))

import playback  # noqa: E402 - the playback benchmark: its month of index rows, web server and HTTP client
import psutil  # noqa: E402
import record  # noqa: E402

from edgenvr.core.clock import SYSTEM_CLOCK  # noqa: E402
from edgenvr.core.records import SegmentRecord  # noqa: E402
from edgenvr.core.units import DAY_MS, MINUTE_MS  # noqa: E402
from edgenvr.storage.layout import StorageLayout  # noqa: E402
from edgenvr.storage.segment_attributes import write_segment_attribute  # noqa: E402

SEGMENT_BYTES = 5_000_000   # a 10 s segment of a 4 Mbit/s camera
ROUTES = {"metrics": "/api/metrics", "cameras": "/api/cameras", "sync": "/api/sync"}


def build(layout: StorageLayout, cameras: int, days: int, batch_minutes: int, queued: int, synced: int) -> dict[str, int]:
    now = SYSTEM_CLOCK.now_ms() // playback.SEGMENT_MS * playback.SEGMENT_MS
    batch_ms = batch_minutes * MINUTE_MS
    slots = days * DAY_MS // playback.SEGMENT_MS
    t0 = now - batch_ms - slots * playback.SEGMENT_MS
    sample = SimpleNamespace(bytes=SEGMENT_BYTES, sha256="00" * 32, codec="h264", width=1920, height=1080, packets=250)
    counts = playback.build_index(layout, cameras, slots, t0, sample)
    conn = sqlite3.connect(layout.index_path)
    with conn:   # the totals a box that recorded all this would have (index.writer keeps them as it commits)
        conn.execute("UPDATE cameras SET written_bytes = (SELECT SUM(bytes) FROM segments WHERE camera = cameras.id)")
        conn.execute("UPDATE counters SET value = (SELECT SUM(bytes) FROM segments) WHERE name = 'index_segment_bytes'")
        conn.execute("INSERT INTO counters (name, value) VALUES ('index_commits_timed', ?), ('index_commit_us_total', ?),"
                     " ('index_last_commit_ms', ?)", (days * 144, days * 144 * 4000, now - batch_ms))
        rows = [(i % cameras, t0 + (i * 600_000) % (slots * playback.SEGMENT_MS)) for i in range(queued + synced)]
        conn.executemany("INSERT INTO outbox (kind, priority, camera, start_ms, end_ms, created_ms, state, bytes)"
                         " VALUES ('motion', 2, ?, ?, ?, ?, ?, ?)",
                         [(f"cam-{c:02d}", start, start + 40_000, start + 60_000,
                           "queued" if i < queued else "synced", None if i < queued else 20_000_000)
                          for i, (c, start) in enumerate(rows)])
        conn.execute("UPDATE counters SET value = ? WHERE name = 'sync_delivered_clips'", (synced,))
        conn.execute("UPDATE counters SET value = ? WHERE name = 'sync_delivered_bytes'", (synced * 20_000_000,))
    conn.close()
    files = 0
    for camera in playback.camera_ids(cameras):   # the batch not committed yet: closed files after the index's end
        for start_ms in range(now - batch_ms, now, playback.SEGMENT_MS):
            path = layout.segment_path(camera, start_ms)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as handle:
                handle.truncate(SEGMENT_BYTES)
            end_ms = start_ms + playback.SEGMENT_MS
            write_segment_attribute(path, SegmentRecord(camera, start_ms, end_ms, layout.relative(path), SEGMENT_BYTES,
                                                        hashlib.sha256(path.name.encode()).hexdigest(), "h264", 1920,
                                                        1080, 250, end_ms))
            files += 1
    return {**counts, "batch_files": files}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=16)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--batch-minutes", type=int, default=10, help="closed files not yet indexed, per camera "
                        "(index_commit_seconds: 10 min by default)")
    parser.add_argument("--queued", type=int, default=200)
    parser.add_argument("--synced", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="edgenvr-metrics-"))
    server = None
    try:
        layout = StorageLayout(root / "data")
        started = time.perf_counter()
        counts = build(layout, args.cameras, args.days, args.batch_minutes, args.queued, args.synced)
        index_mb = sum(p.stat().st_size for p in layout.data_dir.glob("index.sqlite3*")) / 1e6
        print(f"box: {args.cameras} cameras x {args.days} days of 10 s segments: {counts['segments']:,} segments,"
              f" {counts['events']:,} events, {counts['gaps']:,} gaps ({index_mb:,.0f} MB of index), and"
              f" {counts['batch_files']:,} closed files not indexed yet ({args.batch_minutes} min per camera);"
              f" {args.queued} clips queued, {args.synced} delivered; built in {time.perf_counter() - started:.0f} s")
        port = playback.free_port()
        config_path = root / "box.toml"
        config_path.write_text(
            f'[box]\nid = "bench"\n[storage]\ndata_dir = {json.dumps(str(layout.data_dir))}\n'
            f'[web]\nlisten = "127.0.0.1:{port}"\ntls = false\n[sync]\nhub_url = "https://hub.invalid"\n'
            f'enrolment_token = "unused"\n'
            + "".join(f'[[cameras]]\nid = "{c}"\nurl = "rtsp://192.0.2.1/{c}"\n'
                      for c in playback.camera_ids(args.cameras)))
        token = playback.make_admin(config_path)
        server = playback.start_web_server(root, config_path)
        playback.wait_for_health(port, server, root / "web.log")
        web = psutil.Process(server.pid)
        for path in ROUTES.values():   # warm-up: imports, the first index open, the page cache
            for _ in range(5):
                reply = playback.http_get(port, path, token, keep=True)
                if reply.status != 200:
                    raise playback.BenchmarkError(f"GET {path}: {reply.status} {reply.body[:300]!r}")
        sizes = {name: len(playback.http_get(port, path, token, keep=True).body) for name, path in ROUTES.items()}

        times: dict[str, list[float]] = {name: [] for name in ROUTES}
        cpu: dict[str, float] = {name: 0.0 for name in ROUTES}
        for _ in range(args.requests):
            for name, path in ROUTES.items():
                before = web.cpu_times()
                reply = playback.http_get(port, path, token)
                after = web.cpu_times()
                if reply.status != 200:
                    raise playback.BenchmarkError(f"GET {path}: {reply.status}")
                times[name].append(reply.total_s)
                cpu[name] += (after.user - before.user) + (after.system - before.system)

        result = {"cameras": args.cameras, "days": args.days, **counts, "index_mb": round(index_mb), "routes": {}}
        print(f"{args.requests} requests of each, interleaved, fresh loopback connection each, bearer token of an admin;"
              " web process CPU (user + sys, all threads) per request:")
        for name, path in ROUTES.items():
            p50, p95 = playback.pct(times[name], 50), playback.pct(times[name], 95)
            cpu_ms = cpu[name] / args.requests * 1000
            result["routes"][name] = {"p50_ms": p50 * 1000, "p95_ms": p95 * 1000, "cpu_ms": cpu_ms,
                                      "bytes": sizes[name]}
            print(f"  GET {path:<14} p50 {playback.ms(p50):>9}  p95 {playback.ms(p95):>9}  CPU {cpu_ms:6.2f} ms"
                  f"  ({sizes[name]:,} bytes)")
        ratio = result["routes"]["metrics"]["cpu_ms"] / max(result["routes"]["cameras"]["cpu_ms"], 1e-9)
        print(f"a scrape costs {ratio:.1f}x the CPU of the camera list; at one scrape a minute:"
              f" {result['routes']['metrics']['cpu_ms'] / 60_000:.4%} of a core")
        if args.json:
            print(json.dumps(result))
    finally:
        if server is not None:
            record._stop([server], signal.SIGTERM, timeout=30)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
