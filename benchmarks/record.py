"""Recording benchmark: edgenvr against one ffmpeg per camera, both recording the same cameras at once.

This script owns the recording benchmark of edgenvr. It serves N simulated 1080p cameras (25 fps,
GOP 50, ~4 Mbit/s H.264) from the built-in GStreamer test camera, records them for a measured window
with a real `python -m edgenvr run` subprocess and, at the same time and from the same mounts, with
one `ffmpeg -c copy -f segment` process per camera (the way other NVRs record), then prints for both:

  * CPU-seconds per camera-minute (user+sys of every process of that recorder over the window),
    and edgenvr's total CPU as a share of one core;
  * peak RSS per process, per camera (tree / N) and PSS (recorder processes share library pages),
    and, given an N=1 run as ``--baseline``, edgenvr's marginal RSS per additional camera;
  * dropped packets: edgenvr's own counters (``cameras.dropped_json`` in the index) and, for both,
    frames missing from the files, found by matching every recorded picture to its place in the
    looped test clip (a skipped picture breaks the sequence, whoever lost it);
  * recorded seconds per camera, edgenvr's gaps table, and index writes: bytes the supervisor
    (the only index writer; recorders write video) wrote, per camera-hour, and the index size.

Targets are printed as PASS/FAIL and never asserted: a benchmark reports, a test decides.

    python benchmarks/record.py --cameras 4 --seconds 60 [--json] [--no-ffmpeg]
    python benchmarks/record.py --cameras 1 --json > n1.txt
    python benchmarks/record.py --cameras 32 --no-ffmpeg --baseline n1.txt

The simulator's CPU is measured and reported separately, counted for neither recorder. So is the
benchmark's own sampling, and the rest of the machine's load, so that a disturbed run is visible.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import av
import psutil

from edgenvr.config.records import StorageConfig
from edgenvr.core.process_setup import die_with_parent_preexec
from edgenvr.recording.annexb import annexb_nal_units
from edgenvr.simulator import (
    CLIP_CACHE,
    SimulatedCamera,
    make_clip,
    simulator_unavailable_reason,
)

FPS = 25
GOP = 50
WIDTH, HEIGHT = 1920, 1080
BITRATE = 4_000_000
CLIP_SECONDS = 10
SEGMENT_SECONDS = 10
MB = 1024 * 1024

# Targets from the issue; printed as PASS/FAIL, never asserted.
TARGET_CPU_RATIO = 1.0
TARGET_CORE_SHARE_AT_32 = 0.25
TARGET_MARGINAL_RSS_MB = 30.0
TARGET_INDEX_KB_PER_CAMERA_HOUR = 300.0

# CPU and RSS are sampled once a second (for the peak); PSS, which makes the kernel walk every
# mapping of the process, every few samples: it changes slowly, and reading it each second for 65
# processes cost the benchmark ~10% of a core on this 2-core machine.
SAMPLE_SECONDS = 1.0
PSS_EVERY_SAMPLES = 5


class BenchmarkError(RuntimeError):
    """The benchmark could not run as designed (a process died, a recorder never started)."""


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------

def _spawn(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        # A session of its own: Ctrl-C reaches only the benchmark, which then stops everything in
        # order (recorders must close their segments before the files are analysed).
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True,
                                preexec_fn=die_with_parent_preexec(signal.SIGTERM))  # no orphans if we die


def _stop(processes: Iterable[subprocess.Popen[bytes]], sig: int | None, timeout: float) -> None:
    """Send `sig` (None: it was sent already), wait up to `timeout` s in total, then SIGKILL what is left."""
    running = [p for p in processes if p.poll() is None]
    for proc in running:
        try:
            if sig is not None:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for proc in running:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------
# Process measurement
# ---------------------------------------------------------------------------------------------


@dataclass
class _Tracked:
    process: psutil.Process
    role: str
    cpu_start: float
    cpu_last: float
    peak_rss: int = 0
    peak_pss: int = 0
    alive: bool = True

    def spent(self) -> float:
        """CPU-seconds in the window."""
        return self.cpu_last - self.cpu_start


def _cpu(process: psutil.Process) -> float:
    # user+system of the process itself; children_* would count a reaped child twice. The sum is
    # the kernel's exact runtime; the user/system split is estimated from timer ticks, and for
    # processes that wake 25 times a second it varied run to run, so it is not reported.
    times = process.cpu_times()
    return times.user + times.system


@dataclass
class ProcessGroup:
    """CPU and memory of one recorder's processes over the measured window.

    CPU is a delta from the window start, per process; a process that appears during the window
    (a restarted recorder) counts from zero, one that dies keeps its last sample."""

    name: str
    members: dict[int, _Tracked] = field(default_factory=dict)
    peak_rss_total: int = 0
    peak_pss_total: int = 0
    started: int = 0
    ended: int = 0

    def track(self, process: psutil.Process, role: str, in_window: bool) -> None:
        if process.pid in self.members and self.members[process.pid].process == process:
            return
        try:
            cpu = _cpu(process)
        except psutil.NoSuchProcess:
            return
        # Created during the window: all its CPU was spent in the window.
        self.members[process.pid] = _Tracked(process, role, 0.0 if in_window else cpu, cpu)
        if in_window:
            self.started += 1

    def reset_window(self) -> None:
        for member in self.members.values():
            member.cpu_start = member.cpu_last
            member.peak_rss = member.peak_pss = 0
        self.peak_rss_total = self.peak_pss_total = 0
        self.started = self.ended = 0

    def sample(self, with_pss: bool) -> None:
        rss_total = pss_total = 0
        for member in self.members.values():
            if not member.alive:
                continue
            try:
                with member.process.oneshot():
                    member.cpu_last = _cpu(member.process)
                    memory = member.process.memory_full_info() if with_pss else member.process.memory_info()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                member.alive = False
                self.ended += 1
                continue
            member.peak_rss = max(member.peak_rss, memory.rss)
            rss_total += memory.rss
            if with_pss:
                member.peak_pss = max(member.peak_pss, memory.pss)
                pss_total += memory.pss
        self.peak_rss_total = max(self.peak_rss_total, rss_total)
        if with_pss:
            self.peak_pss_total = max(self.peak_pss_total, pss_total)

    def cpu_seconds(self, role: str | None = None) -> float:
        """CPU-seconds in the window of the members with `role` (all if None)."""
        return sum(m.spent() for m in self.members.values() if role in (None, m.role))

    def by_role(self, role: str) -> list[_Tracked]:
        return [m for m in self.members.values() if m.role == role]


def _edgenvr_role(process: psutil.Process) -> str:
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return "recorder"
    # multiprocessing's spawn context starts a resource tracker next to the recorders: edgenvr's cost.
    return "resource-tracker" if "resource_tracker" in cmdline else "recorder"


def _machine_times() -> dict[str, float]:
    """CPU-seconds of the whole machine: busy (any process or interrupt work), and the parts of it
    no process is charged for. Guest time is already inside user time; steal is the hypervisor's."""
    times = psutil.cpu_times()
    interrupts = getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)
    busy = times.user + times.nice + times.system + interrupts
    return {"busy": busy, "interrupts": interrupts, "steal": getattr(times, "steal", 0.0),
            "iowait": getattr(times, "iowait", 0.0)}


