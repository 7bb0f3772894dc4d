"""A recording box for the sync tests, made in a second instead of recorded in minutes: real MP4 segment files
written by the recorder's own SegmentWriter (stream-copied from a small synthetic H.264 clip), indexed by the
real IndexWriter, events announced as the motion and tamper workers announce them, and the sync process's
real Uploader on that index (in the test process: the hub is a process of its own).

Everything the sync code reads is what a recording box holds: segment files whose SHA-256 the index has,
events with their kept range, the device key; so each clip it sends is a real, signed evidence export.
Not part of the `edgenvr` package: it exists for the tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import av

from edgenvr.config.checking import load_config
from edgenvr.config.records import Config
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.records import EventKind, EventRecord, SegmentRecord
from edgenvr.index import schema as index_schema
from edgenvr.index.writer import IndexWriter
from edgenvr.recording.segment_files import SegmentWriter
from edgenvr.simulator import CLIP_CACHE, make_clip
from edgenvr.storage.layout import StorageLayout
from edgenvr.sync.uploader import Uploader

BOX_ID = "rt08-kuningan"
FPS = 25
SEGMENT_SECONDS = 4
PRE_MS, POST_MS = 1_000, 1_000   # [storage] event_pre_seconds / event_post_seconds


@dataclass
class Footage:
    """Packets of a synthetic camera (320x240, a key frame each second), timestamped at FPS as a camera's."""

    stream: av.video.stream.VideoStream
    packets: list[av.Packet]
    container: av.container.InputContainer


def open_footage(bitrate: int = 400_000) -> Footage:
    """A 4 s clip at `bitrate` (encoded once, cached): a 4 s segment of it is about bitrate / 2 bytes."""
    clip = make_clip(CLIP_CACHE / f"qvga-25fps-gop25-{bitrate // 1000}kbit.h264", width=320, height=240, fps=FPS,
                     seconds=SEGMENT_SECONDS, bitrate=bitrate)
    container = av.open(str(clip))
    stream = container.streams.video[0]
    packets = [p for p in container.demux(stream) if p.size]
    return Footage(stream, packets, container)


@dataclass
class SyncedBox:
    """A box's data dir and config ([sync] to `hub_url` with `token`), its index open for writing."""

    root: Path
    hub_url: str
    token: str
    footage: Footage
    clock: Clock = SYSTEM_CLOCK
    storage: dict[str, str] = field(default_factory=dict)   # [storage] keys and TOML values over the defaults

    def __post_init__(self) -> None:
        self.data_dir = self.root / "data"
        self.config_path = self.root / "edgenvr.toml"
        self.root.mkdir(parents=True, exist_ok=True)
        storage = {"quota": '"100%"', "min_free": '"0"', "event_pre_seconds": str(PRE_MS / 1000),
                   "event_post_seconds": str(POST_MS / 1000), **self.storage}
        self.config_path.write_text(
            f'[box]\nid = "{BOX_ID}"\nname = "Pos RT 08"\n[storage]\ndata_dir = "{self.data_dir}"\n'
            + "".join(f"{key} = {value}\n" for key, value in storage.items())
            + f"[recording]\nsegment_seconds = {SEGMENT_SECONDS}\n[motion]\nenabled = true\ntamper = true\n"
            + '[[cameras]]\nid = "gate"\nurl = "rtsp://192.0.2.1/gate"\n'
            + f'[sync]\nhub_url = "{self.hub_url}"\nenrolment_token = "{self.token}"\n')
        self.config: Config = load_config(self.config_path)
        self.layout = StorageLayout(self.data_dir)
        self.writer = IndexWriter(index_schema.connect(self.layout.index_path), clock=self.clock,
                                  event_padding_ms=(PRE_MS, POST_MS))

    def record(self, camera: str, start_ms: int) -> SegmentRecord:
        """One closed SEGMENT_SECONDS segment from `start_ms`, written by the recorder's SegmentWriter and
        indexed (committed by the caller's `commit`)."""
        footage = self.footage
        step = int(1 / (FPS * footage.stream.time_base))   # a raw H.264 stream has no timestamps
        for index, packet in enumerate(footage.packets):
            packet.pts = packet.dts = index * step
        writer = SegmentWriter(self.layout, camera, footage.stream, start_ms, 0, footage.stream.time_base,
                               clock=self.clock)
        for packet in footage.packets:
            writer.write(packet)
        end_ms = start_ms + SEGMENT_SECONDS * 1000
        record = writer.close(end_ms, end_ms)
        self.writer.add_segment(record)
        return record

    def event(self, kind: EventKind, camera: str, start_ms: int, end_ms: int, subkind: str = "") -> None:
        """A closed event as the detection worker announces it (opened, then closed)."""
        self.writer.add_event(EventRecord(camera, kind, start_ms, None, subkind=subkind))
        self.writer.add_event(EventRecord(camera, kind, start_ms, end_ms, subkind=subkind))

    def commit(self) -> None:
        self.writer.commit()

    def uploader(self) -> Uploader:
        return Uploader(self.config, clock=self.clock)

    def close(self) -> None:
        self.writer.conn.close()
        self.footage.container.close()


def run_round(uploader: Uploader) -> float:
    """One round of the sync process (what `Uploader.run` repeats), at once: the wait it asks for is returned,
    not slept (the tests are the scheduler here, so 200 drops do not cost 200 back-offs of real time)."""
    return asyncio.run(uploader.round())
