"""What waits for the MQTT broker: the box's current retained state (one payload per topic) and its event
messages, in bounded memory whatever the broker does.

Owns what is kept and what is dropped while the broker is away or slow. Invariants:
- A retained topic keeps only its newest payload, so the state takes memory by topic count (a few per camera),
  never by time offline; `resend_all` queues every one again (after each reconnect: a broker restarted without
  persistence has lost them), and one that changes is queued again as it changes. Setting the same payload
  again queues nothing.
- Event messages are kept in order, at most `max_events`; a full queue drops its oldest and counts it, and the
  count is logged at most once a minute (`DROP_LOG_EVERY_S`) and when the broker takes messages again.
- A message leaves only once the broker acknowledged it (`retained_sent`, `event_sent`): a connection lost in
  the middle sends it again (at least once).
Failure paths: none of its own; it never blocks and never raises.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from edgenvr.core.clock import Clock

log = logging.getLogger(__name__)

# ~1 KB each: a megabyte at most, hours of a busy site's events, while the state itself is never dropped.
MAX_EVENTS = 1000
DROP_LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


class PendingMessages:
    def __init__(self, clock: Clock, max_events: int = MAX_EVENTS) -> None:
        self._clock = clock
        self._state: dict[str, bytes] = {}          # topic -> newest payload, in the order topics first came
        self._unsent: dict[str, None] = {}          # retained topics to send, oldest change first
        self._events: deque[Message] = deque()
        self._max_events = max_events
        self._wake = asyncio.Event()
        self.dropped = 0                            # event messages dropped since the process started
        self._dropped_unlogged = 0
        self._logged_at: float | None = None

    def set_retained(self, topic: str, payload: bytes) -> None:
        if self._state.get(topic) == payload:
            return
        self._state[topic] = payload
        self._unsent[topic] = None
        self._wake.set()

    def add_event(self, topic: str, payload: bytes) -> None:
        if len(self._events) >= self._max_events:
            self._events.popleft()
            self.dropped += 1
            self._dropped_unlogged += 1
            now = self._clock.monotonic()
            if self._logged_at is None or now - self._logged_at >= DROP_LOG_EVERY_S:
                self.log_drops("the broker is not taking messages")
        self._events.append(Message(topic, payload, retain=False))
        self._wake.set()

    def log_drops(self, why: str) -> None:
        if self._dropped_unlogged:
            log.warning("mqtt: %s: %d event message(s) dropped, oldest first (%d since start; the camera states are "
                        "kept and sent when it takes messages)", why, self._dropped_unlogged, self.dropped)
            self._dropped_unlogged = 0
            self._logged_at = self._clock.monotonic()

    def resend_all(self) -> None:
        self._unsent = dict.fromkeys(self._state)
        self._wake.set()

    def retained_batch(self, size: int) -> list[Message]:
        """Up to ``size`` retained messages to send, oldest change first."""
        batch = []
        for topic in self._unsent:
            batch.append(Message(topic, self._state[topic], retain=True))
            if len(batch) == size:
                break
        return batch

    def retained_sent(self, message: Message) -> None:
        if self._state.get(message.topic) == message.payload:   # not changed again meanwhile
            self._unsent.pop(message.topic, None)

    def next_event(self) -> Message | None:
        return self._events[0] if self._events else None

    def event_sent(self, message: Message) -> None:
        if self._events and self._events[0] is message:   # not dropped meanwhile
            self._events.popleft()

    @property
    def waiting_events(self) -> int:
        return len(self._events)

    async def changed(self) -> None:
        """Returns once something was added since the last call."""
        await self._wake.wait()
        self._wake.clear()