def _all_process_cpu() -> dict[tuple[int, float], tuple[str, float]]:
    """(pid, create time) -> (name, CPU-seconds) of every process and kernel thread."""
    snapshot = {}
    for proc in psutil.process_iter(["name", "cpu_times", "create_time"]):
        times = proc.info["cpu_times"]
        if times is not None and proc.info["create_time"] is not None:
            snapshot[(proc.pid, proc.info["create_time"])] = (proc.info["name"] or "?", times.user + times.system)
    return snapshot


def _other_processes(before: dict[tuple[int, float], tuple[str, float]],
                     after: dict[tuple[int, float], tuple[str, float]], ours: set[int],
                     window: float) -> tuple[float, list[dict[str, Any]]]:
    """CPU-seconds of all processes outside the benchmark during the window, and the busiest of
    them: who disturbed the run."""
    deltas: dict[str, float] = {}
    for key, (name, cpu) in after.items():
        if key[0] in ours:
            continue
        spent = cpu - before.get(key, (name, 0.0))[1]
        if spent > 0:
            # kworker/u4:1 and kworker/1:2 are one thing to a reader: group threads by name stem.
            stem = name.split("/")[0] if name.startswith(("kworker", "ksoftirqd", "jbd2")) else name
            deltas[stem] = deltas.get(stem, 0.0) + spent
    top = sorted(deltas.items(), key=lambda item: -item[1])[:5]
    return sum(deltas.values()), [{"name": name, "core_share": round(cpu / window, 4)} for name, cpu in top]


# ---------------------------------------------------------------------------------------------
# Recorded files: which pictures of the looped clip are in them
# ---------------------------------------------------------------------------------------------


def _nal_units(data: bytes) -> Iterator[memoryview]:
    """NAL units of one access unit, in Annex-B (start codes) or MP4 (4-byte lengths) framing."""
    view = memoryview(data)
    if data[:3] == b"\x00\x00\x01" or data[:4] == b"\x00\x00\x00\x01":
        yield from annexb_nal_units(data)
        return
    i = 0
    while i + 4 <= len(data):
        length = int.from_bytes(data[i:i + 4], "big")
        yield view[i + 4:i + 4 + length]
        i += 4 + length


def _picture_key(data: bytes) -> int | None:
    """Hash of the first slice of a picture (H.264 NAL 1 or 5 with first_mb_in_slice == 0).

    Slice bytes travel unchanged from the clip through RTP into both recorders' MP4 files, while
    framing, AUDs and parameter sets differ, so the slice alone identifies the picture."""
    for nal in _nal_units(data):
        if len(nal) > 1 and nal[0] & 0x1F in (1, 5) and nal[1] & 0x80:
            return hash(nal)
    return None


def clip_picture_index(clip: Path) -> dict[int, int]:
    """Picture key -> position in the clip, for every picture of the clip."""
    data = clip.read_bytes()
    index: dict[int, int] = {}
    for nal in _nal_units(data):
        if len(nal) > 1 and nal[0] & 0x1F in (1, 5) and nal[1] & 0x80:
            key = hash(nal)
            if key in index:
                raise BenchmarkError(f"{clip}: two pictures with identical first slices; cannot track frames")
            index[key] = len(index)
    return index


@dataclass
class RecordingStats:
    """What one recorder wrote for one camera, judged against the clip the camera loops."""

    files: int = 0
    packets: int = 0
    seconds: float = 0.0
    missing_frames: int = 0      # pictures skipped in the sequence (lost somewhere)
    discontinuities: int = 0
    repeated_frames: int = 0     # the same picture twice in a row
    unknown_packets: int = 0     # not a picture of the clip: damaged in transit or corrupt
    unreadable_files: int = 0


def scan_recording(files: list[Path], pictures: dict[int, int]) -> RecordingStats:
    """Demux (no decode) the files in recording order and follow the clip's picture sequence."""
    stats = RecordingStats(files=len(files))
    length = len(pictures)
    previous: int | None = None
    for path in files:
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                first = last = None
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue
                    stats.packets += 1
                    if packet.pts is not None:
                        first = packet.pts if first is None else min(first, packet.pts)
                        last = packet.pts if last is None else max(last, packet.pts)
                    position = pictures.get(_picture_key(bytes(packet)))  # type: ignore[arg-type]
                    if position is None:
                        stats.unknown_packets += 1
                        continue
                    if previous is not None:
                        step = (position - previous) % length
                        if step == 0:
                            stats.repeated_frames += 1
                        elif step != 1:
                            stats.discontinuities += 1
                            stats.missing_frames += step - 1
                    previous = position
                if first is not None and last is not None and stream.time_base is not None:
                    stats.seconds += float((last - first) * stream.time_base) + 1 / FPS
        except (av.error.FFmpegError, OSError, IndexError):
            stats.unreadable_files += 1
    return stats


