"""The message bus between processes (pyzmq): recorders and motion workers PUSH records, the supervisor
PULLs them.

PUSH/PULL rather than PUB/SUB because a segment announcement must not be dropped for a slow joiner.
A recorder never blocks on the bus: if the supervisor is gone, announcements are dropped and the
start-up reconcile adopts the files from disk instead.
"""

from __future__ import annotations

import json
import logging

import zmq

from edgenvr.core.records import Record, from_message, to_message

log = logging.getLogger(__name__)


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


def decode(payload: bytes) -> Record:
    return from_message(json.loads(payload))
