"""A camera's live feed: a copy of the bytes its segment writer puts on disk, offered to the web server's live
view, so watching live needs no RTSP session of its own (cheap cameras allow 2-4) and no transcoding.

The segment files are fragmented MP4 (an init segment, ftyp+moov, then a moof+mdat fragment per key frame
and at least every second), so the bytes written already are what a browser's Media Source plays.

Wire (zmq, the recorder connects an XPUB socket to the web server's SUB; endpoint in the bus's private
0700 directory): multipart messages [camera id + NUL, kind, bytes], kind b"i" a whole init segment (sent
when someone starts watching and at each new segment), b"f" one whole fragment (moof+mdat) following it.

Invariants:
- Costs nothing while nobody watches: the XPUB socket reports subscriptions; until the web server
  subscribes to this camera no byte is copied or sent (only the box sizes of the stream are followed, and
  a new segment's init, a few hundred bytes, is kept). While watched it holds one fragment (~1 s of video).
- Never delays or fails recording: every send is non-blocking and a full queue (a stalled web server) drops
  the message; any zmq error is logged once and the feed switches itself off; `write` never raises.
- A fragment is sent whole or not at all (a dropped message loses one fragment; its mfhd sequence number
  tells the receiver, which then waits for a key frame), and only after its segment's init was sent.
"""

from __future__ import annotations

import logging
import struct

import zmq

log = logging.getLogger(__name__)

INIT = b"i"
FRAGMENT = b"f"
SEND_HIGH_WATER = 200       # messages queued for a slow web server before they are dropped
_INIT_BOXES = (b"ftyp", b"moov")


def topic(camera: str) -> bytes:
    """A camera's subscription topic: the NUL keeps `gate` from matching `gate-2` (zmq matches prefixes)."""
    return camera.encode() + b"\0"


class LiveFeed:
    """One camera's feed; used by that camera's recorder thread only."""

    def __init__(self, endpoint: str, camera: str) -> None:
        self._camera = camera
        self._topic = topic(camera)
        self._socket: zmq.Socket | None = zmq.Context.instance().socket(zmq.XPUB)
        self._socket.setsockopt(zmq.XPUB_VERBOSER, 1)   # every (un)subscribe, so a restarted web server is seen
        self._socket.setsockopt(zmq.SNDHWM, SEND_HIGH_WATER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(endpoint)
        self._watchers = 0
        self._init = bytearray()      # the current segment's init segment, once whole
        self._init_whole = False
        self._head = bytearray()      # bytes of a box header not yet complete
        self._left_in_box = 0         # bytes of the current top-level box still to come (-1: not followed)
        self._kind = b""              # the current box's type
        self._keep = False            # whether the current box is being kept (init, or watched fragments)
        self._box = bytearray()
        self._moof: bytes | None = None   # a fragment's moof, waiting for its mdat

    def new_segment(self) -> None:
        self._init.clear()
        self._init_whole = False
        self._head.clear()
        self._left_in_box = 0
        self._moof = None

    def write(self, data: bytes | memoryview) -> None:
        """Called with each write of the segment file, after it reached the file."""
        if self._socket is None:
            return
        try:
            self._read_subscriptions()
            self._follow(memoryview(data))
        except zmq.ZMQError as error:
            log.warning("camera %s: live view switched off: %s", self._camera, error)
            self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _read_subscriptions(self) -> None:
        assert self._socket is not None
        while self._socket.poll(0, zmq.POLLIN):
            message = self._socket.recv(zmq.NOBLOCK)
            if message[1:] == self._topic:
                was_watched = self._watchers > 0
                self._watchers = max(0, self._watchers + (1 if message[:1] == b"\x01" else -1))
                if self._watchers > 0 and not was_watched:
                    log.info("camera %s: live view started", self._camera)
                elif self._watchers == 0 and was_watched:
                    log.info("camera %s: live view ended", self._camera)
                if message[:1] == b"\x01" and self._init_whole:
                    self._send(INIT, bytes(self._init))   # a new watcher needs the current init first

    def _follow(self, data: memoryview) -> None:
        """Walk the top-level boxes in `data`: keep the init; while watched, send each moof+mdat whole."""
        while data:
            if self._left_in_box == 0:
                need = 8 - len(self._head)
                self._head += data[:need]
                data = data[need:]
                if len(self._head) < 8:
                    return
                size, kind = struct.unpack(">I4s", self._head)
                if size == 1 or size < 8:
                    # a 64-bit size (never written for a segment's init or fragments) or damage: stop
                    # following this segment rather than send garbage
                    log.warning("camera %s: live view skips a segment it cannot follow", self._camera)
                    self._left_in_box = -1
                    return
                self._kind = kind
                self._keep = (kind in _INIT_BOXES and not self._init_whole) or (
                    self._watchers > 0 and self._init_whole and kind in (b"moof", b"mdat"))
                self._box = bytearray(self._head) if self._keep else bytearray()
                self._head.clear()
                self._left_in_box = size - 8
            if self._left_in_box < 0:
                return
            take = data[: self._left_in_box]
            data = data[len(take):]
            self._left_in_box -= len(take)
            if self._keep:
                self._box += take
            if self._left_in_box == 0 and self._keep:
                self._box_done(self._kind, bytes(self._box))

    def _box_done(self, kind: bytes, box: bytes) -> None:
        if kind in _INIT_BOXES:
            self._init += box
            if kind == b"moov":
                self._init_whole = True
                if self._watchers > 0:
                    self._send(INIT, bytes(self._init))
        elif kind == b"moof":
            self._moof = box
        elif kind == b"mdat" and self._moof is not None:
            self._send(FRAGMENT, self._moof + box)   # one message: a dropped one loses a whole fragment
            self._moof = None

    def _send(self, kind: bytes, payload: bytes) -> None:
        assert self._socket is not None
        try:
            self._socket.send_multipart([self._topic, kind, payload], zmq.NOBLOCK)
        except zmq.Again:
            pass   # the web server is behind: this piece is lost, the viewer resynchronises at a key frame