def edgenvr_files(data_dir: Path, camera: str) -> list[Path]:
    # Segment names are their start epoch ms, under date/hour directories.
    return sorted((data_dir / "segments" / camera).rglob("*.mp4"), key=lambda p: int(p.stem))


def ffmpeg_files(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("*.mp4"))


# ---------------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------------


def read_index(index_path: Path) -> dict[str, Any]:
    """Drop counters, gaps and segment totals per camera, read-only (never blocks the writer)."""
    conn = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True, timeout=10)
    try:
        cameras = {row[0]: {"state": row[1], "dropped": json.loads(row[2])}
                   for row in conn.execute("SELECT id, state, dropped_json FROM cameras")}
        for camera, count, ms, packets in conn.execute(
                "SELECT camera, COUNT(*), SUM(end_ms - start_ms), SUM(packets) FROM segments GROUP BY camera"):
            cameras.setdefault(camera, {"state": "?", "dropped": {}}).update(
                segments=count, indexed_seconds=ms / 1000, indexed_packets=packets)
        gaps = [{"camera": c, "start_ms": s, "end_ms": e, "reason": r}
                for c, s, e, r in conn.execute("SELECT camera, start_ms, end_ms, reason FROM gaps")]
    finally:
        conn.close()
    return {"cameras": cameras, "gaps": gaps}


def index_bytes(data_dir: Path) -> dict[str, int]:
    sizes = {}
    for suffix in ("", "-wal", "-shm"):
        path = data_dir / f"index.sqlite3{suffix}"
        sizes["index.sqlite3" + suffix] = path.stat().st_size if path.exists() else 0
    return sizes


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def camera_ids(count: int) -> list[str]:
    return [f"cam-{i:02d}" for i in range(count)]


def config_toml(data_dir: Path, urls: dict[str, str], cameras_per_process: int | None = None) -> str:
    # index_commit_seconds is left at its default on purpose: index writes are measured as shipped.
    # The quota is far above what a run writes, so retention never deletes during it.
    lines = ["[storage]", f"data_dir = {json.dumps(str(data_dir))}", 'quota = "1TB"', 'min_free = "0"', "",
             "[recording]", f"segment_seconds = {SEGMENT_SECONDS}"]
    if cameras_per_process is not None:
        lines.append(f"cameras_per_process = {cameras_per_process}")
    # This benchmark measures recording alone; benchmarks/motion.py measures recording with motion.
    lines += ["", "[motion]", "enabled = false", "tamper = false", ""]
    for camera, url in urls.items():
        lines += ["[[cameras]]", f"id = {json.dumps(camera)}", f"url = {json.dumps(url)}", ""]
    return "\n".join(lines)


# `--ffmpeg-format fmp4` gives ffmpeg the crash-safe output edgenvr writes (segment_files.MP4_OPTIONS):
# the reference command writes plain MP4, which loses a whole segment when the process dies.
FFMPEG_FMP4_OPTIONS = ["-segment_format_options",
                       "movflags=frag_keyframe+empty_moov+default_base_moof:frag_duration=1000000:flush_packets=1"]


def ffmpeg_command(url: str, out_dir: Path, output_format: str = "mp4") -> list[str]:
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", url,
            "-c", "copy", "-f", "segment", "-segment_time", str(SEGMENT_SECONDS), "-reset_timestamps", "1",
            *(FFMPEG_FMP4_OPTIONS if output_format == "fmp4" else []), str(out_dir / "%05d.mp4")]


def bench_clip() -> Path:
    """The simulated camera's 10 s 1080p clip (encoded once, then cached)."""
    return make_clip(CLIP_CACHE / f"bench-{WIDTH}x{HEIGHT}-{FPS}fps-gop{GOP}-4mbit.h264", codec="h264",
                     width=WIDTH, height=HEIGHT, fps=FPS, gop=GOP, bitrate=BITRATE, seconds=CLIP_SECONDS)


def _wait_until(what: str, ready: Callable[[], bool], timeout: float, check: Callable[[], None]) -> float:
    """Poll `ready` until true; `check` raises if something died meanwhile. Returns seconds waited."""
    started = time.monotonic()
    while not ready():
        check()
        if time.monotonic() - started > timeout:
            raise BenchmarkError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.25)
    return time.monotonic() - started


@dataclass
class Run:
    """Everything started for one benchmark run, so that one `finally` can stop all of it."""

    workdir: Path
    cameras: list[str]
    servers: list[SimulatedCamera] = field(default_factory=list)
    supervisor: subprocess.Popen[bytes] | None = None
    ffmpegs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "edgenvr-data"

    @property
    def supervisor_log(self) -> Path:
        return self.workdir / "edgenvr.log"

    def ffmpeg_dir(self, camera: str) -> Path:
        return self.workdir / "ffmpeg" / camera

    def ffmpeg_log(self, camera: str) -> Path:
        return self.workdir / "ffmpeg" / f"{camera}.log"

    def check_alive(self) -> None:
        if self.supervisor is not None and self.supervisor.poll() is not None:
            raise BenchmarkError(f"edgenvr exited with code {self.supervisor.returncode}:\n"
                                 f"{_tail(self.supervisor_log)}")
        for camera, proc in self.ffmpegs.items():
            if proc.poll() is not None:
                raise BenchmarkError(f"ffmpeg of {camera} exited with code {proc.returncode}:\n"
                                     f"{_tail(self.ffmpeg_log(camera))}")
        for server in self.servers:
            if not server.is_running:
                raise BenchmarkError(f"camera simulator on port {server.port} died:\n{_tail(server.log_path)}")

    def start_edgenvr(self, config_text: str) -> tuple[float, float]:
        """Write the config and start `edgenvr run`; return once every camera is writing a file, with the
        monotonic time it was started and the seconds that took."""
        config_path = self.workdir / "edgenvr.toml"
        config_path.write_text(config_text)
        started = time.monotonic()
        self.supervisor = _spawn([sys.executable, "-m", "edgenvr", "run", "--config", str(config_path)],
                                 self.supervisor_log)

        def writing() -> bool:
            return all(any((self.data_dir / "segments" / c).rglob("*.mp4*")) for c in self.cameras)

        return started, _wait_until("edgenvr writing every camera", writing, self.startup_timeout, self.check_alive)

    @property
    def startup_timeout(self) -> float:
        return 60 + 2 * len(self.cameras)

    def stop_recorders(self) -> None:
        # Both at once: they stop at about the same moment, and the supervisor's shutdown (closing,
        # hashing and fsyncing N open segments) overlaps ffmpeg's trailer writing.
        ffmpegs = list(self.ffmpegs.values())
        for proc in ffmpegs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # ffmpeg finishes the open segment's moov on SIGINT
        if self.supervisor is not None:
            # The supervisor stops recorders (each closes its segment) and commits the index on SIGTERM.
            _stop([self.supervisor], signal.SIGTERM, timeout=60)
        _stop(ffmpegs, None, timeout=30)

    def stop_all(self) -> None:
        try:
            self.stop_recorders()
        finally:
            for server in self.servers:
                server.stop()


