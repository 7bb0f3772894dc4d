"""Sync benchmark (issue 12): the box's uploads to the city hub through a slow, dropping link, what uploading
costs a recording box, and what a hub costs per box of a city's fleet.

Part 1, "link" (`--part 1`): a real hub process (`edgenvr hub`, HTTPS with its own certificate, SQLite) in the
root network namespace; the box side in a network namespace of its own behind a veth pair whose box->hub side
is a kernel `tbf` of 10 Mbit/s (tests/link_faults.rate_limited_namespace_link), and in front of that a
FaultyLink proxy (tests/link_faults.FaultyLink) that cuts the connection (RST both ways) after a random number
of bytes, exponentially distributed with a mean of 20 MB (seeded). The box is the real sync code: a box data
dir made of real 1080p segment files (the record benchmark's 4 Mbit/s clip written by the recorder's own
SegmentWriter, indexed by the real IndexWriter) with closed motion events, queued by the real outbox; the
real `Uploader` (enrolment, export + zip, tus uploads in 1 MB chunks with their SHA-256, back-off, chunk
halving) sends them, driven by its own `run()` loop. Its clips are exported before the clock starts (the
export time is printed apart), so the figure is the link's. Reference, same run: the same bytes (every clip
zip) through the same namespace link and the same kind of proxy, without drops, as plain HTTPS POSTs (aiohttp)
to a sink that discards them: the link's achieved rate. Printed: goodput (clip bytes / time from the first
request to the last receipt) as a fraction of the reference rate (target >= 0.9), and that fraction
normalised to exactly one drop per 20 MB; drops; bytes re-sent per drop, from the box's side (bytes handed
to the hub in PATCH bodies minus the clip bytes: the Uploader's pace hook sees every chunk) and from the
hub's (bytes it logged as received in PATCHes that were cut), against the chunk size (target <= one chunk);
where the time of each drop went (back-off wait, the cut PATCH, the requests that resume).

Part 2, "recording" (`--part 2`): the box's whole `edgenvr run` in the namespace (so its uploads cross the
10 Mbit/s tbf; no drops) recording 8 simulated 1080p cameras (GStreamer RTSP test cameras in the namespace,
25 fps, GOP 50, ~4 Mbit/s, at nice -10 as benchmarks/playback.py runs them: cameras have their own
hardware), motion off, [sync] to a hub in the root namespace. Phase (a): recording with the sync process
idle (its channel open, health reports); phase (b): the hub asks for one range of each camera (remote pulls,
`hub.remote_pulls.request_pull`, what `edgenvr hub pull` calls) and the sync process exports and uploads them
all. The sync child's CPU (psutil, every 0.5 s) is split by what its outbox holds at that moment: building an
export (a folder or a partial zip) or uploading (only the zip): target upload < 5% of one core. Recording:
dropped packets (the recorders' counters in the index), frames missing from the recorded files (every
picture matched to its place in the looped clip, as record.py does), gaps and restarts over both phases:
target zero.

Part 3, "hub" (`--part 3`): a load generator (asyncio + aiohttp, in processes of its own) simulating N boxes
(default 500) against a real hub on loopback (HTTPS), backend by backend: SQLite in one process, then
PostgreSQL (tests/postgres_server.py: Debian's PostgreSQL in a temporary directory, run durable here:
fsync and synchronous commit on, as SQLite's synchronous=FULL is) with `[hub] workers` = 1, 2, 4. Each box:
its own device key and data dir, one real signed evidence export (4 s of the 1080p clip, ~2 MB zipped,
exported by `export_clip` and signed by that box's key: the hub verifies every upload against the box's
enrolled key, so it must be that box's); enrolled with a token made by `create_enrolment` (what `edgenvr hub
enrol` calls) and presented by POST /api/v1/enrol; its channel (WebSocket, `HubClient.open_channel`) open for
the run, a health report on connect and every 60 s (the real `box_report` of box 0's data dir as a template,
4 cameras), an audit batch after every clip (a new record appended to the box's real trail, sent as
`upstream_batch` gives it, timed to the hub's ack); one clip upload per minute at a random phase, each with a
new HubClient session (as the Uploader makes one per round: a new TCP + TLS connection) and a distinct
idempotency key, so the hub files (unzips, verifies, stores, receipts) the same zip again each minute: every
upload costs the hub what a new clip costs. PATCH bodies are sent at the box's link rate (default 10 Mbit/s,
a box's uplink; the HubClient subclass signs them as HubClient does and streams the body), so PATCHes last
as long as on a real link and the hub renews their leases as it would. Printed per backend: requests/s by
type and p50/p99 latency (a PATCH's from its body's last byte to the answer: the hub's part), clips offered
and delivered, whole-clip time, hub CPU (every hub process: gunicorn's master and workers), PostgreSQL's
CPU, the generator's own CPU and event-loop lag, the rest of the machine, and the hub's CPU split between its
event loops (TLS, HTTP, WebSocket, handlers) and its executor threads (database work, signature checks, clip
filing; psutil per thread); then the hub cores per 500 boxes and the workers 2,500 boxes (10,000 cameras)
need, reasoning shown. The generator shares the 2 cores with the hub: its CPU is printed, and latencies
include waiting for a CPU. `--profile-hub` adds a SQLite run with the hub under cProfile (a shim around its
command line; per-thread CPU time, the window only, every executor thread profiled too): where its CPU goes.

Targets are printed as PASS/FAIL and never asserted: a benchmark reports. Exit status: 0 when every part run
measured what it should (missed targets included), 1 when a part could not run, 130 on Ctrl-C.

    .venv/bin/python benchmarks/sync.py                       # all parts, ~12 min, root (namespaces, tc)
    .venv/bin/python benchmarks/sync.py --part 1 [--clips 12 --clip-seconds 20 --seed 1]
    .venv/bin/python benchmarks/sync.py --part 2 [--cameras 8 --pull-seconds 15]
    .venv/bin/python benchmarks/sync.py --part 3 [--boxes 500 --window 60 --backends sqlite,pg1,pg2,pg4] [--profile-hub]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCHMARKS))

import aiohttp
import av
import playback  # (the playback benchmark: recording runs, index counters, missing-frame scan)
import psutil
import pytest  # (tests/link_faults skips with pytest.skip when a namespace cannot be made)
import record  # (the recording benchmark: its clip, process accounting, simulator start)
import sqlalchemy as sa
from aiohttp import web

from edgenvr.config.checking import load_config
from edgenvr.config.records import Config
from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.core.records import EventKind, EventRecord
from edgenvr.evidence.audit import AuditAction, AuditTrail, upstream_batch
from edgenvr.evidence.bundle import ExportRequest, export_clip, zip_export
from edgenvr.evidence.identity import DeviceIdentity, device_identity
from edgenvr.evidence.request_signing import sign_request
from edgenvr.hub import hub_database
from edgenvr.hub.box_enrolment import create_enrolment
from edgenvr.hub.hub_database import BOX_REPORTS, CLIPS
from edgenvr.hub.remote_pulls import request_pull
from edgenvr.index import schema as index_schema
from edgenvr.index.queries import open_readonly
from edgenvr.index.writer import IndexWriter
from edgenvr.recording.segment_files import SegmentWriter
from edgenvr.storage.layout import StorageLayout
from edgenvr.sync import outbox
from edgenvr.sync import uploader as uploader_module
from edgenvr.sync.box_report import box_report
from edgenvr.sync.hub_client import CHUNK_BYTES, HubClient, HubRefused, HubUnreachable
from edgenvr.sync.hub_protocol import (
    AUDIT_BATCH,
    ENROL_PATH,
    REPORT_EVERY_S,
    MessageType,
)
from edgenvr.sync.outbox import OutboxItem
from edgenvr.sync.uploader import Throttle, Uploader

LINK_KBIT = 10_000                  # the link: 10 Mbit/s (tbf counts link-layer bytes)
DROP_MEAN_BYTES = 20_000_000        # "a drop every 20 MB on average"
TARGET_LINK_FRACTION = 0.9
TARGET_UPLOAD_CORE_SHARE = 0.05
CITY_BOXES = 2500                   # the city's plan: 10,000 cameras
CITY_CAMERAS = 10_000
WORKER_BUSY_CEILING = 0.7           # of one core: what a hub worker (one Python process) may be kept busy at
FPS = record.FPS
PACKET_MS = 1000 // FPS
HUB_SITE = "benchmark"
FLEET_CAMERAS = ("gate", "yard", "street", "door")   # 4 cameras a box: 10,000 cameras / 2,500 boxes
FLEET_SEGMENT_PACKETS = 100         # 4 s of the 1080p clip: a ~2 MB export
PACE_PIECE = 64 * 1024              # a paced PATCH body is sent in pieces this big


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
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def mb(count: float) -> str:
    return f"{count / 1e6:.1f} MB"


Target = tuple["bool | None", str, str]   # (met, what, the figure); None: a figure, not a target


def verdict(ok: bool | None) -> str:
    return "INFO" if ok is None else "PASS" if ok else "FAIL"


def pytest_runs() -> list[str]:
    """Other test runs on the machine (they share the CPU): their command lines."""
    ours = {os.getpid(), os.getppid()}
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["pid"] not in ours and "pytest" in cmdline and "sync.py" not in cmdline:
            found.append(cmdline[:120])
    return found


def machine_note() -> str:
    one, five, fifteen = os.getloadavg()
    runs = pytest_runs()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min), pytest processes running: {len(runs)}"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def insecure_context() -> ssl.SSLContext:
    """For the benchmark's own health checks only (the box pins the hub's certificate)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def certificate_fingerprint(path: Path) -> str:
    """SHA-256 of the certificate's DER bytes, as [sync] hub_fingerprint takes it."""
    der = ssl.PEM_cert_to_DER_cert(path.read_text())
    return hashlib.sha256(der).hexdigest().upper()


def wait_until(what: str, ready: Callable[[], bool], timeout: float, check: Callable[[], None] = lambda: None,
               every: float = 0.25) -> float:
    started = time.monotonic()
    while not ready():
        check()
        if time.monotonic() - started > timeout:
            raise BenchmarkError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)
    return time.monotonic() - started


@contextlib.contextmanager
def namespace_link(rate_kbit: int) -> Iterator[Any]:
    """tests/link_faults.rate_limited_namespace_link, its pytest.skip turned into a BenchmarkError."""
    from tests.link_faults import rate_limited_namespace_link
    try:
        with rate_limited_namespace_link(rate_kbit) as link:
            yield link
    except pytest.skip.Exception as exc:
        raise BenchmarkError(f"no namespace link: {exc}") from None


def tbf_bytes(veth: str) -> int:
    """Bytes the box side's tbf has sent (link layer); call from inside the namespace."""
    out = subprocess.run(["tc", "-s", "qdisc", "show", "dev", veth], capture_output=True, text=True, check=True,
                         timeout=10).stdout.split()
    return int(out[out.index("Sent") + 1])


# ---------------------------------------------------------------------------------------------
# A hub process
# ---------------------------------------------------------------------------------------------

