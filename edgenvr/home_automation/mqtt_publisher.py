"""The MQTT process (started by the supervisor when the config has [mqtt]): publishes the box's availability,
each camera's state, its events as they start and end, its newest event snapshot, and Home Assistant discovery
configs (home_automation.ha_discovery), in the topic layout of home_automation.mqtt_topics.

Owns the connection to the broker. Invariants:
- Recording never waits for the broker: this is a process of its own at BACKGROUND_NICE that only reads the
  index (home_automation.index_watch, every POLL_S), and nothing in the box waits for it. While the broker is
  down or slow, messages wait in bounded memory (home_automation.pending_messages: the state by topic, the
  events up to a limit, oldest dropped first and counted in the log).
- The box's availability topic says `online` (retained) only after the discovery configs and the camera states
  of this connection are with the broker, and `offline` when it stops; the connection's last will (retained)
  says `offline` when the process dies or the link is cut, so Home Assistant marks every entity unavailable.
- After every (re)connect everything retained is published again (a broker restarted without persistence lost
  it), and so it is when Home Assistant says it came online (`<discovery_prefix>/status`, its birth message).
- A (re)started process publishes the current states and the newest snapshot, never the history of events.
- The password is given to the MQTT client only: no log line or message here contains it.
Failure paths: the broker unreachable, refusing the login, or too slow to acknowledge a message within
PUBLISH_TIMEOUT_S -> logged, connected again after core.link_backoff's wait; the index unreadable -> logged
(once a minute) and read again at the next look; a snapshot file gone or too large -> logged, not published.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sqlite3
from typing import Any

import aiomqtt

from edgenvr.config.records import Config
from edgenvr.core.clock import SYSTEM_CLOCK, Clock

# The one rule for waiting after a failed link, shared with the sync process (pyproject.toml's contract allows
# this one import between the siblings: the rule belongs in core, where it should move).
from edgenvr.core.link_backoff import LinkBackoff
from edgenvr.core.process_setup import BACKGROUND_NICE, become_child_process
from edgenvr.home_automation.broker_tls import BrokerTlsError, tls_context
from edgenvr.home_automation.ha_discovery import discovery_configs, removals
from edgenvr.home_automation.index_watch import CameraView, EventNews, IndexWatch, Look
from edgenvr.home_automation.mqtt_topics import (
    Availability,
    BoxTopics,
    CameraTopic,
    Switch,
)
from edgenvr.home_automation.pending_messages import Message, PendingMessages
from edgenvr.index import schema as index_schema
from edgenvr.storage.layout import StorageLayout

log = logging.getLogger(__name__)

POLL_S = 0.5                 # how often the index is read: events reach the broker within about this
PUBLISH_TIMEOUT_S = 10.0     # a broker that acknowledges nothing for this long is treated as gone
KEEPALIVE_S = 30             # the broker sends the last will ~1.5x this after the link is cut silently
RETAINED_BATCH = 10          # retained messages in flight at once (aiomqtt warns above 10 pending calls)
SNAPSHOT_MAX_BYTES = 4 * 1024 * 1024   # the motion worker writes ~30-100 KB; anything far larger is not a snapshot
INDEX_PROBLEM_LOG_EVERY_S = 60.0


class MqttPublisher:
    def __init__(self, config: Config, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.mqtt = config.mqtt
        self.clock = clock
        self.layout = StorageLayout(config.storage.data_dir)
        self.topics = BoxTopics.of(config)
        self.pending = PendingMessages(clock)
        self.watch = IndexWatch(tuple(camera.id for camera in config.enabled_cameras))
        self._names = {camera.id: camera.name for camera in config.enabled_cameras}
        self._backoff = LinkBackoff()
        self._looked = asyncio.Event()           # the first look is in pending: states can be told
        self._conn: sqlite3.Connection | None = None
        self._index_problem_logged_at: float | None = None
        self.where = f"{self.mqtt.host}:{self.mqtt.broker_port}"

    async def run(self, stop: asyncio.Event) -> None:
        watching = asyncio.create_task(self._watch(stop))
        try:
            await self._connect_again_and_again(stop)
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            if self._conn is not None:
                self._conn.close()

    # --- the index -----------------------------------------------------------------------------------

    async def _watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                look = self._look()
            except (sqlite3.Error, OSError) as exc:
                now = self.clock.monotonic()
                if self._index_problem_logged_at is None or now - self._index_problem_logged_at >= INDEX_PROBLEM_LOG_EVERY_S:
                    log.warning("mqtt: cannot read the index (%s); reading it again every %.1f s", exc, POLL_S)
                    self._index_problem_logged_at = now
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
            else:
                self._apply(look)
                self._looked.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)

    def _look(self) -> Look:
        if self._conn is None:
            self._conn = index_schema.connect(self.layout.index_path, readonly=True)
        return self.watch.look(self._conn)

    def _apply(self, look: Look) -> None:
        first = not self._looked.is_set()
        if first and self.mqtt.discovery:   # configs first: Home Assistant makes the entities, then states fill them
            for config in [*removals(self.config, look.unconfigured), *discovery_configs(self.config)]:
                self.pending.set_retained(config.topic, config.payload_bytes())
        for view in look.cameras.values():
            self._tell_state(view)
        for camera, snapshot in look.newest_snapshots.items():
            self._tell_snapshot(camera, snapshot)
        for news in look.news:
            self.pending.add_event(self.topics.camera(news.camera, CameraTopic.EVENTS), self._event_payload(news))
            if news.snapshot is not None:   # tamper: written when it opens; motion: its strongest frame, at the end
                self._tell_snapshot(news.camera, news.snapshot)

    def _tell_state(self, view: CameraView) -> None:
        camera = view.camera
        state = {"camera": camera, "name": self._names.get(camera, camera), "state": view.state,
                 "since_ms": view.since_ms, "reason": view.reason, "online": view.online, "motion": view.motion,
                 "tamper": list(view.tamper)}
        self.pending.set_retained(self.topics.camera(camera, CameraTopic.STATE), _json(state))
        for topic, on in ((CameraTopic.ONLINE, view.online), (CameraTopic.MOTION, view.motion),
                          (CameraTopic.TAMPER, bool(view.tamper))):
            self.pending.set_retained(self.topics.camera(camera, topic), (Switch.ON if on else Switch.OFF).encode())

    def _tell_snapshot(self, camera: str, relative_path: str) -> None:
        path = self.layout.absolute(relative_path)
        try:
            size = path.stat().st_size
            if size > SNAPSHOT_MAX_BYTES:
                log.warning("mqtt: snapshot %s is %d bytes, over %d: not published", path, size, SNAPSHOT_MAX_BYTES)
                return
            picture = path.read_bytes()
        except OSError as exc:   # the ring deleted it with its event, or the disk failed
            log.warning("mqtt: snapshot of %s not published: %s", camera, exc.strerror or exc)
            return
        self.pending.set_retained(self.topics.camera(camera, CameraTopic.SNAPSHOT), picture)

    def _event_payload(self, news: EventNews) -> bytes:
        return _json({"box": self.config.box.box_id, "camera": news.camera, "kind": news.kind,
                      "subkind": news.subkind, "phase": news.phase, "start_ms": news.start_ms, "end_ms": news.end_ms,
                      "zones": list(news.zones), "peak_score": news.peak_score, "detail": news.detail,
                      "event_id": news.id, "snapshot": news.snapshot is not None})

    # --- the broker ----------------------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.mqtt.host, self.mqtt.broker_port, username=self.mqtt.username, password=self.mqtt.password,
            identifier=self.mqtt.client_id_for(self.config.box.box_id), keepalive=KEEPALIVE_S,
            timeout=PUBLISH_TIMEOUT_S, tls_context=tls_context(self.mqtt),
            will=aiomqtt.Will(self.topics.availability, Availability.OFFLINE.value, qos=1, retain=True),
            logger=logging.getLogger("edgenvr.home_automation.paho"))

    async def _connect_again_and_again(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            was_connected = False
            try:
                async with self._client() as client:
                    was_connected = True
                    self._backoff.reset()
                    log.info("mqtt: connected to %s as %s, publishing under %s", self.where,
                             self.mqtt.client_id_for(self.config.box.box_id), self.topics.prefix)
                    self.pending.log_drops("while the broker was away")
                    self.pending.resend_all()
                    await self._serve(client, stop)
                    with contextlib.suppress(aiomqtt.MqttError):   # a clean stop: no last will, so say it
                        await client.publish(self.topics.availability, Availability.OFFLINE.value, qos=1, retain=True,
                                             timeout=2)
                    return
            except aiomqtt.MqttCodeError as exc:
                if was_connected:
                    log.warning("mqtt: lost the broker at %s: %s", self.where, exc)
                else:   # its CONNACK said no
                    who = f"user {self.mqtt.username!r}" if self.mqtt.username is not None else "anonymous"
                    log.error("mqtt: the broker at %s refused the box (%s, %s): %s", self.where, who,
                              "with a password" if self.mqtt.password is not None else "no password",
                              _refusal(exc))
            except aiomqtt.MqttError as exc:
                log.warning("mqtt: %s the broker at %s: %s", "lost" if was_connected else "cannot reach",
                            self.where, exc)
            except BrokerTlsError as exc:
                log.error("mqtt: %s", exc)
            wait = self._backoff.failed()
            log.info("mqtt: connecting again in %.0f s (%d event message(s) waiting)", wait,
                     self.pending.waiting_events)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def _serve(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Publish until ``stop``; MqttError when the broker goes or stops acknowledging."""
        tasks = [asyncio.create_task(self._listen(client)), asyncio.create_task(self._send(client))]
        stopping = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task in done:
                    task.result()   # raises what ended it
        finally:
            for task in (*tasks, stopping):
                task.cancel()
            await asyncio.gather(*tasks, stopping, return_exceptions=True)

    async def _listen(self, client: aiomqtt.Client) -> None:
        """Home Assistant's birth message (it restarted: send the configs and states again); and, by its end,
        the connection's: the iteration raises MqttError when the broker goes, even while nothing is sent."""
        if self.mqtt.discovery:
            await client.subscribe(f"{self.mqtt.discovery_prefix}/status", qos=1)
        async for message in client.messages:
            if message.payload in (b"online", "online"):
                log.info("mqtt: Home Assistant came online: sending the discovery configs and states again")
                self.pending.resend_all()

    async def _send(self, client: aiomqtt.Client) -> None:
        await self._looked.wait()   # `online` only with the states of this connection before it
        announced = False
        while True:
            batch = self.pending.retained_batch(RETAINED_BATCH)
            if batch:
                await asyncio.gather(*(self._publish(client, message) for message in batch))
                for message in batch:
                    self.pending.retained_sent(message)
                continue
            if not announced:
                await client.publish(self.topics.availability, Availability.ONLINE.value, qos=1, retain=True)
                announced = True
            event = self.pending.next_event()
            if event is not None:
                await self._publish(client, event)
                self.pending.event_sent(event)
                continue
            await self.pending.changed()

    async def _publish(self, client: aiomqtt.Client, message: Message) -> None:
        await client.publish(message.topic, message.payload, qos=1, retain=message.retain)


def _refusal(exc: aiomqtt.MqttCodeError) -> str:
    """The broker's reason, and what to check for the two that are about the login."""
    text = str(exc)
    value = getattr(exc.rc, "value", exc.rc)
    # MQTT 3.1.1 CONNACK 4 / 5 (MQTT 5: 134 / 135): bad user name or password / not authorised
    if value in (4, 5, 134, 135):
        text += "; check mqtt.username and mqtt.password against the broker's users"
    return text


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def run_mqtt_process(config: Config, name: str) -> None:
    """Process entry point (started by the supervisor when the config has [mqtt])."""
    become_child_process(None, name, config.log_level, nice=BACKGROUND_NICE)   # the broker waits, recording never

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await MqttPublisher(config).run(stop)
    asyncio.run(main())
