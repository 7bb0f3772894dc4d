"""The supervisor's bus against a hostile or careless local process: only the service user can reach it (a
Unix socket in a directory of mode 0700), and whatever arrives is checked against its record type before
it is used. A bad message is logged with the reason and dropped; the supervisor keeps recording, nothing
outside the recordings is deleted, and the next start-up works.

The fast tests check the validator (core.record_validation) and the bus's own socket directory; the slow
ones run a real supervisor recording a real RTSP test camera, fed forged messages by a foreign process, and
try to connect as another user (`runuser -u nobody`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest
import zmq
from conftest import RunningSupervisor, config_text, start_supervisor

from edgenvr.core import bus as bus_module
from edgenvr.core.bus import BusReceiver, decode
from edgenvr.core.clock import SYSTEM_CLOCK, SimulatedClock
from edgenvr.core.record_validation import InvalidMessage, MessageRules
from edgenvr.core.records import (
    CameraState,
    DetectionState,
    EventKind,
    EventRecord,
    MotionStatus,
    RecorderState,
    ReferenceRecord,
    SegmentRecord,
    TamperKind,
    to_message,
)
from edgenvr.core.units import LATEST_TIME_MS
from edgenvr.index.queries import open_readonly
from edgenvr.index.reconcile import check_consistency
from edgenvr.index.retention_classes import LONGEST_SEGMENT_MS
from edgenvr.simulator import SimulatedCamera
from edgenvr.storage.layout import StorageLayout

T = 1_764_547_200_000
DAY = 86_400_000
LAYOUT = StorageLayout(Path("/var/lib/edgenvr"))
RULES = MessageRules(frozenset({"gate", "yard-2"}), LAYOUT, LONGEST_SEGMENT_MS)


def _segment(camera: str = "gate", start_ms: int = T) -> SegmentRecord:
    return SegmentRecord(camera, start_ms, start_ms + 5000, LAYOUT.relative(LAYOUT.segment_path(camera, start_ms)),
                         123_456, "ab" * 32, "h264", 640, 360, 125, start_ms + 5100)


def _message(record: object, **changes: object) -> dict:
    return {**to_message(record), **changes}  # type: ignore[arg-type]


def _refused(message: object, reason: str) -> None:
    """`message` goes through JSON, as on the bus, and is refused for `reason` (a regex)."""
    with pytest.raises(InvalidMessage, match=reason):
        decode(json.dumps(message).encode(), RULES)


# -- the validator --------------------------------------------------------------------------------

def test_every_record_a_worker_sends_passes_unchanged() -> None:
    snapshot = LAYOUT.relative(LAYOUT.snapshot_path("gate", T, EventKind.TAMPER, TamperKind.MOVED))
    records = [
        _segment(), _segment("yard-2", 95_000),   # a box without a real-time clock starts in 1970
        CameraState("gate", RecorderState.RECONNECTING, T, "connection refused", {"no_dts": 3, "before_keyframe": 0}),
        EventRecord("gate", EventKind.MOTION, T, None, zones=("door",), peak_score=0.25),
        EventRecord("gate", EventKind.MOTION, T, T + 4000, snapshot=LAYOUT.relative(
            LAYOUT.snapshot_path("gate", T, EventKind.MOTION))),
        EventRecord("gate", EventKind.TAMPER, T, None, TamperKind.MOVED, peak_score=0.3, snapshot=snapshot,
                    detail="view changed"),
        ReferenceRecord("gate", T, LAYOUT.relative(LAYOUT.reference_path("gate", T)), "commissioning"),
        MotionStatus("yard-2", T, DetectionState.ANALYSING, 1200, 3),
    ]
    for record in records:
        assert decode(json.dumps(to_message(record)).encode(), RULES) == record


@pytest.mark.parametrize("field, value, reason", [
    ("start_ms", str(T), "start_ms must be an int, not str"),
    ("start_ms", True, "start_ms must be an int, not bool"),
    ("start_ms", float(T), "start_ms must be an int, not float"),
    ("bytes", None, "bytes must be an int, not null"),
    ("codec", 264, "codec must be a string, not int"),
    ("origin", "hacker", "origin must be one of recorder, adopted, recovered"),
    ("sha256", "AB" * 32, "sha256 must be 64 lowercase hex digits"),
    ("sha256", "zz" * 32, "sha256 must be 64 lowercase hex digits"),
])
def test_a_field_of_the_wrong_type_is_refused_with_its_name(field: str, value: object, reason: str) -> None:
    _refused(_message(_segment(), **{field: value}), reason)


@pytest.mark.parametrize("changes, reason", [
    ({"start_ms": -1, "end_ms": 4000}, "start_ms -1 is out of range"),
    ({"start_ms": LATEST_TIME_MS + 1}, "start_ms .* is out of range"),
    ({"wall_end_ms": 1 << 64}, "wall_end_ms .* is out of range"),
    ({"bytes": -1}, "bytes -1 is out of range"),
    ({"packets": 1 << 63}, "packets .* is out of range"),
    ({"end_ms": T - 1}, "end_ms .* is before start_ms"),
    ({"end_ms": T + LONGEST_SEGMENT_MS + 1}, "no segment is longer than"),
])
def test_a_value_out_of_range_is_refused(changes: dict, reason: str) -> None:
    _refused(_message(_segment(), **changes), reason)


def test_other_records_are_checked_the_same_way() -> None:
    state = CameraState("gate", RecorderState.RECORDING, T)
    _refused(_message(state, state="burning"), "state must be one of unknown, connecting")
    _refused(_message(state, dropped={"no_dts": -5}), "dropped -5 is out of range")
    _refused(_message(state, dropped=["no_dts"]), "dropped must be an object")
    _refused(_message(state, reason=["x"]), "reason must be a string, not list")
    _refused(_message(state, reason="x" * 5000), "reason is longer than 4096")
    event = EventRecord("gate", EventKind.MOTION, T, T + 1000)
    _refused(_message(event, end_ms=T - 1), "end_ms .* is before start_ms")
    _refused(_message(event, peak_score="high"), "peak_score must be a number, not str")
    _refused(_message(event, zones="door"), "zones must be a list")
    _refused(_message(event, kind=EventKind.OFFLINE), "kind offline is made by the supervisor")
    _refused(_message(event, kind=EventKind.ALERT, subkind="disk_full"), "kind alert is made by the supervisor")
    _refused(_message(event, kind=EventKind.TAMPER, subkind="melted"), "subkind 'melted' is not one of a tamper")
    _refused(_message(event, subkind="covered"), "subkind 'covered' is not one of a motion")
    status = MotionStatus("gate", T, DetectionState.ANALYSING)
    _refused(_message(status, analysed=-1), "analysed -1 is out of range")
    _refused(_message(status, state="recording"), "state must be one of connecting, analysing")
    with pytest.raises(InvalidMessage, match="event: peak_score must be a finite number"):
        decode(b'{"record": "event", "camera": "gate", "kind": "motion", "start_ms": 1, "peak_score": NaN}', RULES)


def test_a_camera_not_in_the_config_is_refused() -> None:
    for camera in ("../../x", "cellar", "", "GATE", 7):
        _refused(_message(_segment(), camera=camera), "camera .* is not a camera of the config|camera must be")
    _refused(_message(MotionStatus("cellar", T, DetectionState.ANALYSING)), "motion_status: camera 'cellar' is not")


def test_a_segment_from_another_boot_or_ahead_of_this_boots_clock_is_refused() -> None:
    """Recorders run in the supervisor's boot: a forged boot id or boot time would push the recording
    timeline ahead and make older video look old enough to delete."""
    rules = MessageRules(RULES.cameras, LAYOUT, LONGEST_SEGMENT_MS, boot=lambda: ("00112233aabbccdd", 600_000))
    segment = _segment()
    fine = _message(segment, boot_id="00112233aabbccdd", boot_ms=595_000, clock_synchronised=True)
    assert decode(json.dumps(fine).encode(), rules).boot_ms == 595_000
    for changes, reason in (({"boot_id": "ffffffffffffffff"}, "not this boot's"),
                            ({"boot_ms": 600_000 + 60_000}, "ahead of this boot's clock")):
        with pytest.raises(InvalidMessage, match=reason):
            decode(json.dumps({**fine, **changes}).encode(), rules)


def test_a_path_that_is_not_the_layouts_for_that_camera_and_time_is_refused() -> None:
    other_time = LAYOUT.relative(LAYOUT.segment_path("gate", T + 1))
    for path in ("index.sqlite3", other_time, LAYOUT.relative(LAYOUT.segment_path("yard-2", T)),
                 "segments/gate/2025-12-01/00/../../../../index.sqlite3", str(LAYOUT.segment_path("gate", T))):
        _refused(_message(_segment(), path=path), "segment: path .* is not the storage layout's")
    event = EventRecord("gate", EventKind.MOTION, T, T + 1000)
    for snapshot in (".supervisor.lock", "/etc/passwd", LAYOUT.relative(LAYOUT.segment_path("gate", T)),
                     LAYOUT.relative(LAYOUT.snapshot_path("gate", T, EventKind.TAMPER, TamperKind.COVERED))):
        _refused(_message(event, snapshot=snapshot), "event: snapshot .* is not the storage layout's")
    reference = ReferenceRecord("gate", T, LAYOUT.relative(LAYOUT.reference_path("gate", T)), "commissioning")
    for image in ("/tmp/x", "index.sqlite3", LAYOUT.relative(LAYOUT.reference_path("gate", T - 1))):
        _refused(_message(reference, image=image), "reference: image .* is not the storage layout's")


def test_what_is_not_a_record_is_refused() -> None:
    for payload, reason in [(b'{"record": "segment", ', "not JSON"), (b"\xff\xfe", "not JSON"),
                            (b"[" * 100_000, "not JSON"), (b"[1, 2]", "not a JSON object but list"),
                            (b'{"record": "shell", "cmd": "rm -rf /"}', "unknown record type 'shell'"),
                            (b'{"record": ["segment"]}', "unknown record type"), (b'{"camera": "gate"}', "unknown record type None")]:
        with pytest.raises(InvalidMessage, match=reason):
            decode(payload, RULES)
    message = _message(_segment())
    del message["sha256"]
    _refused(message, "segment: sha256 is missing")
    _refused(_message(_segment(), command="rm"), r"segment: unknown fields \['command'\]")


# -- the bus's socket ------------------------------------------------------------------------------

def test_the_bus_listens_in_a_private_directory_removed_at_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(runtime))
    receiver = BusReceiver(RULES)
    try:
        assert receiver.endpoint == f"ipc://{receiver.directory}/bus" and receiver.directory.parent == runtime
        info = receiver.directory.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()
    finally:
        receiver.close()
    assert list(runtime.iterdir()) == []
    # a runtime directory too deep for a Unix socket path: the system temp dir instead
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(deep))
    receiver = BusReceiver(RULES)
    try:
        assert receiver.directory.parent == Path(tempfile.gettempdir())
        assert len(str(receiver.directory / "bus").encode()) <= 107
    finally:
        receiver.close()
    assert not receiver.directory.exists()


@pytest.mark.usefixtures("current_event_loop")
def test_a_flood_of_bad_messages_is_dropped_and_logged_a_bounded_number_of_times(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    clock = SimulatedClock()
    receiver = BusReceiver(RULES, clock=clock)
    context = zmq.Context()
    received: list = []
    deadline = time.monotonic() + 20

    def receive_until(done: Callable[[], bool]) -> None:
        while not done() and time.monotonic() < deadline:
            received.extend(receiver.receive_waiting())
            time.sleep(0.05)

    try:
        push = context.socket(zmq.PUSH)
        push.connect(receiver.endpoint)
        with caplog.at_level(logging.ERROR, logger="edgenvr.core.bus"):
            for n in range(100):
                push.send(b"not json %d" % n)
            receive_until(lambda: receiver.dropped >= 100)
            clock.advance(61)   # a minute later, the next drop is logged again, after the count of the last
            push.send(b"not json either")
            receive_until(lambda: receiver.dropped >= 101)
            # too big: its sender is cut off before anything reads it; other senders go on
            big = context.socket(zmq.PUSH)
            big.connect(receiver.endpoint)
            big.send(b"x" * (bus_module.MAX_MESSAGE_BYTES + 1))
            push.send(json.dumps(to_message(_segment("yard-2"))).encode())
            receive_until(lambda: bool(received))
    finally:
        context.destroy(linger=0)
        receiver.close()
    assert receiver.dropped == 101
    assert [r.camera for r in received] == ["yard-2"]
    lines = [r.getMessage() for r in caplog.records]
    assert len([line for line in lines if line.startswith("bus message dropped: not JSON")]) == 21
    assert lines.index("80 more bus messages dropped within a minute (not logged one by one)") == 20


# -- a real supervisor against a foreign process --------------------------------------------------------

SENDER = """
import json, sys, zmq
context = zmq.Context()
push = context.socket(zmq.PUSH)
push.setsockopt(zmq.LINGER, 5000)
push.connect(sys.argv[1])
for payload in json.load(sys.stdin):
    push.send(bytes.fromhex(payload))
