"""Store-and-forward from a recording box to the city hub, each a real process (`edgenvr run` with [sync], and
`edgenvr hub`), the link between them a proxy the test cuts (issue 12).

What a site relies on: every closed motion event becomes a signed clip that reaches the hub exactly once,
also when the link is down for a while (the backlog grows, `edgenvr status` says so and why, nothing is lost)
and when it keeps dropping; the box marks a clip synced only with the hub's receipt of the bytes it sent.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from edgenvr.simulator import SimulatedCamera, counter_ignore_polygon, make_scene_clip
from edgenvr.sync.outbox import SETTLE_MARGIN_MS
from tests.conftest import CLIP_CACHE, config_text, edgenvr, start_supervisor
from tests.hub_site import running_hub
from tests.link_faults import FaultyLink

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("simulator_ready")]

BOX = "rt08-kuningan"
SEGMENT_SECONDS = 2
EVENT_POST_SECONDS = 2


def _polygon(points: list[tuple[float, float]]) -> str:
    return "[" + ", ".join(f"[{x:.4f}, {y:.4f}]" for x, y in points) + "]"


def _box_config(root: Path, camera_url: str, hub_url: str, token: str, *sync_lines: str) -> tuple[Path, Path]:
    """A box recording one camera with motion detection (1 s/2 s event padding: clips are small and come soon)
    and [sync] to `hub_url`: (its data dir, its config file)."""
    data_dir, config = root / "data", root / "edgenvr.toml"
    config.write_text(
        f'[box]\nid = "{BOX}"\nname = "Pos RT 08"\n'
        + config_text(data_dir, {}, motion=True, segment_seconds=SEGMENT_SECONDS,
                      extra_storage=f"event_pre_seconds = 1\nevent_post_seconds = {EVENT_POST_SECONDS}")
        + f'[[cameras]]\nid = "gate"\nurl = "{camera_url}"\ndetect_url = "{camera_url}"\n'
        + f"[cameras.motion]\nignore = [{_polygon(counter_ignore_polygon(640, 360))}]\n"
        + f'[sync]\nhub_url = "{hub_url}"\nenrolment_token = "{token}"\n' + "".join(f"{line}\n" for line in sync_lines))
    return data_dir, config


def _outbox(data_dir: Path) -> list[dict]:
    conn = sqlite3.connect(f"file:{data_dir / 'index.sqlite3'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM outbox ORDER BY id")]
    finally:
        conn.close()


def _events_not_in_outbox(data_dir: Path) -> int:
    """Motion and tamper events still open, or closed since the box started syncing but not queued yet (the
    outbox's rule: sync.outbox.enqueue_closed_events): clips the box has yet to queue."""
    conn = sqlite3.connect(f"file:{data_dir / 'index.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT COUNT(*) FROM events e WHERE e.kind IN ('motion', 'tamper') AND (e.end_ms IS NULL OR"
            " (e.end_ms >= (SELECT since_ms FROM sync_since) AND e.keep_from_ms IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id)))").fetchone()[0]
    finally:
        conn.close()


def _status(config: Path) -> dict:
    lines = [json.loads(line) for line in edgenvr("status", "--config", str(config), "--json").stdout.splitlines()]
    return next(line["sync"] for line in lines if "sync" in line)


def test_motion_clips_reach_the_hub_exactly_once_after_the_link_was_down_and_while_it_drops(tmp_path: Path) -> None:
    walk = make_scene_clip(CLIP_CACHE / "scenes" / "walk.h264", "walk")
    with running_hub(tmp_path) as hub, FaultyLink(("127.0.0.1", hub.port)) as link, \
            SimulatedCamera({"walk": (walk.path, "h264", walk.fps)}, log_path=tmp_path / "camera.log") as camera:
        link.down(True)                                   # the metro link is cut when the box starts
        data_dir, config = _box_config(tmp_path, camera.url("walk"), f"http://127.0.0.1:{link.port}",
                                       hub.token(BOX))
        supervisor = start_supervisor(config, tmp_path / "edgenvr.log")
        try:
            supervisor.wait_for_log("sync to http://127.0.0.1")
            deadline = time.monotonic() + 90
            while not [row for row in _outbox(data_dir) if row["state"] == "queued"]:
                assert time.monotonic() < deadline, "no motion clip was queued:\n" + supervisor.log()[-3000:]
                time.sleep(1)
            deadline = time.monotonic() + 30   # the uploader's next round tries the cut link and says so
            waiting = _status(config)
            while not (waiting["backlog"] >= 1 and "unreachable" in (waiting["last_error"] or "")):
                assert time.monotonic() < deadline, waiting
                time.sleep(0.5)
                waiting = _status(config)
            assert not hub.cli("clips", "--json").stdout.strip(), "nothing can have arrived over a cut link"

            link.drop_at_random(mean_bytes=100_000, seed=3)   # the link comes back, flaky
            link.down(False)
            deadline = time.monotonic() + 120
            while any(row["state"] == "queued" for row in _outbox(data_dir)) or len(_outbox(data_dir)) < 2:
                assert time.monotonic() < deadline, "the backlog did not drain:\n" + supervisor.log()[-4000:]
                time.sleep(1)
            # Enough clips: the scene loops, so stop the camera (no new motion), or a clip queued just before
            # SIGTERM would stay queued. Every event is in the index once its padded end and the settle margin
            # are over (events are committed within a second); then wait until each is queued and none waits.
            camera.stop()
            all_in_index = time.monotonic() + EVENT_POST_SECONDS + (SEGMENT_SECONDS * 1000 + SETTLE_MARGIN_MS) / 1000
            deadline = time.monotonic() + 120
            while (time.monotonic() < all_in_index or _events_not_in_outbox(data_dir)
                   or any(row["state"] == "queued" for row in _outbox(data_dir))):
                assert time.monotonic() < deadline, "the last clips were not sent:\n" + supervisor.log()[-4000:]
                time.sleep(1)
        finally:
            assert supervisor.stop() == 0
        rows = _outbox(data_dir)
        clips = [json.loads(line) for line in hub.cli("clips", "--json").stdout.splitlines()]
        drops = link.drops

    assert all(row["state"] == "synced" and row["receipt"] for row in rows), rows
    assert sorted(row["sha256"] for row in rows) == sorted(clip["sha256"] for clip in clips), (rows, clips)
    assert len({clip["id"] for clip in clips}) == len(rows) >= 2
    assert all(clip["box"] == BOX and clip["camera"] == "gate" and clip["kind"] == "motion" for clip in clips)
    assert _status(config)["backlog"] == 0
    assert drops >= 2, f"the link dropped {drops} times only: the test proves little"
    log = (tmp_path / "edgenvr.log").read_text()
    assert "enrolled at" in log and "the hub is unreachable" in log and "Traceback" not in log
    print(f"\n{len(rows)} motion clips delivered through {drops} drops after the link came back")


def _hub_upload_offset(hub_data: Path, upload_path: str) -> int:
    conn = sqlite3.connect(f"file:{hub_data / 'hub.sqlite3'}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT offset FROM uploads WHERE id = ?", (upload_path.rsplit("/", 1)[1],)).fetchone()
        return row[0] if row else 0
    finally:
        conn.close()


def _hub_upload_locked(hub_data: Path, upload_path: str) -> bool:
    """A PATCH of the upload is in progress at the hub (its lease held and not lapsed)."""
    conn = sqlite3.connect(f"file:{hub_data / 'hub.sqlite3'}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT lock_token, lock_until_ms FROM uploads WHERE id = ?",
                           (upload_path.rsplit("/", 1)[1],)).fetchone()
        return row is not None and row[0] is not None and row[1] >= time.time() * 1000
    finally:
        conn.close()


def test_a_sync_process_killed_mid_upload_resumes_where_the_hub_is_and_the_clip_arrives_once(tmp_path: Path) -> None:
    """kill -9 of the sync process while a clip is half sent (an 80 kbit/s cap makes it last): the supervisor
    restarts it, it goes on with the same upload at the hub's offset, and the hub ends with one copy."""
    walk = make_scene_clip(CLIP_CACHE / "scenes" / "walk.h264", "walk")
    with running_hub(tmp_path) as hub, \
            SimulatedCamera({"walk": (walk.path, "h264", walk.fps)}, log_path=tmp_path / "camera.log") as camera:
        data_dir, config = _box_config(tmp_path, camera.url("walk"), hub.url, hub.token(BOX), "upload_kbps = 80")
        supervisor = start_supervisor(config, tmp_path / "edgenvr.log")
        try:
            supervisor.wait_for_log("sync to ")
            deadline = time.monotonic() + 120
            while True:   # a clip whose upload the hub has part of
                sending = [row for row in _outbox(data_dir) if row["state"] == "queued" and row["upload"]
                           and _hub_upload_offset(hub.data_dir, row["upload"]) > 0]
                if sending:
                    break
                assert time.monotonic() < deadline, "no upload started:\n" + supervisor.log()[-3000:]
                time.sleep(0.2)
            clip = sending[0]
            sync_pid = int(supervisor.log().split("sync to ")[1].split("(pid ")[1].split(")")[0])
            os.kill(sync_pid, signal.SIGKILL)
            supervisor.wait_for_log("sync exited with code")
            # Where the hub is once the killed PATCH is over there (its lock let go): where the restart resumes.
            deadline = time.monotonic() + 30
            while _hub_upload_locked(hub.data_dir, clip["upload"]):
                assert time.monotonic() < deadline, "the hub kept the killed upload locked:\n" + hub.log.read_text()
                time.sleep(0.1)
            offset = _hub_upload_offset(hub.data_dir, clip["upload"])
            deadline = time.monotonic() + 120
            while next(r for r in _outbox(data_dir) if r["id"] == clip["id"])["state"] != "synced":
                assert time.monotonic() < deadline, "the clip never arrived:\n" + supervisor.log()[-3000:]
                time.sleep(0.5)
        finally:
            assert supervisor.stop() == 0
        done = next(r for r in _outbox(data_dir) if r["id"] == clip["id"])
        clips = [json.loads(line) for line in hub.cli("clips", "--json").stdout.splitlines()]
    assert done["upload"] == clip["upload"], "a new upload was started instead of resuming the hub's"
    assert [c["sha256"] for c in clips].count(done["sha256"]) == 1
    assert offset < done["bytes"], "the kill came after the clip was whole: the test proves nothing"
    assert (tmp_path / "edgenvr.log").read_text().count("sync to ") >= 2   # started again by the supervisor
    print(f"\nclip {clip['id']}: killed at {offset} of {done['bytes']} bytes, resumed on the same upload")