@dataclass
class HubProcess:
    root: Path
    config: Path
    data_dir: Path
    host: str
    port: int
    log: Path
    process: subprocess.Popen[bytes]
    database_url: str | None
    workers: int
    fingerprint: str = ""

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def engine(self) -> sa.Engine:
        return hub_database.connect(hub_database.database_url(self.data_dir, self.database_url))

    def processes(self) -> list[psutil.Process]:
        try:
            main = psutil.Process(self.process.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchmarkError(f"the hub exited with {self.process.returncode}:\n{record._tail(self.log)}")

    def stop(self) -> None:
        record._stop([self.process], signal.SIGTERM, timeout=30)


PROFILE_SHIM = r"""
import cProfile, signal, sys, threading, time
import concurrent.futures.thread as pool
from edgenvr.cli.main import main

# CPU time of each thread (time.thread_time), only between SIGUSR1 and SIGUSR2 (the measured window): the
# event loop's thread and each executor thread (asyncio.to_thread) with a profiler of its own.
out = sys.argv.pop(1)
profiles = []
local = threading.local()
active = False
run = pool._WorkItem.run


def profiled(self):
    if not active:
        return run(self)
    profile = getattr(local, "profile", None)
    if profile is None:
        profile = local.profile = cProfile.Profile(time.thread_time)
        profiles.append(profile)
    profile.enable()
    try:
        return run(self)
    finally:
        profile.disable()


def switch(signum, frame):
    global active
    active = signum == signal.SIGUSR1
    main_profile.enable() if active else main_profile.disable()


pool._WorkItem.run = profiled
main_profile = cProfile.Profile(time.thread_time)
signal.signal(signal.SIGUSR1, switch)
signal.signal(signal.SIGUSR2, switch)
try:
    code = main(sys.argv[1:])
finally:
    main_profile.disable()
    main_profile.dump_stats(out + ".main")
    for number, profile in enumerate(profiles):
        profile.dump_stats(f"{out}.thread-{number}")
sys.exit(code)
"""


def start_hub(root: Path, host: str, *, database_url: str | None = None, workers: int = 1,
              profile: Path | None = None) -> HubProcess:
    """`edgenvr hub --config` on host:free port, HTTPS with its own certificate; returns once it answers."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    data_dir = root / "hub-data"
    lines = [f'listen = "{host}:{port}"', "tls = true", f'data_dir = "{data_dir}"']
    if database_url:
        lines.append(f'database_url = "{database_url}"')
    if workers != 1:
        lines.append(f"workers = {workers}")
    config = root / "hub.toml"
    config.write_text("[hub]\n" + "\n".join(lines) + "\n")
    log = root / "hub.log"
    command = [sys.executable, "-c", PROFILE_SHIM, str(profile)] if profile else [sys.executable, "-m", "edgenvr"]
    process = record._spawn([*command, "hub", "--config", str(config)], log)
    hub = HubProcess(root, config, data_dir, host, port, log, process, database_url, workers)
    certificate = data_dir / "keys" / "tls.crt"

    def answers() -> bool:
        if not certificate.exists():
            return False
        try:
            with urllib.request.urlopen(f"{hub.url}/api/health", timeout=2, context=insecure_context()) as reply:
                return bool(json.loads(reply.read())["status"] == "ok")
        except (OSError, ValueError):
            return False

    try:
        wait_until("the hub answering", answers, 60, hub.check_alive)
    except BaseException:
        hub.stop()
        raise
    hub.fingerprint = certificate_fingerprint(certificate)
    return hub


def hub_tokens(hub: HubProcess, boxes: list[str]) -> dict[str, str]:
    """A one-time enrolment token per box, made as `edgenvr hub enrol` makes them (hub.box_enrolment)."""
    engine = hub.engine()
    try:
        return {box: create_enrolment(engine, box, HUB_SITE, SYSTEM_CLOCK) for box in boxes}
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------
# CPU of process groups over a window
# ---------------------------------------------------------------------------------------------

class CpuWatch:
    """CPU-seconds of named groups of processes over a window (psutil, per process, a process found during the
    window counting from zero), the machine's busy time and the busiest processes outside every group."""

    def __init__(self, finders: dict[str, Callable[[], list[psutil.Process]]]) -> None:
        self.finders = finders
        self.groups = {name: record.ProcessGroup(name) for name in finders}
        self.started = 0.0
        self._everyone: dict[tuple[int, float], tuple[str, float]] = {}
        self._machine: dict[str, float] = {}

    def _discover(self, in_window: bool) -> None:
        for name, find in self.finders.items():
            for process in find():
                self.groups[name].track(process, name, in_window)

    def start(self) -> None:
        self._discover(in_window=False)
        for group in self.groups.values():
            group.sample(with_pss=False)
            group.reset_window()
        self._everyone = record._all_process_cpu()
        self._machine = record._machine_times()
        self.started = time.monotonic()

    def tick(self) -> None:
        self._discover(in_window=True)
        for group in self.groups.values():
            group.sample(with_pss=False)

    def cpu(self, name: str) -> float:
        return self.groups[name].cpu_seconds()

    def stop(self) -> dict[str, Any]:
        self.tick()
        seconds = time.monotonic() - self.started
        machine = record._machine_times()
        ours = {pid for group in self.groups.values() for pid in group.members}
        others_cpu, others = record._other_processes(self._everyone, record._all_process_cpu(), ours, seconds)
        return {"seconds": seconds, "cores": {name: self.cpu(name) / seconds for name in self.groups},
                "cpu_s": {name: self.cpu(name) for name in self.groups},
                "others_cores": others_cpu / seconds, "busiest_others": others,
                "machine_busy_cores": (machine["busy"] - self._machine["busy"]) / seconds,
                "interrupt_cores": (machine["interrupts"] - self._machine["interrupts"]) / seconds}


def own_process() -> list[psutil.Process]:
    return [psutil.Process()]


# ---------------------------------------------------------------------------------------------
# Recorded video made in seconds: the record benchmark's 1080p clip through the recorder's SegmentWriter
# ---------------------------------------------------------------------------------------------

@dataclass
class Footage:
    container: Any
    stream: Any
    packets: list[Any]
    step: int       # pts ticks per picture

    def close(self) -> None:
        self.container.close()


def open_footage() -> Footage:
    clip = record.bench_clip()
    container = av.open(str(clip))
    stream = container.streams.video[0]
    packets = [packet for packet in container.demux(stream) if packet.size]
    return Footage(container, stream, packets, int(1 / (FPS * stream.time_base)))


def write_segment(layout: StorageLayout, footage: Footage, camera: str, start_ms: int, pictures: int) -> Any:
    """One closed segment of `pictures` pictures (a whole number of GOPs) from `start_ms`, as a recorder writes it;
    its SegmentRecord (for IndexWriter.add_segment)."""
    chosen = footage.packets[:pictures]
    for index, packet in enumerate(chosen):   # a raw H.264 stream has no timestamps: 25 fps
        packet.pts = packet.dts = index * footage.step
    writer = SegmentWriter(layout, camera, footage.stream, start_ms, 0, footage.stream.time_base)
    for packet in chosen:
        writer.write(packet)
    end_ms = start_ms + pictures * PACKET_MS
    return writer.close(end_ms, end_ms)


# ---------------------------------------------------------------------------------------------
# Part 1: throughput through a 10 Mbit/s link that drops every 20 MB on average
# ---------------------------------------------------------------------------------------------

LINK_BOX = "bench-link-box"


def build_link_box(root: Path, footage: Footage, clips: int, clip_seconds: int) -> tuple[Path, str]:
    """A box data dir with `clips` closed motion events, each keeping `clip_seconds` of recorded 1080p video
    (10 s segments), and its sync start set before them, so that the outbox queues them all. Returns the data
    dir and the config text (with @HUB_URL@, @TOKEN@ and @FINGERPRINT@ to fill)."""
    data_dir = root / "data"
    layout = StorageLayout(data_dir)
    segment_seconds = 10
    per_clip = max(1, clip_seconds // segment_seconds)
    t0 = (int(time.time()) - clips * per_clip * segment_seconds - 300) // segment_seconds * segment_seconds * 1000
    writer = IndexWriter(index_schema.connect(layout.index_path), event_padding_ms=(1000, 1000))
    try:
        for number in range(clips * per_clip):
            segment = write_segment(layout, footage, "gate", t0 + number * segment_seconds * 1000,
                                    segment_seconds * FPS)
            writer.add_segment(segment)
        for number in range(clips):   # padded by 1 s each side: keeps exactly its clip's segments
            start = t0 + number * per_clip * segment_seconds * 1000 + 1000
            end = start + per_clip * segment_seconds * 1000 - 2000
            writer.add_event(EventRecord("gate", EventKind.MOTION, start, None))
            writer.add_event(EventRecord("gate", EventKind.MOTION, start, end))
        writer.commit()
        outbox.sync_since(writer.conn, t0 - 60_000)   # the box started syncing before these events
    finally:
        writer.conn.close()
    config = (f'[box]\nid = "{LINK_BOX}"\nname = "Benchmark box"\n[storage]\ndata_dir = "{data_dir}"\n'
              'quota = "100%"\nmin_free = "0"\nevent_pre_seconds = 1\nevent_post_seconds = 1\n'
              f"[recording]\nsegment_seconds = {segment_seconds}\n[motion]\nenabled = false\ntamper = false\n"
              '[[cameras]]\nid = "gate"\nurl = "rtsp://192.0.2.1/gate"\n'
              '[sync]\nhub_url = "@HUB_URL@"\nenrolment_token = "@TOKEN@"\nhub_fingerprint = "@FINGERPRINT@"\n')
    return data_dir, config


class Sink:
    """The reference's receiver: an HTTPS server (aiohttp, the hub's certificate) in a thread of the benchmark
    process that reads every POST body to its end and throws it away."""

    def __init__(self, host: str, certificate: Path, key: Path) -> None:
        self.host, self.port = host, free_port(host)
        self.received = 0
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(str(certificate), str(key))
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = concurrent.futures.Future[None]()
        self._thread = threading.Thread(target=self._serve, name="sink", daemon=True)
        self._thread.start()
        self._ready.result(timeout=30)

    async def _receive(self, request: web.Request) -> web.Response:
        got = 0
        async for piece in request.content.iter_any():
            got += len(piece)
        self.received += got
        return web.json_response({"bytes": got})

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            app = web.Application(client_max_size=1 << 34)
            app.router.add_post("/sink", self._receive)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, self.host, self.port, ssl_context=self._context).start()

        try:
            self._loop.run_until_complete(start())
        except Exception as exc:   # noqa: BLE001  (handed to the thread that started the sink)
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        self._loop.run_forever()
        if self._runner is not None:
            self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def part_link(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    footage = open_footage()
    try:
        box_dir = root / "box"
        _, config_text = build_link_box(box_dir, footage, args.clips, args.clip_seconds)
    finally:
        footage.close()
    before = machine_note()
    with namespace_link(args.link_kbit) as link:
        hub = start_hub(root / "hub", link.server_ip)
        sink: Sink | None = None
        try:
            token = hub_tokens(hub, [LINK_BOX])[LINK_BOX]
            keys = hub.data_dir / "keys"
            sink = Sink(link.server_ip, keys / "tls.crt", keys / "tls.key")
            spec = {"config_path": str(box_dir / "edgenvr.toml"),
                    "config_text": config_text.replace("@TOKEN@", token).replace("@FINGERPRINT@", hub.fingerprint),
                    "server_ip": link.server_ip, "hub_port": hub.port, "sink_port": sink.port,
                    "fingerprint": hub.fingerprint, "veth": link.client_veth, "drop_mean": args.drop_mean_mb * 1e6,
                    "seed": args.seed, "log": str(root / "box-sync.log"), "result": str(root / "link-result.json"),
                    "timeout": args.link_timeout}
            spec_path = root / "link-spec.json"
            spec_path.write_text(json.dumps(spec))
            print(f"part 1: {args.clips} clips of {args.clip_seconds} s of 1080p through a {args.link_kbit} kbit/s tbf "
                  f"link + a proxy dropping every {args.drop_mean_mb:g} MB on average (seed {args.seed}); "
                  "reference first, then the Uploader", flush=True)
            inner = subprocess.run(link.argv(sys.executable, str(Path(__file__).resolve()), "--inner", "link",
                                             str(spec_path)), timeout=args.link_timeout * 3 + 300, check=False)
            if inner.returncode != 0 or not Path(spec["result"]).exists():
                raise BenchmarkError(f"the box side failed ({inner.returncode}):\n{record._tail(Path(spec['log']))}")
            result = json.loads(Path(spec["result"]).read_text())
            result["sink_received"] = sink.received
            hub.check_alive()
        finally:
            if sink is not None:
                sink.stop()
            hub.stop()
    result["hub_cut_bytes"] = hub_cut_bytes(hub.log)
    result["machine_before"], result["machine_after"] = before, machine_note()
    result["link_kbit"] = args.link_kbit
    result["drop_mean_bytes"] = args.drop_mean_mb * 1e6
    return result


CUT_LINE = re.compile(r"the (?:connection dropped|body ended early) after (\d+) bytes")


def hub_cut_bytes(log: Path) -> list[int]:
    """What the hub logged as received in PATCHes whose connection was cut (none of it kept)."""
    return [int(m.group(1)) for m in CUT_LINE.finditer(log.read_text(errors="replace"))]


@dataclass
class RequestLog:
    """Every request a TimedHubClient made: (kind, monotonic end, seconds, hub seconds, status or error)."""
    entries: list[tuple[str, float, float, float, str]] = field(default_factory=list)


class TimedHubClient(HubClient):
    """The project's HubClient, timing each request it makes into a RequestLog; with `link_bytes_per_s`, each
    PATCH body is streamed at that rate (signed as HubClient signs it), as a box's uplink would carry it, and its
    hub time is from the body's last byte to the answer."""

    def __init__(self, *args: Any, requests: RequestLog, link_bytes_per_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests = requests
        self.link_bytes_per_s = link_bytes_per_s
        self.upload_size = 0

    def _kind(self, method: str, path: str, headers: dict[str, str] | None, body: bytes | None) -> str:
        if path == ENROL_PATH:
            return "enrol"
        if method == "PATCH":
            offset = int((headers or {}).get("Upload-Offset", "0"))
            return "patch-last" if self.upload_size and offset + len(body or b"") >= self.upload_size else "patch"
        return {"POST": "create", "HEAD": "head", "DELETE": "delete"}.get(method, method.lower())

    async def _request(self, method: str, path: str, headers: dict[str, str] | None = None,
                       body: bytes | None = None, *, signed: bool = True) -> tuple[int, dict[str, str], str]:
        kind = self._kind(method, path, headers, body)
        started = time.monotonic()
        try:
            if method == "PATCH" and body and self.link_bytes_per_s > 0:
                status, answer, text, last_byte = await self._paced(method, path, headers, body)
            else:
                status, answer, text = await super()._request(method, path, headers, body, signed=signed)
                last_byte = started
        except HubUnreachable as exc:
            now = time.monotonic()
            self.requests.entries.append((kind, now, now - started, float("nan"), f"unreachable: {str(exc)[-80:]}"))
            raise
        now = time.monotonic()
        self.requests.entries.append((kind, now, now - started, now - last_byte, str(status)))
        return status, answer, text

    async def _paced(self, method: str, path: str, headers: dict[str, str] | None,
                     body: bytes) -> tuple[int, dict[str, str], str, float]:
        assert self._session is not None
        sent = sign_request(self.identity, method, path, {"Tus-Resumable": "1.0.0", **(headers or {})}, body,
                            now_s=self.clock.now_ms() / 1000)
        sent["Content-Length"] = str(len(body))
        rate = self.link_bytes_per_s
        last_byte = [time.monotonic()]

        async def pieces() -> AsyncIterator[bytes]:
            begun = time.monotonic()
            for at in range(0, len(body), PACE_PIECE):
                wait = begun + at / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                yield body[at:at + PACE_PIECE]
            last_byte[0] = time.monotonic()

        try:
            async with self._session.request(method, self.hub_url + path, headers=sent, data=pieces(),
                                             ssl=self._ssl) as reply:
                text = await reply.text(errors="replace")
                return reply.status, dict(reply.headers), text, last_byte[0]
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise HubUnreachable(f"{method} {self.hub_url}{path}: {type(exc).__name__}: {exc}") from None


class CountingThrottle(Throttle):
    """The Uploader's pace hook (no cap): sees every chunk handed to a PATCH, so what the box sent in bodies."""

    def __init__(self) -> None:
        super().__init__(0, SYSTEM_CLOCK)
        self.chunks: list[int] = []

    async def spend(self, size: int) -> None:
        self.chunks.append(size)


def inner_link(spec: dict[str, Any]) -> int:
    """The box side of part 1, run inside the namespace: proxies, reference, then the Uploader."""
    from tests.link_faults import FaultyLink
    logging.basicConfig(filename=spec["log"], level=logging.INFO,
                        format="%(asctime)s %(levelname)s [box] %(name)s: %(message)s")
    with FaultyLink((spec["server_ip"], spec["hub_port"])) as hub_link, \
            FaultyLink((spec["server_ip"], spec["sink_port"])) as sink_link:
        config_path = Path(spec["config_path"])
        config_path.write_text(spec["config_text"].replace("@HUB_URL@", f"https://127.0.0.1:{hub_link.port}"))
        result = asyncio.run(_link_run(spec, load_config(config_path), hub_link, sink_link))
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


async def _link_run(spec: dict[str, Any], config: Config, hub_link: Any, sink_link: Any) -> dict[str, Any]:
    requests = RequestLog()
    # The Uploader makes a HubClient per round: the timed one, so each request it sends is in `requests`.
    uploader_module.HubClient = lambda *a, **k: TimedHubClient(*a, requests=requests, **k)  # type: ignore[misc,assignment]
    uploader = Uploader(config)
    throttle = CountingThrottle()
    uploader.throttle = throttle
    waits: list[float] = []   # what the Uploader waited after each failure (it logs it with the failure)

    class Waits(logging.Handler):
        def emit(self, entry: logging.LogRecord) -> None:
            if str(entry.msg).startswith("sync: the hub is unreachable") and entry.args:
                waits.append(float(entry.args[-1]))   # type: ignore[index,arg-type]

    logging.getLogger(uploader_module.__name__).addHandler(Waits())
    layout = uploader.layout
    conn = index_schema.connect(layout.index_path)
    now = SYSTEM_CLOCK.now_ms()
    settle = int(config.recording.segment_seconds * 1000) + outbox.SETTLE_MARGIN_MS
    outbox.enqueue_closed_events(conn, outbox.sync_since(conn, now), now, settle)
    items = [OutboxItem(*row) for row in conn.execute(
        "SELECT id, kind, camera, start_ms, end_ms, event_id, upload, attempts, pull_id FROM outbox"
        " WHERE state = 'queued' ORDER BY priority, start_ms, id")]
    # The Uploader's own export + zip of each clip, before the clock starts (it would do it just before sending).
    built_at, built_cpu = time.monotonic(), time.process_time()
    archives = []
    for item in items:
        archive = layout.outbox_dir / f"{item.id}.zip"
        await asyncio.to_thread(uploader._build, item, archive)
        archives.append(archive)
    build_s, build_cpu = time.monotonic() - built_at, time.process_time() - built_cpu
    sizes = [archive.stat().st_size for archive in archives]
    async with HubClient(config.sync.hub_url, uploader.identity, tls_fingerprint=config.sync.hub_fingerprint) as client:
        if not await uploader._enrol(conn, client):
            raise BenchmarkError("enrolment refused (see the log)")
    fingerprint = aiohttp.Fingerprint(bytes.fromhex(spec["fingerprint"]))

    # Reference: the same bytes, the same link (tbf + a FaultyLink, no drops), plain HTTPS POSTs.
    tc_start, started = tbf_bytes(spec["veth"]), time.monotonic()
    posted = 0
    async with aiohttp.ClientSession() as session:
        for archive in archives:
            async with session.post(f"https://127.0.0.1:{sink_link.port}/sink", data=archive.read_bytes(),
                                    ssl=fingerprint) as reply:
                posted += int((await reply.json())["bytes"])
    reference_s, reference_tc = time.monotonic() - started, tbf_bytes(spec["veth"]) - tc_start

    # The Uploader's own loop, through the dropping link, until every clip has its receipt.
    hub_link.drop_at_random(int(spec["drop_mean"]), seed=int(spec["seed"]))
    requests.entries.clear()
    tc_start, up_start = tbf_bytes(spec["veth"]), hub_link.bytes_up
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(uploader.run(stop))
    while outbox.backlog(conn).count:
        if task.done():
            raise BenchmarkError(f"the uploader stopped: {task.exception()!r}")
        if time.monotonic() - started > spec["timeout"]:
            raise BenchmarkError(f"the clips were not all delivered within {spec['timeout']} s")
        await asyncio.sleep(0.05)
    sync_s = time.monotonic() - started
    stop.set()
    await task
    synced = conn.execute("SELECT COUNT(*), SUM(bytes) FROM outbox WHERE state = 'synced'").fetchone()
    conn.close()
    return {"clips": len(items), "clip_bytes": sum(sizes), "clip_sizes": sizes, "build_s": build_s,
            "build_cpu_s": build_cpu, "reference_s": reference_s, "reference_bytes": posted,
            "reference_tbf_bytes": reference_tc, "reference_proxy_bytes": sink_link.bytes_up,
            "sync_s": sync_s, "sync_tbf_bytes": tbf_bytes(spec["veth"]) - tc_start,
            "sync_proxy_bytes": hub_link.bytes_up - up_start, "drops": hub_link.drops, "cut_points": hub_link.cut_points,
            "connections": hub_link.connections, "patch_chunks": throttle.chunks, "backoff_waits": waits,
            "requests": requests.entries, "synced": synced[0], "synced_bytes": synced[1] or 0,
            "max_chunk": uploader._max_chunk, "chunk_default": CHUNK_BYTES}


def report_link(r: dict[str, Any]) -> tuple[list[str], list[Target]]:
    ref_rate = r["reference_bytes"] / r["reference_s"]
    goodput = r["clip_bytes"] / r["sync_s"]
    fraction = goodput / ref_rate
    drops = r["drops"]
    sent_in_bodies = sum(r["patch_chunks"])
    resent = sent_in_bodies - r["clip_bytes"]
    chunk = r["max_chunk"]
    cut = r["hub_cut_bytes"]
    ideal_s = r["clip_bytes"] / ref_rate
    lost_s = r["sync_s"] - ideal_s
    per_drop_s = lost_s / drops if drops else float("nan")
    expected_drops = r["clip_bytes"] / r["drop_mean_bytes"]
    normalised = ideal_s / (ideal_s + per_drop_s * expected_drops) if drops else fraction
    requests = r["requests"]
    failed = [e for e in requests if not e[4].isdigit()]
    by_kind: dict[str, list[float]] = defaultdict(list)
    for kind, _, seconds, _, status in requests:
        if status.isdigit():
            by_kind[kind].append(seconds)
    wait_s = sum(r["backoff_waits"])
    failed_s = sum(e[2] for e in failed)
    lines = [
        (f"  link: tbf {r['link_kbit']} kbit/s (link layer) box->hub in a network namespace, a FaultyLink proxy in front;"
        f" hub: `edgenvr hub` HTTPS, SQLite"),
        (f"  clips: {r['clips']} motion clips, {mb(r['clip_bytes'])} of zips ({mb(min(r['clip_sizes']))}"
        f"-{mb(max(r['clip_sizes']))} each), exported by the Uploader before the clock started in {r['build_s']:.1f} s"
        f" ({r['build_cpu_s']:.1f} CPU-s)"),
        (f"  reference (same bytes, same link, HTTPS POSTs, no drops): {r['reference_s']:.1f} s ="
        f" {ref_rate * 8 / 1e6:.2f} Mbit/s of payload (tbf sent {mb(r['reference_tbf_bytes'])} link-layer:"
        f" {r['reference_tbf_bytes'] * 8 / r['reference_s'] / 1e6:.2f} Mbit/s)"),
        (f"  Uploader through the dropping link: {r['sync_s']:.1f} s = {goodput * 8 / 1e6:.2f} Mbit/s of clip bytes;"
        f" {r['synced']}/{r['clips']} receipted ({mb(r['synced_bytes'])})"),
        (f"  -> fraction of the link's rate: {fraction:.3f}; normalised to one drop per"
        f" {r['drop_mean_bytes'] / 1e6:g} MB ({expected_drops:.1f} expected, {drops} happened): {normalised:.3f}"),
        (f"  drops: {drops} (cut after {', '.join(mb(c) for c in r['cut_points'])} of a connection);"
        f" {r['connections']} connections"),
        (f"  bytes in PATCH bodies (box side): {mb(sent_in_bodies)} in {len(r['patch_chunks'])} chunks of at most"
        f" {chunk / 2**20:g} MiB; re-sent {mb(resent)} = {resent / drops / 1e6 if drops else 0:.2f} MB per drop"
        f" ({resent / drops / chunk if drops else 0:.2f} chunk)"),
        (f"  hub side: {len(cut)} cut PATCHes logged, {mb(sum(cut))} received and dropped"
        f" ({', '.join(mb(c) for c in cut) or '-'}); = {sum(cut) / drops / 1e6 if drops else 0:.2f} MB per drop"),
        (f"  link overhead: proxy forwarded {mb(r['sync_proxy_bytes'])} up, tbf sent {mb(r['sync_tbf_bytes'])}"
        f" (reference: {mb(r['reference_proxy_bytes'])}, {mb(r['reference_tbf_bytes'])})"),
        (f"  time lost to drops: {lost_s:.1f} s over the reference's {ideal_s:.1f} s ({per_drop_s:.1f} s per drop):"
        f" the Uploader's waits after a failure {wait_s:.1f} s ({', '.join(f'{w:.1f}' for w in r['backoff_waits']) or '-'}),"
        f" cut requests {failed_s:.1f} s, the rest re-sending, resuming (connect, TLS, HEAD) and filing"),
        "  requests: " + ", ".join(f"{kind} {len(v)} (p50 {ms(pct(v, 50))}, max {ms(max(v))})"
                                  for kind, v in sorted(by_kind.items())) + f"; cut {len(failed)}",
    ]
    targets = [(fraction >= TARGET_LINK_FRACTION, f"throughput >= {TARGET_LINK_FRACTION} of the link rate",
                f"{fraction:.3f} measured, {normalised:.3f} normalised to 1 drop / {r['drop_mean_bytes'] / 1e6:g} MB"),
               (drops > 0 and resent / drops <= chunk, "bytes re-sent per drop <= one chunk",
                f"{resent / drops / 1e6 if drops else float('nan'):.2f} MB per drop, chunk {chunk / 1e6:.2f} MB"
                + ("" if drops >= 5 else f"; only {drops} drops: few samples"))]
    return lines, targets


# ---------------------------------------------------------------------------------------------
# Part 2: box CPU while uploading at 10 Mbit/s and recording 8 cameras
# ---------------------------------------------------------------------------------------------

RECORDING_BOX = "bench-recording-box"


def part_recording(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    reason = record.simulator_unavailable_reason()
    if reason:
        raise BenchmarkError(f"the camera simulator is unavailable: {reason}")
    record.bench_clip()   # encoded once, cached: not inside the measured run
    before = machine_note()
    with namespace_link(args.link_kbit) as link:
        hub = start_hub(root / "hub", link.server_ip)
        try:
            token = hub_tokens(hub, [RECORDING_BOX])[RECORDING_BOX]
            spec = {"workdir": str(root / "box"), "cameras": args.cameras, "hub_url": hub.url, "token": token,
                    "fingerprint": hub.fingerprint, "hub_data": str(hub.data_dir), "veth": link.client_veth,
                    "idle_seconds": args.idle_seconds, "pull_seconds": args.pull_seconds,
                    "simulator_nice": args.simulator_nice, "result": str(root / "recording-result.json"),
                    "timeout": args.recording_timeout}
            spec_path = root / "recording-spec.json"
            spec_path.write_text(json.dumps(spec))
            print(f"part 2: `edgenvr run` with {args.cameras} simulated 1080p cameras and [sync] to the hub over a"
                  f" {args.link_kbit} kbit/s link (no drops); phase (a) {args.idle_seconds} s sync idle, phase (b) a"
                  f" pull of {args.pull_seconds} s of each camera", flush=True)
            inner = subprocess.run(link.argv(sys.executable, str(Path(__file__).resolve()), "--inner", "recording",
                                             str(spec_path)), timeout=args.recording_timeout + 600, check=False)
            if inner.returncode != 0 or not Path(spec["result"]).exists():
                raise BenchmarkError(f"the recording box run failed ({inner.returncode})")
            result = json.loads(Path(spec["result"]).read_text())
            hub.check_alive()
        finally:
            hub.stop()
    result["machine_before"], result["machine_after"] = before, machine_note()
    result["link_kbit"] = args.link_kbit
    return result


def _box_processes(run: playback.Recording, role: str) -> list[psutil.Process]:
    if run.supervisor is None:
        return []
    try:
        supervisor = psutil.Process(run.supervisor.pid)
        children = supervisor.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    if role == "supervisor":
        return [supervisor]
    found = []
    for child in children:
        try:
            name = child.name()
        except psutil.Error:
            continue
        kind = "sync" if name == "sync" else "recorders" if name.startswith("recorders") else "other"
        if kind == role:
            found.append(child)
    return found


def _outbox_activity(outbox_dir: Path) -> str:
    """What the sync process is doing, from its outbox dir: "export" (an export folder or a zip being written),
    "upload" (only finished zips: sending one), "idle"."""
    try:
        names = os.listdir(outbox_dir)
    except FileNotFoundError:
        return "idle"
    if any(not name.endswith(".zip") for name in names):
        return "export"
    return "upload" if names else "idle"


def export_cost(config_path: Path, out: Path, ranges: list[tuple[str, int, int]]) -> dict[str, float]:
    """CPU and wall seconds of the sync process's own export + zip (Uploader._build's calls) of `ranges`, run
    here with the box stopped: the export's share of phase (b), measured apart."""
    config = load_config(config_path)
    layout = StorageLayout(config.storage.data_dir)
    identity = device_identity(layout, config.box.box_id, config.box.box_name)
    out.mkdir(parents=True, exist_ok=True)
    cpu, wall = time.process_time(), time.monotonic()
    with contextlib.closing(open_readonly(layout)) as conn, AuditTrail(layout, identity) as trail:
        for number, (camera, start_ms, end_ms) in enumerate(ranges):
            export_clip(conn, config, layout, identity, trail,
                        ExportRequest(camera, start_ms, end_ms, out / str(number), "benchmark", "sync"))
            zip_export(out / str(number), out / f"{number}.zip")
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.monotonic() - wall,
            "bytes": sum((out / f"{number}.zip").stat().st_size for number in range(len(ranges)))}


def inner_recording(spec: dict[str, Any]) -> int:
    """Part 2 inside the namespace: cameras, `edgenvr run`, the pulls, the measurements."""
    workdir = Path(spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    run = playback.Recording(workdir, record.camera_ids(spec["cameras"]))
    clip = record.bench_clip()
    result: dict[str, Any] = {}
    try:
        urls = record.start_servers(run, clip, 1)  # type: ignore[arg-type]  (Recording is Run-like)
        lines = ["[box]", f'id = "{RECORDING_BOX}"', 'name = "Benchmark box"', "[storage]",
                 f"data_dir = {json.dumps(str(run.data_dir))}", 'quota = "1TB"', 'min_free = "0"', "[recording]",
                 f"segment_seconds = {record.SEGMENT_SECONDS}", "[motion]", "enabled = false", "tamper = false",
                 "[sync]", f'hub_url = "{spec["hub_url"]}"', f'enrolment_token = "{spec["token"]}"',
                 f'hub_fingerprint = "{spec["fingerprint"]}"']
        for camera, url in urls.items():
            lines += ["[[cameras]]", f"id = {json.dumps(camera)}", f"url = {json.dumps(url)}"]
        config_path = workdir / "edgenvr.toml"
        config_path.write_text("\n".join(lines) + "\n")
        run.supervisor = record._spawn([sys.executable, "-m", "edgenvr", "run", "--config", str(config_path)],
                                       run.log_path)
        started = time.monotonic()

        def every_camera_closed_a_segment() -> bool:
            return all(any((run.data_dir / "segments" / c).rglob("*.mp4")) for c in run.cameras)

        wait_until("a closed segment of every camera", every_camera_closed_a_segment, 90 + 2 * len(run.cameras),
                   run.check_alive)
        wait_until("the box's channel to the hub", lambda: "channel to the hub open" in
                   run.log_path.read_text(errors="replace"), 60, run.check_alive)
        playback.renice_simulator(run, spec["simulator_nice"])
        recorded_from = {c: min(int(p.stem) for p in (run.data_dir / "segments" / c).rglob("*.mp4"))
                         for c in run.cameras}
        result["warmup_s"] = time.monotonic() - started
        index_path = run.data_dir / "index.sqlite3"
        watch = CpuWatch({
            "sync": lambda: _box_processes(run, "sync"), "recorders": lambda: _box_processes(run, "recorders"),
            "supervisor": lambda: _box_processes(run, "supervisor"), "box other": lambda: _box_processes(run, "other"),
            "simulator": lambda: [psutil.Process(s.pid) for s in run.servers if s.pid is not None],
            "benchmark": own_process})
        counters_start = playback.index_counters(index_path)
        window_start = time.time()

        # (a) recording, sync idle (channel open, reports)
        watch.start()
        idle_end = time.monotonic() + spec["idle_seconds"]
        while time.monotonic() < idle_end:
            run.check_alive()
            time.sleep(1)
            watch.tick()
        result["idle"] = watch.stop()
        playback.renice_simulator(run, spec["simulator_nice"])   # threads started since, too

        # (b) the hub asks for a range of each camera; the box exports and uploads them
        engine = hub_database.connect(hub_database.database_url(Path(spec["hub_data"]), None))
        for camera in run.cameras:
            start = recorded_from[camera] + 1000
            request_pull(engine, RECORDING_BOX, camera, start, start + spec["pull_seconds"] * 1000,
                         "benchmark pull", "benchmark", SYSTEM_CLOCK)
        engine.dispose()
        pulled = [(camera, recorded_from[camera] + 1000, recorded_from[camera] + 1000 + spec["pull_seconds"] * 1000)
                  for camera in run.cameras]
        outbox_dir = run.data_dir / "outbox"
        watch = CpuWatch({"sync": lambda: _box_processes(run, "sync")})
        whole = CpuWatch({
            "sync": lambda: _box_processes(run, "sync"), "recorders": lambda: _box_processes(run, "recorders"),
            "supervisor": lambda: _box_processes(run, "supervisor"), "box other": lambda: _box_processes(run, "other"),
            "simulator": lambda: [psutil.Process(s.pid) for s in run.servers if s.pid is not None],
            "benchmark": own_process})
        tc_start = tbf_bytes(spec["veth"])
        whole.start()
        watch.start()
        split = {"export": [0.0, 0.0], "upload": [0.0, 0.0], "idle": [0.0, 0.0]}   # CPU-s, wall s
        last_cpu, last_at, last_state = 0.0, time.monotonic(), _outbox_activity(outbox_dir)
        deadline = time.monotonic() + spec["timeout"]

        def delivered() -> int:
            with contextlib.closing(sqlite3.connect(f"file:{index_path}?mode=ro", uri=True, timeout=10)) as conn:
                return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'requested' AND state = 'synced'")
                           .fetchone()[0])

        done, ticks = 0, 0
        while done < len(run.cameras):
            time.sleep(0.1)   # exports of a few MB take a few tenths of a second: sampled finely enough to see them
            ticks += 1
            state = _outbox_activity(outbox_dir)
            watch.tick()
            cpu, now = watch.cpu("sync"), time.monotonic()
            phase = "export" if "export" in (state, last_state) else "upload" if "upload" in (state, last_state) \
                else "idle"
            split[phase][0] += cpu - last_cpu
            split[phase][1] += now - last_at
            last_cpu, last_at, last_state = cpu, now, state
            if ticks % 5 == 0:
                run.check_alive()
                whole.tick()
                done = delivered()
                if time.monotonic() > deadline:
                    raise BenchmarkError(f"the pulls were not all delivered within {spec['timeout']} s")
        result["upload"] = whole.stop()
        result["upload_split"] = split
        result["upload_tbf_bytes"] = tbf_bytes(spec["veth"]) - tc_start
        window_end = time.time()
        with contextlib.closing(sqlite3.connect(f"file:{index_path}?mode=ro", uri=True, timeout=10)) as conn:
            result["pulled_bytes"] = int(conn.execute(
                "SELECT SUM(bytes) FROM outbox WHERE kind = 'requested' AND state = 'synced'").fetchone()[0] or 0)
        time.sleep(record.SEGMENT_SECONDS + 5)   # the counters of the last seconds committed
        counters_end = playback.index_counters(index_path)
        run.stop_all()
        missing = playback.scan_missing_frames(run, clip)
        result["export_apart"] = export_cost(config_path, workdir / "exports-apart", pulled)
        result["dropped"] = playback.dropped_between(counters_start, counters_end)
        result["new_gaps"] = sorted(set(map(tuple, counters_end["gaps"])) - set(map(tuple, counters_start["gaps"])))
        result["missing_in_window"] = [m for m in missing if window_start <= m[1] <= window_end + 10]
        result["missing_whole_run"] = len(missing)
        log_text = run.log_path.read_text(errors="replace")
        result["restarts"] = [line[-160:] for line in log_text.splitlines() if "exited with code" in line]
        result["problems"] = playback.log_problems(run.log_path).most_common(8)
        result["cameras"] = len(run.cameras)
        result["window_s"] = window_end - window_start
        result["pull_seconds"] = spec["pull_seconds"]
        result["simulator_nice"] = spec["simulator_nice"]
    finally:
        run.stop_all()
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


def report_recording(r: dict[str, Any]) -> tuple[list[str], list[Target]]:
    idle, upload, split = r["idle"], r["upload"], r["upload_split"]
    upload_cpu, upload_wall = split["upload"]
    export_cpu, export_wall = split["export"]
    upload_share = upload_cpu / upload_wall if upload_wall else float("nan")
    pulled = r["pulled_bytes"]
    rate = pulled * 8 / upload_wall / 1e6 if upload_wall else float("nan")
    dropped = sum(r["dropped"].values())
    missing = sum(m[2] for m in r["missing_in_window"])
    breaks = len(r["missing_in_window"])

    def cores(block: dict[str, Any], name: str) -> str:
        return f"{100 * block['cores'][name]:.1f}%"

    lines = [
        (f"  box: `edgenvr run`, {r['cameras']} simulated 1080p cameras (25 fps, ~4 Mbit/s, simulator nice"
        f" {r['simulator_nice']}), motion off, [sync] over a {r['link_kbit']} kbit/s tbf link (HTTPS, pinned)"),
        (f"  (a) sync idle {idle['seconds']:.0f} s: sync {cores(idle, 'sync')} of a core, recorders"
        f" {cores(idle, 'recorders')}, supervisor {cores(idle, 'supervisor')}, simulator {cores(idle, 'simulator')},"
        f" others {100 * idle['others_cores']:.1f}%"
        f", machine busy (/proc/stat: tick-sampled, misses short bursts here) {100 * idle['machine_busy_cores']:.0f}%"),
        (f"  (b) {r['cameras']} pulls of {r['pull_seconds']} s, {mb(pulled)} delivered in {upload['seconds']:.0f} s:"
        f" sync {cores(upload, 'sync')} of a core on average, recorders {cores(upload, 'recorders')}, supervisor"
        f" {cores(upload, 'supervisor')}, simulator {cores(upload, 'simulator')}, others"
        f" {100 * upload['others_cores']:.1f}%, machine busy (/proc/stat) {100 * upload['machine_busy_cores']:.0f}%"),
        (f"      sync while uploading (only zips in its outbox): {upload_cpu:.2f} CPU-s over {upload_wall:.0f} s ="
        f" {100 * upload_share:.2f}% of a core, at {rate:.2f} Mbit/s of clip bytes"
        f" ({upload_cpu / (pulled / 1e6) * 1000 if pulled else 0:.1f} CPU-ms per MB)"),
        (f"      cross-check: sync CPU over phase (b) {upload['cpu_s']['sync']:.2f} s minus the same exports run"
         f" apart ({r['export_apart']['cpu_s']:.2f} CPU-s, {r['export_apart']['wall_s']:.1f} s wall) ="
         f" {(upload['cpu_s']['sync'] - r['export_apart']['cpu_s']) / upload_wall * 100 if upload_wall else 0:.2f}%"
         " of a core over the uploading time"),
        (f"      sync while exporting: {export_cpu:.2f} CPU-s over {export_wall:.1f} s"
        f" ({100 * export_cpu / export_wall if export_wall else 0:.1f}% of a core);"
        f" tbf sent {mb(r['upload_tbf_bytes'])} in the phase"),
        (f"  recording over both phases ({r['window_s']:.0f} s + cool-down): dropped packets {dropped}"
        f" {dict(r['dropped']) or ''}, frames missing {missing} in {breaks} breaks (whole run incl. start-up:"
        f" {r['missing_whole_run']} breaks), new gaps {len(r['new_gaps'])}, restarts {len(r['restarts'])}"),
    ]
    for camera, at, count, what in r["missing_in_window"][:6]:
        lines.append(f"      ! {camera} at {time.strftime('%H:%M:%S', time.localtime(at))}: {count} {what}")
    for text, count in r["problems"]:
        lines.append(f"      log x{count}: {text}")
    targets = [(dropped == 0 and missing == 0 and breaks == 0 and not r["new_gaps"] and not r["restarts"],
                "recording keeps zero dropped packets while the box uploads",
                f"{dropped} dropped, {missing} frames missing, {len(r['new_gaps'])} gaps, {len(r['restarts'])} restarts"),
               (upload_share < TARGET_UPLOAD_CORE_SHARE, "upload costs < 5% of a core",
                (f"{100 * upload_share:.2f}% at {rate:.2f} Mbit/s (export apart:"
                f" {100 * export_cpu / export_wall if export_wall else 0:.1f}% while exporting)"))]
    return lines, targets


# ---------------------------------------------------------------------------------------------
# Part 3: the hub ingesting from a fleet of simulated boxes
# ---------------------------------------------------------------------------------------------

def fleet_box_id(number: int) -> str:
    return f"bench-{number:04d}"


_FOOTAGE: Footage | None = None


def build_fleet_box(job: tuple[Path, int, int]) -> dict[str, Any]:
    """One box of the fleet (in a pool worker): its key, a 4 s 1080p segment of camera `gate`, its index and a
    real export of that segment, zipped as its sync process sends it."""
    global _FOOTAGE
    root, number, start_ms = job
    if _FOOTAGE is None:
        _FOOTAGE = open_footage()
    box = fleet_box_id(number)
    box_root = root / box
    layout = StorageLayout(box_root / "data")
    identity = device_identity(layout, box, f"Benchmark box {number}")
    segment = write_segment(layout, _FOOTAGE, "gate", start_ms, FLEET_SEGMENT_PACKETS)
    writer = IndexWriter(index_schema.connect(layout.index_path))
    writer.add_segment(segment)
    writer.commit()
    writer.conn.close()
    config = box_root / "edgenvr.toml"
    config.write_text(f'[box]\nid = "{box}"\nname = "Benchmark box {number}"\n[storage]\n'
                      f'data_dir = "{layout.data_dir}"\nmin_free = "0"\n'
                      + "".join(f'[[cameras]]\nid = "{c}"\nurl = "rtsp://192.0.2.1/{c}"\n' for c in FLEET_CAMERAS))
    end_ms = start_ms + FLEET_SEGMENT_PACKETS * PACKET_MS
    with contextlib.closing(open_readonly(layout)) as conn, AuditTrail(layout, identity) as trail:
        export_clip(conn, load_config(config), layout, identity, trail,
                    ExportRequest("gate", start_ms, end_ms, box_root / "export", "motion event", "sync"))
    archive = box_root / "clip.zip"
    zip_export(box_root / "export", archive)
    shutil.rmtree(box_root / "export")
    return {"box": box, "data_dir": str(layout.data_dir), "config": str(config), "archive": str(archive),
            "bytes": archive.stat().st_size, "start_ms": start_ms, "end_ms": end_ms}


def build_fleet(root: Path, count: int, jobs: int) -> list[dict[str, Any]]:
    start_ms = (int(time.time()) - 3600) * 1000
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(build_fleet_box, [(root, number, start_ms) for number in range(count)], chunksize=8))


def report_template(box: dict[str, Any]) -> dict[str, Any]:
    """A real health report (sync.box_report) of a fleet box, its cameras shown recording."""
    config = load_config(box["config"])
    with contextlib.closing(index_schema.connect(StorageLayout(Path(box["data_dir"])).index_path)) as conn:
        report = box_report(conn, config, SYSTEM_CLOCK)
    for camera in report["cameras"]:
        camera.update(state="recording", since_ms=report["sent_ms"] - 86_400_000, reason="")
    return report


@dataclass
class Backend:
    key: str
    label: str
    workers: int
    postgres: bool


BACKENDS = {"sqlite": Backend("sqlite", "SQLite, 1 process", 1, False),
            "pg1": Backend("pg1", "PostgreSQL, 1 worker", 1, True),
            "pg2": Backend("pg2", "PostgreSQL, 2 workers", 2, True),
            "pg4": Backend("pg4", "PostgreSQL, 4 workers", 4, True)}


def postgres_support() -> str | None:
    """Why the PostgreSQL backends cannot run (None: they can): another engineer adds them."""
    if not (REPO / "tests" / "postgres_server.py").exists():
        return "tests/postgres_server.py does not exist yet"
    if "workers" not in (REPO / "edgenvr" / "hub" / "hub_config.py").read_text():
        return "[hub] workers is not supported yet"
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return "PostgreSQL is not installed (apt-get install postgresql)"
    return None


@contextlib.contextmanager
def durable_postgres(fast: bool) -> Iterator[Any]:
    """tests/postgres_server.py's throwaway server; durable (fsync, synchronous commit) unless `fast`."""
    sys.path.append(str(REPO / "tests"))   # tests/web_site.py (its free_port) imports the tests' conftest
    from tests import postgres_server
    saved = postgres_server.SETTINGS
    if not fast:
        postgres_server.SETTINGS = {**saved, "fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}
    try:
        with postgres_server.postgres_server() as server:
            yield server
    finally:
        postgres_server.SETTINGS = saved


def postgres_processes(server: Any) -> list[psutil.Process]:
    try:
        pid = int((server.directory / "data" / "postmaster.pid").read_text().split()[0])
        main = psutil.Process(pid)
        return [main, *main.children(recursive=True)]
    except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
        return []


def part_hub(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    keys = [key.strip() for key in args.backends.split(",") if key.strip()]
    unknown = [key for key in keys if key not in BACKENDS]
    if unknown:
        raise BenchmarkError(f"unknown backend(s) {unknown}: choose from {', '.join(BACKENDS)}")
    skipped: dict[str, str] = {}
    if any(BACKENDS[key].postgres for key in keys):
        missing = postgres_support()
        if missing:
            skipped = {key: missing for key in keys if BACKENDS[key].postgres}
            keys = [key for key in keys if key not in skipped]
    print(f"part 3: building {args.boxes} boxes (a key, a 4 s 1080p segment and its signed export each)", flush=True)
    built = time.monotonic()
    fleet = build_fleet(root / "fleet", args.boxes, args.build_jobs)
    build_s = time.monotonic() - built
    template = report_template(fleet[0])
    results: dict[str, Any] = {"boxes": args.boxes, "build_s": build_s, "clip_bytes": fleet[0]["bytes"],
                               "window": args.window, "box_link_mbit": args.box_link_mbit, "skipped": skipped,
                               "generators": args.generators, "pg_fast": args.pg_fast, "runs": {}}
    postgres: Any = None
    with contextlib.ExitStack() as stack:
        for key in keys:
            backend = BACKENDS[key]
            if backend.postgres and postgres is None:
                postgres = stack.enter_context(durable_postgres(args.pg_fast))
            print(f"  {backend.label}: {machine_note()}", flush=True)
            results["runs"][key] = hub_run(args, root / f"hub-{key}", backend, postgres, fleet, template)
        if args.profile_hub:
            print(f"  SQLite under cProfile: {machine_note()}", flush=True)
            results["runs"]["sqlite-profiled"] = hub_run(args, root / "hub-sqlite-profiled", BACKENDS["sqlite"],
                                                         None, fleet, template, profile=True)
    return results


def hub_threads(hub: HubProcess) -> dict[str, float]:
    """CPU-seconds of the hub's threads so far: each serving process's main thread (its event loop: TLS, HTTP,
    WebSocket, the app's handlers) and its other threads (asyncio.to_thread: database work, signature checks,
    clip filing)."""
    totals = {"event loop": 0.0, "threads": 0.0}
    for process in hub.processes():
        try:
            for thread in process.threads():
                totals["event loop" if thread.id == process.pid else "threads"] += thread.user_time + thread.system_time
        except psutil.Error:
            continue
    return totals


def hub_run(args: argparse.Namespace, root: Path, backend: Backend, postgres: Any, fleet: list[dict[str, Any]],
            template: dict[str, Any], profile: bool = False) -> dict[str, Any]:
    before = machine_note()
    database_url = postgres.new_database() if backend.postgres else None
    hub = start_hub(root, "127.0.0.1", database_url=database_url, workers=backend.workers,
                    profile=root / "hub.prof" if profile else None)
    generators: list[subprocess.Popen[bytes]] = []
    try:
        tokens = hub_tokens(hub, [box["box"] for box in fleet])
        rng = random.Random(args.seed)
        boxes = [{**box, "token": tokens[box["box"]], "clip_phase": rng.uniform(0, 60),
                  "report_phase": rng.uniform(0, REPORT_EVERY_S)} for box in fleet]
        go_path = root / "go.json"
        specs = []
        for number in range(args.generators):
            spec = {"hub_url": hub.url, "fingerprint": hub.fingerprint, "boxes": boxes[number::args.generators],
                    "report": template, "go": str(go_path), "ready": str(root / f"ready-{number}"),
                    "result": str(root / f"generator-{number}.json"), "run": root.name,
                    "link_bytes_per_s": args.box_link_mbit * 1e6 / 8, "drain": args.drain}
            path = root / f"generator-{number}-spec.json"
            path.write_text(json.dumps(spec))
            specs.append(spec)
            generators.append(record._spawn([sys.executable, str(Path(__file__).resolve()), "--generator", str(path)],
                                            root / f"generator-{number}.log"))

        def check() -> None:
            hub.check_alive()
            for number, process in enumerate(generators):
                if process.poll() is not None:
                    raise BenchmarkError(f"generator {number} exited with {process.returncode}:\n"
                                         f"{record._tail(root / f'generator-{number}.log')}")

        setup = wait_until("the boxes enrolled", lambda: all(Path(s["ready"]).exists() for s in specs), 600, check)
        ramp_start = time.time()
        window_start = ramp_start + args.ramp
        window_end = window_start + args.window
        go_path.write_text(json.dumps({"ramp_start": ramp_start, "window_start": window_start,
                                       "window_end": window_end}))
        watch = CpuWatch({"hub": hub.processes, "postgres": lambda: postgres_processes(postgres) if postgres else [],
                          "generator": lambda: [psutil.Process(p.pid) for p in generators if p.poll() is None],
                          "benchmark": own_process})
        time.sleep(max(0.0, window_start - time.time()))
        watch.start()
        if profile:
            hub.process.send_signal(signal.SIGUSR1)   # the shim profiles the window only
        threads_start = hub_threads(hub)
        while time.time() < window_end:
            check()
            time.sleep(max(0.0, min(1.0, window_end - time.time())))
            watch.tick()
        threads = {role: seconds - threads_start.get(role, 0.0) for role, seconds in hub_threads(hub).items()}
        if profile:
            hub.process.send_signal(signal.SIGUSR2)
        cpu = watch.stop()
        during = machine_note()
        for number, process in enumerate(generators):
            try:
                process.wait(args.drain + 120)
            except subprocess.TimeoutExpired:
                raise BenchmarkError(f"generator {number} did not finish") from None
            if process.returncode != 0:
                raise BenchmarkError(f"generator {number} exited with {process.returncode}:\n"
                                     f"{record._tail(root / f'generator-{number}.log')}")
        hub.check_alive()
        outcome = [json.loads(Path(s["result"]).read_text()) for s in specs]
        engine = hub.engine()
        try:
            with engine.connect() as conn:
                filed = conn.execute(sa.select(sa.func.count()).select_from(CLIPS).where(
                    CLIPS.c.received_ms >= int(window_start * 1000),
                    CLIPS.c.received_ms < int(window_end * 1000))).scalar() or 0
                reports = [(row.received_ms, json.loads(row.report)["sent_ms"]) for row in
                           conn.execute(sa.select(BOX_REPORTS.c.received_ms, BOX_REPORTS.c.report))]
        finally:
            engine.dispose()
        problems = Counter(line.split(": ", 1)[-1][:120] for line in hub.log.read_text(errors="replace").splitlines()
                           if " ERROR " in line or " WARNING " in line or "Traceback" in line)
    finally:
        record._stop(generators, signal.SIGTERM, timeout=10)
        hub.stop()
    shutil.rmtree(hub.data_dir / "blobs", ignore_errors=True)   # ~2 MB a clip: not kept between backends
    return {"backend": backend.label + (" (under cProfile)" if profile else ""), "workers": backend.workers,
            "setup_s": setup, "cpu": cpu, "threads": threads,
            "profile": hub_profile(root / "hub.prof") if profile else None,
            "window_start": window_start, "window_end": window_end, "generators": outcome, "filed_in_window": filed,
            "report_latency_s": [(received - sent) / 1000 for received, sent in reports
                                 if window_start * 1000 <= received < window_end * 1000],
            "hub_problems": problems.most_common(8), "machine_before": before, "machine_during": during,
            "machine_after": machine_note()}


def hub_profile(prefix: Path, top: int = 14) -> dict[str, list[tuple[str, float, int]]]:
    """From the shim's cProfile dumps: the event loop's functions by own time, and the functions the executor
    threads ran (what asyncio.to_thread was given) by cumulative time: (function, seconds, calls)."""
    import pstats

    def name(key: tuple[str, int, str]) -> str:
        path, line, function = key
        short = "/".join(Path(path).parts[-2:]) if path != "~" else ""
        return f"{short}:{line}:{function}" if short else function

    found: dict[str, list[tuple[str, float, int]]] = {}
    main = prefix.with_name(prefix.name + ".main")
    if main.exists():
        stats = pstats.Stats(str(main)).stats  # type: ignore[attr-defined]
        ranked = sorted(stats.items(), key=lambda item: -item[1][2])[:top]
        found["event loop, own time"] = [(name(key), value[2], value[1]) for key, value in ranked]
    dumps = sorted(prefix.parent.glob(prefix.name + ".thread-*"))
    if dumps:
        merged = pstats.Stats(*[str(d) for d in dumps]).stats  # type: ignore[attr-defined]
        entries = [(key, value) for key, value in merged.items()
                   if any(caller[0].endswith("concurrent/futures/thread.py") for caller in value[4])]
        ranked = sorted(entries, key=lambda item: -item[1][3])[:top]
        found["executor threads, cumulative"] = [(name(key), value[3], value[1]) for key, value in ranked]
        own = sorted(merged.items(), key=lambda item: -item[1][2])[:top]
        found["executor threads, own time"] = [(name(key), value[2], value[1]) for key, value in own]
    return found


# --- the load generator (a process of its own) -----------------------------------------------------

@dataclass
class GeneratorState:
    requests: RequestLog = field(default_factory=RequestLog)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    messages: list[tuple[str, float]] = field(default_factory=list)        # (kind, monotonic time sent)
    audit_latency: list[tuple[float, float]] = field(default_factory=list)  # (monotonic end, seconds)
    channel_errors: list[str] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)


class FleetBox:
    """One simulated box: its identity, clip, channel and schedule."""

    def __init__(self, spec: dict[str, Any], box: dict[str, Any], state: GeneratorState) -> None:
        self.spec, self.box, self.state = spec, box, state
        self.layout = StorageLayout(Path(box["data_dir"]))
        self.identity: DeviceIdentity = device_identity(self.layout, box["box"], box["box"])
        self.archive = Path(box["archive"])
        self.hub_key: bytes | None = None
        self.trail: AuditTrail | None = None
        self.audit_due = asyncio.Event()
        self.acked: int | None = None
        self.ack = asyncio.Event()
        self.uploads = 0

    def client(self, link_bytes_per_s: float = 0.0) -> TimedHubClient:
        return TimedHubClient(self.spec["hub_url"], self.identity, hub_key_pem=self.hub_key,
                              tls_fingerprint=self.spec["fingerprint"], requests=self.state.requests,
                              link_bytes_per_s=link_bytes_per_s)

    async def enrol(self) -> None:
        async with self.client() as client:
            self.hub_key = await client.enrol(self.box["token"])

    async def uploads_loop(self, times: Any, monotonic_of: Callable[[float], float], window_end: float) -> None:
        at = times["window_start"] + self.box["clip_phase"]
        while at < window_end:
            await asyncio.sleep(max(0.0, monotonic_of(at) - time.monotonic()))
            self.uploads += 1
            metadata = {"camera": "gate", "kind": "motion", "start_ms": str(self.box["start_ms"]),
                        "end_ms": str(self.box["end_ms"]),
                        "idempotency_key": f"{self.spec['run']}/{self.box['box']}/{self.uploads}"}
            entry: dict[str, Any] = {"box": self.box["box"], "due": monotonic_of(at), "started": time.monotonic()}
            try:
                async with self.client(self.spec["link_bytes_per_s"]) as client:   # a new session each clip, as
                    client.upload_size = self.box["bytes"]                             # the Uploader's rounds
                    await client.upload(self.archive, metadata)
                entry["outcome"] = "ok"
            except (HubUnreachable, HubRefused) as exc:
                entry["outcome"] = f"{type(exc).__name__}: {str(exc)[:160]}"
            entry["ended"] = time.monotonic()
            self.state.uploads.append(entry)
            if entry["outcome"] == "ok":   # its export's record in the box's audit trail, sent up the channel
                await asyncio.to_thread(self._append_audit)
                self.audit_due.set()
            at += 60.0

    def _append_audit(self) -> None:
        if self.trail is None:
            self.trail = AuditTrail(self.layout, self.identity)
        self.trail.append("sync", AuditAction.EXPORT, camera="gate", from_ms=self.box["start_ms"],
                          to_ms=self.box["end_ms"], reason=f"upload to the city hub (motion clip {self.uploads})",
                          detail=json.dumps({"folder": str(self.uploads)}))

    async def channel_loop(self, times: Any, monotonic_of: Callable[[float], float], stop: asyncio.Event) -> None:
        await asyncio.sleep(max(0.0, monotonic_of(times["ramp_start"]) - time.monotonic()))
        async with self.client() as client:
            started = time.monotonic()
            try:
                socket = await client.open_channel()
            except (HubUnreachable, HubRefused) as exc:
                self.state.channel_errors.append(f"{self.box['box']}: {exc}"[:200])
                return
            self.state.requests.entries.append(("channel-open", time.monotonic(), time.monotonic() - started,
                                                time.monotonic() - started, "101"))
            reader = asyncio.create_task(self._read(socket))
            try:
                await self._send_report(socket)   # on connect, as the box does
                next_report = monotonic_of(times["window_start"] + self.box["report_phase"])
                self.audit_due.set()              # whatever the hub's copy lacks (the export made at build time)
                while not stop.is_set():
                    waits = [asyncio.create_task(self.audit_due.wait()), asyncio.create_task(stop.wait())]
                    await asyncio.wait(waits, timeout=max(0.0, next_report - time.monotonic()),
                                       return_when=asyncio.FIRST_COMPLETED)
                    for task in waits:
                        task.cancel()
                    if stop.is_set():
                        break
                    if time.monotonic() >= next_report:
                        await self._send_report(socket)
                        next_report += REPORT_EVERY_S
                    if self.audit_due.is_set():
                        self.audit_due.clear()
                        await self._send_audit(socket)
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                self.state.channel_errors.append(f"{self.box['box']}: {type(exc).__name__}: {exc}"[:200])
            finally:
                reader.cancel()
                await socket.close()

    async def _read(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        async for message in socket:
            if message.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(message.data)
                if data.get("type") == MessageType.AUDIT_ACK:
                    self.acked = int(data["seq"])
                    self.ack.set()

    async def _send_report(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        report = {**self.spec["report"], "sent_ms": SYSTEM_CLOCK.now_ms()}
        await socket.send_str(json.dumps(report))
        self.state.messages.append(("report", time.monotonic()))

    async def _send_audit(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        if self.acked is None:   # the hub says where its copy ends right after the channel opens
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.ack.wait(), 30)
        if self.acked is None:
            return
        records, head = await asyncio.to_thread(upstream_batch, self.layout, self.acked, AUDIT_BATCH)
        if not records:
            return
        self.ack.clear()
        started = time.monotonic()
        await socket.send_str(json.dumps({"type": MessageType.AUDIT, "records": records, "head": head}))
        self.state.messages.append(("audit", started))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.ack.wait(), 60)
            self.state.audit_latency.append((time.monotonic(), time.monotonic() - started))


def run_generator(spec_path: Path) -> int:
    spec = json.loads(spec_path.read_text())
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s [generator] %(name)s: %(message)s")
    state = GeneratorState()
    result = asyncio.run(_generate(spec, state))
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


async def _generate(spec: dict[str, Any], state: GeneratorState) -> dict[str, Any]:
    boxes = [FleetBox(spec, box, state) for box in spec["boxes"]]
    limit = asyncio.Semaphore(16)

    async def enrol(box: FleetBox) -> None:
        async with limit:
            await box.enrol()

    await asyncio.gather(*(enrol(box) for box in boxes))
    Path(spec["ready"]).touch()
    go = Path(spec["go"])
    while not go.exists():
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)
    times = json.loads(go.read_text())
    offset = time.monotonic() - time.time()   # the wall times of the plan, on this process's monotonic clock

    def monotonic_of(wall: float) -> float:
        return wall + offset

    stop = asyncio.Event()

    async def lag() -> None:
        while not stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.1)
            state.lag.append(time.monotonic() - before - 0.1)

    cpu_start = time.process_time()
    # channels open over the ramp, evenly spread
    ramp = max(0.0, times["window_start"] - times["ramp_start"])
    for number, box in enumerate(boxes):
        box.box["connect_at"] = times["ramp_start"] + ramp * 0.8 * number / max(1, len(boxes))
    channels = [asyncio.create_task(box.channel_loop({**times, "ramp_start": box.box["connect_at"]}, monotonic_of,
                                                     stop)) for box in boxes]
    watcher = asyncio.create_task(lag())
    uploads = [asyncio.create_task(box.uploads_loop(times, monotonic_of, times["window_end"])) for box in boxes]
    _, pending = await asyncio.wait(uploads, timeout=max(0.0, monotonic_of(times["window_end"]) - time.monotonic())
                                       + spec["drain"])
    for task in pending:
        task.cancel()
    unfinished = len(pending)
    stop.set()
    await asyncio.gather(*channels, return_exceptions=True)
    watcher.cancel()
    for box in boxes:
        if box.trail is not None:
            box.trail.close()
    return {"window_start_mono": monotonic_of(times["window_start"]), "window_end_mono": monotonic_of(times["window_end"]),
            "requests": state.requests.entries, "uploads": state.uploads, "messages": state.messages,
            "audit_latency": state.audit_latency, "channel_errors": state.channel_errors[:20],
            "channel_error_count": len(state.channel_errors), "lag": state.lag, "unfinished_uploads": unfinished,
            "cpu_s": time.process_time() - cpu_start, "boxes": len(boxes)}


def report_hub(r: dict[str, Any]) -> tuple[list[str], list[Target]]:
    lines = [(f"  fleet: {r['boxes']} boxes, each its own key and a {mb(r['clip_bytes'])} signed export (built in"
             f" {r['build_s']:.0f} s); per box: a channel (report on connect and every 60 s, an audit batch after"
             f" each clip), one clip a minute (create, HEAD, 2 PATCHes of <= 1 MiB, bodies at"
             f" {r['box_link_mbit']:g} Mbit/s); HTTPS; window {r['window']} s; {r['generators']} generator"
             f" process(es); PostgreSQL {'fast (fsync off)' if r['pg_fast'] else 'durable (fsync, synchronous commit on)'}")]
    for key, reason in r["skipped"].items():
        lines.append(f"  {BACKENDS[key].label}: not run: {reason}")
    summary: dict[str, dict[str, float]] = {}
    for key, run in r["runs"].items():
        window = run["window_end"] - run["window_start"]
        kinds: dict[str, list[float]] = defaultdict(list)
        statuses: dict[str, Counter[str]] = defaultdict(Counter)
        offered = delivered = failed = 0
        whole: list[float] = []
        late: list[float] = []
        audit: list[float] = []
        messages: Counter[str] = Counter()
        lag: list[float] = []
        unfinished = channel_errors = 0
        generator_cpu = 0.0
        for g in run["generators"]:
            start, end = g["window_start_mono"], g["window_end_mono"]
            for kind, at, seconds, hub_seconds, status in g["requests"]:
                if start <= at < end:
                    statuses[kind][status] += 1
                    if status.isdigit():
                        kinds[kind].append(hub_seconds if kind.startswith("patch") else seconds)
            for upload in g["uploads"]:
                if start <= upload["due"] < end:
                    offered += 1
                    if upload["outcome"] == "ok":
                        delivered += 1
                        whole.append(upload["ended"] - upload["due"])
                        late.append(upload["started"] - upload["due"])
                    else:
                        failed += 1
            for kind, at in g["messages"]:
                if start <= at < end:
                    messages[kind] += 1
            audit += [seconds for at, seconds in g["audit_latency"] if start <= at < end]
            lag += g["lag"]
            unfinished += g["unfinished_uploads"]
            channel_errors += g["channel_error_count"]
            generator_cpu += g["cpu_s"]
        http = sum(sum(c.values()) for c in statuses.values())
        cpu = run["cpu"]
        hub_cores, pg_cores = cpu["cores"]["hub"], cpu["cores"]["postgres"]
        if run.get("profile") is None:   # a profiled hub is slower: not a figure to plan with
            summary[key] = {"hub": hub_cores, "pg": pg_cores, "delivered_per_min": delivered / window * 60,
                            "p99_last": pct(kinds["patch-last"], 99), "offered": offered, "delivered": delivered}
        lines += [
            "",
            (f"  [{run['backend']}] machine at the window's end: {run['machine_during']}; setup (enrol {r['boxes']}) "
            f"{run['setup_s']:.0f} s"),
            (f"    clips: {offered} due in the window, {delivered} delivered, {failed} failed, {unfinished} unfinished"
            f" after the drain; hub filed {run['filed_in_window']} in the window; clip due -> receipt p50"
            f" {ms(pct(whole, 50))}, p99 {ms(pct(whole, 99))} (start late p99 {ms(pct(late, 99))})"),
            f"    requests/s: HTTP {http / window:.1f} (" + ", ".join(
                f"{k} {sum(statuses[k].values()) / window:.1f}" for k in sorted(statuses)) + ")"
            f" + channel messages {sum(messages.values()) / window:.1f} (" + ", ".join(
                f"{k} {v / window:.1f}" for k, v in sorted(messages.items())) + ")",
            "    latency p50/p99: " + ", ".join(f"{k} {ms(pct(v, 50))}/{ms(pct(v, 99))}" for k, v in sorted(kinds.items()))
            + f", audit->ack {ms(pct(audit, 50))}/{ms(pct(audit, 99))}, report->stored"
            f" {ms(pct(run['report_latency_s'], 50))}/{ms(pct(run['report_latency_s'], 99))}",
            "    statuses: " + "; ".join(f"{k}: " + " ".join(f"{s}x{n}" for s, n in c.most_common(4))
                                       for k, c in sorted(statuses.items())),
            (f"    CPU (cores, of 2): hub {hub_cores:.2f} (every hub process, {run['workers']} worker(s)), PostgreSQL {pg_cores:.2f}, generator {cpu['cores']['generator']:.2f}"
            f" (loop lag p99 {ms(pct(lag, 99))}, max {ms(max(lag) if lag else float('nan'))}), benchmark"
            f" {cpu['cores']['benchmark']:.2f}, others {cpu['others_cores']:.2f}, machine busy"
            f" {cpu['machine_busy_cores']:.2f}"),
            (f"    hub + database CPU per clip delivered: {(hub_cores + pg_cores) * window / max(1, delivered) * 1000:.0f}"
             f" ms; hub CPU by thread: event loops {run['threads']['event loop'] / window:.2f} cores, executor"
             f" threads {run['threads']['threads'] / window:.2f}; channel errors {channel_errors}"),
        ]
        for what, rows in (run.get("profile") or {}).items():
            lines.append(f"    profile over the window, {what} (CPU s, calls; cProfile slows it: the shares count):")
            lines += [f"      {seconds:7.2f} {calls:7d}  {function}" for function, seconds, calls in rows]
        for text, count in run["hub_problems"]:
            lines.append(f"    hub log x{count}: {text}")
    targets: list[Target] = []
    if summary:
        lines += ["", (f"  2,500 boxes ({CITY_CAMERAS:,} cameras) = {CITY_BOXES / r['boxes']:g} x this load"
                      f" ({CITY_BOXES / 60:.1f} clips/s, {CITY_BOXES * r['clip_bytes'] * 8 / 60 / 1e6:.0f} Mbit/s in):")]
        scale = CITY_BOXES / r["boxes"]
        for key, s in summary.items():
            hub_need, pg_need = s["hub"] * scale, s["pg"] * scale
            workers = max(1, math.ceil(hub_need / WORKER_BUSY_CEILING))
            kept_up = s["delivered"] >= 0.98 * s["offered"]
            lines.append(f"    from {BACKENDS[key].label}: hub processes {s['hub']:.2f} x {scale:g} = {hub_need:.2f}"
                         f" cores -> {workers} worker(s) at <= {WORKER_BUSY_CEILING:.0%} of a core each"
                         + (f", + PostgreSQL {pg_need:.2f} cores" if BACKENDS[key].postgres else
                            " (SQLite allows one process: " + ("enough" if hub_need <= WORKER_BUSY_CEILING
                                                               else "NOT enough") + ")")
                         + ("" if kept_up else f"; did not keep up at {r['boxes']} boxes"
                            f" ({s['delivered']}/{s['offered']} delivered)"))
        pg = [k for k in summary if BACKENDS[k].postgres]
        if pg:
            best = min(pg, key=lambda k: summary[k]["hub"])
            need = max(1, math.ceil(summary[best]["hub"] * scale / WORKER_BUSY_CEILING))
            targets.append((None, "hub workers for 2,500 boxes",
                            (f"{need} (from {BACKENDS[best].label}'s {summary[best]['hub']:.2f} hub cores at"
                            f" {r['boxes']} boxes, x{scale:g}, <= {WORKER_BUSY_CEILING:.0%} busy per worker), plus"
                            f" {summary[best]['pg'] * scale:.1f} cores of PostgreSQL")))
    return lines, targets


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", action="append", choices=["1", "2", "3"],
                        help="run this part (repeatable; default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (data, logs)")
    parser.add_argument("--json", action="store_true", help="all figures as one JSON object on the last line")
    parser.add_argument("--link-kbit", type=int, default=LINK_KBIT, help="the box->hub link's rate (parts 1, 2)")
    one = parser.add_argument_group("part 1")
    one.add_argument("--clips", type=int, default=12, help="motion clips to upload (default %(default)s)")
    one.add_argument("--clip-seconds", type=int, default=20, help="each clip's length (10 s segments; ~5 MB each)")
    one.add_argument("--drop-mean-mb", type=float, default=DROP_MEAN_BYTES / 1e6, help="mean bytes between drops")
    one.add_argument("--seed", type=int, default=1, help="the drops' (and part 3's phases') random seed")
    one.add_argument("--link-timeout", type=float, default=900, help="give up the upload after this many seconds")
    two = parser.add_argument_group("part 2")
    two.add_argument("--cameras", type=int, default=8)
    two.add_argument("--idle-seconds", type=float, default=30, help="phase (a): recording, sync idle")
    two.add_argument("--pull-seconds", type=int, default=15, help="each camera's pulled range (phase (b))")
    two.add_argument("--simulator-nice", type=int, default=-10, help="the test cameras' nice value (root for < 0)")
    two.add_argument("--recording-timeout", type=float, default=600)
    three = parser.add_argument_group("part 3")
    three.add_argument("--boxes", type=int, default=500)
    three.add_argument("--window", type=float, default=60, help="measured seconds per backend")
    three.add_argument("--ramp", type=float, default=15, help="seconds for the channels to open before the window")
    three.add_argument("--drain", type=float, default=45, help="seconds after the window for uploads to finish")
    three.add_argument("--backends", default="sqlite,pg1,pg2,pg4", help=f"from {','.join(BACKENDS)}")
    three.add_argument("--generators", type=int, default=1, help="load generator processes")
    three.add_argument("--box-link-mbit", type=float, default=10.0, help="each box's uplink (PATCH bodies)")
    three.add_argument("--build-jobs", type=int, default=4, help="processes building the fleet's exports")
    three.add_argument("--pg-fast", action="store_true", help="PostgreSQL as the tests run it (fsync off)")
    three.add_argument("--profile-hub", action="store_true",
                       help="one more SQLite run with the hub under cProfile (every thread): where its CPU goes")
    parser.add_argument("--inner", nargs=2, metavar=("PART", "SPEC"), help=argparse.SUPPRESS)
    parser.add_argument("--generator", metavar="SPEC", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.inner:
        part, spec_path = args.inner
        spec = json.loads(Path(spec_path).read_text())
        return inner_link(spec) if part == "link" else inner_recording(spec)
    if args.generator:
        return run_generator(Path(args.generator))
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parts = sorted(set(args.part or ["1", "2", "3"]))
    if os.geteuid() != 0 and ({"1", "2"} & set(parts)):
        print("sync.py: parts 1 and 2 need root (network namespaces, tc)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="edgenvr-bench-sync-"))
    runs = {"1": ("link", part_link, report_link), "2": ("recording", part_recording, report_recording),
            "3": ("hub", part_hub, report_hub)}
    figures: dict[str, Any] = {}
    errors = 0
    print(f"sync.py: {machine_note()}; work dir {workdir}", flush=True)
    try:
        for part in parts:
            name, measure, _ = runs[part]
            started = time.monotonic()
            try:
                figures[name] = measure(args, workdir / name)
                figures[name]["elapsed_s"] = time.monotonic() - started
            except (BenchmarkError, subprocess.TimeoutExpired, OSError) as exc:
                print(f"sync.py: part {part} ({name}) could not run: {exc}", file=sys.stderr)
                figures[name] = {"error": str(exc)}
                errors += 1
    except KeyboardInterrupt:
        print("sync.py: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"work dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    targets: list[Target] = []
    titles = {"link": "Part 1: throughput through a 10 Mbit/s link dropping every 20 MB on average",
              "recording": "Part 2: box CPU while uploading at 10 Mbit/s and recording",
              "hub": "Part 3: the hub ingesting from a fleet of simulated boxes"}
    for part in parts:
        name, _, report = runs[part]
        result = figures.get(name, {})
        print(f"\n{titles[name]}" + (f" ({result['elapsed_s']:.0f} s)" if "elapsed_s" in result else ""))
        if "error" in result:
            print(f"  could not run: {result['error']}")
            continue
        if "machine_before" in result:
            print(f"  machine: before {result['machine_before']}; after {result['machine_after']}")
        lines, part_targets = report(result)
        print("\n".join(lines))
        targets += part_targets
    if targets:
        print("\ntargets:")
        for ok, what, value in targets:
            print(f"  [{verdict(ok)}] {what}: {value}")
    if args.json:
        print(json.dumps(figures, default=str))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
