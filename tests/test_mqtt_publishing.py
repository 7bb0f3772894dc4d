"""What a home-automation user relies on from [mqtt]: the box's cameras appear in Home Assistant by themselves
(discovery configs HA accepts, pointing at topics the box really publishes), their states are there whenever HA
looks (retained), events arrive as they start and end (within a second of the index), a restarted publisher
tells the present and not the past, the broker's login works with its users and refuses a wrong password
with a clear log line that never shows the password, and TLS trusts exactly the site's CA or the pinned
certificate. A real Mosquitto (tests/mosquitto_broker.py) and the real index writer; the publisher runs in
this process (the box test, test_mqtt_box.py, runs it under `edgenvr run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgenvr.config.checking import parse_config
from edgenvr.config.records import Config
from edgenvr.core.clock import SimulatedClock
from edgenvr.core.records import (
    CameraState,
    EventKind,
    EventRecord,
    RecorderState,
    TamperKind,
)
from edgenvr.home_automation.ha_discovery import discovery_configs, removals
from edgenvr.home_automation.index_watch import EventPhase, IndexWatch
from edgenvr.home_automation.mqtt_publisher import MqttPublisher
from edgenvr.home_automation.pending_messages import PendingMessages
from edgenvr.index import schema as index_schema
from edgenvr.index.writer import IndexWriter
from edgenvr.storage.durable_writes import write_durably
from edgenvr.storage.layout import StorageLayout
from tests.mosquitto_broker import (
    BrokerLog,
    Received,
    broker_certificate,
    running_broker,
)

BOX = "rt08"
PREFIX = f"edgenvr/{BOX}"
AVAILABILITY = f"{PREFIX}/availability"
PASSWORD = "kata sandi rahasia 7"

# Home Assistant's MQTT documentation (integrations/mqtt "Discovery messages", binary_sensor.mqtt, image.mqtt):
# the options each platform takes, the device registry's keys, the origin's, and binary sensor device classes.
_COMMON = {"availability", "availability_mode", "availability_template", "availability_topic", "device",
           "enabled_by_default", "encoding", "entity_category", "icon", "json_attributes_template",
           "json_attributes_topic", "name", "object_id", "unique_id", "origin", "payload_available",
           "payload_not_available"}
HA_OPTIONS = {
    "binary_sensor": _COMMON | {"device_class", "expire_after", "force_update", "off_delay", "payload_off",
                                "payload_on", "qos", "state_topic", "value_template"},
    "image": _COMMON | {"content_type", "image_encoding", "image_topic", "url_template", "url_topic"},
}
HA_REQUIRED = {"binary_sensor": {"state_topic"}, "image": set()}
HA_DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "name",
                  "suggested_area", "sw_version", "via_device"}
HA_ORIGIN_KEYS = {"name", "sw_version", "support_url"}
HA_BINARY_SENSOR_CLASSES = {"battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
                            "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
                            "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
                            "tamper", "update", "vibration", "window"}
DISCOVERY_TOPIC = re.compile(r"homeassistant/(binary_sensor|image)/(?:[a-zA-Z0-9_-]+/)?[a-zA-Z0-9_-]+/config")


def check_discovery(configs: dict[str, dict[str, Any]], published: set[str], availability: str) -> None:
    """Each config is one Home Assistant accepts, and every topic it names is one the box publishes."""
    unique_ids = [payload["unique_id"] for payload in configs.values()]
    assert len(unique_ids) == len(set(unique_ids)), unique_ids
    for topic, payload in configs.items():
        match = DISCOVERY_TOPIC.fullmatch(topic)
        assert match, f"{topic}: not <discovery_prefix>/<component>/[<node_id>/]<object_id>/config"
        component = match.group(1)
        assert set(payload) <= HA_OPTIONS[component], (topic, set(payload) - HA_OPTIONS[component])
        assert HA_REQUIRED[component] <= set(payload), topic
        assert payload["unique_id"] and isinstance(payload["name"], str), topic
        device = payload["device"]
        assert set(device) <= HA_DEVICE_KEYS and device["identifiers"] and device["name"], (topic, device)
        assert set(payload["origin"]) <= HA_ORIGIN_KEYS and payload["origin"]["name"], topic
        if component == "image":   # exactly one of image_topic and url_topic; raw JPEG bytes on image_topic
            assert "image_topic" in payload and "url_topic" not in payload, topic
            assert payload["content_type"] == "image/jpeg" and "image_encoding" not in payload, topic
        else:
            assert payload["device_class"] in HA_BINARY_SENSOR_CLASSES, topic
            assert payload.get("payload_on", "ON") == "ON" or payload["state_topic"] == availability, topic
        if "availability_topic" in payload:
            assert payload["availability_topic"] == availability, topic
            assert (payload["payload_available"], payload["payload_not_available"]) == ("online", "offline")
        for key, value in payload.items():
            if key.endswith("_topic"):
                assert value in published, f"{topic} names {key} {value}, which the box never published"


def discovery_of(messages: list[Received]) -> dict[str, dict[str, Any]]:
    return {m.topic: json.loads(m.payload) for m in messages if m.topic.startswith("homeassistant/") and m.payload}


def jpeg(shade: int) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((36, 64, 3), shade, np.uint8))
    assert ok
    return data.tobytes()


# --- the pieces, fast ---------------------------------------------------------------------------------------


def test_a_broker_away_costs_bounded_memory_states_are_kept_and_the_oldest_events_go_first(
        caplog: pytest.LogCaptureFixture) -> None:
    pending = PendingMessages(SimulatedClock(), max_events=3)
    for number in range(5):
        pending.add_event("e", str(number).encode())
    for shade in range(50):   # a state that changes all the time takes one slot
        pending.set_retained("s", str(shade).encode())
    assert [pending.next_event().payload] == [b"2"] and pending.waiting_events == 3 and pending.dropped == 2
    assert [m.payload for m in pending.retained_batch(10)] == [b"49"]
    # the first drop is logged at once, the next ones at most once a minute and when the broker is back
    assert "the broker is not taking messages: 1 event message(s) dropped, oldest first" in caplog.text
    pending.log_drops("while the broker was away")
    assert "while the broker was away: 1 event message(s) dropped, oldest first (2 since start" in caplog.text
    message = pending.next_event()
    pending.event_sent(message)
    assert pending.next_event().payload == b"3"
    state = pending.retained_batch(1)[0]
    pending.retained_sent(state)
    assert pending.retained_batch(10) == []
    pending.set_retained("s", b"49")   # the same again: nothing to send
    assert pending.retained_batch(10) == []
    pending.resend_all()               # a reconnect: everything retained again
    assert [m.topic for m in pending.retained_batch(10)] == ["s"]


def _writer(tmp_path: Path) -> tuple[StorageLayout, IndexWriter]:
    layout = StorageLayout(tmp_path / "data")
    return layout, IndexWriter(index_schema.connect(layout.index_path))


def test_the_first_look_is_the_present_and_later_looks_tell_each_start_and_end_once(tmp_path: Path) -> None:
    layout, writer = _writer(tmp_path)
    writer.set_state(CameraState("gate", RecorderState.RECORDING, 1_000))
    writer.add_event(EventRecord("gate", EventKind.MOTION, 1_000, 2_000))          # history
    writer.add_event(EventRecord("gate", EventKind.TAMPER, 1_500, None, TamperKind.COVERED))   # open now
    writer.commit()
    watch = IndexWatch(("gate", "yard"))
    reader = index_schema.connect(layout.index_path, readonly=True)
    first = watch.look(reader)
    assert first.news == []
    assert first.cameras["gate"].online and first.cameras["gate"].tamper == ("covered",)
    assert first.cameras["yard"].state == "unknown" and not first.cameras["yard"].online

    writer.add_event(EventRecord("gate", EventKind.MOTION, 3_000, None))   # opens
    writer.add_event(EventRecord("gate", EventKind.MOTION, 4_000, 4_500))  # opens and closes between two looks
    writer.add_event(EventRecord("gate", EventKind.TAMPER, 1_500, 3_500, TamperKind.COVERED))   # the open one ends
    writer.commit()
    news = [(n.phase, n.kind, n.start_ms) for n in watch.look(reader).news]
    assert news == [(EventPhase.START, "motion", 3_000), (EventPhase.START, "motion", 4_000),
                    (EventPhase.END, "motion", 4_000), (EventPhase.END, "tamper", 1_500)]
    look = watch.look(reader)
    assert look.news == [] and look.cameras["gate"].motion and look.cameras["gate"].tamper == ()
    writer.add_event(EventRecord("gate", EventKind.MOTION, 3_000, 3_800))
    writer.commit()
    look = watch.look(reader)
    assert [(n.phase, n.start_ms, n.end_ms) for n in look.news] == [(EventPhase.END, 3_000, 3_800)]
    assert not look.cameras["gate"].motion


def test_events_whose_ids_are_reused_after_the_newest_were_deleted_are_still_news(tmp_path: Path) -> None:
    layout, writer = _writer(tmp_path)
    writer.add_event(EventRecord("gate", EventKind.MOTION, 1_000, 2_000))
    writer.add_event(EventRecord("gate", EventKind.MOTION, 5_000, 6_000))
    writer.commit()
    watch = IndexWatch(("gate",))
    reader = index_schema.connect(layout.index_path, readonly=True)
    watch.look(reader)
    writer.conn.execute("DELETE FROM events WHERE start_ms = 5000")   # the ring expired the newest (its id goes free)
    writer.add_event(EventRecord("gate", EventKind.MOTION, 9_000, 9_500))
    writer.commit()
    assert [(n.phase, n.start_ms) for n in watch.look(reader).news] == [(EventPhase.START, 9_000),
                                                                          (EventPhase.END, 9_000)]


def test_a_camera_taken_out_of_the_config_is_taken_out_of_home_assistant(tmp_path: Path) -> None:
    """Its entities' configs are published empty (HA deletes them), on exactly the topics that made them."""
    with_yard = parse_config(f'[box]\nid = "{BOX}"\n[storage]\ndata_dir = "{tmp_path}"\n'
                             '[[cameras]]\nid = "gate"\nurl = "rtsp://192.0.2.10/1"\n'
                             '[[cameras]]\nid = "yard"\nurl = "rtsp://192.0.2.10/2"\n[mqtt]\nhost = "h"\n')
    without = replace(with_yard, cameras=with_yard.cameras[:1])
    yard_topics = {c.topic for c in discovery_configs(with_yard)} - {c.topic for c in discovery_configs(without)}
    gone = removals(without, ("yard",))
    assert {c.topic for c in gone} == yard_topics and len(yard_topics) == 4
    assert all(c.payload_bytes() == b"" for c in gone)