push.close()
context.term()
"""


def _bus_endpoint(supervisor: RunningSupervisor) -> str:
    supervisor.wait_for_log("bus listening on ")
    match = re.search(r"bus listening on (\S+)", supervisor.log())
    assert match is not None
    return match.group(1)


def _indexed(layout: StorageLayout) -> int:
    with open_readonly(layout) as conn:
        return conn.execute("SELECT COUNT(*) FROM segments WHERE camera = 'gate'").fetchone()[0]


def _wait_for_more_segments(layout: StorageLayout, than: int, supervisor: RunningSupervisor, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if layout.index_path.exists() and (count := _indexed(layout)) > than:
            return count
        assert supervisor.process.poll() is None, supervisor.log()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no more than {than} segments indexed in {timeout} s:\n{supervisor.log()[-3000:]}")


def test_forged_and_malformed_messages_are_dropped_and_recording_goes_on(
        tmp_path: Path, h264_clip: Path, simulator_ready: None, supervisors: list) -> None:
    victim = tmp_path / "someone-elses-file.txt"
    victim.write_text("not edgenvr's")
    layout = StorageLayout(tmp_path / "data")
    with SimulatedCamera({"a": (h264_clip, "h264")}, log_path=tmp_path / "cam.log") as camera:
        config = tmp_path / "edgenvr.toml"
        config.write_text(config_text(layout.data_dir, {"gate": camera.url("a")}, segment_seconds=1, quota="10GB",
                                      extra_storage="retention_max_days = 1\nevent_days = 1"))
        supervisor = start_supervisor(config, tmp_path / "edgenvr.log")
        supervisors.append(supervisor)
        endpoint = _bus_endpoint(supervisor)
        before = _wait_for_more_segments(layout, 0, supervisor)
        protected = [victim, layout.index_path, layout.supervisor_lock, layout.recorders_lock]
        assert all(p.exists() for p in protected)

        now = SYSTEM_CLOCK.now_ms()
        old = now - 10 * DAY   # past retention_max_days and event_days: would be deleted at the next sweep
        segment = to_message(SegmentRecord("gate", now, now + 1000, layout.relative(layout.segment_path("gate", now)),
                                           10, "00" * 32, "h264", 320, 240, 25, now + 1000))
        with open_readonly(layout) as conn:   # a real recording, announced again with a size it does not have
            first = conn.execute("SELECT start_ms, end_ms FROM segments ORDER BY start_ms LIMIT 1").fetchone()
        first_file = layout.segment_path("gate", first["start_ms"])
        oversized = to_message(SegmentRecord("gate", first["start_ms"], first["end_ms"], layout.relative(first_file),
                                             1 << 62, "00" * 32, "h264", 320, 240, 25, first["end_ms"]))
        forged = [
            json.dumps(oversized).encode(),   # believed, retention would count 4 EB and delete every recording
            json.dumps({**segment, "start_ms": str(now)}).encode(),
            json.dumps({**segment, "camera": "../../x"}).encode(),
            # reference views whose images are not reference views: two superseded by a third, all expired
            json.dumps(to_message(ReferenceRecord("gate", old, str(victim), "forged"))).encode(),
            json.dumps(to_message(ReferenceRecord("gate", old + 1, "index.sqlite3", "forged"))).encode(),
            json.dumps(to_message(ReferenceRecord("gate", old + 2, "references/gate/current.png", "forged"))).encode(),
            json.dumps(to_message(EventRecord("gate", EventKind.MOTION, old, old + 1000, snapshot=".supervisor.lock"))).encode(),
            b'{"record": "segment", "camera": ',
            b'{"record": "shell", "cmd": "rm -rf /"}',
        ]
        subprocess.run([sys.executable, "-c", SENDER, endpoint], input=json.dumps([p.hex() for p in forged]),
                       text=True, check=True, timeout=30)
        # recording goes on: segments keep being indexed, sweeps (every second) run over the forged records
        count = before
        for _ in range(3):
            count = _wait_for_more_segments(layout, count, supervisor)
        assert supervisor.process.poll() is None
        assert all(p.exists() for p in protected), "nothing outside the recordings is deleted"
        assert first_file.exists(), "the oldest recording is still there (quota 10GB, retention_max_days 1)"
        log = supervisor.log()
        assert f"the message says {1 << 62}" in log
        for reason in ("segment: start_ms must be an int, not str",
                       "segment: camera '../../x' is not a camera of the config",
                       "reference: image '/", "reference: image 'index.sqlite3' is not the storage layout's",
                       "reference: image 'references/gate/current.png' is not the storage layout's",
                       "event: snapshot '.supervisor.lock' is not the storage layout's",
                       "not JSON", "unknown record type 'shell'"):
            assert f"bus message dropped: {reason}" in log, reason
        with open_readonly(layout) as conn:
            assert conn.execute("SELECT COUNT(*) FROM reference_views").fetchone()[0] == 0
            assert conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'motion'").fetchone()[0] == 0
            assert conn.execute("SELECT COUNT(*) FROM segments WHERE camera != 'gate'").fetchone()[0] == 0
        bus_directory = Path(endpoint.removeprefix("ipc://")).parent
        assert supervisor.stop() == 0
        assert not bus_directory.exists(), "the bus socket and its directory go at stop"

        # the next start-up reconciles and records as usual
        again = start_supervisor(config, tmp_path / "again.log")
        supervisors.append(again)
        again.wait_for_log("start-up reconcile took")
        _wait_for_more_segments(layout, _indexed(layout), again)
        assert again.stop() == 0
    assert all(p.exists() for p in protected)
    with open_readonly(layout) as conn:
        report = check_consistency(conn, layout)
    assert report.consistent, report.summary()
    assert "Traceback" not in supervisor.log() + again.log()


CONNECT = """
import socket, sys
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    client.connect(sys.argv[1])
except PermissionError as exc:
    print(exc)
    sys.exit(13)
