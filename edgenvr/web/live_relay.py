"""Live view: the recorders' live feeds (recording.live_feed) relayed to browsers over WebSockets.

One SUB socket for the web process, bound where the recorders' feeds connect. A camera is subscribed to
only while at least one viewer watches it, so a camera nobody watches costs its recorder nothing. Each
viewer gets: a JSON text message with the MIME type (`video/mp4; codecs="..."`, for MediaSource), then binary
messages: the init segment, then whole fragments (moof+mdat) from a key frame on; a new init whenever the
recorder starts a new segment (each restarts its timestamps at 0: the browser appends in "sequence" mode).

Invariants:
- Nothing a viewer does reaches a recorder: a viewer's queue holds at most VIEWER_QUEUE fragments; when it is
  full (a slow phone) the fragment is dropped for that viewer, which then waits for the next key frame, so
  it never sees a broken picture and never holds memory.
- A fragment lost on the way (the feed's own queue was full) is seen by its mfhd sequence number; viewers
  then wait for a key frame too.
- A fragment that cannot be parsed is dropped and logged (once a minute per camera), never raised.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from dataclasses import dataclass, field

import zmq
import zmq.asyncio

from edgenvr.recording.live_feed import FRAGMENT, INIT, topic
from edgenvr.web.mp4_boxes import (
    Mp4FormatError,
    TrackFormat,
    children,
    parse_moof,
    parse_moov,
)

log = logging.getLogger(__name__)

VIEWER_QUEUE = 8          # fragments (~1 s each at most) waiting for one viewer before it skips
FIRST_PICTURE_SECONDS = 15.0   # a viewer that got nothing this long is told the camera sends nothing


@dataclass(eq=False)
class Viewer:
    camera: str
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(VIEWER_QUEUE))
    mime: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    sent_init: bytes | None = None
    waiting_for_key: bool = True


@dataclass
class _Channel:
    viewers: set[Viewer] = field(default_factory=set)
    init: bytes | None = None
    track: TrackFormat | None = None
    last_sequence: int | None = None
    last_warning: float = 0.0


class LiveRelay:
    def __init__(self, endpoint: str | None) -> None:
        self.endpoint = endpoint
        self._channels: dict[str, _Channel] = {}
        self._socket: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        return self._socket is not None

    async def start(self) -> None:
        if self.endpoint is None:
            return
        self._socket = zmq.asyncio.Context.instance().socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, 400)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(self.endpoint)
        self._task = asyncio.create_task(self._receive())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def watch(self, camera: str) -> Viewer:
        assert self._socket is not None
        viewer = Viewer(camera)
        channel = self._channels.setdefault(camera, _Channel())
        if not channel.viewers:
            self._socket.setsockopt(zmq.SUBSCRIBE, topic(camera))   # the recorder sends its init at once
        channel.viewers.add(viewer)
        if channel.track is not None:
            viewer.mime.set_result(_mime(channel.track))
        return viewer

    def leave(self, viewer: Viewer) -> None:
        channel = self._channels.get(viewer.camera)
        if channel is None:
            return
        channel.viewers.discard(viewer)
        if not channel.viewers and self._socket is not None:
            self._socket.setsockopt(zmq.UNSUBSCRIBE, topic(viewer.camera))
            del self._channels[viewer.camera]   # a later viewer gets a fresh init from the recorder

    async def _receive(self) -> None:
        assert self._socket is not None
        while True:
            parts = await self._socket.recv_multipart()
            if len(parts) != 3 or not parts[0].endswith(b"\0"):
                continue
            channel = self._channels.get(parts[0][:-1].decode(errors="replace"))
            if channel is None:
                continue
            try:
                if parts[1] == INIT:
                    self._init(channel, parts[2])
                elif parts[1] == FRAGMENT:
                    self._fragment(channel, parts[2])
            except (Mp4FormatError, ValueError, struct.error) as error:
                now = time.monotonic()
                if now - channel.last_warning > 60:
                    channel.last_warning = now
                    log.warning("live view dropped a piece it could not read: %s", error)

    def _init(self, channel: _Channel, init: bytes) -> None:
        boxes = {box.kind: box for box in children(init, 0, len(init))}
        ftyp, moov = boxes[b"ftyp"], boxes[b"moov"]
        channel.track = parse_moov(init[ftyp.start:ftyp.end], init[moov.start:moov.end], moov.start)
        channel.init = init
        channel.last_sequence = None
        for viewer in channel.viewers:
            if not viewer.mime.done():
                viewer.mime.set_result(_mime(channel.track))

    def _fragment(self, channel: _Channel, fragment: bytes) -> None:
        if channel.track is None or channel.init is None:
            return
        moof = next(children(fragment, 0, len(fragment)))
        if moof.kind != b"moof":
            raise ValueError("a fragment that does not start with a moof")
        sequence_at, *_, key, _ = parse_moof(fragment[:moof.end], 0, channel.track)
        sequence = struct.unpack_from(">I", fragment, sequence_at)[0]
        lost = channel.last_sequence is not None and sequence != channel.last_sequence + 1
        channel.last_sequence = sequence
        for viewer in channel.viewers:
            if lost:
                viewer.waiting_for_key = True
            if viewer.waiting_for_key and not key:
                continue
            pieces = [fragment] if viewer.sent_init is channel.init else [channel.init, fragment]
            if viewer.queue.maxsize - viewer.queue.qsize() < len(pieces):
                viewer.waiting_for_key = True   # too slow: skip to the next key frame
                continue
            for piece in pieces:
                viewer.queue.put_nowait(piece)
            viewer.sent_init = channel.init
            viewer.waiting_for_key = False


def _mime(track: TrackFormat) -> str:
    return f'video/mp4; codecs="{track.mime_codecs}"'