def start_servers(run: Run, clip: Path, count: int) -> dict[str, str]:
    """Spread the mounts over `count` servers; returns camera -> RTSP URL."""
    urls: dict[str, str] = {}
    per_server = math.ceil(len(run.cameras) / count)
    for n in range(count):
        mine = run.cameras[n * per_server:(n + 1) * per_server]
        if not mine:
            break
        server = SimulatedCamera({camera: (clip, "h264", FPS) for camera in mine},
                                 log_path=run.workdir / f"simulator-{n}.log", ready_timeout=60)
        run.servers.append(server)
        server.start()
        urls.update({camera: server.url(camera) for camera in mine})
    return urls


@dataclass
class Timeline:
    started: float = 0.0          # monotonic time the supervisor was started
    ffmpeg_started: float = 0.0
    warmup: float = 0.0


def start_and_warm_up(args: argparse.Namespace, run: Run, clip: Path) -> Timeline:
    """Start the simulator, edgenvr and the ffmpegs; return once both recorded a first file per camera."""
    urls = start_servers(run, clip, args.servers)
    # edgenvr connects first, so it is each shared mount's first client and gets the stream from
    # its first IDR: started second it would join mid-GOP and count up to a GOP of
    # `before_keyframe` drops that are an artefact of the order. ffmpeg copies from wherever it
    # joins either way.
    timeline = Timeline(started=run.start_edgenvr(config_toml(run.data_dir, urls, args.cameras_per_process))[0])
    if not args.no_ffmpeg:
        for camera in run.cameras:
            run.ffmpeg_dir(camera).mkdir(parents=True, exist_ok=True)
            run.ffmpegs[camera] = _spawn(ffmpeg_command(urls[camera], run.ffmpeg_dir(camera), args.ffmpeg_format),
                                         run.ffmpeg_log(camera))
    timeline.ffmpeg_started = time.monotonic()

    # Warm-up ends when both recorders have finished their first file for every camera, so the
    # window sees steady recording including segment roll-overs, not start-up (imports, probing).
    def first_files_done() -> bool:
        edgenvr_done = all(any((run.data_dir / "segments" / c).rglob("*.mp4")) for c in run.cameras)
        ffmpeg_done = all((run.ffmpeg_dir(c) / "00001.mp4").exists() for c in run.ffmpegs)
        return edgenvr_done and ffmpeg_done

    _wait_until("first finished file of every camera", first_files_done, run.startup_timeout + 30, run.check_alive)
    timeline.warmup = time.monotonic() - timeline.started
    return timeline


@dataclass
class WindowFigures:
    """What was measured on the processes during the window."""

    groups: dict[str, ProcessGroup]
    seconds: float
    machine: dict[str, float]
    others_cpu: float
    others: list[dict[str, Any]]
    supervisor_write_bytes: int
    index_at_window_end: dict[str, int]


def track_processes(groups: dict[str, ProcessGroup], run: Run, supervisor: psutil.Process, in_window: bool,
                    role: Callable[[psutil.Process], str] = _edgenvr_role) -> None:
    """Put every process of the run in its group; called each second, so that a worker restarted by the
    supervisor is counted too."""
    groups["edgenvr"].track(supervisor, "supervisor", in_window)
    try:
        children = supervisor.children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for child in children:
        if child.pid not in groups["edgenvr"].members:
            groups["edgenvr"].track(child, role(child), in_window)
    for proc in run.ffmpegs.values():
        groups["ffmpeg"].track(psutil.Process(proc.pid), "ffmpeg", in_window)
    for server in run.servers:
        if server.pid is not None:
            groups["simulator"].track(psutil.Process(server.pid), "server", in_window)
    groups["benchmark"].track(psutil.Process(), "benchmark", in_window)


def measure_window(args: argparse.Namespace, run: Run) -> WindowFigures:
    """CPU deltas over `--seconds`, RSS each second, PSS every few seconds, supervisor write bytes."""
    groups = {name: ProcessGroup(name) for name in ("edgenvr", "ffmpeg", "simulator", "benchmark")}
    assert run.supervisor is not None
    supervisor = psutil.Process(run.supervisor.pid)

    def discover(in_window: bool) -> None:
        track_processes(groups, run, supervisor, in_window)

    discover(in_window=False)
    for group in groups.values():
        group.sample(with_pss=False)
        group.reset_window()
    everyone_start = _all_process_cpu()
    io_start = supervisor.io_counters()
    machine_start = _machine_times()
    window_start = time.monotonic()
    next_sample = window_start
    samples = 0
    while time.monotonic() - window_start < args.seconds:
        run.check_alive()
        discover(in_window=True)
        for group in groups.values():
            group.sample(with_pss=samples % PSS_EVERY_SAMPLES == 0)
        samples += 1
        next_sample += SAMPLE_SECONDS
        time.sleep(max(0.0, min(next_sample, window_start + args.seconds) - time.monotonic()))
    for group in groups.values():
        group.sample(with_pss=True)
    io_end = supervisor.io_counters()
    seconds = time.monotonic() - window_start
    machine_end = _machine_times()
    ours = {pid for group in groups.values() for pid in group.members}
    others_cpu, others = _other_processes(everyone_start, _all_process_cpu(), ours, seconds)
    return WindowFigures(
        groups=groups, seconds=seconds,
        machine={key: machine_end[key] - machine_start[key] for key in machine_start},
        others_cpu=others_cpu, others=others,
        supervisor_write_bytes=io_end.write_bytes - io_start.write_bytes,
        index_at_window_end=index_bytes(run.data_dir))


