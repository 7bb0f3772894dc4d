"""The message bus between processes (pyzmq): recorders and motion workers PUSH records (`BusSender`), the
supervisor PULLs them (`BusReceiver`).

Invariants:
- The supervisor listens on a Unix socket (zmq `ipc://`) in a directory of its own, made with mode 0700
  under $RUNTIME_DIRECTORY when systemd gives one, else under the system temp dir, and removed at stop.
  Why: it used to listen on a TCP port of 127.0.0.1, which every local user and process could connect to
  and feed records (a forged one got a file deleted); a directory only the service user can enter keeps
  every other user out. Workers get the endpoint as an argument, as before.
- Whatever arrives is still checked (core.record_validation) before anything uses it: a message that is
  not a record edgenvr could have sent is logged with the reason and dropped, never raised. At most
  DROPS_LOGGED_PER_MINUTE such lines a minute, then one line saying how many more were dropped: a flood
  must not wear out the card the journal is on.
- A message larger than MAX_MESSAGE_BYTES disconnects its sender (zmq MAXMSGSIZE); no record comes near it.

PUSH/PULL rather than PUB/SUB because a segment announcement must not be dropped for a slow joiner.
A recorder never blocks on the bus: if the supervisor is gone, announcements are dropped and the
start-up reconcile adopts the files from disk instead.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import zmq
import zmq.asyncio

from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.record_validation import (
    InvalidMessage,
    MessageRules,
    record_from_message,
)
from edgenvr.core.records import Record, to_message

log = logging.getLogger(__name__)

SOCKET_NAME = "bus"
LIVE_SOCKET_NAME = "live"
DIRECTORY_PREFIX = "edgenvr-bus-"
# sun_path holds 108 bytes with its terminating NUL; mkdtemp adds 8 characters to the prefix.
LONGEST_SOCKET_PATH_BYTES = 107
MAX_MESSAGE_BYTES = 64 * 1024
DROPS_LOGGED_PER_MINUTE = 20
DROP_LOG_WINDOW_S = 60.0


class BusError(Exception):
    """The supervisor's end of the bus cannot be set up (no directory for its socket)."""


class BusSender:
    """One sender per thread (zmq sockets are not thread-safe); they share the process's zmq context."""

    def __init__(self, endpoint: str) -> None:
        self._socket = zmq.Context.instance().socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, 10_000)
        self._socket.setsockopt(zmq.LINGER, 2000)  # give the last announcements a moment on shutdown
        self._socket.connect(endpoint)

    def send(self, record: Record) -> bool:
        try:
            self._socket.send(json.dumps(to_message(record)).encode(), flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            # segments are adopted from disk by the start-up reconcile; an event or heartbeat is lost
            log.warning("bus full, announcement dropped: %s", type(record).__name__)
            return False

    def close(self) -> None:
        self._socket.close()


def decode(payload: bytes, rules: MessageRules) -> Record:
    """The record a bus message carries, checked (core.record_validation); raises InvalidMessage."""
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or nested deeper than Python recurses
        raise InvalidMessage(f"not JSON ({type(exc).__name__}: {str(exc)[:80]})") from None
    return record_from_message(message, rules)


def private_socket_directory() -> Path:
    """A fresh directory only this user can enter (mkdtemp: mode 0700) for the bus socket: under the first
    $RUNTIME_DIRECTORY that systemd gives, else under the system temp dir. A place where the socket path would
    be too long for a Unix socket, or where the directory cannot be made, is logged and the next one tried."""
    places = [place for place in os.environ.get("RUNTIME_DIRECTORY", "").split(":") if place]
    places.append(tempfile.gettempdir())
    for place in places:
        longest = os.path.join(place, DIRECTORY_PREFIX + "x" * 8, SOCKET_NAME)
        if len(os.fsencode(longest)) > LONGEST_SOCKET_PATH_BYTES:
            log.warning("bus socket not put under %s: its path would be longer than a Unix socket allows", place)
            continue
        try:
            return Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX, dir=place))
        except OSError as exc:
            log.warning("bus socket not put under %s: %s", place, exc)
    raise BusError(f"no directory for the bus socket in {', '.join(places)}")


class _DropLog:
    """Logs dropped messages: each of the first DROPS_LOGGED_PER_MINUTE in a minute, then a count."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.dropped = 0          # messages dropped since the start
        self._minute_started = -float("inf")
        self._logged = 0          # lines logged this minute
        self._unlogged = 0        # drops this minute not logged one by one

    def note(self, reason: str) -> None:
        self.dropped += 1
        now = self.clock.monotonic()
        if now - self._minute_started >= DROP_LOG_WINDOW_S:
            self.flush()
            self._minute_started, self._logged = now, 0
        if self._logged < DROPS_LOGGED_PER_MINUTE:
            self._logged += 1
            log.error("bus message dropped: %s", reason)
        else:
            self._unlogged += 1

    def flush(self) -> None:
        if self._unlogged:
            log.error("%d more bus messages dropped within a minute (not logged one by one)", self._unlogged)
            self._unlogged = 0


class BusReceiver:
    """The supervisor's end of the bus: a PULL socket bound in a private directory (see the module
    docstring), whose messages come out checked. Close it to remove the socket and its directory."""

    def __init__(self, rules: MessageRules, clock: Clock = SYSTEM_CLOCK) -> None:
        self.rules = rules
        self.directory = private_socket_directory()
        self.endpoint = f"ipc://{self.directory / SOCKET_NAME}"
        # The web server's live view listens here (recording.live_feed), in the same private directory.
        self.live_endpoint = f"ipc://{self.directory / LIVE_SOCKET_NAME}"
        self._drops = _DropLog(clock)
        self._context = zmq.asyncio.Context()
        self.socket = self._context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        try:
            self.socket.bind(self.endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise BusError(f"cannot listen on {self.endpoint}: {exc}") from exc

    @property
    def dropped(self) -> int:
        return self._drops.dropped

    async def receive(self) -> Record | None:
        """The next message's record; None if the message was dropped (logged)."""
        return self._checked(await self.socket.recv())

    def receive_waiting(self) -> list[Record]:
        """The records of the messages that have arrived and not been received yet (at shutdown)."""
        records = []
        while True:
            try:
                payload = self.socket.recv(flags=zmq.NOBLOCK).result()
            except zmq.Again:
                return records
            record = self._checked(payload)
            if record is not None:
                records.append(record)

    def _checked(self, payload: bytes) -> Record | None:
        try:
            return decode(payload, self.rules)
        except InvalidMessage as exc:
            self._drops.note(str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug in a check must cost the message, never the supervisor
            log.exception("bus message dropped: checking it failed (%s)", type(exc).__name__)
            self._drops.dropped += 1
        return None

    def close(self) -> None:
        """Stop listening and remove the socket and its directory (which nobody else writes to). A failure
        is logged: a leftover directory in a runtime or temp dir costs nothing and is cleared at boot."""
        self._drops.flush()
        self.socket.close(linger=0)
        self._context.term()
        try:
            # zmq leaves an ipc socket file behind; this is the bus's own file in its private runtime
            # directory, not recorded data (storage.deletion is for the data dir)
            for name in (SOCKET_NAME, LIVE_SOCKET_NAME):
                (self.directory / name).unlink(missing_ok=True)
            self.directory.rmdir()
        except OSError as exc:
            log.warning("bus directory %s not removed: %s", self.directory, exc)