# --- against a real broker ------------------------------------------------------------------------------------


def _box_config(data_dir: Path, port: int, *mqtt_lines: str) -> Config:
    return parse_config(f'[box]\nid = "{BOX}"\nname = "Pos RT 08"\n[storage]\ndata_dir = "{data_dir}"\n'
                        '[[cameras]]\nid = "gate"\nname = "Gerbang depan"\nurl = "rtsp://192.0.2.10/1"\n'
                        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n' + "".join(f"{line}\n" for line in mqtt_lines))


@contextlib.contextmanager
def publishing(config: Config) -> Iterator[None]:
    """The MQTT publisher of `edgenvr run`, in a thread of this process, stopped (SIGTERM's way) at the end."""
    running: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        async def main() -> None:
            running["loop"], running["stop"] = asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            await MqttPublisher(config).run(running["stop"])
        asyncio.run(main())

    thread = threading.Thread(target=run, name="mqtt-publisher", daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield
    finally:
        running["loop"].call_soon_threadsafe(running["stop"].set)
        thread.join(20)
        assert not thread.is_alive(), "the publisher did not stop"


def _snapshot(layout: StorageLayout, camera: str, start_ms: int, kind: str, picture: bytes) -> str:
    path = layout.snapshot_path(camera, start_ms, kind)
    write_durably(path, picture)
    return layout.relative(path)


@pytest.mark.slow
def test_home_assistant_discovers_the_cameras_and_events_arrive_within_a_second_of_the_index(tmp_path: Path) -> None:
    with running_broker(tmp_path / "broker") as broker:
        config = _box_config(tmp_path / "data", broker.port)
        layout, writer = _writer(tmp_path)
        now = int(time.time() * 1000)
        writer.set_state(CameraState("gate", RecorderState.RECORDING, now - 60_000))
        old = _snapshot(layout, "gate", now - 50_000, "motion", jpeg(40))
        writer.add_event(EventRecord("gate", EventKind.MOTION, now - 50_000, now - 45_000, snapshot=old))
        writer.commit()
        with BrokerLog(broker.port) as seen, publishing(config):
            online = seen.wait_for("availability online", lambda m: m.topic == AVAILABILITY and m.payload == b"online",
                                   10)
            before_online = seen.snapshot()[:seen.snapshot().index(online)]
            configs = discovery_of(before_online)
            assert len(configs) == 5, sorted(configs)   # the box's Online, the camera's Motion, Tamper, Online, Snapshot
            check_discovery(configs, {m.topic for m in seen.snapshot()}, AVAILABILITY)
            states = {m.topic: m.payload for m in before_online if m.topic.startswith(f"{PREFIX}/cameras/")}
            assert states[f"{PREFIX}/cameras/gate/online"] == b"ON"
            assert states[f"{PREFIX}/cameras/gate/motion"] == b"OFF"
            assert states[f"{PREFIX}/cameras/gate/tamper"] == b"OFF"
            assert states[f"{PREFIX}/cameras/gate/snapshot"] == jpeg(40)   # the newest event's, as it is
            state = json.loads(states[f"{PREFIX}/cameras/gate/state"])
            assert state | {"since_ms": 0} == {"camera": "gate", "name": "Gerbang depan", "state": "recording",
                                               "since_ms": 0, "reason": "", "online": True, "motion": False,
                                               "tamper": []}
            assert not [m for m in seen.snapshot() if m.topic.endswith("/events")], "the past is not news"
            devices = {json.dumps(c["device"], sort_keys=True) for c in configs.values()}
            assert len(devices) == 2   # the box and its camera, which HA shows under the box (via_device)

            latencies = []
            for number in range(5):
                start = now + number * 10_000
                time.sleep(0.1 * number)   # commits at different points of the publisher's half-second poll
                writer.add_event(EventRecord("gate", EventKind.MOTION, start, None, zones=("pintu",)))
                writer.commit()
                committed = time.time()
                started = seen.wait_for("a motion start", lambda m: m.topic.endswith("/events")
                                        and json.loads(m.payload)["start_ms"] == start, 5)
                latencies.append(started.at - committed)
                picture = _snapshot(layout, "gate", start, "motion", jpeg(100 + number))
                time.sleep(0.05 + 0.1 * number)
                writer.add_event(EventRecord("gate", EventKind.MOTION, start, start + 4_000, zones=("pintu",),
                                             peak_score=0.25, snapshot=picture))
                writer.commit()
                committed = time.time()
                ended = seen.wait_for("a motion end", lambda m: m.topic.endswith("/events")
                                      and json.loads(m.payload)["phase"] == "end"
                                      and json.loads(m.payload)["start_ms"] == start, 5)
                latencies.append(ended.at - committed)
            assert json.loads(started.payload) | {"event_id": 0} == {
                "box": BOX, "camera": "gate", "kind": "motion", "subkind": "", "phase": "start", "start_ms": start,
                "end_ms": None, "zones": ["pintu"], "peak_score": 0.0, "detail": "", "event_id": 0,
                "snapshot": False}
            assert json.loads(ended.payload)["end_ms"] == start + 4_000 and not ended.retain
            seen.wait_for("the newest snapshot", lambda m: m.topic.endswith("/snapshot") and m.payload == jpeg(104), 5)
            motion = [m.payload for m in seen.on(f"{PREFIX}/cameras/gate/motion")]
            assert motion == [b"OFF"] + [b"ON", b"OFF"] * 5, motion

            writer.add_event(EventRecord("gate", EventKind.TAMPER, now + 60_000, None, TamperKind.COVERED,
                                         detail="contrast collapsed"))
            writer.set_state(CameraState("gate", RecorderState.OFFLINE, now + 61_000, "no packets for 15 s"))
            writer.commit()
            seen.wait_for("tamper on", lambda m: m.topic == f"{PREFIX}/cameras/gate/tamper" and m.payload == b"ON", 5)
            seen.wait_for("offline", lambda m: m.topic == f"{PREFIX}/cameras/gate/online" and m.payload == b"OFF", 5)
            for kind in ("tamper", "offline"):
                told = seen.wait_for(f"a {kind} start", lambda m: m.topic.endswith("/events")
                                     and json.loads(m.payload)["kind"] == kind, 5)
                assert json.loads(told.payload)["phase"] == "start"
        # stopped: the box says it is offline (a clean disconnect sends no last will)
        assert seen.latest(AVAILABILITY) == b"offline"
    print(f"\nindex commit -> MQTT message: median {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} events (poll every 0.5 s)")
    assert max(latencies) < 1.5


@pytest.mark.slow
def test_a_restarted_publisher_tells_the_present_not_the_past(tmp_path: Path) -> None:
    with running_broker(tmp_path / "broker") as broker:
        config = _box_config(tmp_path / "data", broker.port)
        layout, writer = _writer(tmp_path)
        writer.set_state(CameraState("gate", RecorderState.RECORDING, 1_000))
        for number in range(30):
            writer.add_event(EventRecord("gate", EventKind.MOTION, 10_000 * number, 10_000 * number + 3_000))
        writer.add_event(EventRecord("gate", EventKind.MOTION, 400_000, None))
        writer.commit()
        with BrokerLog(broker.port) as seen:
            for _ in range(2):
                with publishing(config):
                    seen.wait_for("online", lambda m: m.topic == AVAILABILITY and m.payload == b"online", 10)
                    time.sleep(1)
            assert [m.payload for m in seen.on(f"{PREFIX}/cameras/gate/motion")] == [b"ON", b"ON"]
            assert not [m for m in seen.snapshot() if m.topic.endswith("/events")]


@pytest.mark.slow
def test_the_broker_takes_the_right_password_and_a_wrong_one_is_logged_clearly_without_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with running_broker(tmp_path / "broker", users={"nvr": PASSWORD, "homeassistant": "ha-pw"}) as broker:
        layout, writer = _writer(tmp_path)
        writer.set_state(CameraState("gate", RecorderState.RECORDING, 1_000))
        writer.commit()
        with BrokerLog(broker.port, "homeassistant", "ha-pw") as seen:
            wrong = _box_config(tmp_path / "data", broker.port, 'username = "nvr"', 'password = "kata sandi salah"')
            with publishing(wrong):
                deadline = time.monotonic() + 10
                while "refused the box" not in caplog.text:
                    assert time.monotonic() < deadline, caplog.text
                    time.sleep(0.05)
            assert seen.on(AVAILABILITY) == [] and seen.on(f"{PREFIX}/cameras/gate/online") == []
            refusal = next(r.getMessage() for r in caplog.records if "refused the box" in r.getMessage())
            assert "user 'nvr'" in refusal and "check mqtt.username and mqtt.password" in refusal, refusal
            assert f"127.0.0.1:{broker.port}" in refusal

            right = _box_config(tmp_path / "data", broker.port, 'username = "nvr"', f'password = "{PASSWORD}"')
            with publishing(right):
                seen.wait_for("online", lambda m: m.topic == AVAILABILITY and m.payload == b"online", 10)
                assert seen.latest(f"{PREFIX}/cameras/gate/online") == b"ON"
    logged = caplog.text + "".join(repr(record.args) for record in caplog.records)
    assert PASSWORD not in logged and "kata sandi salah" not in logged


@pytest.mark.slow
def test_tls_trusts_the_sites_ca_or_exactly_the_pinned_certificate(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    certificate = broker_certificate(tmp_path)
    with running_broker(tmp_path / "broker", certificate=certificate) as broker, BrokerLog(broker.port) as seen:
        layout, writer = _writer(tmp_path)
        writer.set_state(CameraState("gate", RecorderState.RECORDING, 1_000))
        writer.commit()
        for trust in (f'ca_file = "{certificate.ca_file}"', f'broker_fingerprint = "{certificate.fingerprint}"'):
            with publishing(_box_config(tmp_path / "data", broker.tls_port, "tls = true", trust)):
                seen.wait_for("online over TLS", lambda m: m.topic == AVAILABILITY and m.payload == b"online", 10)
            seen.messages.clear()

        for distrust, why in ((f'broker_fingerprint = "{"AB:" * 31}AB"', "not the pinned one"),
                              (None, "certificate verify failed")):   # the system's CAs never signed it
            lines = ("tls = true", distrust) if distrust else ("tls = true",)
            with publishing(_box_config(tmp_path / "data", broker.tls_port, *lines)):
                deadline = time.monotonic() + 10
                while why not in caplog.text:
                    assert time.monotonic() < deadline, caplog.text
                    time.sleep(0.05)
            assert seen.on(AVAILABILITY) == [], "nothing may reach a broker the box does not trust"
        assert "cannot reach the broker" in caplog.text