def analyse_recordings(run: Run, pictures: dict[int, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(per-camera file and index figures, index contents), read after everything stopped."""
    index = read_index(run.data_dir / "index.sqlite3")
    per_camera: dict[str, Any] = {}
    for camera in run.cameras:
        entry: dict[str, Any] = {"edgenvr": asdict(scan_recording(edgenvr_files(run.data_dir, camera), pictures)),
                                 "index": index["cameras"].get(camera, {})}
        if camera in run.ffmpegs:
            entry["ffmpeg"] = asdict(scan_recording(ffmpeg_files(run.ffmpeg_dir(camera)), pictures))
        per_camera[camera] = entry
    return per_camera, index


def measure(args: argparse.Namespace, run: Run, clip: Path) -> dict[str, Any]:
    pictures = clip_picture_index(clip)
    timeline = start_and_warm_up(args, run, clip)
    window = measure_window(args, run)
    stopping = time.monotonic()
    run.stop_recorders()
    index_after_stop = index_bytes(run.data_dir)
    # The simulator stays up until the recorders are gone: stopping it first would make them see
    # a lost camera and record a gap.
    for server in run.servers:
        server.stop()
    per_camera, index = analyse_recordings(run, pictures)
    return summarise(args, run, window, per_camera, index, timeline=timeline, stopped=stopping,
                     index_after_stop=index_after_stop, clip_mbit=clip.stat().st_size * 8 / CLIP_SECONDS / 1e6)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def _mb(value: float) -> float:
    return round(value / MB, 1)


def _core_share(cpu_seconds: float, window: float) -> float:
    return cpu_seconds / window if window > 0 else 0.0


def _memory(group: ProcessGroup, role: str, cameras: int) -> dict[str, Any]:
    members = group.by_role(role)
    rss = [m.peak_rss for m in members if m.peak_rss]
    pss = [m.peak_pss for m in members if m.peak_pss]
    return {
        f"{role}_processes": len(members),
        f"{role}_peak_rss_max_mb": _mb(max(rss, default=0)),
        f"{role}_peak_rss_mean_mb": _mb(statistics.fmean(rss) if rss else 0),
        f"{role}_peak_pss_mean_mb": _mb(statistics.fmean(pss) if pss else 0),
        "tree_peak_rss_mb": _mb(group.peak_rss_total),
        "tree_peak_rss_per_camera_mb": _mb(group.peak_rss_total / cameras),
        "tree_peak_pss_mb": _mb(group.peak_pss_total),
        "tree_peak_pss_per_camera_mb": _mb(group.peak_pss_total / cameras),
    }


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"min": 0, "mean": 0, "max": 0}
    return {"min": round(min(values), 2), "mean": round(statistics.fmean(values), 2), "max": round(max(values), 2)}


def summarise(args: argparse.Namespace, run: Run, w: WindowFigures, per_camera: dict[str, Any],
              index: dict[str, Any], *, timeline: Timeline, stopped: float, index_after_stop: dict[str, int],
              clip_mbit: float) -> dict[str, Any]:
    groups, window, machine = w.groups, w.seconds, w.machine
    n = len(run.cameras)
    camera_minutes = n * window / 60
    edgenvr_group, ffmpeg_group = groups["edgenvr"], groups["ffmpeg"]
    edgenvr_cpu = edgenvr_group.cpu_seconds()
    recorder_cpu = [m.spent() for m in edgenvr_group.by_role("recorder")]

    dropped_by_kind: dict[str, int] = {}
    for entry in per_camera.values():
        for kind, count in entry["index"].get("dropped", {}).items():
            dropped_by_kind[kind] = dropped_by_kind.get(kind, 0) + count

    def recording_totals(side: str) -> dict[str, Any]:
        stats = [entry[side] for entry in per_camera.values() if side in entry]
        return {
            "recorded_seconds_per_camera": _spread([s["seconds"] for s in stats]),
            "packets_per_camera": _spread([s["packets"] for s in stats]),
            "files_per_camera": _spread([s["files"] for s in stats]),
            "missing_frames": sum(s["missing_frames"] for s in stats),
            "discontinuities": sum(s["discontinuities"] for s in stats),
            "repeated_frames": sum(s["repeated_frames"] for s in stats),
            "unknown_packets": sum(s["unknown_packets"] for s in stats),
            "unreadable_files": sum(s["unreadable_files"] for s in stats),
        }

    edgenvr: dict[str, Any] = {
        "cpu_seconds": round(edgenvr_cpu, 2),
        "cpu_seconds_supervisor": round(edgenvr_group.cpu_seconds("supervisor"), 2),
        "cpu_seconds_recorders": round(edgenvr_group.cpu_seconds("recorder"), 2),
        "cpu_seconds_other": round(edgenvr_group.cpu_seconds("resource-tracker"), 2),
        "cpu_seconds_per_camera_minute": round(edgenvr_cpu / camera_minutes, 3),
        # per recorder process (which may record several cameras), CPU-seconds per minute
        "cpu_seconds_per_minute_by_recorder_process": _spread([c / (window / 60) for c in recorder_cpu]),
        "core_share": round(_core_share(edgenvr_cpu, window), 4),
        "projected_core_share_at_32": round(edgenvr_cpu / camera_minutes * 32 / 60, 4),
        **_memory(edgenvr_group, "recorder", n),
        "supervisor_peak_rss_mb": _mb(max((m.peak_rss for m in edgenvr_group.by_role("supervisor")), default=0)),
        "recorder_restarts_in_window": groups["edgenvr"].started,
        "dropped_packets": sum(dropped_by_kind.values()),
        "dropped_by_kind": dropped_by_kind,
        "gaps": len(index["gaps"]),
        "gap_rows": index["gaps"][:20],
        "indexed_seconds_per_camera": _spread([e["index"].get("indexed_seconds", 0) for e in per_camera.values()]),
        "supervisor_write_bytes_in_window": w.supervisor_write_bytes,
        "index_write_kb_per_camera_hour": round(w.supervisor_write_bytes / 1000 / (n * window / 3600), 1),
        "index_bytes_at_window_end": w.index_at_window_end,
        "index_bytes_after_stop": index_after_stop,
        "ran_seconds": round(stopped - timeline.started, 1),
        **recording_totals("edgenvr"),
    }
    result: dict[str, Any] = {
        "edgenvr_code": code_version(),
        "cameras": n,
        "window_seconds": round(window, 2),
        "warmup_seconds": round(timeline.warmup, 1),
        "stream": {"width": WIDTH, "height": HEIGHT, "fps": FPS, "gop": GOP, "mbit_per_s": round(clip_mbit, 2)},
        "servers": len(run.servers),
        "ffmpeg_format": args.ffmpeg_format,
        "cameras_per_process": args.cameras_per_process,
        "simulator": {
            "cpu_seconds": round(groups["simulator"].cpu_seconds(), 2),
            "core_share": round(_core_share(groups["simulator"].cpu_seconds(), window), 4),
            "core_share_per_stream": round(_core_share(groups["simulator"].cpu_seconds(), window) / n, 4),
            "core_share_max_server": round(max((_core_share(m.spent(), window)
                                                for m in groups["simulator"].members.values()), default=0), 4),
        },
        "benchmark_core_share": round(_core_share(groups["benchmark"].cpu_seconds(), window), 4),
        "machine": {
            "cores": psutil.cpu_count(),
            # From /proc/stat, which counts timer ticks: bursty work such as 25 fps recorders is
            # sampled coarsely there, so this is not compared with the per-process figures above.
            "busy_core_share": round(_core_share(machine["busy"], window), 3),
            # Every other process and kernel thread (exact per-process runtime), plus interrupt
            # work (loopback TCP is softirq work charged to no process). Large = a disturbed run.
            "other_core_share": round(_core_share(w.others_cpu + machine["interrupts"], window), 3),
            "interrupts_core_share": round(_core_share(machine["interrupts"], window), 3),
            "steal_core_share": round(_core_share(machine["steal"], window), 3),
            "iowait_core_share": round(_core_share(machine["iowait"], window), 3),
            "busiest_other_processes": w.others,
        },
        "edgenvr": edgenvr,
        "per_camera": per_camera,
    }
    if run.ffmpegs:
        ffmpeg_cpu = ffmpeg_group.cpu_seconds()
        ffmpeg_per_cam_min = ffmpeg_cpu / camera_minutes
        result["ffmpeg"] = {
            "cpu_seconds": round(ffmpeg_cpu, 2),
            "cpu_seconds_per_camera_minute": round(ffmpeg_per_cam_min, 3),
            "core_share": round(_core_share(ffmpeg_cpu, window), 4),
            **_memory(ffmpeg_group, "ffmpeg", n),
            "ran_seconds": round(stopped - timeline.ffmpeg_started, 1),
            **recording_totals("ffmpeg"),
        }
        result["ratio_edgenvr_to_ffmpeg"] = {
            "cpu": round(edgenvr["cpu_seconds_per_camera_minute"] / ffmpeg_per_cam_min, 3) if ffmpeg_cpu else None,
            "tree_rss_per_camera": round(edgenvr["tree_peak_rss_per_camera_mb"]
                                         / max(result["ffmpeg"]["tree_peak_rss_per_camera_mb"], 0.1), 3),
            "tree_pss_per_camera": round(edgenvr["tree_peak_pss_per_camera_mb"]
                                         / max(result["ffmpeg"]["tree_peak_pss_per_camera_mb"], 0.1), 3),
        }
    if args.baseline is not None:
        base = load_baseline(args.baseline)
        if base["cameras"] != n:
            base_rss = base["edgenvr"]["tree_peak_rss_mb"]
            base_pss = base["edgenvr"]["tree_peak_pss_mb"]
            step = n - base["cameras"]
            edgenvr["baseline_cameras"] = base["cameras"]
            edgenvr["marginal_rss_per_camera_mb"] = round((edgenvr["tree_peak_rss_mb"] - base_rss) / step, 1)
            edgenvr["marginal_pss_per_camera_mb"] = round((edgenvr["tree_peak_pss_mb"] - base_pss) / step, 1)
    result["targets"] = targets(result)
    return result


def code_version() -> str:
    """The commit measured, marked dirty when edgenvr's tree has uncommitted changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "edgenvr"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (head or "unknown") + ("+uncommitted edgenvr changes" if dirty else "")


def load_baseline(path: Path) -> dict[str, Any]:
    """The JSON object of an earlier run printed with --json (its last JSON line)."""
    for line in reversed(path.read_text().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise BenchmarkError(f"{path}: no JSON result line (run the baseline with --json)")


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and PASS/FAIL (or n/a with why)."""
    edgenvr = result["edgenvr"]
    n = result["cameras"]
    rows: list[dict[str, Any]] = []

    def add(name: str, value: Any, ok: bool | None, note: str = "") -> None:
        rows.append({"target": name, "value": value, "status": "n/a" if ok is None else "PASS" if ok else "FAIL",
                     "note": note})

    ratio = result.get("ratio_edgenvr_to_ffmpeg", {}).get("cpu")
    add(f"CPU ratio edgenvr/ffmpeg <= {TARGET_CPU_RATIO}", ratio,
        None if ratio is None else ratio <= TARGET_CPU_RATIO, "" if ratio is not None else "run without --no-ffmpeg")
    lost = edgenvr["dropped_packets"] + edgenvr["missing_frames"] + edgenvr["unknown_packets"]
    add("zero dropped packets (edgenvr counters + frames missing from its files)", lost, lost == 0,
        "" if n >= 32 else f"target set for 32 cameras; measured at {n}")
    share = edgenvr["core_share"]
    add(f"edgenvr total CPU < {TARGET_CORE_SHARE_AT_32:.0%} of one core at 32 cameras", f"{share:.1%}",
        share < TARGET_CORE_SHARE_AT_32 if n == 32 else None,
        "" if n == 32 else f"measured at {n} cameras; projected at 32: {edgenvr['projected_core_share_at_32']:.1%}")
    marginal = edgenvr.get("marginal_rss_per_camera_mb")
    if marginal is not None:
        add(f"RSS per additional camera <= {TARGET_MARGINAL_RSS_MB:.0f} MB", marginal,
            marginal <= TARGET_MARGINAL_RSS_MB,
            f"(tree RSS at {n} - at {edgenvr['baseline_cameras']}) / {n - edgenvr['baseline_cameras']}")
    else:
        # A recorder process holds several cameras, so no single process stands for one camera.
        add(f"RSS per additional camera <= {TARGET_MARGINAL_RSS_MB:.0f} MB", None, None,
            "give --baseline (an N=1 --json run) to measure it")
    kb = edgenvr["index_write_kb_per_camera_hour"]
    batch_seconds = StorageConfig(data_dir=Path("/")).index_commit_seconds
    if result["window_seconds"] < 2 * batch_seconds:  # one commit more or less swings the figure
        add(f"index writes <= {TARGET_INDEX_KB_PER_CAMERA_HOUR:.0f} KB per camera-hour", kb, None,
            f"window under 2 x index_commit_seconds ({batch_seconds:g} s): benchmarks/index_writes.py measures it")
    else:
        add(f"index writes <= {TARGET_INDEX_KB_PER_CAMERA_HOUR:.0f} KB per camera-hour", kb,
            kb <= TARGET_INDEX_KB_PER_CAMERA_HOUR)
    add("no gaps in edgenvr's index", edgenvr["gaps"], edgenvr["gaps"] == 0)
    return rows


def report(result: dict[str, Any]) -> str:
    e = result["edgenvr"]
    f = result.get("ffmpeg")
    s = result["stream"]
    lines = [
        f"edgenvr recording benchmark: {result['cameras']} cameras, {s['width']}x{s['height']} {s['fps']} fps "
        f"GOP {s['gop']} {s['mbit_per_s']} Mbit/s; window {result['window_seconds']:.1f} s after "
        f"{result['warmup_seconds']:.1f} s warm-up; edgenvr {result['edgenvr_code']}, cameras_per_process "
        f"{result['cameras_per_process'] or 'default'}; ffmpeg writes {result['ffmpeg_format']}",
        f"simulator: {result['servers']} server(s), {result['simulator']['core_share']:.1%} of a core "
        f"({result['simulator']['core_share_per_stream']:.2%} per stream, busiest server "
        f"{result['simulator']['core_share_max_server']:.1%}); not counted for either recorder",
        f"machine: {result['machine']['cores']} cores; other load {result['machine']['other_core_share']:.1%} of a core "
        f"(interrupts {result['machine']['interrupts_core_share']:.1%}; "
        + ", ".join(f"{p['name']} {p['core_share']:.1%}" for p in result["machine"]["busiest_other_processes"])
        + f"); steal {result['machine']['steal_core_share']:.1%}; "
        f"benchmark's own sampling {result['benchmark_core_share']:.1%}",
        "",
    ]

    def row(label: str, left: Any, right: Any = "") -> None:
        lines.append(f"  {label:<46} {str(left):>14} {str(right):>14}")

    row("", "edgenvr", "ffmpeg" if f else "")
    row("CPU-seconds per camera-minute", e["cpu_seconds_per_camera_minute"],
        f["cpu_seconds_per_camera_minute"] if f else "")
    row("CPU total, share of one core", f"{e['core_share']:.1%}", f"{f['core_share']:.1%}" if f else "")
    row("  edgenvr supervisor / recorders / other CPU-s",
        f"{e['cpu_seconds_supervisor']}/{e['cpu_seconds_recorders']}/{e['cpu_seconds_other']}")
    spread = e["cpu_seconds_per_minute_by_recorder_process"]
    row("  per recorder process CPU-s/min min/mean/max", f"{spread['min']}/{spread['mean']}/{spread['max']}")
    row("peak RSS per recorder process max (MB)", e["recorder_peak_rss_max_mb"], f["ffmpeg_peak_rss_max_mb"] if f else "")
    row("peak RSS per recorder process mean (MB)", e["recorder_peak_rss_mean_mb"], f["ffmpeg_peak_rss_mean_mb"] if f else "")
    row("peak PSS per recorder process mean (MB)", e["recorder_peak_pss_mean_mb"], f["ffmpeg_peak_pss_mean_mb"] if f else "")
    row("edgenvr supervisor peak RSS (MB)", e["supervisor_peak_rss_mb"])
    row("peak RSS of the whole tree (MB)", e["tree_peak_rss_mb"], f["tree_peak_rss_mb"] if f else "")
    row("peak RSS of the whole tree / N (MB)", e["tree_peak_rss_per_camera_mb"], f["tree_peak_rss_per_camera_mb"] if f else "")
    row("peak PSS of the whole tree / N (MB)", e["tree_peak_pss_per_camera_mb"], f["tree_peak_pss_per_camera_mb"] if f else "")
    if "marginal_rss_per_camera_mb" in e:
        row(f"marginal RSS per added camera vs N={e['baseline_cameras']} (MB)", e["marginal_rss_per_camera_mb"])
        row(f"marginal PSS per added camera vs N={e['baseline_cameras']} (MB)", e["marginal_pss_per_camera_mb"])
    row("recorder ran (s, warm-up included)", e["ran_seconds"], f["ran_seconds"] if f else "")
    for label, key in (("recorded seconds per camera min/mean/max", "recorded_seconds_per_camera"),
                       ("packets per camera min/mean/max", "packets_per_camera"),
                       ("files per camera min/mean/max", "files_per_camera")):
        a = e[key]
        b = f[key] if f else None
        row(label, f"{a['min']:g}/{a['mean']:g}/{a['max']:g}", f"{b['min']:g}/{b['mean']:g}/{b['max']:g}" if b else "")
    row("frames missing from the files (all cameras)", e["missing_frames"], f["missing_frames"] if f else "")
    row("  in discontinuities", e["discontinuities"], f["discontinuities"] if f else "")
    row("repeated / unrecognised packets", f"{e['repeated_frames']}/{e['unknown_packets']}",
        f"{f['repeated_frames']}/{f['unknown_packets']}" if f else "")
    row("unreadable files", e["unreadable_files"], f["unreadable_files"] if f else "")
    row("edgenvr dropped packets (index counters)", e["dropped_packets"])
    if e["dropped_packets"]:
        row("  by kind", json.dumps({k: v for k, v in e["dropped_by_kind"].items() if v}))
    row("edgenvr gaps (rows in gaps table)", e["gaps"])
    row("edgenvr indexed seconds per camera min/mean/max",
        "/".join(f"{e['indexed_seconds_per_camera'][k]:g}" for k in ("min", "mean", "max")))
    row("edgenvr recorder restarts in window", e["recorder_restarts_in_window"])
    row("supervisor bytes written in window", e["supervisor_write_bytes_in_window"])
    row("index writes, KB (1000 B) per camera-hour", e["index_write_kb_per_camera_hour"])
    end = e["index_bytes_at_window_end"]
    stop = e["index_bytes_after_stop"]
    row("index.sqlite3 + -wal at window end (bytes)", end["index.sqlite3"] + end["index.sqlite3-wal"],
        f"(-shm {end['index.sqlite3-shm']})")
    row("index.sqlite3 + -wal after stop (bytes)", stop["index.sqlite3"] + stop["index.sqlite3-wal"])
    if "ratio_edgenvr_to_ffmpeg" in result:
        r = result["ratio_edgenvr_to_ffmpeg"]
        row("ratio edgenvr/ffmpeg: CPU", r["cpu"])
        row("ratio edgenvr/ffmpeg: tree RSS / N", r["tree_rss_per_camera"])
        row("ratio edgenvr/ffmpeg: tree PSS / N", r["tree_pss_per_camera"])
    troubled = [c for c, entry in result["per_camera"].items()
                if any(entry[side]["missing_frames"] or entry[side]["unknown_packets"] or entry[side]["unreadable_files"]
                       for side in ("edgenvr", "ffmpeg") if side in entry)
                or any(entry["index"].get("dropped", {}).values())]
    for camera in troubled:
        entry = result["per_camera"][camera]
        lines.append(f"  ! {camera}: edgenvr {entry['edgenvr']}, dropped {entry['index'].get('dropped')}"
                     + (f"; ffmpeg {entry['ffmpeg']}" if "ffmpeg" in entry else ""))
    lines += target_lines(result["targets"])
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=4, help="simulated 1080p cameras (default 4)")
    parser.add_argument("--seconds", type=float, default=60, help="measured window after warm-up (default 60)")
    parser.add_argument("--json", action="store_true", help="also print all figures as one JSON object (last line)")
    parser.add_argument("--no-ffmpeg", action="store_true", help="record with edgenvr alone")
    parser.add_argument("--ffmpeg-format", choices=["mp4", "fmp4"], default="mp4",
                        help="ffmpeg's output: plain MP4 (the issue's reference, default) or the same "
                             "fragmented MP4 edgenvr writes")
    parser.add_argument("--cameras-per-process", type=int, default=None,
                        help="edgenvr's recording.cameras_per_process (default: edgenvr's own default)")
    parser.add_argument("--servers", type=int, default=1,
                        help="simulator processes to spread the mounts over (default 1)")
    parser.add_argument("--baseline", type=Path,
                        help="output of a --json run at another N (e.g. 1): gives the marginal RSS per camera")
    parser.add_argument("--keep", action="store_true", help="keep the recordings and logs (path is printed)")
    args = parser.parse_args(argv)
    if args.cameras < 1 or args.cameras > 100:
        parser.error("--cameras must be 1..100 (camera ids are cam-00..cam-99)")
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.servers < 1:
        parser.error("--servers must be at least 1")
    return args


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = simulator_unavailable_reason()
    if reason:
        print(f"record.py: {reason}", file=sys.stderr)
        return 2
    if not args.no_ffmpeg and shutil.which("ffmpeg") is None:
        print("record.py: ffmpeg not found (apt-get install ffmpeg, or use --no-ffmpeg)", file=sys.stderr)
        return 2
    clip = bench_clip()
    return run_benchmark("record.py", args, lambda run: measure(args, run, clip), report)


def run_benchmark(name: str, args: argparse.Namespace, measure_run: Callable[[Run], dict[str, Any]],
                  report_result: Callable[[dict[str, Any]], str], run_class: type[Run] | None = None) -> int:
    """Measure one run in a fresh work dir and print its report; everything started is stopped in order
    whatever happens (Ctrl-C and SIGTERM too, even when started with SIGINT ignored, as `cmd &` does)."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix=f"edgenvr-bench-{name.removesuffix('.py')}-"))
    run = (run_class or Run)(workdir=workdir, cameras=camera_ids(args.cameras))
    try:
        result = measure_run(run)
    except BenchmarkError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    finally:
        try:
            run.stop_all()
        finally:
            if args.keep:
                print(f"recordings and logs kept in {workdir}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    print(report_result(result))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


def target_lines(targets: list[dict[str, Any]]) -> list[str]:
    """The PASS/FAIL/n/a lines that end a report."""
    return ["", "targets:"] + [f"  [{t['status']}] {t['target']}: {t['value']}" + (f"  ({t['note']})" if t["note"] else "")
                               for t in targets]


if __name__ == "__main__":
    sys.exit(main())
