"""Where recording CPU goes: edgenvr's recorder against ffmpeg and against the least any PyAV recorder does.

This script owns the decomposition of the recording CPU ratio. Several recorders read their own copies of
the same simulated 1080p cameras at the same time (so that machine noise hits all of them alike), for
`--reps` windows, and their CPU-seconds per camera-minute are printed side by side:

  ffmpeg-segment  ffmpeg -rtsp_transport tcp -i URL -c copy -f segment -segment_time 10  (the reference)
  ffmpeg-read     ffmpeg ... -c copy -f null -: reading the RTSP stream and nothing else
  pyav-read       a PyAV demux loop that drops every packet (libav's reading plus PyAV's per-packet cost)
  pyav-copy       the least a PyAV recorder does: demux, mux into 10 s fragmented MP4 files; no hash, no fsync
  edgenvr         edgenvr's CameraRecorder, one thread per camera as in a recorder process (bus replaced
                  by a no-op): timestamps, checks, SHA-256, fsync, the segment's stored row

Every PyAV variant runs its cameras as threads of one process, as edgenvr's recorder processes do.

    python benchmarks/record_floor.py [--cameras 4] [--seconds 60] [--reps 3] [--variants a,b,...]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import record  # the recording benchmark: its clip and its ffmpeg reference command

from edgenvr.simulator import SimulatedCamera

VARIANTS = ("ffmpeg-segment", "ffmpeg-read", "pyav-read", "pyav-copy", "edgenvr")
RTSP_OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000", "analyzeduration": "1000000"}


# -- the PyAV variants, run in a worker process (`--worker VARIANT OUT URL...`) ----------------------------

def pyav_read(url: str, out: Path, stop: threading.Event) -> None:
    import av
    with av.open(url, options=RTSP_OPTIONS, timeout=(10, None)) as container:
        for _ in container.demux(container.streams.video[0]):
            if stop.is_set():
                return


def pyav_copy(url: str, out: Path, stop: threading.Event) -> None:
    import av

    from edgenvr.recording.segment_files import MP4_OPTIONS
    with av.open(url, options=RTSP_OPTIONS, timeout=(10, None)) as container:
        stream = container.streams.video[0]
        output, target, first, last_dts, files = None, None, 0, None, 0
        for packet in container.demux(stream):
            if stop.is_set():
                break
            if packet.size == 0 or packet.dts is None or (last_dts is not None and packet.dts <= last_dts):
                continue
            last_dts = packet.dts
            if packet.is_keyframe and (output is None or packet.pts - first >= 9.9 / stream.time_base):
                if output is not None:
                    output.close()
                output = av.open(str(out / f"{url.rsplit('/', 1)[1]}-{files}.mp4"), "w", format="mp4",
                                 options=dict(MP4_OPTIONS))
                target, first, files = output.add_stream_from_template(stream), packet.pts, files + 1
            if output is None:
                continue
            packet.dts -= first
            packet.pts -= first
            packet.stream = target
            output.mux(packet)
        if output is not None:
            output.close()


def edgenvr_recorder(url: str, out: Path, stop: threading.Event) -> None:
    from edgenvr.config.records import CameraConfig, RecordingConfig
    from edgenvr.recording.recorder import CameraRecorder
    from edgenvr.storage.layout import StorageLayout

    class NoBus:
        def send(self, record: object) -> bool:
            return True

    recorder = CameraRecorder(CameraConfig(id=url.rsplit("/", 1)[1], url=url), RecordingConfig(),
                              StorageLayout(out), NoBus())  # type: ignore[arg-type]
    threading.Thread(target=lambda: (stop.wait(), setattr(recorder, "stopping", True)), daemon=True).start()
    recorder.run()


WORKERS = {"pyav-read": pyav_read, "pyav-copy": pyav_copy, "edgenvr": edgenvr_recorder}


def worker(variant: str, out: Path, urls: list[str]) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [threading.Thread(target=WORKERS[variant], args=(url, out, stop), daemon=True) for url in urls]
    for thread in threads:
        thread.start()
    while not stop.is_set():
        time.sleep(0.2)
    for thread in threads:
        thread.join(10)


# -- the benchmark ------------------------------------------------------------------------------------------

def ffmpeg_read_command(url: str) -> list[str]:
    return ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", url,
            "-c", "copy", "-f", "null", "-"]


def start(variant: str, out: Path, urls: list[str]) -> list[subprocess.Popen[bytes]]:
    if variant.startswith("ffmpeg"):
        commands = []
        for i, url in enumerate(urls):
            if variant == "ffmpeg-read":
                commands.append(ffmpeg_read_command(url))
            else:
                (out / str(i)).mkdir()
                commands.append(record.ffmpeg_command(url, out / str(i)))
        return [subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL) for command in commands]
    return [subprocess.Popen([sys.executable, __file__, "--worker", variant, str(out), *urls])]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]), args.worker[2:])
        return 0
    variants = args.variants.split(",")
    clip = record.bench_clip()
    workdir = Path(tempfile.mkdtemp(prefix="edgenvr-record-floor-"))
    mounts = {f"v{v}-c{c}": (clip, "h264", 25) for v in range(len(variants)) for c in range(args.cameras)}
    figures: dict[str, list[float]] = {variant: [] for variant in variants}
    print(f"{args.cameras} cameras per recorder, 1080p 25 fps 4 Mbit/s; {len(variants)} recorders at once; "
          f"{args.reps} windows of {args.seconds:g} s; CPU-seconds per camera-minute")
    try:
        with SimulatedCamera(mounts, log_path=workdir / "simulator.log") as server:
            for rep in range(args.reps):
                groups = []
                for v, variant in enumerate(variants):
                    out = workdir / f"{rep}-{variant}"
                    out.mkdir()
                    urls = [server.url(f"v{v}-c{c}") for c in range(args.cameras)]
                    groups.append(start(variant, out, urls))
                time.sleep(10)  # connected, probed, first files open
                tracked = [[psutil.Process(p.pid) for p in group] for group in groups]
                before = [cpu_seconds(group) for group in tracked]
                time.sleep(args.seconds)
                after = [cpu_seconds(group) for group in tracked]
                for group in groups:
                    for process in group:
                        process.send_signal(signal.SIGTERM)
                for group in groups:
                    for process in group:
                        process.wait(30)
                for variant, a, b in zip(variants, before, after):
                    figures[variant].append((b - a) / args.cameras / (args.seconds / 60))
                print(f"window {rep + 1}: " + "  ".join(f"{v} {f[-1]:.3f}" for v, f in figures.items()), flush=True)
                for variant in variants:
                    shutil.rmtree(workdir / f"{rep}-{variant}", ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    reference = statistics.mean(figures["ffmpeg-segment"]) if "ffmpeg-segment" in figures else None
    print(f"{'recorder':<16} {'mean':>6} {'min':>6} {'max':>6}  ratio to ffmpeg-segment")
    for variant, values in figures.items():
        mean = statistics.mean(values)
        ratio = f"{mean / reference:.2f}" if reference else "-"
        print(f"{variant:<16} {mean:>6.3f} {min(values):>6.3f} {max(values):>6.3f}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
