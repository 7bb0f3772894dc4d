"""Playback benchmark (issue 11): the web server's seekable video and timeline on a month of 32 cameras, against
ffmpeg's concat of the same files, and whether serving playback and live viewers slows recording.

Part 1, "index" (a synthetic month, a web server of its own):
  * An index of 32 cameras x 30 days of 10 s segments as the recorder writes them (~8.3 M rows: the real schema,
    filled in time order by one bulk SQL statement as benchmarks/retention.py does, with a motion event every
    20 min per camera and its event-video tier, and a 10 min outage with its gap row every 3 days per camera).
    Real segment files exist only for the ranges played: 60 written by the recorder's own SegmentWriter from the
    record benchmark's 1080p clip (25 fps, GOP 50, ~4 Mbit/s, as benchmarks/export.py does; every row of the index
    carries that file's size and SHA-256, which are the same for every segment made from the clip), and hard links
    to them for the segments of the random points (each a path of its own, so the server parses each as new; the
    page cache is warm, as for every figure here).
  * The server: edgenvr.web.server.run_web_process (the web process `edgenvr run` starts, AppRunner on a loopback
    port) in a process of its own, no supervisor; an admin made with `edgenvr user add`, a bearer token from
    `edgenvr user token`.
  * Time to the first byte of video of `GET /api/cameras/{c}/video.mp4?start_ms&end_ms`, a 10 min range at a random
    camera and point of the month (never planned before), then `Range: bytes=<middle>-` on the same range (the
    seek a player makes), and a Range request at the middle of a range never planned before (a cold seek);
    p50/p95 over --requests of each. Target p95 < 300 ms. The connection is closed after the first body byte.
  * `GET /api/cameras/{c}/timeline` of a random whole UTC day: request to last byte, p50/p95. Target p95 < 50 ms.
  * Throughput: the whole body of a 10 min range (60 real segments) over loopback against
    `ffmpeg -f concat -safe 0 -i LIST -c copy -f mp4 -movflags frag_keyframe+empty_moov OUT` of the same files,
    best of 3 alternating rounds, page cache warm. Target <= 1.0x ffmpeg's wall time.

Part 2, "recording" (a real `edgenvr run` with [web] recording --cameras simulated 1080p RTSP cameras, 10 s segments,
motion off; index_commit_seconds --commit-seconds so commits happen within a phase), phases of --phase-seconds:
  (a) recording alone; (b) 50 busy playback clients; (c) 8 busy playback clients + 8 live viewers; (d) 8 live
  viewers alone (to split (c)'s web CPU between the two kinds). A busy playback client loops: video.mp4 of a
  random recorded range of a random camera (10-120 s, ending >= 15 s ago) read to its end, then two
  `Range: bytes=N-` seeks at random N read to the end; keep-alive HTTP/1.1. A live viewer is a WebSocket on
  /api/cameras/{c}/live (a camera each) reading every message. Clients run in processes of their own; their CPU
  is printed apart (a real box does not run its viewers).
  For each phase: dropped packets (the recorders' counters in the index, `cameras.dropped_json`, as record.py and
  `edgenvr status --json` read them; the phase's window plus a cool-down long enough for its counters to be
  committed), frames missing from the recorded files (every packet matched to its place in the looped clip, as
  record.py does, attributed to the phase by its time), gaps and recorder restarts; the supervisor's index commit
  latency; CPU seconds per process (psutil) and web CPU over idle per playback stream and per live viewer; how
  long each process's threads waited for a CPU per CPU-second they ran (/proc/PID/task/*/schedstat, as motion.py
  reads it: who is starved when the two cores are full); bytes served; what the viewers got; the busiest other
  processes on the machine (a run disturbed by something else is visible).
  Commit latency: nothing in edgenvr exposes it (the writer counts commits, it does not time them), so the
  supervisor runs as `python -c <shim> run --config ...`: edgenvr's own command line after wrapping
  IndexWriter.commit, IndexWriter.add_segment and IndexHousekeeping.step with timers that append a JSON line per
  commit and per step to a file (a few microseconds each). It gives each commit's duration, the longest interval
  between the supervisor's once-a-second steps (its loop's lag), and segment close (the recorder's wall_end_ms) to
  committed. As an outside check, the benchmark polls the index read-only once a second for new rows: close to
  visible to a reader.
  The test cameras run on the same two cores. Their server stamps each frame with its clock when it pushes it
  (appsrc do-timestamp): a starved server pushes late frames back to back with (nearly) equal timestamps, and the
  recorder drops a picture whose DTS does not move forward (non_increasing_dts). Each break in a file is printed
  with its time, and one whose pictures on both sides are less time apart than the pictures between them is
  marked "camera timestamps bunched". `--simulator-nice -10` (root) gives the test cameras' threads priority over
  the box's processes, as real cameras on their own hardware would have; the default is 0, the same as everyone.
  Target (PASS/FAIL): zero dropped packets in every phase; "the 2-core box serves 8 playback + 8 live viewers
  while recording 16 cameras": phase (c) with no dropped packet, missing frame, gap or restart, every live viewer
  receiving >= 95% of its camera's bit rate with no fragment skipped, and every playback stream reading at least
  its video's bit rate (real time).

Targets are printed as PASS/FAIL and never asserted: a benchmark reports, a test decides.

    .venv/bin/python benchmarks/playback.py                  # both parts, ~9 min, ~5 GB in the temp dir
    .venv/bin/python benchmarks/playback.py --part index --requests 200
    .venv/bin/python benchmarks/playback.py --part recording --phase-seconds 60 [--simulator-nice -10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import shlex
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))
sys.path.insert(0, str(BENCHMARKS))

import av
import psutil
import record  # the recording benchmark: its clip, process accounting and recorded-file scan

from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.core.units import DAY_MS, HOUR_MS, MINUTE_MS
from edgenvr.index import schema as index_schema
from edgenvr.recording.segment_files import SegmentWriter
from edgenvr.storage.layout import StorageLayout

SEGMENT_MS = 10_000
RANGE_MS = 10 * MINUTE_MS
SLOTS_PER_DAY = DAY_MS // SEGMENT_MS
EVENT_EVERY_SLOTS = 120            # a motion event every 20 min per camera, 30 s long, at slot offset 1 (+3 s)
EVENT_VIDEO_SLOTS = 7              # its kept video (10 s before, 20 s after) covers slot offsets 0..6
OUTAGE_EVERY_SLOTS = 3 * SLOTS_PER_DAY
OUTAGE_SLOTS = 60                  # 10 min without video, with its gap row
PASSWORD = "benchmark-password-1"
CHUNK = 1 << 20

TARGET_FIRST_BYTE_P95_S = 0.300
TARGET_TIMELINE_P95_S = 0.050
TARGET_THROUGHPUT_RATIO = 1.0
LIVE_SHARE_TARGET = 0.95           # of the camera's bit rate, for a live viewer to count as served
PLAYBACK_SPEED_TARGET = 1.0        # x the video's bit rate, for a playback stream to count as served


class BenchmarkError(RuntimeError):
    """The benchmark could not run as designed."""


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def camera_ids(count: int) -> list[str]:
    return [f"cam-{i:02d}" for i in range(count)]


def edgenvr_cli(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "edgenvr", *args], input=stdin, capture_output=True, text=True, check=False,
                          timeout=120)
    if done.returncode != 0:
        raise BenchmarkError(f"edgenvr {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout


def make_admin(config_path: Path) -> str:
    """An admin made with `edgenvr user add` and its bearer token from `edgenvr user token`."""
    edgenvr_cli("user", "add", "--config", str(config_path), "--name", "admin", "--role", "admin",
                "--password-stdin", stdin=PASSWORD + "\n")
    return edgenvr_cli("user", "token", "--config", str(config_path), "--name", "admin",
                       "--label", "playback benchmark").strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    first_byte_s: float      # request sent -> first body byte (or the whole head, for an empty body)
    total_s: float           # request sent -> last byte read
    body_bytes: int
    body: bytes = b""        # kept only when asked


def http_get(port: int, path: str, token: str, headers: dict[str, str] | None = None, *,
             whole: bool = True, keep: bool = False) -> Reply:
    """One GET on a fresh loopback connection (connected before the clock starts). whole=False: stop at the first
    body byte and close the connection (what a player does when it seeks away)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()) + "Connection: close\r\n\r\n").encode()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    try:
        started = time.perf_counter()
        sock.sendall(request)
        head = bytearray()
        while (end := head.find(b"\r\n\r\n")) < 0:
            got = sock.recv_into(view)
            if not got:
                raise BenchmarkError(f"GET {path}: connection closed before the answer's head")
            head += view[:got]
        lines = bytes(head[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(fields.get("content-length", "-1"))
        body = bytearray(head[end + 4:]) if keep else bytearray()
        got_bytes = len(head) - end - 4
        while got_bytes == 0 and length != 0:
            got = sock.recv_into(view)
            if not got:
                break
            got_bytes += got
            if keep:
                body += view[:got]
        first = time.perf_counter() - started
        if whole:
            while length < 0 or got_bytes < length:
                got = sock.recv_into(view)
                if not got:
                    break
                got_bytes += got
                if keep:
                    body += view[:got]
        total = time.perf_counter() - started
    finally:
        sock.close()
    return Reply(status, fields, first, total, got_bytes, bytes(body))


# ---------------------------------------------------------------------------------------------
# Part 1: a month of 32 cameras in the index, a web server of its own
# ---------------------------------------------------------------------------------------------

def clip_mp4() -> Path:
    """The record benchmark's 10 s 1080p clip, remuxed once to MP4 for its timestamps (as export.py does)."""
    raw = record.bench_clip()
    mp4 = raw.with_suffix(".mp4")
    if not mp4.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-r", str(record.FPS), "-i", str(raw), "-c", "copy", str(mp4)],
                       check=True)
    return mp4


def write_segments(layout: StorageLayout, clip: Path, camera: str, starts: list[int]) -> Any:
    """Real 10 s segments, written by the recorder's SegmentWriter; returns the last one's SegmentRecord."""
    written = None
    for start_ms in starts:
        with av.open(str(clip)) as source:   # afresh each time: the segment writer rebases its packets
            stream = source.streams.video[0]
            packets = [p for p in source.demux(stream) if p.size]
            segment = SegmentWriter(layout, camera, stream, start_ms, packets[0].dts, stream.time_base)
            for packet in packets:
                segment.write(packet)
            written = segment.close(start_ms + SEGMENT_MS, SYSTEM_CLOCK.now_ms())
    return written


def in_outage(camera: int, slot: int) -> bool:
    return (slot + camera * 977) % OUTAGE_EVERY_SLOTS < OUTAGE_SLOTS


def build_index(layout: StorageLayout, cameras: int, slots: int, t0: int, sample: Any) -> dict[str, int]:
    """The month, in time order (as the writer commits it), by bulk SQL on the real schema. Every segment row
    carries `sample`'s size, hash and packets (the same for every file made from the clip)."""
    conn = index_schema.connect(layout.index_path)
    conn.execute("PRAGMA synchronous=OFF")   # building only; the server reads with the index's own settings
    conn.execute("PRAGMA cache_size=-500000")
    common = {"cams": cameras, "t0": t0, "seg": SEGMENT_MS, "slots": slots, "every": EVENT_EVERY_SLOTS,
              "outage_every": OUTAGE_EVERY_SLOTS, "outage_slots": OUTAGE_SLOTS}
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        """WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :count)
           INSERT INTO segments (camera, start_ms, end_ms, bytes, sha256, codec, width, height, packets, wall_end_ms,
                                 origin, retention_class, timeline_ms, boot, clock_state)
           SELECT printf('cam-%02d', c), :t0 + slot * :seg, :t0 + (slot + 1) * :seg, :bytes, :sha, :codec, :width,
                  :height, :packets, :t0 + (slot + 1) * :seg + 40, 'recorder',
                  CASE WHEN (slot + c * 37) % :every < :event_slots THEN 1 ELSE 0 END, :t0 + slot * :seg, 1, 1
           FROM (SELECT i % :cams AS c, i / :cams AS slot FROM n)
           WHERE (slot + c * 977) % :outage_every >= :outage_slots""",
        {**common, "count": cameras * slots, "bytes": sample.bytes, "sha": bytes.fromhex(sample.sha256),
         "codec": sample.codec, "width": sample.width, "height": sample.height, "packets": sample.packets,
         "event_slots": EVENT_VIDEO_SLOTS})
    conn.execute(
        """WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :count)
           INSERT INTO events (camera, kind, subkind, start_ms, end_ms, keep_from_ms, keep_to_ms, zones, peak_score,
                               detail, timeline_keep_to_ms)
           SELECT printf('cam-%02d', c), 'motion', '', :t0 + slot * :seg + 3000, :t0 + slot * :seg + 33000,
                  :t0 + slot * :seg - 7000, :t0 + slot * :seg + 53000, '[]', 0.42, '', :t0 + slot * :seg + 53000
           FROM (SELECT i % :cams AS c,
                        :every * (i / :cams) + ((1 - (i % :cams) * 37) % :every + :every) % :every AS slot FROM n)
           WHERE slot < :slots AND (slot + c * 977) % :outage_every >= :outage_slots""",
        {**common, "count": cameras * -(-slots // EVENT_EVERY_SLOTS)})
    conn.execute(
        """WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :count)
           INSERT INTO gaps (camera, start_ms, end_ms, reason)
           SELECT printf('cam-%02d', c), :t0 + slot * :seg, :t0 + (slot + :outage_slots) * :seg,
                  'camera offline: connection refused'
           FROM (SELECT i % :cams AS c, :outage_every * (i / :cams)
                        + ((-(i % :cams) * 977) % :outage_every + :outage_every) % :outage_every AS slot FROM n)
           WHERE slot + :outage_slots <= :slots""",
        {**common, "count": cameras * -(-slots // OUTAGE_EVERY_SLOTS)})
    end_ms = t0 + slots * SEGMENT_MS
    conn.executemany("INSERT INTO cameras (id, state, state_since_ms, state_reason, dropped_json, last_end_ms)"
                     " VALUES (?, 'recording', ?, '', '{}', ?)", [(c, t0, end_ms) for c in camera_ids(cameras)])
    base = SYSTEM_CLOCK.now_ms() - SYSTEM_CLOCK.boot_ms()
    conn.execute("INSERT INTO boots (id, boot_id, base_ms, first_ms, offset_ms) VALUES (1, ?, ?, ?, ?)",
                 (SYSTEM_CLOCK.boot_id(), base, t0, base))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    counts = {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
              for table in ("segments", "events", "gaps")}
    conn.close()
    return counts


def link_range(layout: StorageLayout, source: Path, camera: str, t0: int, start_ms: int, end_ms: int) -> int:
    """Hard links to `source` for every segment of the camera overlapping [start, end); returns how many made."""
    made = 0
    for slot in range((start_ms - t0) // SEGMENT_MS, (end_ms - 1 - t0) // SEGMENT_MS + 1):
        path = layout.segment_path(camera, t0 + slot * SEGMENT_MS)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, path)
        made += 1
    return made


def random_point(rng: random.Random, cameras: int, t0: int, slots: int) -> tuple[int, int]:
    """(camera number, start ms) of a 10 min range with no outage in it, anywhere but the first and last hour."""
    while True:
        camera = rng.randrange(cameras)
        start = rng.randrange(t0 + HOUR_MS, t0 + slots * SEGMENT_MS - HOUR_MS - RANGE_MS)
        first, last = (start - t0) // SEGMENT_MS, (start + RANGE_MS - 1 - t0) // SEGMENT_MS
        if not any(in_outage(camera, slot) for slot in range(first, last + 1)):
            return camera, start


def start_web_server(workdir: Path, config_path: Path) -> subprocess.Popen[bytes]:
    code = ("import sys; from edgenvr.config.checking import load_config; "
            "from edgenvr.web.server import run_web_process; run_web_process(load_config(sys.argv[1]), 'web')")
    return record._spawn([sys.executable, "-c", code, str(config_path)], workdir / "web.log")


def wait_for_health(port: int, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchmarkError(f"the web server exited with {process.returncode}:\n{record._tail(log_path)}")
        try:
            if http_get(port, "/api/health", "-").status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise BenchmarkError(f"the web server did not answer within {timeout:.0f} s:\n{record._tail(log_path)}")


def video_path(camera: str, start_ms: int, end_ms: int) -> str:
    return f"/api/cameras/{camera}/video.mp4?start_ms={start_ms}&end_ms={end_ms}"


def first_byte(port: int, token: str, path: str, headers: dict[str, str] | None = None) -> Reply:
    reply = http_get(port, path, token, headers, whole=False)
    if reply.status not in (200, 206):
        raise BenchmarkError(f"GET {path} {headers or ''}: {reply.status}")
    return reply


def part_index(args: argparse.Namespace, root: Path, clip: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    cameras, days = args.index_cameras, args.index_days
    slots = days * SLOTS_PER_DAY
    end_ms = SYSTEM_CLOCK.now_ms() // SEGMENT_MS * SEGMENT_MS
    t0 = end_ms - slots * SEGMENT_MS
    layout = StorageLayout(root / "index-data")
    result: dict[str, Any] = {"cameras": cameras, "days": days}

    # The 10 min stretch played whole (throughput): 60 real segments of one camera at a random point.
    while True:
        through_camera = rng.randrange(cameras)
        through_slot = rng.randrange(SLOTS_PER_DAY, slots - SLOTS_PER_DAY)
        if not any(in_outage(through_camera, s) for s in range(through_slot, through_slot + 60)):
            break
    through_start = t0 + through_slot * SEGMENT_MS
    started = time.perf_counter()
    sample = write_segments(layout, clip, f"cam-{through_camera:02d}",
                            [through_start + n * SEGMENT_MS for n in range(RANGE_MS // SEGMENT_MS)])
    written_s = time.perf_counter() - started
    started = time.perf_counter()
    counts = build_index(layout, cameras, slots, t0, sample)
    built_s = time.perf_counter() - started
    index_mb = sum(p.stat().st_size for p in layout.data_dir.glob("index.sqlite3*")) / 1e6
    result.update(counts, index_mb=round(index_mb), built_s=round(built_s, 1))
    print(f"index: {cameras} cameras x {days} days of 10 s segments: {counts['segments']:,} segments, "
          f"{counts['events']:,} motion events, {counts['gaps']:,} gaps; {index_mb:,.0f} MB, built in {built_s:.0f} s; "
          f"60 real segments ({sample.bytes / 1e6:.2f} MB each, SegmentWriter) written in {written_s:.1f} s")

    points = [random_point(rng, cameras, t0, slots) for _ in range(2 * args.requests + 3)]
    source = layout.segment_path(f"cam-{through_camera:02d}", through_start)
    links = sum(link_range(layout, source, f"cam-{c:02d}", t0, s, s + RANGE_MS) for c, s in points)
    print(f"  {len(points)} random 10 min points: {links:,} hard links to a real segment (a path each)")

    port = free_port()
    config_path = root / "index.toml"
    config_path.write_text(
        f'[box]\nid = "bench"\n[storage]\ndata_dir = {json.dumps(str(layout.data_dir))}\n'
        f'[web]\nlisten = "127.0.0.1:{port}"\ntls = false\n'
        + "".join(f'[[cameras]]\nid = "{c}"\nurl = "rtsp://192.0.2.1/{c}"\n' for c in camera_ids(cameras)))
    token = make_admin(config_path)
    server = start_web_server(root, config_path)
    try:
        wait_for_health(port, server, root / "web.log")
        web = psutil.Process(server.pid)
        everyone, measuring = record._all_process_cpu(), time.monotonic()
        print(f"  web server: edgenvr.web.server.run_web_process in its own process (pid {server.pid}), "
              f"http://127.0.0.1:{port}, bearer token of an admin made by `edgenvr user add`")
        for camera, start in points[:3]:   # warm-up (imports, the audit trail's first open), not counted
            first_byte(port, token, video_path(f"cam-{camera:02d}", start, start + RANGE_MS))

        plain, seek, cold_seek, sizes = [], [], [], []
        for camera, start in points[3:3 + args.requests]:
            path = video_path(f"cam-{camera:02d}", start, start + RANGE_MS)
            reply = first_byte(port, token, path)
            plain.append(reply.first_byte_s)
            size = int(reply.headers["content-length"])
            sizes.append(size)
            seek.append(first_byte(port, token, path, {"Range": f"bytes={size // 2}-"}).first_byte_s)
        middle = int(statistics.median(sizes)) // 2
        for camera, start in points[3 + args.requests:]:
            path = video_path(f"cam-{camera:02d}", start, start + RANGE_MS)
            cold_seek.append(first_byte(port, token, path, {"Range": f"bytes={middle}-"}).first_byte_s)
        result["first_byte"] = {}
        print(f"video.mp4 of a 10 min range ({statistics.median(sizes) / 1e6:.0f} MB, ~61 segments), request to first"
              f" body byte, {args.requests} random points each:")
        for label, key, values in (("never planned before", "plain", plain),
                                   ("Range: bytes=<middle>- right after (a seek)", "seek", seek),
                                   ("Range: bytes=<middle>- of a range never planned", "cold_seek", cold_seek)):
            p50, p95 = pct(values, 50), pct(values, 95)
            result["first_byte"][key] = {"p50_s": p50, "p95_s": p95, "max_s": max(values), "n": len(values)}
            print(f"  {label:<50} p50 {ms(p50):>9}  p95 {ms(p95):>9}  max {ms(max(values)):>9}"
                  f"  [{verdict(p95 < TARGET_FIRST_BYTE_P95_S)}: p95 < {TARGET_FIRST_BYTE_P95_S * 1000:.0f} ms]")

        timeline, stretches, events = [], 0, 0
        full_days = [t0 - t0 % DAY_MS + d * DAY_MS for d in range(1, days)]
        for _ in range(args.timelines):
            camera, day = rng.randrange(cameras), rng.choice(full_days)
            reply = http_get(port, f"/api/cameras/cam-{camera:02d}/timeline?start_ms={day}&end_ms={day + DAY_MS}",
                             token, keep=True)
            if reply.status != 200:
                raise BenchmarkError(f"timeline: {reply.status} {reply.body[:200]!r}")
            timeline.append(reply.total_s)
            answer = json.loads(reply.body)
            stretches += len(answer["recorded"])
            events += len(answer["events"])
        p50, p95 = pct(timeline, 50), pct(timeline, 95)
        result["timeline"] = {"p50_s": p50, "p95_s": p95, "max_s": max(timeline), "n": len(timeline)}
        print(f"timeline of a random UTC day ({SLOTS_PER_DAY:,} segments, ~{events / len(timeline):.0f} events,"
              f" ~{stretches / len(timeline):.1f} stretches), request to last byte, {len(timeline)} requests:\n"
              f"  p50 {ms(p50)}  p95 {ms(p95)}  max {ms(max(timeline))}"
              f"  [{verdict(p95 < TARGET_TIMELINE_P95_S)}: p95 < {TARGET_TIMELINE_P95_S * 1000:.0f} ms]")

        result["throughput"] = throughput(root, layout, port, token, web, f"cam-{through_camera:02d}", through_start)
        seconds = time.monotonic() - measuring
        others_cpu, others = record._other_processes(everyone, record._all_process_cpu(), {os.getpid(), server.pid},
                                                     seconds)
        result["other_load_core_share"] = others_cpu / seconds
        print(f"other processes on the machine during part 1's {seconds:.0f} s: {others_cpu / seconds:.0%} of a core ("
              + ", ".join(f"{o['name']} {o['core_share']:.0%}" for o in others) + ")")
    finally:
        record._stop([server], signal.SIGTERM, timeout=30)
    aborted = (root / "web.log").read_text(errors="replace").count("Error handling request")
    if aborted:
        print(f"web log: {aborted} 'Error handling request' tracebacks (aiohttp's ClientConnectionResetError, logged at"
              f" ERROR, when a client closes a video it no longer wants; {3 + 3 * args.requests} such closes here)")
    return result


def throughput(root: Path, layout: StorageLayout, port: int, token: str, web: psutil.Process, camera: str,
               start_ms: int) -> dict[str, Any]:
    files = [layout.segment_path(camera, start_ms + n * SEGMENT_MS) for n in range(RANGE_MS // SEGMENT_MS)]
    listing = root / "concat.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in files))
    for path in files:   # the page cache warm for both
        with open(path, "rb") as f:
            while f.read(CHUNK):
                pass
    out = root / "ffmpeg-out.mp4"
    command = ["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
               "-f", "mp4", "-movflags", "frag_keyframe+empty_moov", str(out)]
    path = video_path(camera, start_ms, start_ms + RANGE_MS)
    ours: list[tuple[float, float, float, int]] = []
    theirs: list[tuple[float, float, int]] = []
    for _ in range(3):
        web_cpu = sum(web.cpu_times()[:2])
        client_cpu = time.process_time()
        reply = http_get(port, path, token)
        if reply.status != 200 or reply.body_bytes != int(reply.headers["content-length"]):
            raise BenchmarkError(f"throughput: {reply.status}, {reply.body_bytes} bytes")
        ours.append((reply.total_s, sum(web.cpu_times()[:2]) - web_cpu, time.process_time() - client_cpu,
                     reply.body_bytes))
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise BenchmarkError(f"ffmpeg concat failed: {process.stderr.read().decode()[-500:] if process.stderr else ''}")
        theirs.append((wall, usage.ru_utime + usage.ru_stime, out.stat().st_size))
        out.unlink()
    wall, web_cpu, client_cpu, size = min(ours)
    f_wall, f_cpu, f_size = min(theirs)
    ratio = wall / f_wall
    print(f"throughput of a 10 min range (60 real segments), best of 3 alternating rounds, page cache warm:\n"
          f"  edgenvr video.mp4 over loopback: {wall:.3f} s for {size / 1e6:.0f} MB ({size / wall / 1e6:,.0f} MB/s);"
          f" web process CPU {web_cpu:.2f} s, client CPU {client_cpu:.2f} s\n"
          f"  ffmpeg -f concat -c copy -f mp4 -movflags frag_keyframe+empty_moov: {f_wall:.3f} s wall, {f_cpu:.2f} s"
          f" CPU, {f_size / 1e6:.0f} MB to a file in {root}\n"
          f"  ratio {ratio:.2f}  [{verdict(ratio <= TARGET_THROUGHPUT_RATIO)}: <= {TARGET_THROUGHPUT_RATIO:.1f}x]"
          f"  (all rounds: edgenvr {', '.join(f'{r[0]:.3f}' for r in ours)} s;"
          f" ffmpeg {', '.join(f'{r[0]:.3f}' for r in theirs)} s)")
    return {"edgenvr_s": wall, "edgenvr_web_cpu_s": web_cpu, "edgenvr_client_cpu_s": client_cpu, "bytes": size,
            "ffmpeg_s": f_wall, "ffmpeg_cpu_s": f_cpu, "ffmpeg_bytes": f_size, "ratio": ratio,
            "rounds_edgenvr_s": [r[0] for r in ours], "rounds_ffmpeg_s": [r[0] for r in theirs]}


# ---------------------------------------------------------------------------------------------
# Part 2: a real `edgenvr run` recording while it serves playback and live viewers
# ---------------------------------------------------------------------------------------------

# The supervisor with timers on the index commit, the segments announced and the once-a-second step; then
# edgenvr's own command line. Each line: {"commit": wall, "s": seconds, "segments": n, "close_to_commit": [s...]}
# or {"step": wall, "s": seconds}. Nothing else changes (the children are spawned fresh, without the timers).
SUPERVISOR_SHIM = r'''
import json, os, sys, time
from edgenvr.index.writer import IndexWriter
from edgenvr.runtime.periodic_work import IndexHousekeeping
from edgenvr.cli.main import main

_log = open(os.environ["EDGENVR_BENCH_TIMINGS"], "a", buffering=1)
_arrived = []
_add_segment, _commit, _step = IndexWriter.add_segment, IndexWriter.commit, IndexHousekeeping.step

def add_segment(self, segment):
    _add_segment(self, segment)
    _arrived.append(segment.wall_end_ms)

def commit(self, also=None):
    pending, before = len(_arrived), self.commits
    wall, started = time.time(), time.perf_counter()
    written = _commit(self, also)
    seconds = time.perf_counter() - started
    if self.commits != before:
        done = time.time()
        batch = _arrived[:pending]
        del _arrived[:pending]
        _log.write(json.dumps({"commit": wall, "s": seconds, "segments": written,
                               "close_to_commit": [round(done - end / 1000, 3) for end in batch]}) + "\n")
    return written

def step(self):
    wall, started = time.time(), time.perf_counter()
    _step(self)
    _log.write(json.dumps({"step": wall, "s": time.perf_counter() - started}) + "\n")

IndexWriter.add_segment, IndexWriter.commit, IndexHousekeeping.step = add_segment, commit, step
sys.exit(main(sys.argv[1:]))
'''


@dataclass
class Phase:
    key: str
    label: str
    playback: int
    live: int
    window_start: float = 0.0     # epoch seconds
    window_end: float = 0.0
    account_end: float = 0.0      # the next phase's clients start here (cool-down included)
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recording:
    workdir: Path
    cameras: list[str]
    servers: list[Any] = field(default_factory=list)
    supervisor: subprocess.Popen[bytes] | None = None
    clients: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "edgenvr.log"

    @property
    def timings_path(self) -> Path:
        return self.workdir / "supervisor-timings.jsonl"

    def check_alive(self) -> None:
        if self.supervisor is not None and self.supervisor.poll() is not None:
            raise BenchmarkError(f"edgenvr exited with {self.supervisor.returncode}:\n{record._tail(self.log_path)}")
        for server in self.servers:
            if not server.is_running:
                raise BenchmarkError(f"camera simulator died:\n{record._tail(server.log_path)}")

    def stop_all(self) -> None:
        try:
            record._stop(self.clients, signal.SIGTERM, timeout=10)
            if self.supervisor is not None:
                record._stop([self.supervisor], signal.SIGTERM, timeout=60)
        finally:
            for server in self.servers:
                server.stop()


def recording_config(data_dir: Path, urls: dict[str, str], port: int, commit_seconds: float) -> str:
    lines = ['[box]', 'id = "bench"', "[storage]", f"data_dir = {json.dumps(str(data_dir))}", 'quota = "1TB"',
             'min_free = "0"', f"index_commit_seconds = {commit_seconds:g}", "[recording]",
             f"segment_seconds = {record.SEGMENT_SECONDS}", "[motion]", "enabled = false", "tamper = false",
             "[web]", f'listen = "127.0.0.1:{port}"', "tls = false"]
    for camera, url in urls.items():
        lines += ["[[cameras]]", f"id = {json.dumps(camera)}", f"url = {json.dumps(url)}"]
    return "\n".join(lines) + "\n"


def index_counters(index_path: Path) -> dict[str, Any]:
    """Drop counters per camera and the number of gap rows, read-only (as record.py reads them)."""
    conn = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True, timeout=10)
    try:
        dropped = {row[0]: json.loads(row[1]) for row in conn.execute("SELECT id, dropped_json FROM cameras")}
        gaps = [tuple(row) for row in conn.execute("SELECT camera, start_ms, end_ms, reason FROM gaps")]
    finally:
        conn.close()
    return {"dropped": dropped, "gaps": gaps}


def dropped_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    kinds: Counter[str] = Counter()
    for camera, counts in after["dropped"].items():
        for kind, count in counts.items():
            kinds[kind] += count - before["dropped"].get(camera, {}).get(kind, 0)
    return {kind: count for kind, count in kinds.items() if count}


def edgenvr_role(process: psutil.Process) -> str:
    try:
        name = process.name()
    except psutil.Error:
        return "other"
    if name.startswith("recorders"):
        return "recorders"
    return "web" if name == "web" else "other"


class IndexPoll:
    """Reads new segment rows once a second (read-only): when each became visible to a reader."""

    def __init__(self, index_path: Path) -> None:
        self.conn = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True, timeout=10, isolation_level=None)
        self.last_id = self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM segments").fetchone()[0]

    def poll(self) -> list[float]:
        now = time.time()
        rows = self.conn.execute("SELECT id, wall_end_ms FROM segments WHERE id > ? ORDER BY id",
                                 (self.last_id,)).fetchall()
        if rows:
            self.last_id = rows[-1][0]
        return [now - wall_end / 1000 for _, wall_end in rows]

    def close(self) -> None:
        self.conn.close()


def measure_window(run: Recording, phase: Phase, poll: IndexPoll) -> dict[str, Any]:
    """CPU of every process over the phase's window (psutil, a sample a second), and the index poll."""
    assert run.supervisor is not None
    groups = {name: record.ProcessGroup(name) for name in ("edgenvr", "simulator", "clients", "benchmark")}
    supervisor = psutil.Process(run.supervisor.pid)

    def discover(in_window: bool) -> None:
        groups["edgenvr"].track(supervisor, "supervisor", in_window)
        try:
            children = supervisor.children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for child in children:
            if child.pid not in groups["edgenvr"].members:
                groups["edgenvr"].track(child, edgenvr_role(child), in_window)
        for client in run.clients:
            try:
                groups["clients"].track(psutil.Process(client.pid), "client", in_window)
            except psutil.NoSuchProcess:
                pass
        for server in run.servers:
            if server.pid is not None:
                groups["simulator"].track(psutil.Process(server.pid), "server", in_window)
        groups["benchmark"].track(psutil.Process(), "benchmark", in_window)

    time.sleep(max(0.0, phase.window_start - time.time()))
    discover(in_window=False)
    for group in groups.values():
        group.sample(with_pss=False)
        group.reset_window()
    waited = {pid: _schedstat(pid) for group in groups.values() for pid in group.members}
    everyone = record._all_process_cpu()
    machine = record._machine_times()
    started = time.monotonic()
    visible: list[float] = []
    poll.poll()
    while time.time() < phase.window_end:
        run.check_alive()
        discover(in_window=True)
        for group in groups.values():
            group.sample(with_pss=False)
        visible += poll.poll()
        time.sleep(max(0.0, min(1.0, phase.window_end - time.time())))
    for group in groups.values():
        group.sample(with_pss=False)
    seconds = time.monotonic() - started
    run_queue: dict[str, list[float]] = {}   # role -> [seconds on a CPU, seconds runnable but waiting]
    for group in groups.values():
        for pid, member in group.members.items():
            first, last = waited.get(pid) or (0.0, 0.0), _schedstat(pid)
            if last is not None:
                totals = run_queue.setdefault(member.role, [0.0, 0.0])
                totals[0] += last[0] - first[0]
                totals[1] += last[1] - first[1]
    machine_end = record._machine_times()
    ours = {pid for group in groups.values() for pid in group.members}
    others_cpu, others = record._other_processes(everyone, record._all_process_cpu(), ours, seconds)
    edgenvr = groups["edgenvr"]
    rss = {role: max((m.peak_rss for m in edgenvr.by_role(role)), default=0) / 2**20
           for role in ("supervisor", "recorders", "web")}
    return {
        "seconds": seconds,
        "cpu_s": {"supervisor": edgenvr.cpu_seconds("supervisor"), "recorders": edgenvr.cpu_seconds("recorders"),
                  "web": edgenvr.cpu_seconds("web"), "edgenvr other": edgenvr.cpu_seconds("other"),
                  "simulator": groups["simulator"].cpu_seconds(), "clients": groups["clients"].cpu_seconds(),
                  "benchmark": groups["benchmark"].cpu_seconds(),
                  "other processes + interrupts": others_cpu + machine_end["interrupts"] - machine["interrupts"]},
        "busiest_others": others,
        "run_queue": run_queue,
        "peak_rss_mb": rss,
        "processes_started": groups["edgenvr"].started,
        "close_to_visible_s": visible,
    }


def renice_simulator(run: Recording, nice: int) -> None:
    """Every thread of the simulator processes at `nice` (setpriority on a pid changes one thread only)."""
    if nice == 0:
        return
    for server in run.servers:
        for task in Path(f"/proc/{server.pid}/task").iterdir():
            try:
                os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
            except (OSError, ValueError) as error:
                raise BenchmarkError(f"cannot renice the simulator to {nice}: {error}") from None


def _schedstat(pid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for one) of all the process's threads (as motion.py reads
    them): a process starved by the others waits long per second it runs."""
    run_ns = wait_ns = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue
        run_ns += int(fields[0])
        wait_ns += int(fields[1])
    return run_ns / 1e9, wait_ns / 1e9


def start_clients(run: Recording, phase: Phase, port: int, token: str, recorded_from_ms: int,
                  seed: int) -> list[Path]:
    """Processes of at most 25 playback clients each, and one for the live viewers; returns their result files."""
    results: list[Path] = []
    batches = [min(25, phase.playback - n) for n in range(0, phase.playback, 25)]
    specs = [{"playback": b, "live": []} for b in batches]
    if phase.live:
        specs.append({"playback": 0, "live": run.cameras[:phase.live]})
    for n, spec in enumerate(specs):
        result = run.workdir / f"clients-{phase.key}-{n}.json"
        spec.update(port=port, token=token, cameras=run.cameras, recorded_from_ms=recorded_from_ms,
                    window_start=phase.window_start, window_end=phase.window_end, result=str(result),
                    seed=seed * 1000 + n)
        spec_path = run.workdir / f"clients-{phase.key}-{n}.spec.json"
        spec_path.write_text(json.dumps(spec))
        run.clients.append(record._spawn([sys.executable, str(Path(__file__).resolve()), "--clients", str(spec_path)],
                                         run.workdir / f"clients-{phase.key}-{n}.log"))
        results.append(result)
    return results


def collect_clients(run: Recording, results: list[Path]) -> dict[str, Any]:
    record._stop(run.clients, None, timeout=30)
    for client in run.clients:
        if client.returncode not in (0, None):
            log = record._tail(Path(str(client.args[-1]).replace(".spec.json", ".log")))
            raise BenchmarkError(f"a client process exited with {client.returncode}:\n{log}")
    run.clients = []
    merged: dict[str, Any] = {"playback": [], "live": []}
    for path in results:
        found = json.loads(path.read_text())
        merged["playback"] += found["playback"]
        merged["live"] += found["live"]
    return merged


def supervisor_timings(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pass   # a line being written
    return lines


def timing_figures(timings: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    commits = [t for t in timings if "commit" in t and start <= t["commit"] < end]
    steps = sorted(t["step"] for t in timings if "step" in t and start - 2 <= t["step"] < end)
    intervals = [b - a for a, b in itertools.pairwise(steps)]
    close = [s for t in commits for s in t["close_to_commit"]]
    durations = [t["s"] for t in commits]
    return {"commits": len(commits), "commit_p50_s": pct(durations, 50), "commit_p95_s": pct(durations, 95),
            "commit_max_s": max(durations, default=float("nan")),
            "segments_committed": sum(t["segments"] for t in commits),
            "longest_step_interval_s": max(intervals, default=float("nan")),
            "step_max_s": max((t["s"] for t in timings if "step" in t and start <= t["step"] < end),
                              default=float("nan")),
            "close_to_commit_p50_s": pct(close, 50), "close_to_commit_max_s": max(close, default=float("nan"))}


def scan_missing_frames(run: Recording, clip: Path) -> list[tuple[str, float, int, str]]:
    """(camera, epoch s, pictures missing, what) for every break in the clip's picture sequence in the recorded
    files, as record.py finds them (a picture skipped, repeated or unrecognised; a file unreadable). A skip whose
    pictures on both sides are less time apart in the file than the pictures between them (under half a frame
    left for the missing ones) is marked "camera timestamps bunched": the camera's clock put them (nearly) on
    one time, and the recorder dropped the one that did not move forward (non_increasing_dts)."""
    pictures = record.clip_picture_index(clip)
    length = len(pictures)
    found: list[tuple[str, float, int, str]] = []
    for camera in run.cameras:
        previous: int | None = None
        for path in record.edgenvr_files(run.data_dir, camera):
            start_s = int(path.stem) / 1000
            try:
                with av.open(str(path)) as container:
                    stream = container.streams.video[0]
                    frame_ticks = float(1 / (record.FPS * stream.time_base))
                    base = last_dts = None
                    for packet in container.demux(stream):
                        if packet.size == 0:
                            continue
                        base = packet.pts if base is None else base
                        at = start_s + float(((packet.pts or 0) - (base or 0)) * stream.time_base)
                        position = pictures.get(record._picture_key(bytes(packet)))  # type: ignore[arg-type]
                        if position is None:
                            found.append((camera, at, 1, "unrecognised packet"))
                            continue
                        if previous is not None:
                            step = (position - previous) % length
                            if step == 0:
                                found.append((camera, at, 0, "repeated picture"))
                            elif step != 1:
                                span = None if last_dts is None else (packet.dts - last_dts) / frame_ticks
                                bunched = span is not None and span < step - 0.5
                                found.append((camera, at, step - 1, "pictures missing" + (
                                    f"; camera timestamps bunched ({span:.2f} frames of time for {step} pictures)"
                                    if bunched else "")))
                        previous = position
                        last_dts = packet.dts
            except (av.error.FFmpegError, OSError, IndexError):
                found.append((camera, start_s, 0, f"unreadable file {path.name}"))
    return found


def log_problems(log_path: Path) -> Counter[str]:
    problems: Counter[str] = Counter()
    for line in log_path.read_text(errors="replace").splitlines():
        if " WARNING " in line or " ERROR " in line:
            text = line.split("] ", 1)[-1]
            problems[text[:140]] += 1
    return problems


def part_recording(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    reason = record.simulator_unavailable_reason()
    if reason:
        raise BenchmarkError(f"the camera simulator is unavailable: {reason}")
    clip = record.bench_clip()
    clip_bytes_per_s = clip.stat().st_size / record.CLIP_SECONDS
    run = Recording(root / "recording", camera_ids(args.cameras))
    run.workdir.mkdir()
    phases = [Phase("a", "recording alone", 0, 0), Phase("b", f"{args.busy_clients} busy playback", args.busy_clients, 0),
              Phase("c", f"{args.playback} playback + {args.live} live", args.playback, args.live),
              Phase("d", f"{args.live} live alone", 0, args.live)]
    cooldown = record.SEGMENT_SECONDS + args.commit_seconds + 3
    try:
        urls = record.start_servers(run, clip, 1)   # type: ignore[arg-type]  (its Run-like: workdir, cameras, servers)
        port = free_port()
        config_path = run.workdir / "edgenvr.toml"
        config_path.write_text(recording_config(run.data_dir, urls, port, args.commit_seconds))
        token = make_admin(config_path)
        env = {**os.environ, "EDGENVR_BENCH_TIMINGS": str(run.timings_path)}
        with open(run.log_path, "ab") as log:
            run.supervisor = subprocess.Popen(
                [sys.executable, "-c", SUPERVISOR_SHIM, "run", "--config", str(config_path)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                preexec_fn=record.die_with_parent_preexec(signal.SIGTERM))  # noqa: PLW1509 - as record._spawn
        started = time.monotonic()

        def every_camera_closed_a_segment() -> bool:
            return all(any((run.data_dir / "segments" / c).rglob("*.mp4")) for c in run.cameras)

        record._wait_until("a finished segment of every camera", every_camera_closed_a_segment, 90 + 2 * args.cameras,
                           run.check_alive)
        wait_for_health(port, run.supervisor, run.log_path)
        recorded_from_ms = max(min(int(p.stem) for p in (run.data_dir / "segments" / c).rglob("*.mp4"))
                               for c in run.cameras)
        warmup = time.monotonic() - started
        time.sleep(args.commit_seconds + 2)   # the first rows committed
        renice_simulator(run, args.simulator_nice)
        print(f"\nrecording: {args.cameras} simulated cameras ({record.WIDTH}x{record.HEIGHT} {record.FPS} fps GOP"
              f" {record.GOP}, {clip_bytes_per_s * 8 / 1e6:.2f} Mbit/s, RTSP/TCP from one simulator process),"
              f" a real `edgenvr run` with [web] on 127.0.0.1:{port} (the supervisor under the commit-timing shim),"
              f" 10 s segments, index_commit_seconds {args.commit_seconds:g}, motion off; simulator nice"
              f" {args.simulator_nice}; warm-up {warmup:.0f} s;"
              f" phases of {args.phase_seconds:g} s, clients start {args.ramp_seconds:g} s before a window,"
              f" cool-down {cooldown:g} s after it")
        poll = IndexPoll(run.data_dir / "index.sqlite3")
        before = index_counters(run.data_dir / "index.sqlite3")
        account_start = time.time()
        for phase in phases:
            renice_simulator(run, args.simulator_nice)   # threads started since, too
            phase.window_start = time.time() + (args.ramp_seconds if phase.playback or phase.live else 0.5)
            phase.window_end = phase.window_start + args.phase_seconds
            results = start_clients(run, phase, port, token, recorded_from_ms, args.seed) \
                if phase.playback or phase.live else []
            window = measure_window(run, phase, poll)
            clients = collect_clients(run, results) if results else {"playback": [], "live": []}
            time.sleep(max(0.0, phase.window_end + cooldown - time.time()))
            phase.account_end = time.time()
            after = index_counters(run.data_dir / "index.sqlite3")
            phase.figures = {"window": window, "clients": clients, "dropped": dropped_between(before, after),
                             "new_gaps": sorted(set(after["gaps"]) - set(before["gaps"])),
                             "account_start": account_start, "account_end": phase.account_end,
                             "timings": timing_figures(supervisor_timings(run.timings_path), phase.window_start,
                                                       phase.window_end)}
            print(f"  phase ({phase.key}) {phase.label}: done", flush=True)
            before, account_start = after, phase.account_end
        poll.close()
        run.stop_all()
        restarts = [line for line in run.log_path.read_text(errors="replace").splitlines() if "exited with code" in line]
        missing = scan_missing_frames(run, clip)
        problems = log_problems(run.log_path)
    finally:
        run.stop_all()
    return report_recording(args, phases, missing, restarts, problems, clip_bytes_per_s)


def _speed_per_stream(clients: dict[str, Any], seconds: float) -> list[float]:
    return [c["window_bytes"] / seconds for c in clients["playback"]]


def report_recording(args: argparse.Namespace, phases: list[Phase], missing: list[tuple[str, float, int, str]],
                     restarts: list[str], problems: Counter[str], rate: float) -> dict[str, Any]:
    idle_web = phases[0].figures["window"]["cpu_s"]["web"] / phases[0].figures["window"]["seconds"]
    result: dict[str, Any] = {"phases": {}}
    per_phase: dict[str, dict[str, Any]] = {}
    for phase in phases:
        f = phase.figures
        w = f["window"]
        seconds = w["seconds"]
        lost = [m for m in missing if f["account_start"] <= m[1] < f["account_end"]]
        playback = f["clients"]["playback"]
        live = f["clients"]["live"]
        served = sum(c["window_bytes"] for c in playback)
        requests = Counter(str(s) for c in playback for s in c["statuses"])
        ttfb = [t for c in playback for t in c["first_byte_s"]]
        errors = Counter(e for c in playback + live for e in c["errors"])
        live_bytes = [c["window_bytes"] / seconds for c in live]
        skipped = sum(c["skipped_fragments"] for c in live)
        web_over_idle = w["cpu_s"]["web"] / seconds - idle_web
        per_phase[phase.key] = {
            "seconds": seconds, "dropped": f["dropped"], "dropped_total": sum(f["dropped"].values()),
            "missing_frames": sum(m[2] for m in lost), "sequence_breaks": len(lost), "new_gaps": f["new_gaps"],
            "bunched_breaks": sum(1 for m in lost if "bunched" in m[3]),
            "breaks": lost, "window_start": phase.window_start,
            "restarts": sum(1 for line in restarts if _log_time(line) is not None
                            and f["account_start"] <= _log_time(line) < f["account_end"]),
            "cpu_core_share": {k: v / seconds for k, v in w["cpu_s"].items()},
            "busiest_others": w["busiest_others"], "run_queue": w["run_queue"],
            "peak_rss_mb": w["peak_rss_mb"], "timings": f["timings"],
            "close_to_visible_s": w["close_to_visible_s"],
            "playback_streams": len(playback), "served_mb_s": served / seconds / 1e6,
            "playback_speed_x": [s / rate for s in _speed_per_stream(f["clients"], seconds)],
            "requests": dict(requests), "playback_first_byte_p50_s": pct(ttfb, 50),
            "playback_first_byte_p95_s": pct(ttfb, 95), "errors": dict(errors),
            "live_viewers": len(live), "live_share_of_bitrate": [b / rate for b in live_bytes],
            "live_skipped_fragments": skipped,
            "live_first_picture_s": [c["first_picture_s"] for c in live],
            "web_over_idle_core_share": web_over_idle,
            "web_cpu_s_per_mb": (w["cpu_s"]["web"] - idle_web * seconds) / (served / 1e6) if served else None,
        }
    result["phases"] = per_phase
    keys = [p.key for p in phases]
    print("\n" + " " * 46 + "".join(f"{'(' + k + ')':>18}" for k in keys))
    print(" " * 46 + "".join(f"{p.label[:17]:>18}" for p in phases))

    def line(label: str, values: list[str]) -> None:
        print(f"  {label:<44}" + "".join(f"{v:>18}" for v in values))

    P = [per_phase[k] for k in keys]
    line("window (s)", [f"{p['seconds']:.1f}" for p in P])
    line("dropped packets (index counters)", [str(p["dropped_total"]) for p in P])
    line("frames missing from the files", [str(p["missing_frames"]) for p in P])
    line("  sequence breaks (missing/repeated/unread)", [str(p["sequence_breaks"]) for p in P])
    line("  of which camera timestamps bunched", [str(p["bunched_breaks"]) for p in P])
    line("new gaps / recorder restarts", [f"{len(p['new_gaps'])} / {p['restarts']}" for p in P])
    line("index commits in window", [str(p["timings"]["commits"]) for p in P])
    line("  commit duration p50 / p95 (ms)",
         [f"{p['timings']['commit_p50_s'] * 1000:.1f} / {p['timings']['commit_p95_s'] * 1000:.1f}" for p in P])
    line("  commit duration max (ms)", [f"{p['timings']['commit_max_s'] * 1000:.1f}" for p in P])
    line("  segment close -> committed p50 / max (s)",
         [f"{p['timings']['close_to_commit_p50_s']:.2f} / {p['timings']['close_to_commit_max_s']:.2f}" for p in P])
    line("  close -> visible to a reader p50 / max (s)",
         [f"{pct(p['close_to_visible_s'], 50):.1f} / {max(p['close_to_visible_s'], default=float('nan')):.1f}"
          for p in P])
    line("  supervisor loop: longest step interval (s)",
         [f"{p['timings']['longest_step_interval_s']:.2f}" for p in P])
    line("  supervisor step max duration (ms)", [f"{p['timings']['step_max_s'] * 1000:.1f}" for p in P])
    for role in ("supervisor", "recorders", "web", "edgenvr other", "simulator", "clients", "benchmark",
                 "other processes + interrupts"):
        line(f"CPU-s (% of a core): {role}"[:44],
             [f"{p['cpu_core_share'][role] * p['seconds']:.1f} ({p['cpu_core_share'][role] * 100:.1f}%)" for p in P])
    line("edgenvr total CPU % (supervisor+recorders+web)",
         [f"{sum(p['cpu_core_share'][r] for r in ('supervisor', 'recorders', 'web', 'edgenvr other')) * 100:.1f}"
          for p in P])
    line("machine: all measured CPU % (of 200)", [f"{sum(p['cpu_core_share'].values()) * 100:.0f}" for p in P])
    for role in ("recorders", "server", "web", "supervisor"):
        line(f"run-queue wait per CPU-s (total s): {'simulator' if role == 'server' else role}"[:44],
             [f"{p['run_queue'][role][1] / p['run_queue'][role][0]:.2f} ({p['run_queue'][role][1]:.1f})"
              if p["run_queue"].get(role, [0])[0] else "-" for p in P])
    line("peak RSS MB supervisor / recorders / web",
         [f"{p['peak_rss_mb']['supervisor']:.0f}/{p['peak_rss_mb']['recorders']:.0f}/{p['peak_rss_mb']['web']:.0f}"
          for p in P])
    line("playback streams / served MB/s", [f"{p['playback_streams']} / {p['served_mb_s']:.1f}" for p in P])
    line("  per stream x real time min / mean",
         [f"{min(p['playback_speed_x']):.1f} / {statistics.fmean(p['playback_speed_x']):.1f}"
          if p["playback_speed_x"] else "-" for p in P])
    line("  requests by status", [" ".join(f"{k}:{v}" for k, v in sorted(p["requests"].items())) or "-" for p in P])
    line("  first byte under load p50 / p95 (ms)",
         [f"{p['playback_first_byte_p50_s'] * 1000:.0f} / {p['playback_first_byte_p95_s'] * 1000:.0f}"
          if p["playback_streams"] else "-" for p in P])
    line("live viewers / min share of camera bit rate",
         [f"{p['live_viewers']} / {min(p['live_share_of_bitrate']):.0%}" if p["live_viewers"] else "-" for p in P])
    line("  fragments skipped (all viewers)", [str(p["live_skipped_fragments"]) if p["live_viewers"] else "-" for p in P])
    line("  first picture after connect max (s)",
         [f"{max(x for x in p['live_first_picture_s'] if x is not None):.1f}"
          if p["live_viewers"] and any(x is not None for x in p["live_first_picture_s"]) else "-" for p in P])
    line("client errors", [str(sum(p["errors"].values())) for p in P])
    line("web CPU over idle, % of a core", [f"{p['web_over_idle_core_share'] * 100:.1f}" for p in P])
    line("  per playback stream (% of a core)",
         [f"{p['web_over_idle_core_share'] / p['playback_streams'] * 100:.2f}" if p["playback_streams"] and not
          p["live_viewers"] else "-" for p in P])
    line("  per live viewer (% of a core)",
         [f"{p['web_over_idle_core_share'] / p['live_viewers'] * 100:.2f}" if p["live_viewers"] and not
          p["playback_streams"] else "-" for p in P])
    line("  web CPU-s per MB served", [f"{p['web_cpu_s_per_mb'] * 1000:.2f} ms" if p["web_cpu_s_per_mb"] else "-"
                                      for p in P])
    line("  => per real-time playback stream (% core)",
         [f"{p['web_cpu_s_per_mb'] * rate / 1e6 * 100:.3f}" if p["web_cpu_s_per_mb"] else "-" for p in P])
    if "c" in per_phase and "d" in per_phase and per_phase["c"]["playback_streams"] and per_phase["d"]["live_viewers"]:
        c, d = per_phase["c"], per_phase["d"]
        live_each = d["web_over_idle_core_share"] / d["live_viewers"]
        playback_each = (c["web_over_idle_core_share"] - live_each * c["live_viewers"]) / c["playback_streams"]
        print(f"  (c) split with (d)'s cost per live viewer: {live_each * 100:.2f}% of a core per live viewer,"
              f" {playback_each * 100:.2f}% per busy playback stream")
        result["c_split"] = {"per_live_viewer_core_share": live_each, "per_playback_stream_core_share": playback_each}
    recorders_idle = P[0]["cpu_core_share"]["recorders"]
    line("recorders CPU over (a), % of a core", [f"{(p['cpu_core_share']['recorders'] - recorders_idle) * 100:+.1f}"
                                                  for p in P])
    for p, key in zip(P, keys):
        for kind, count in p["dropped"].items():
            print(f"  ! ({key}) dropped {kind}: {count}")
        for gap in p["new_gaps"]:
            print(f"  ! ({key}) gap {gap}")
        for camera, at, count, what in p["breaks"][:6]:
            print(f"  ! ({key}) {camera} at window {at - p['window_start']:+.1f} s: {what} ({count})")
        for text, count in p["errors"].items():
            print(f"  ! ({key}) client error x{count}: {text}")
    spans = [(phase.figures["account_start"], phase.figures["account_end"]) for phase in phases]
    outside = [m for m in missing if not any(low <= m[1] < high for low, high in spans)]
    if outside:
        print(f"  frames missing outside the phases (warm-up, stop): {sum(m[2] for m in outside)}"
              f" in {len(outside)} breaks")
    for p, key in zip(P, keys):
        print(f"  ({key}) busiest other processes: "
              + (", ".join(f"{o['name']} {o['core_share']:.1%}" for o in p["busiest_others"]) or "none"))
    if problems:
        print("  edgenvr log warnings/errors (whole run):")
        for text, count in problems.most_common(8):
            print(f"    x{count} {text}")

    print("\ntargets (recording):")
    for p, key, phase in zip(P, keys, phases):
        if key == "d":
            continue
        clean = p["dropped_total"] == 0 and p["missing_frames"] == 0 and p["sequence_breaks"] == 0
        print(f"  [{verdict(clean)}] ({key}) {phase.label}: zero dropped packets"
              f" (counters {p['dropped_total']}, missing frames {p['missing_frames']}, breaks {p['sequence_breaks']}"
              + (f", of which the camera's timestamps bunched: {p['bunched_breaks']}" if p["sequence_breaks"] else "")
              + ")")
    c = per_phase["c"]
    recording_ok = (c["dropped_total"] == 0 and c["missing_frames"] == 0 and c["sequence_breaks"] == 0
                    and not c["new_gaps"] and c["restarts"] == 0)
    live_ok = bool(c["live_share_of_bitrate"]) and min(c["live_share_of_bitrate"]) >= LIVE_SHARE_TARGET \
        and c["live_skipped_fragments"] == 0
    playback_ok = bool(c["playback_speed_x"]) and min(c["playback_speed_x"]) >= PLAYBACK_SPEED_TARGET
    print(f"  [{verdict(recording_ok and live_ok and playback_ok)}] 2-core box serves {args.playback} playback +"
          f" {args.live} live viewers while recording {args.cameras} cameras: recording clean {recording_ok};"
          f" every live viewer >= {LIVE_SHARE_TARGET:.0%} of its bit rate, none skipped {live_ok}"
          f" (min {min(c['live_share_of_bitrate'], default=0):.0%}, skipped {c['live_skipped_fragments']});"
          f" every playback stream >= {PLAYBACK_SPEED_TARGET:.0f}x real time {playback_ok}"
          f" (min {min(c['playback_speed_x'], default=0):.1f}x)"
          + ("" if args.cameras == 16 else f"  (target set for 16 cameras; measured at {args.cameras})"))
    return result


def _log_time(line: str) -> float | None:
    try:
        return time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# The client processes (`--clients SPEC`): busy playback clients and live viewers
# ---------------------------------------------------------------------------------------------

class HttpConnection(asyncio.BufferedProtocol):
    """One keep-alive HTTP/1.1 connection reading bodies into one reused buffer (counted, never kept)."""

    def __init__(self, count: Callable[[int], None]) -> None:
        self._buffer = memoryview(bytearray(1 << 18))
        self._count = count
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._left = -1                      # body bytes still to come; -1 while reading a head
        self._waiter: asyncio.Future[dict[str, Any]] | None = None
        self._answer: dict[str, Any] = {}
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionResetError(f"connection lost mid-answer ({exc or 'closed'})"))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._left < 0:
            self._head += self._buffer[:nbytes]
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self._head[:end]).decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            nbytes = len(self._head) - end - 4
            self._head.clear()
            self._answer = {"status": int(lines[0].split()[1]), "headers": headers, "bytes": 0,
                            "first_byte_at": time.perf_counter()}
            self._left = int(headers.get("content-length", "0"))
        take = min(nbytes, self._left)
        if take:
            self._left -= take
            self._answer["bytes"] += take
            self._count(take)
        if self._left == 0:
            self._left = -1
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(self._answer)

    async def get(self, path: str, headers: dict[str, str]) -> dict[str, Any]:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        sent_at = time.perf_counter()
        self._transport.write((f"GET {path} HTTP/1.1\r\nHost: bench\r\n"
                               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
        answer = await self._waiter
        answer["first_byte_s"] = answer["first_byte_at"] - sent_at
        return answer

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def playback_client(number: int, spec: dict[str, Any], stats: dict[str, Any]) -> None:
    rng = random.Random(spec["seed"] + number)
    start, end = spec["window_start"], spec["window_end"]

    def count(n: int) -> None:
        if start <= time.time() <= end:
            stats["window_bytes"] += n

    auth = {"Authorization": f"Bearer {spec['token']}"}
    loop = asyncio.get_running_loop()
    connection: HttpConnection | None = None
    while time.time() < end:
        try:
            if connection is None or connection.lost:
                _, connection = await loop.create_connection(lambda: HttpConnection(count), "127.0.0.1", spec["port"])
            camera = rng.choice(spec["cameras"])
            newest = time.time() * 1000 - 15_000
            length = max(2_000.0, min(rng.uniform(10_000, 120_000), newest - spec["recorded_from_ms"]))
            first = int(rng.uniform(spec["recorded_from_ms"], newest - length))
            path = video_path(camera, first, int(first + length))
            answer = await connection.get(path, auth)
            _note(stats, answer, start, end)
            if answer["status"] == 200:
                size = int(answer["headers"]["content-length"])
                for _ in range(2):
                    seek = await connection.get(path, {**auth, "Range": f"bytes={rng.randrange(size)}-"})
                    _note(stats, seek, start, end)
        except (OSError, ConnectionError) as error:
            if start <= time.time() <= end:
                stats["errors"].append(f"{type(error).__name__}: {error}"[:120])
            connection = None
            await asyncio.sleep(0.2)
    if connection is not None:
        connection.close()


def _note(stats: dict[str, Any], answer: dict[str, Any], start: float, end: float) -> None:
    if start <= time.time() <= end:
        stats["statuses"].append(answer["status"])
        stats["first_byte_s"].append(answer["first_byte_s"])


async def live_viewer(camera: str, spec: dict[str, Any], stats: dict[str, Any]) -> None:
    import aiohttp

    start, end = spec["window_start"], spec["window_end"]
    url = f"http://127.0.0.1:{spec['port']}/api/cameras/{camera}/live"
    last_sequence: int | None = None
    while time.time() < end:
        connected = time.perf_counter()
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(
                    url, headers={"Authorization": f"Bearer {spec['token']}"}, max_msg_size=0,
                    autoping=True) as socket_:
                async for message in socket_:
                    now = time.time()
                    if message.type == aiohttp.WSMsgType.TEXT:
                        answer = json.loads(message.data)
                        if "error" in answer and start <= now <= end:
                            stats["errors"].append(answer["error"][:120])
                    elif message.type == aiohttp.WSMsgType.BINARY:
                        data = message.data
                        if stats["first_picture_s"] is None:
                            stats["first_picture_s"] = time.perf_counter() - connected
                        if data[4:8] == b"moof" and data[12:16] == b"mfhd":
                            sequence = int.from_bytes(data[20:24], "big")
                            if last_sequence is not None and sequence > last_sequence + 1 and start <= now <= end:
                                stats["skipped_fragments"] += sequence - last_sequence - 1
                            last_sequence = sequence
                            if start <= now <= end:
                                stats["window_fragments"] += 1
                        elif data[4:8] == b"ftyp":
                            last_sequence = None   # a new segment: its fragments count from 1 again
                        if start <= now <= end:
                            stats["window_bytes"] += len(data)
                    if now > end:
                        break
        except (aiohttp.ClientError, OSError) as error:
            if start <= time.time() <= end:
                stats["errors"].append(f"{type(error).__name__}: {error}"[:120])
            await asyncio.sleep(0.5)


async def clients_main(spec: dict[str, Any]) -> dict[str, Any]:
    playback = [{"window_bytes": 0, "statuses": [], "first_byte_s": [], "errors": []} for _ in range(spec["playback"])]
    live = [{"camera": c, "window_bytes": 0, "window_fragments": 0, "skipped_fragments": 0, "first_picture_s": None,
             "errors": []} for c in spec["live"]]
    tasks = [asyncio.create_task(playback_client(n, spec, s)) for n, s in enumerate(playback)]
    tasks += [asyncio.create_task(live_viewer(s["camera"], spec, s)) for s in live]
    await asyncio.wait(tasks, timeout=max(1.0, spec["window_end"] - time.time() + 3))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"playback": playback, "live": live}


def run_clients(spec_path: Path) -> int:
    spec = json.loads(spec_path.read_text())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    result = asyncio.run(clients_main(spec))
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "index", "recording"], default="all")
    parser.add_argument("--index-cameras", type=int, default=32)
    parser.add_argument("--index-days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=120, help="random points per first-byte figure (>= 100)")
    parser.add_argument("--timelines", type=int, default=200, help="timeline requests")
    parser.add_argument("--cameras", type=int, default=16, help="cameras recorded in part 2")
    parser.add_argument("--busy-clients", type=int, default=50, help="busy playback clients of phase (b)")
    parser.add_argument("--playback", type=int, default=8, help="playback clients of phase (c)")
    parser.add_argument("--live", type=int, default=8, help="live viewers of phases (c) and (d)")
    parser.add_argument("--phase-seconds", type=float, default=40)
    parser.add_argument("--ramp-seconds", type=float, default=4, help="clients start this long before a window")
    parser.add_argument("--commit-seconds", type=float, default=5, help="index_commit_seconds of the recording run")
    parser.add_argument("--simulator-nice", type=int, default=0,
                        help="nice value for the camera simulator's threads (negative needs root): the test cameras "
                             "share the box's 2 cores, real cameras do not; default 0, as every other process")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", default=None, help="where to work (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--json", action="store_true", help="also print all figures as one JSON object (last line)")
    parser.add_argument("--clients", type=Path, help=argparse.SUPPRESS)   # internal: a client process
    args = parser.parse_args(argv)
    if args.clients is not None:
        return run_clients(args.clients)
    if args.index_days < 3:
        parser.error("--index-days must be at least 3 (the played ranges avoid the first and last day)")
    if args.live > args.cameras:
        parser.error("--live must not exceed --cameras (a camera per live viewer)")

    signal.signal(signal.SIGTERM, record._raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    print(f"edgenvr {record.code_version()}; {psutil.cpu_count()} cores")
    root = Path(tempfile.mkdtemp(prefix="edgenvr-playback-bench-", dir=args.dir))
    result: dict[str, Any] = {}
    try:
        if args.part in ("all", "index"):
            result["index"] = part_index(args, root, clip_mp4())
        if args.part in ("all", "recording"):
            result["recording"] = part_recording(args, root)
    except BenchmarkError as error:
        print(f"playback.py: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("playback.py: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            import shutil
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(result, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
