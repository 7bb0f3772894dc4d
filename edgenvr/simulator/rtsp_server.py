"""Simulated RTSP camera: serves H.264/H.265 clips in a loop, live, over RTSP.

This script owns the camera side of ``edgenvr.simulator.camera``. It runs under
Debian's ``/usr/bin/python3`` because it needs PyGObject and GstRtspServer, which come
from Debian packages; so it imports only the standard library and ``gi`` (never
edgenvr, never venv packages).

    /usr/bin/python3 rtsp_server.py --port PORT [--host 127.0.0.1] \
        --mount /NAME=PATH:CODEC[:FPS] [--mount ...] [--audio-mount /NAME] [--fps 25] \
        [--push-log /NAME=LOG ...]

PATH is a raw Annex-B elementary stream, CODEC ``h264`` or ``h265``. Each clip is
parsed once into access units held in memory; for each mount a feeder thread pushes
them at the frame rate into ``appsrc is-live=true do-timestamp=true`` -> parser ->
payloader, looping from the last access unit back to the first (an IDR). This costs
about 2% of a core per stream, where a live encoder would cost ~25%. Media are shared:
all clients of a mount watch the same live stream, which starts at an IDR for the
first client and restarts when the last one leaves (GstRTSPServer behaviour).

``--push-log /NAME=LOG`` makes mount NAME's feeders append one line per access unit
pushed into appsrc to LOG: ``FRAME_INDEX WALL_TIME_NS``, the unit's index in the clip
file (for clips made by ``make_clip``, the number burned into its picture) and
``time.time_ns()`` (CLOCK_REALTIME) just before the push, i.e. the moment the camera
"captured" that frame. Writes are buffered and flushed at least once a second; a
restarted server appends. With the counter in the picture this is the camera's clock
in the picture: a viewer that reads frame N on screen at wall time T saw it T minus
the latest push of N before T after the camera sent it (glass-to-glass latency).

When listening, prints exactly ``READY rtsp://HOST:PORT`` to stdout. Exits on SIGTERM
or SIGINT; errors go to stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: E402

PARSERS = {"h264": "h264parse", "h265": "h265parse"}
PAYLOADERS = {"h264": "rtph264pay", "h265": "rtph265pay"}

# After a stall longer than this (the process was SIGSTOPped, the machine was busy)
# the feeder continues at the normal pace instead of bursting to catch up: a burst
# would carry nearly identical do-timestamp timestamps.
MAX_LAG_S = 0.5


def log(message: str) -> None:
    print(f"camera-simulator[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


@dataclass
class Clip:
    """A parsed clip: whole access units, the first of them a key frame."""

    path: str
    codec: str
    fps: int
    units: list[tuple[bytes, bool]]  # (Annex-B access unit, is key frame)
    first: int = 0  # index in the file of units[0] (units before the first key frame are dropped)

    @property
    def caps(self) -> str:
        return (f"video/x-{self.codec},stream-format=byte-stream,alignment=au,"
                f"framerate={self.fps}/1")


def load_clip(path: str, codec: str, fps: int) -> Clip:
    """Split an Annex-B file into access units with GStreamer's own parser, which
    groups multi-slice pictures and flags key frames the way the payloader expects."""
    pipeline = Gst.Pipeline.new("parse")
    source = Gst.ElementFactory.make("filesrc")
    parser = Gst.ElementFactory.make(PARSERS[codec])
    sink = Gst.ElementFactory.make("appsink")
    source.set_property("location", path)
    sink.set_property("caps", Gst.Caps.from_string(
        f"video/x-{codec},stream-format=byte-stream,alignment=au"))
    sink.set_property("sync", False)
    for element in (source, parser, sink):
        pipeline.add(element)
    if not (source.link(parser) and parser.link(sink)):
        raise RuntimeError(f"{path}: cannot link filesrc ! {PARSERS[codec]} ! appsink")
    units: list[tuple[bytes, bool]] = []
    pipeline.set_state(Gst.State.PLAYING)
    try:
        while True:
            sample = sink.try_pull_sample(10 * Gst.SECOND)
            if sample is None:
                break
            buffer = sample.get_buffer()
            is_key = not buffer.has_flags(Gst.BufferFlags.DELTA_UNIT)
            units.append((buffer.extract_dup(0, buffer.get_size()), is_key))
        message = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
        if message is not None:
            error, debug = message.parse_error()
            raise RuntimeError(f"{path}: {error.message} ({debug})")
        if not sink.is_eos():
            raise RuntimeError(f"{path}: parsing stalled")
    finally:
        pipeline.set_state(Gst.State.NULL)
    first_key = next((i for i, (_, key) in enumerate(units) if key), None)
    if first_key is None:
        raise RuntimeError(f"{path}: no key frame in {len(units)} access units")
    # Units before the first key frame reference pictures the clip does not contain;
    # dropping them makes the loop seamless (the last unit is followed by an IDR).
    return Clip(path=path, codec=codec, fps=fps, units=units[first_key:], first=first_key)


class PushLog:
    """``FRAME_INDEX WALL_TIME_NS`` per pushed access unit, for one mount (see the module doc).

    Shared by the mount's feeders (a media torn down and prepared again gets a new one);
    buffered, flushed by ``record`` at least every FLUSH_S, by a feeder when it stops,
    and by ``close`` before the process exits.
    """

    FLUSH_S = 0.5

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="ascii", buffering=1 << 16)  # noqa: SIM115
        self.flushed_at = time.monotonic()

    def record(self, index: int, wall_ns: int) -> None:
        with self.lock:
            if self.file.closed:
                return
            self.file.write(f"{index} {wall_ns}\n")
            now = time.monotonic()
            if now - self.flushed_at >= self.FLUSH_S:
                self.file.flush()
                self.flushed_at = now

    def flush(self) -> None:
        with self.lock:
            if not self.file.closed:
                self.file.flush()
                self.flushed_at = time.monotonic()

    def close(self) -> None:
        with self.lock:
            self.file.close()


class Feeder:
    """Pushes a clip's access units into one media's appsrc at the frame rate.

    Started by the appsrc's first need-data, i.e. once the pipeline is PLAYING, so
    the first unit pushed (an IDR) is not flushed away and the first client's stream
    starts with it.
    """

    def __init__(self, clip: Clip, appsrc: GstApp.AppSrc, mount: str,
                 push_log: PushLog | None = None) -> None:
        self.clip = clip
        self.appsrc = appsrc
        self.mount = mount
        self.push_log = push_log
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"feed{mount}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _run(self) -> None:
        try:
            self._feed()
        finally:
            if self.push_log is not None:
                self.push_log.flush()

    def _feed(self) -> None:
        units = self.clip.units
        first = self.clip.first
        push_log = self.push_log
        period = 1.0 / self.clip.fps
        index = 0
        due = time.monotonic()
        while not self.stopped.is_set():
            data, is_key = units[index]
            buffer = Gst.Buffer.new_wrapped(data)
            if not is_key:
                buffer.set_flags(Gst.BufferFlags.DELTA_UNIT)
            # do-timestamp: appsrc stamps the buffer with the pipeline's running time
            # as it is pushed, like a camera stamping frames with its capture clock.
            pushed_ns = time.time_ns() if push_log is not None else 0
            result = self.appsrc.push_buffer(buffer)
            if result != Gst.FlowReturn.OK:
                # FLUSHING: the media is being torn down (last client left).
                break
            if push_log is not None:
                push_log.record(first + index, pushed_ns)
            index = (index + 1) % len(units)
            due += period
            delay = due - time.monotonic()
            if delay > 0:
                self.stopped.wait(delay)
            elif delay < -MAX_LAG_S:
                due = time.monotonic()


class ClipFactory(GstRtspServer.RTSPMediaFactory):
    """Shared live media for one clip; a feeder per media instance."""

    def __init__(self, mount: str, clip: Clip, push_log: PushLog | None = None) -> None:
        super().__init__()
        self.mount = mount
        self.clip = clip
        self.push_log = push_log
        self.feeders: dict[int, Feeder] = {}
        self.lock = threading.Lock()
        self.set_shared(True)
        # Queue bound: if a client DESCRIBEs and never PLAYs, the stream stays blocked
        # and appsrc would otherwise queue every pushed unit forever. 4 s of frames
        # never overflows during a normal DESCRIBE..PLAY handshake.
        # The payloader's config-interval stays at its default: x264/x265 repeat the
        # parameter sets before each IDR, and config-interval=-1 on multi-slice x264
        # pictures makes FFmpeg see two key packets with one DTS.
        self.set_launch(
            "( appsrc name=src is-live=true do-timestamp=true format=time "
            f"leaky-type=downstream max-buffers={4 * clip.fps} max-bytes=0 "
            f"! {PARSERS[clip.codec]} ! {PAYLOADERS[clip.codec]} name=pay0 pt=96 )")
        self.connect("media-configure", self._on_media_configure)

    def _on_media_configure(self, _factory: ClipFactory, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_by_name("src")
        appsrc.set_property("caps", Gst.Caps.from_string(self.clip.caps))
        key = id(media)
        feeder = Feeder(self.clip, appsrc, self.mount, self.push_log)
        handler: list[int] = []

        def on_need_data(src: GstApp.AppSrc, _length: int) -> None:
            # Only the first need-data matters: from then on the feeder paces itself.
            src.disconnect(handler[0])
            with self.lock:
                if key in self.feeders:
                    feeder.start()

        def on_unprepared(_media: GstRtspServer.RTSPMedia) -> None:
            with self.lock:
                stopped = self.feeders.pop(key, None)
            if stopped is not None:
                stopped.stop()

        with self.lock:
            self.feeders[key] = feeder
        handler.append(appsrc.connect("need-data", on_need_data))
        media.connect("unprepared", on_unprepared)

    def stop_all(self) -> None:
        with self.lock:
            feeders, self.feeders = list(self.feeders.values()), {}
        for feeder in feeders:
            feeder.stop()


def audio_factory() -> GstRtspServer.RTSPMediaFactory:
    """A live A-law tone: a stream a recorder must recognise as 'not video'."""
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_shared(True)
    factory.set_launch(
        "( audiotestsrc is-live=true wave=sine freq=440 samplesperbuffer=160 "
        "! audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay0 pt=8 )")
    return factory


def parse_mount(spec: str, default_fps: int) -> tuple[str, str, str, int]:
    """``/NAME=PATH:CODEC[:FPS]`` -> (mount, path, codec, fps); PATH may contain ':'."""
    if "=" not in spec:
        raise argparse.ArgumentTypeError(f"--mount {spec!r}: expected /NAME=PATH:CODEC[:FPS]")
    name, rest = spec.split("=", 1)
    fps = default_fps
    head, _, last = rest.rpartition(":")
    if last.isdigit():
        fps = int(last)
        rest = head
    path, _, codec = rest.rpartition(":")
    if codec not in PARSERS or not path:
        raise argparse.ArgumentTypeError(
            f"--mount {spec!r}: expected /NAME=PATH:CODEC[:FPS] with CODEC in {sorted(PARSERS)}")
    if fps <= 0:
        raise argparse.ArgumentTypeError(f"--mount {spec!r}: FPS must be positive")
    return "/" + name.strip("/"), path, codec, fps


def parse_push_log(spec: str) -> tuple[str, str]:
    """``/NAME=LOG`` -> (mount, log path); LOG may contain '='."""
    name, sep, path = spec.partition("=")
    if not sep or not name.strip("/") or not path:
        raise argparse.ArgumentTypeError(f"--push-log {spec!r}: expected /NAME=LOG")
    return "/" + name.strip("/"), path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--fps", type=int, default=25, help="default frame rate of mounts")
    parser.add_argument("--mount", action="append", default=[], metavar="/NAME=PATH:CODEC[:FPS]")
    parser.add_argument("--audio-mount", action="append", default=[], metavar="/NAME")
    parser.add_argument("--push-log", action="append", default=[], metavar="/NAME=LOG",
                        help="append 'FRAME_INDEX WALL_TIME_NS' per access unit pushed for mount NAME")
    args = parser.parse_args(argv)
    try:
        mounts = [parse_mount(spec, args.fps) for spec in args.mount]
        push_log_paths = dict(parse_push_log(spec) for spec in args.push_log)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    unknown = sorted(set(push_log_paths) - {name for name, *_ in mounts})
    if unknown:
        parser.error(f"--push-log for mounts that are not video mounts: {', '.join(unknown)}")
    if not mounts and not args.audio_mount:
        parser.error("at least one --mount or --audio-mount is needed")

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mount_points = server.get_mount_points()
    factories: list[ClipFactory] = []
    push_logs: list[PushLog] = []
    for name, path, codec, fps in mounts:
        try:
            clip = load_clip(path, codec, fps)
        except (RuntimeError, GLib.Error) as exc:
            log(f"cannot load clip for {name}: {exc}")
            return 1
        log(f"{name}: {path} ({codec}, {len(clip.units)} access units, {fps} fps)")
        push_log = None
        if name in push_log_paths:
            try:
                push_log = PushLog(push_log_paths[name])
            except OSError as exc:
                log(f"cannot open push log for {name}: {exc}")
                return 1
            push_logs.append(push_log)
        factory = ClipFactory(name, clip, push_log)
        factories.append(factory)
        mount_points.add_factory(name, factory)
    for name in args.audio_mount:
        mount_points.add_factory("/" + name.strip("/"), audio_factory())

    loop = GLib.MainLoop()
    try:
        # create_source binds the socket (with SO_REUSEADDR, so a restarted camera gets
        # its port back at once) and, unlike attach(), reports why binding failed.
        source = server.create_source(None)
    except GLib.Error as exc:
        log(f"cannot listen on {args.host}:{args.port}: {exc.message}")
        return 1
    source.attach(None)

    def quit_loop() -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, quit_loop)
    # A client over TCP that vanishes is dropped with its connection, but a UDP client
    # that vanishes without TEARDOWN leaves a session (keeping its shared media and
    # feeder alive) that GstRTSPServer never removes unless asked to expire sessions.
    pool = server.get_session_pool()

    def expire_sessions() -> bool:
        pool.cleanup()
        return GLib.SOURCE_CONTINUE

    GLib.timeout_add_seconds(5, expire_sessions)

    print(f"READY rtsp://{args.host}:{server.get_bound_port()}", flush=True)
    loop.run()
    for factory in factories:
        factory.stop_all()
    for push_log in push_logs:
        push_log.close()   # under its lock: a feeder still running records nothing more
    log("stopped")
    sys.stderr.flush()
    # Skip interpreter teardown: GStreamer streaming threads may still call into
    # Python while it finalises, which can crash or hang on the way out.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