print("connected")
"""


def test_another_user_cannot_reach_the_bus(tmp_path: Path, supervisors: list, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.fail("this test runs a connect attempt as `nobody` with runuser, as root")
    # systemd's default RuntimeDirectoryMode is 0755: only the bus's own directory keeps others out
    runtime = Path(tempfile.mkdtemp(prefix="edgenvr-run-"))
    runtime.chmod(0o755)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(runtime))
    try:
        config = tmp_path / "edgenvr.toml"
        config.write_text(config_text(tmp_path / "data", {"gate": "rtsp://127.0.0.1:9/nothing-here"}))
        supervisor = start_supervisor(config, tmp_path / "edgenvr.log")
        supervisors.append(supervisor)
        socket_path = Path(_bus_endpoint(supervisor).removeprefix("ipc://"))
        directory = socket_path.parent
        assert directory.parent == runtime
        info = directory.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()

        def connect_as_nobody() -> subprocess.CompletedProcess[str]:
            return subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", CONNECT, str(socket_path)],
                                  capture_output=True, text=True, timeout=30, check=False)

        refused = connect_as_nobody()
        assert refused.returncode == 13 and "Permission denied" in refused.stdout, refused
        # the control: with the directory and the socket opened up, the same attempt gets through
        socket_mode = stat.S_IMODE(socket_path.stat().st_mode)
        directory.chmod(0o755)
        socket_path.chmod(0o777)
        try:
            assert connect_as_nobody().stdout.strip() == "connected"
        finally:
            directory.chmod(0o700)
            socket_path.chmod(socket_mode)
        assert supervisor.stop() == 0
        assert not directory.exists()
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
