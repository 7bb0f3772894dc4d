"""A recording box with [mqtt] (`edgenvr run`, a simulated camera where someone walks past, a real Mosquitto):
what a site with Home Assistant relies on, end to end.

- The camera appears in Home Assistant by itself (discovery configs HA accepts, naming topics the box
  publishes), shows recording, and someone walking past is a motion start, then an end, with the snapshot.
- The broker crashing never touches recording: segments keep coming while it is down, with no gap in the
  index; when it is back (having lost everything retained) the box says online again and re-publishes its
  states and discovery configs.
- The MQTT process killed -9: the broker's last will marks the box offline at once; the supervisor restarts
  it and the box is online again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from edgenvr.simulator import SimulatedCamera, counter_ignore_polygon, make_scene_clip
from tests.conftest import CLIP_CACHE, config_text, start_supervisor
from tests.mosquitto_broker import BrokerLog, Received, running_broker
from tests.test_mqtt_publishing import check_discovery, discovery_of

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("simulator_ready")]

BOX = "rt08-kuningan"
PREFIX = f"edgenvr/{BOX}"
AVAILABILITY = f"{PREFIX}/availability"
CAMERA = f"{PREFIX}/cameras/gate"
OUTAGE_S = 5.0


def _polygon(points: list[tuple[float, float]]) -> str:
    return "[" + ", ".join(f"[{x:.4f}, {y:.4f}]" for x, y in points) + "]"


def _event(message: Received, kind: str, phase: str) -> bool:
    if message.topic != f"{CAMERA}/events":
        return False
    told = json.loads(message.payload)
    return told["kind"] == kind and told["phase"] == phase


def _is(topic: str, payload: bytes) -> object:
    return lambda message: message.topic == topic and message.payload == payload


def _segments(data_dir: Path) -> list[tuple[int, int]]:
    conn = sqlite3.connect(f"file:{data_dir / 'index.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT start_ms, end_ms FROM segments WHERE camera = 'gate' ORDER BY start_ms").fetchall()
    finally:
        conn.close()


def _gaps(data_dir: Path) -> list[tuple[int, int, str]]:
    conn = sqlite3.connect(f"file:{data_dir / 'index.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT start_ms, end_ms, reason FROM gaps WHERE camera = 'gate'").fetchall()
    finally:
        conn.close()


def test_a_box_shows_up_in_home_assistant_and_a_broker_that_dies_never_touches_recording(tmp_path: Path) -> None:
    walk = make_scene_clip(CLIP_CACHE / "scenes" / "walk.h264", "walk")
    with running_broker(tmp_path / "broker") as broker, BrokerLog(broker.port) as seen, \
            SimulatedCamera({"walk": (walk.path, "h264", walk.fps)}, log_path=tmp_path / "camera.log") as camera:
        data_dir, config = tmp_path / "data", tmp_path / "edgenvr.toml"
        url = camera.url("walk")
        config.write_text(
            f'[box]\nid = "{BOX}"\nname = "Pos RT 08"\n'
            + config_text(data_dir, {}, motion=True, segment_seconds=2,
                          extra_storage="event_pre_seconds = 1\nevent_post_seconds = 2")
            + f'[[cameras]]\nid = "gate"\nname = "Gerbang"\nurl = "{url}"\ndetect_url = "{url}"\n'
            + f"[cameras.motion]\nignore = [{_polygon(counter_ignore_polygon(640, 360))}]\n"
            + f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n')
        supervisor = start_supervisor(config, tmp_path / "edgenvr.log")
        try:
            supervisor.wait_for_log("mqtt to 127.0.0.1")
            context = lambda: supervisor.log()[-3000:]   # noqa: E731
            seen.wait_for("the box online", _is(AVAILABILITY, b"online"), 20, context)
            seen.wait_for("the camera recording", _is(f"{CAMERA}/online", b"ON"), 30, context)

            # someone walks past: motion starts, then ends, with its snapshot
            started = seen.wait_for("a motion start", lambda m: _event(m, "motion", "start"), 60, context)
            ended = seen.wait_for("a motion end", lambda m: _event(m, "motion", "end"), 60, context)
            start_told, end_told = json.loads(started.payload), json.loads(ended.payload)
            assert start_told["start_ms"] == end_told["start_ms"] < end_told["end_ms"]
            assert end_told["snapshot"] and start_told["box"] == BOX
            snapshot = seen.wait_for("the snapshot", lambda m: m.topic == f"{CAMERA}/snapshot", 10, context)
            assert snapshot.payload[:3] == b"\xff\xd8\xff", "raw JPEG bytes, as HA's image entity takes them"
            motion = [m.payload for m in seen.on(f"{CAMERA}/motion")]
            assert motion[:3] == [b"OFF", b"ON", b"OFF"], motion
            messages = seen.snapshot()
            configs = discovery_of(messages)
            assert {topic.split("/")[1] for topic in configs} == {"binary_sensor", "image"} and len(configs) == 5
            check_discovery(configs, {m.topic for m in messages}, AVAILABILITY)
            to_mqtt_ms = started.at * 1000 - start_told["start_ms"]

            # the broker crashes: recording goes on
            segments_before = len(_segments(data_dir))
            broker.kill()
            killed_ms = int(time.time() * 1000)
            time.sleep(OUTAGE_S)
            supervisor.wait_for_log("mqtt: lost the broker")
            broker.start()   # back, with nothing retained
            back = time.time()
            with BrokerLog(broker.port) as after:
                # a client that connects now sees what the box published again (retained)
                online = after.wait_for("the box online again", _is(AVAILABILITY, b"online"), 30, context)
                republished_s = online.at - back
                states = {m.topic: m for m in after.snapshot()}
                for topic in (f"{CAMERA}/online", f"{CAMERA}/motion", f"{CAMERA}/tamper", f"{CAMERA}/state",
                              f"{CAMERA}/snapshot"):
                    assert topic in states, (topic, sorted(states))
                assert states[f"{CAMERA}/online"].payload == b"ON"
                assert len(discovery_of(after.snapshot())) == 5
                check_discovery(discovery_of(after.snapshot()), set(states), AVAILABILITY)
                recorded_while_down = [s for s in _segments(data_dir) if killed_ms <= s[0] < back * 1000]

                # the MQTT process killed -9: the last will says offline; restarted, the box is back
                pid = int(re.findall(r"mqtt to 127\.0\.0\.1:\d+ started \(pid (\d+)\)", supervisor.log())[-1])
                killing = time.time()   # only an "offline" that came after this is the last will
                os.kill(pid, signal.SIGKILL)
                killed = time.time()
                will = after.wait_for("the last will", lambda m: m.topic == AVAILABILITY and m.payload == b"offline"
                                      and m.at > killing, 10, context)
                will_s = will.at - killed
                supervisor.wait_for_log("mqtt exited with code")
                after.wait_for("online after the restart", lambda m: m.topic == AVAILABILITY
                               and m.payload == b"online" and m.at > will.at, 30, context)
        finally:
            stopping = time.time()   # the broker passes the box's last word on asynchronously: wait for it
            assert supervisor.stop() == 0
        seen.wait_for("offline after the clean stop", lambda m: m.topic == AVAILABILITY and m.payload == b"offline"
                      and m.at > stopping, 10, lambda: (tmp_path / "edgenvr.log").read_text()[-3000:])
        assert seen.latest(AVAILABILITY) == b"offline", "a clean stop says offline itself"

    segments = _segments(data_dir)
    assert len(segments) > segments_before
    # 2 s segments: while the broker was down the camera kept recording, segment after segment
    assert len(recorded_while_down) >= int(OUTAGE_S / 2) - 1, recorded_while_down
    holes = [(a[1], b[0]) for a, b in zip(segments, segments[1:]) if b[0] - a[1] > 500]
    assert holes == [] and _gaps(data_dir) == [], (holes, _gaps(data_dir))
    log = (tmp_path / "edgenvr.log").read_text()
    assert "Traceback" not in log
    print(f"\nmotion start (first moving frame) -> MQTT: {to_mqtt_ms:.0f} ms; broker back -> availability and "
          f"states re-published: {republished_s:.1f} s; kill -9 -> last will: {will_s * 1000:.0f} ms; "
          f"{len(recorded_while_down)} segments recorded during the {OUTAGE_S:.0f} s outage, "
          f"{len(segments)} in all, no gap")
