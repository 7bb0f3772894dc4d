"""Motion and tamper detection through the whole pipeline: labelled synthetic scenes served by the real RTSP
test camera, recorded and analysed by a real `edgenvr run`, events read back with `edgenvr events --json`.

Ground truth is in seconds of the clip; the clip's place on the wall clock is read from the recording itself
(every picture carries its frame number as a barcode), so an event is compared with what a user would see
when playing back the recording at the event's time.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import av
import numpy as np
import pytest

from edgenvr.config.records import Polygon
from edgenvr.simulator import (
    LEFT_THIRD,
    SceneTruth,
    SimulatedCamera,
    counter_ignore_polygon,
    decode_frame_counter,
    make_scene_clip,
)
from edgenvr.storage.layout import StorageLayout
from tests.conftest import CLIP_CACHE, config_text, edgenvr, start_supervisor

pytestmark = pytest.mark.usefixtures("simulator_ready")

TOLERANCE_MS = 1_000    # motion events start and end within 1 s of the truth
TAMPER_WITHIN_MS = 30_000


def scene(name: str) -> SceneTruth:
    return make_scene_clip(CLIP_CACHE / "scenes" / f"{name}.h264", name)


def _polygon(polygon: Polygon) -> str:
    return "[" + ", ".join(f"[{x:.4f}, {y:.4f}]" for x, y in polygon) + "]"


def camera_block(camera_id: str, url: str, ignore: list[Polygon], zones: dict[str, Polygon] | None = None,
                 key_frames_only: bool = False) -> str:
    # detect_url = the same stream: a labelled scene is already sub-stream sized, and it makes every frame
    # decoded (key-frame-only analysis, for cameras without a sub-stream, cannot time events to 1 s).
    lines = ["[[cameras]]", f'id = "{camera_id}"', f'url = "{url}"']
    if not key_frames_only:
        lines.append(f'detect_url = "{url}"')
    lines += ["[cameras.motion]", f"ignore = [{', '.join(_polygon(p) for p in ignore)}]"]
    for name, polygon in (zones or {}).items():
        lines += ["[[cameras.motion.zones]]", f'name = "{name}"', f"polygon = {_polygon(polygon)}"]
    return "\n".join(lines) + "\n"


def status(config: Path) -> str:
    result = edgenvr("status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return result.stdout


def camera_ids(config: Path) -> list[str]:
    return [line.split('"')[1] for line in config.read_text().splitlines() if line.startswith("id = ")]


def events_of(config: Path, *extra: str) -> list[dict]:
    result = edgenvr("events", "--config", str(config), "--json", *extra)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def clip_start_ms(layout: StorageLayout, camera: str, fps: int) -> int:
    """Wall time of the clip's frame 0 (first loop), from the recorded pictures' barcodes."""
    segment_dir = layout.camera_dir(camera)
    first = min(segment_dir.rglob("*.mp4"), key=lambda p: int(p.name.split(".")[0]))
    start_ms = int(first.name.split(".")[0])
    estimates = []
    with av.open(str(first)) as container:
        stream = container.streams.video[0]
        first_pts = None
        for frame in container.decode(stream):
            first_pts = frame.pts if first_pts is None else first_pts
            plane = frame.planes[0]
            luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:frame.height, :frame.width]
            number = decode_frame_counter(luma)
            if number is not None:
                at_ms = start_ms + float((frame.pts - first_pts) * stream.time_base) * 1000
                estimates.append(at_ms - number * 1000 / fps)
            if len(estimates) >= 20:
                break
    assert estimates, f"no frame counter readable in {first}"
    return int(np.median(estimates))


def truth_intervals(truth: SceneTruth, clip0_ms: int, until_ms: int, region: str | None = None) -> list[tuple[int, int]]:
    """Motion truth on the wall clock for every loop of the clip that started before `until_ms`."""
    found = []
    loop = 0
    while clip0_ms + loop * truth.seconds * 1000 < until_ms:
        base = clip0_ms + loop * truth.seconds * 1000
        found += [(int(base + m.start_s * 1000), int(base + m.end_s * 1000)) for m in truth.motion
                  if region is None or m.region == region]
        loop += 1
    return found


def match_events(events: list[dict], truth: list[tuple[int, int]], window: tuple[int, int]) -> tuple[int, int, int, list]:
    """(true positives, false positives, false negatives, timing errors) over truth intervals that lie wholly
    inside the observed window; events must start and end within TOLERANCE_MS of their interval."""
    start, end = window
    inside = [t for t in truth if t[0] >= start + 2_000 and t[1] <= end - 4_000]
    observed = [e for e in events if e["end_ms"] is not None and e["start_ms"] >= start + 2_000]
    matched, errors = set(), []
    for t_start, t_end in inside:
        for i, event in enumerate(observed):
            if i not in matched and event["start_ms"] < t_end and event["end_ms"] > t_start:
                matched.add(i)
                errors.append((event["start_ms"] - t_start, event["end_ms"] - t_end))
                break
    hits = [e for e in errors if abs(e[0]) <= TOLERANCE_MS and abs(e[1]) <= TOLERANCE_MS]
    # an event overlapping a truth interval outside the window is neither right nor wrong
    stray = [e for i, e in enumerate(observed) if i not in matched
             and not any(e["start_ms"] < t1 and e["end_ms"] > t0 for t0, t1 in truth)]
    return len(hits), len(stray) + len(errors) - len(hits), len(inside) - len(hits), errors


def test_motion_and_tamper_events_match_the_truth_of_labelled_scenes(tmp_path: Path) -> None:
    names = ["walk", "noise", "brightness_jump", "light_ramp", "zones", "covered", "defocused", "moved", "busy_street"]
    truths = {name: scene(name) for name in names}
    counter = counter_ignore_polygon(640, 360)
    with SimulatedCamera({name: (truth.path, "h264", truth.fps) for name, truth in truths.items()},
                         log_path=tmp_path / "camera.log") as camera:
        data_dir = tmp_path / "data"
        config = tmp_path / "edgenvr.toml"
        blocks = [camera_block(name.replace("_", "-"), camera.url(name), [counter]) for name in names]
        # the same zones scene twice more: once watching only a zone, once with the other third ignored
        blocks.append(camera_block("zoned", camera.url("zones"), [counter], zones={"kiri": LEFT_THIRD}))
        blocks.append(camera_block("masked", camera.url("zones"), [counter, LEFT_THIRD]))
        # a camera without a sub-stream: only the main stream's key frames (every 2 s here) are analysed
        blocks.append(camera_block("key-frames", camera.url("walk"), [counter], key_frames_only=True))
        config.write_text(config_text(data_dir, {}, motion=True) + "".join(blocks))
        supervisor = start_supervisor(config, tmp_path / "edgenvr.log")
        try:
            supervisor.wait_for_log("recording 12 cameras")
            started = time.monotonic()
            # every camera takes its own reference view within 30 s (busy or not), not approved by anyone
            while time.monotonic() - started < 40 and status(config).count("taken automatically") < 12:
                time.sleep(1)
            assert status(config).count("taken automatically") == 12, status(config)
            # the moved camera: wait for its tamper event, then re-approve the new view; the flag must clear
            moved: list[dict] = []
            while not moved and time.monotonic() - started < 90:
                time.sleep(1)
                moved = [e for e in events_of(config, "--camera", "moved", "--kind", "tamper")]
            assert moved, supervisor.log()[-3000:]
            approve = edgenvr("reference", "approve", "--config", str(config), "--camera", "moved", "--by", "test")
            assert approve.returncode == 0, approve.stderr
            approved_at = time.monotonic()
            while time.monotonic() - approved_at < 20:
                time.sleep(1)
                moved = events_of(config, "--camera", "moved", "--kind", "tamper")
                if moved and moved[0]["end_ms"] is not None:
                    break
            audit = [json.loads(line) for line in edgenvr("audit", "--config", str(config), "--json").stdout.splitlines()]
            assert [(r["action"], r["actor"], r["camera"]) for r in audit if r["action"] == "reference_approve"] == \
                [("reference_approve", "test", "moved")], audit
            # approved: its status no longer asks for it; the others still do
            unapproved = {json.loads(line)["camera"] for line in edgenvr("status", "--config", str(config), "--json")
                          .stdout.splitlines()
                          if "camera" in json.loads(line) and json.loads(line)["reference"]["approved_by"] is None}
            assert unapproved == {camera for camera in camera_ids(config)} - {"moved"}, unapproved
            time.sleep(max(0.0, started + 80 - time.monotonic()))
        finally:
            assert supervisor.stop() == 0
    layout = StorageLayout(data_dir)
    log = supervisor.log()
    assert "Traceback" not in log, log[-3000:]
    events = events_of(config)
    by_camera: dict[str, list[dict]] = {}
    for event in events:
        by_camera.setdefault(event["camera"], []).append(event)
    first_segment_ms = min(int(p.name.split(".")[0]) for p in layout.segments_dir.rglob("*.mp4"))
    window = (first_segment_ms, max(e["end_ms"] or 0 for e in events))

    # Moved: one tamper event of the right kind within 30 s, closed by re-approving the view.
    moved_truth = truths["moved"].tamper[0]
    clip0 = clip_start_ms(layout, "moved", 10)
    moved_events = [e for e in by_camera["moved"] if e["kind"] == "tamper"]
    assert [e["subkind"] for e in moved_events] == ["moved"], moved_events
    # the event starts when the condition began (the clip's pan takes 1 s), and is raised within 30 s
    assert -TOLERANCE_MS <= moved_events[0]["start_ms"] - (clip0 + moved_truth.start_s * 1000) <= TAMPER_WITHIN_MS
    assert moved_events[0]["end_ms"] is not None, "re-approving the view must clear the moved flag"
    for name in ("covered", "defocused"):
        truth = truths[name].tamper[0]
        clip0 = clip_start_ms(layout, name, 10)
        tamper = [e for e in by_camera.get(name, []) if e["kind"] == "tamper"]
        assert [e["subkind"] for e in tamper] == [name], (name, tamper)
        delay = tamper[0]["start_ms"] - (clip0 + truth.start_s * 1000)
        assert -TOLERANCE_MS <= delay <= TAMPER_WITHIN_MS, (name, delay)
        assert tamper[0]["snapshot"] and Path(tamper[0]["snapshot"]).stat().st_size > 1000
    for name in ("walk", "noise", "brightness-jump", "light-ramp", "zones", "zoned", "masked", "busy-street"):
        assert not [e for e in by_camera.get(name, []) if e["kind"] == "tamper"], (name, by_camera.get(name))

    # Motion: no events where nothing moves; timing within 1 s where something does; zones and masks obeyed.
    for name in ("noise", "brightness-jump", "light-ramp"):
        assert not [e for e in by_camera.get(name, []) if e["kind"] == "motion"], (name, by_camera.get(name))
    totals = [0, 0, 0]
    cases = {"walk": ("walk", None), "zones": ("zones", None), "zoned": ("zones", "left"), "masked": ("zones", "right")}
    for camera_id, (scene_name, region) in cases.items():
        clip0 = clip_start_ms(layout, camera_id, 10)
        truth = truth_intervals(truths[scene_name], clip0, window[1], region)
        motion = [e for e in by_camera.get(camera_id, []) if e["kind"] == "motion"]
        tp, fp, fn, errors = match_events(motion, truth, window)
        print(f"{camera_id}: {tp} right, {fp} wrong, {fn} missed; (start, end) errors ms {errors}")
        assert (fp, fn) == (0, 0) and tp >= 1, (camera_id, motion, truth, errors)
        totals = [totals[0] + tp, totals[1] + fp, totals[2] + fn]
        if camera_id == "zoned":
            assert all(e["zones"] == ["kiri"] for e in motion), motion
        snapshots = [e["snapshot"] for e in motion if e["end_ms"] is not None]
        assert snapshots and all(s and Path(s).stat().st_size > 1000 for s in snapshots)
    # key frames only: the walk is still found, with the coarser timing of one picture every 2 s
    clip0 = clip_start_ms(layout, "key-frames", 10)
    truth = truth_intervals(truths["walk"], clip0, window[1])
    motion = [e for e in by_camera.get("key-frames", []) if e["kind"] == "motion" and e["end_ms"] is not None]
    assert motion and all(any(e["start_ms"] < t1 + 2_500 and e["end_ms"] > t0 - 2_500 for t0, t1 in truth)
                          for e in motion), (motion, truth)
    tp, fp, fn = totals
    print(f"end to end: precision {tp / max(1, tp + fp):.2f}, recall {tp / max(1, tp + fn):.2f} ({tp} events)")


def test_a_crashed_or_hung_motion_worker_is_restarted_and_recording_never_stops(tmp_path: Path) -> None:
    walk = scene("walk")
    with SimulatedCamera({"walk": (walk.path, "h264", walk.fps)}, log_path=tmp_path / "camera.log") as camera:
        data_dir = tmp_path / "data"
        config = tmp_path / "edgenvr.toml"
        config.write_text(config_text(data_dir, {}, motion=True, segment_seconds=2)
                          + camera_block("gate", camera.url("walk"), [counter_ignore_polygon(640, 360)]))
        supervisor = start_supervisor(config, tmp_path / "edgenvr.log")
        try:
            supervisor.wait_for_log("motion-1 started (pid")

            def worker_pid(nth: int) -> int:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    lines = [line for line in supervisor.log().splitlines() if "motion-1 started (pid" in line]
                    if len(lines) >= nth:
                        return int(lines[nth - 1].split("(pid ")[1].split(")")[0])
                    time.sleep(0.2)
                raise AssertionError(f"motion worker start #{nth} not logged:\n{supervisor.log()[-3000:]}")

            time.sleep(4)
            os.kill(worker_pid(1), signal.SIGKILL)      # crash
            second = worker_pid(2)
            time.sleep(4)
            os.kill(second, signal.SIGSTOP)             # hang
            hung_at = time.monotonic()
            supervisor.wait_for_log("motion-1 sent no heartbeat", timeout=45)
            assert time.monotonic() - hung_at < 40
            worker_pid(3)
            time.sleep(6)
        finally:
            assert supervisor.stop() == 0
    status = json.loads(edgenvr("status", "--config", str(config), "--json").stdout.splitlines()[0])
    assert status["motion"]["state"] == "analysing" and status["motion"]["dropped"] == 0, status
    gaps = edgenvr("gaps", "--config", str(config), "--json")
    assert gaps.returncode == 0 and gaps.stdout.strip() == "", gaps.stdout
    segments = [json.loads(line) for line in edgenvr("segments", "--config", str(config), "--json").stdout.splitlines()]
    assert len(segments) >= 15
    for before, after in zip(segments, segments[1:]):
        assert abs(after["start_ms"] - before["end_ms"]) <= 200, (before, after)


def test_events_left_open_by_a_killed_run_are_closed_at_start_up_except_tamper_flags(tmp_path: Path) -> None:
    """A motion event whose close was lost with a killed run must not keep the camera's video as event video
    for ever; a moved-camera flag stays until the view is re-approved; a camera that nobody watches for
    tamper any more has its tamper events closed."""
    from edgenvr.core.clock import SYSTEM_CLOCK
    from edgenvr.core.records import EventRecord
    from edgenvr.index import schema as index_schema
    from edgenvr.index.writer import IndexWriter

    data_dir = tmp_path / "data"
    layout = StorageLayout(data_dir)
    writer = IndexWriter(index_schema.connect(layout.index_path))
    start = SYSTEM_CLOCK.now_ms() - 60_000
    writer.add_event(EventRecord("gate", "motion", start))
    writer.add_event(EventRecord("gate", "tamper", start, subkind="moved"))
    writer.add_event(EventRecord("removed", "tamper", start, subkind="covered"))
    writer.commit()
    writer.conn.close()
    config = tmp_path / "edgenvr.toml"
    config.write_text(config_text(data_dir, {}, motion=True) + camera_block("gate", "rtsp://127.0.0.1:9/x", []))
    supervisor = start_supervisor(config, tmp_path / "edgenvr.log")
    try:
        supervisor.wait_for_log("recording 1 cameras")
    finally:
        assert supervisor.stop() == 0
    still_open = {(e["camera"], e["kind"], e["subkind"]) for e in events_of(config) if e["end_ms"] is None}
    assert still_open == {("gate", "tamper", "moved")}, events_of(config)
