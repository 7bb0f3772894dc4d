"""Prometheus metrics (issue 13, point 4) as the city's monitoring meets them: `GET /api/metrics` on a real box
(`edgenvr run` recording RTSP test cameras, and a box that syncs to a real `edgenvr hub`) and on that hub (SQLite,
and PostgreSQL behind two gunicorn workers), scraped over loopback with a bearer token and parsed with
prometheus_client's own parsers.

What a user relies on: nobody reads metrics without a token of a role that may (401, 403), not even from
localhost; a recording camera's bytes written grow from scrape to scrape and equal the bytes of its segments
(closed files not yet committed counted once, before and after their commit); an unplugged camera shows offline;
the sync backlog and the clips delivered are the outbox's own; the hub's clips are the clips it stores, whichever
worker answers; every metric has its HELP text and is listed in docs/metrics.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from edgenvr.config.checking import load_config
from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.core.records import EventKind
from edgenvr.index import queries
from edgenvr.sync import outbox
from edgenvr.sync.hub_channel import HubChannel
from edgenvr.sync.uploader import Uploader
from tests.hub_site import Hub, backend_params, postgres_for, running_hub
from tests.synced_box import (
    BOX_ID,
    PRE_MS,
    SEGMENT_SECONDS,
    SyncedBox,
    open_footage,
    run_round,
)
from tests.web_site import (
    PASSWORDS,
    Site,
    add_user,
    free_port,
    make_token,
    running_site,
)

pytestmark = pytest.mark.slow

METRICS = "/api/metrics"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _families(text: str) -> list[Any]:
    return list(text_string_to_metric_families(text))


def _samples(text: str) -> Samples:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in _families(text) for sample in family.samples}


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _check_named_and_documented(text: str) -> None:
    """Prometheus conventions and docs/metrics.md: every family has HELP text, the edgenvr_ prefix, a counter's
    samples end in _total, and the page names every metric."""
    documented = DOCS.read_text()
    for family in _families(text):
        assert family.name.startswith("edgenvr_") and family.documentation.strip(), family.name
        shown = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"`{shown}`" in documented, f"{shown} is not in docs/metrics.md"
        if family.type == "counter":
            assert all(sample.name.endswith("_total") for sample in family.samples), family.name


# --- a recording box ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, h264_clip: Path, simulator_ready: None) -> Iterator[Site]:
    """Cameras gate and yard recorded in 2 s segments; tokens of admin, operator, viewer (gate only) and opgate
    (an operator granted gate only)."""
    for found in running_site(tmp_path_factory.mktemp("metrics-box"), h264_clip, record_seconds=6):
        found.tokens |= {name: make_token(found.config_path, name) for name in ("operator", "opgate")}
        yield found


def _scrape(site: Site, token: str = "", **headers: str) -> str:
    answer = site.request("GET", METRICS, token=token or site.tokens["operator"], headers=headers)
    assert answer.status == 200, answer.body
    return answer.body.decode()


def _segment_bytes(site: Site, camera: str) -> int:
    """What the index says the camera's segments hold, the closed files of the batch not committed yet included
    (as every reader of the index sees them)."""
    conn = queries.open_readonly(site.layout)
    try:
        return sum(segment.bytes for segment in queries.segments(conn, site.layout, camera))
    finally:
        conn.close()


def test_a_scrape_needs_a_token_of_a_role_that_may_read_metrics_even_from_localhost(site: Site) -> None:
    spoofed = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1", "Host": "localhost"}
    for headers in ({}, spoofed, {"Authorization": "Bearer envr_not-a-token"}, {"Cookie": "edgenvr_session=forged"}):
        answer = site.request("GET", METRICS, headers=headers)
        assert answer.status == 401, (headers, answer.status, answer.body)
    refused = site.request("GET", METRICS, token=site.tokens["viewer"])
    assert refused.status == 403 and "read metrics" in refused.json()["error"]
    for name in ("operator", "admin"):
        answer = site.request("GET", METRICS, token=site.tokens[name])
        assert answer.status == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert answer.headers["cache-control"] == "no-store"
    assert site.request("GET", METRICS, session=site.login("operator")).status == 200   # the UI's session works too
    # OpenMetrics, when the scraper asks for it (Prometheus does by default)
    answer = site.request("GET", METRICS, token=site.tokens["operator"],
                          headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert {f.name for f in openmetrics_families(answer.body.decode())} >= {"edgenvr_camera_written_bytes"}
    # the route is in the API description with its rule
    described = site.request("GET", "/api/openapi.json", token=site.tokens["viewer"]).json()["paths"][METRICS]["get"]
    assert described["x-edgenvr-access"] == "read_metrics"


def test_a_recording_camera_s_bytes_written_grow_and_equal_its_segments(site: Site) -> None:
    first = _value(_samples(_scrape(site)), "edgenvr_camera_written_bytes_total", camera="gate")
    time.sleep(3)   # the site's segments are 2 s: one closes meanwhile
    second = _value(_samples(_scrape(site)), "edgenvr_camera_written_bytes_total", camera="gate")
    assert second > first > 0
    for _ in range(20):   # a scrape between two segment closes: the figure is the index's, to the byte
        before = _segment_bytes(site, "gate")
        written = _value(_samples(_scrape(site)), "edgenvr_camera_written_bytes_total", camera="gate")
        if _segment_bytes(site, "gate") == before:
            assert written == before
            break
    else:
        pytest.fail("no scrape fell between two segment closes")


def test_the_box_figures_are_what_the_box_says_elsewhere(site: Site) -> None:
    text = _scrape(site)
    _check_named_and_documented(text)
    samples = _samples(text)
    for camera in ("gate", "yard"):
        assert _value(samples, "edgenvr_camera_state", camera=camera, state="recording") == 1
        assert _value(samples, "edgenvr_camera_state", camera=camera, state="offline") == 0
        assert _value(samples, "edgenvr_retention_kept_days", camera=camera, tier="continuous") > 0
        assert _value(samples, "edgenvr_camera_gaps_total", camera=camera) >= 0
    # the index commits at least once a second in these tests ([storage] index_commit_seconds = 1), each timed
    assert _value(samples, "edgenvr_index_commit_seconds_count") > 0 and _value(samples, "edgenvr_index_commit_seconds_sum") > 0
    assert abs(_value(samples, "edgenvr_index_last_commit_timestamp_seconds") - time.time()) < 30
    disk = shutil.disk_usage(site.layout.data_dir)
    assert _value(samples, "edgenvr_disk_size_bytes") == disk.total
    assert abs(_value(samples, "edgenvr_disk_free_bytes") - disk.free) < 200e6
    assert _value(samples, "edgenvr_storage_quota_bytes") == pytest.approx(0.9 * disk.total, rel=1e-6)   # quota "90%"
    assert _value(samples, "edgenvr_storage_used_bytes") >= _segment_bytes(site, "gate")
    assert _value(samples, "edgenvr_sync_backlog_clips") == 0   # no [sync]: nothing queued
    assert _value(samples, "edgenvr_box_info", box=load_config(site.config_path).box.box_id,
                  version=site.request("GET", "/api/health").json()["version"]) == 1


def test_an_operator_granted_one_camera_sees_only_that_camera_s_series(site: Site) -> None:
    samples = _samples(_scrape(site, site.tokens["opgate"]))
    cameras = {dict(labels)["camera"] for _, labels in samples if "camera" in dict(labels)}
    assert cameras == {"gate"}
    assert ("edgenvr_disk_free_bytes", ()) in samples   # the box-wide figures are there


def test_an_unplugged_camera_shows_offline(site: Site) -> None:
    site.cameras["yard"].stop()   # the cable is cut: nothing answers at the camera's address any more
    deadline = time.monotonic() + 60
    while True:
        samples = _samples(_scrape(site))
        if _value(samples, "edgenvr_camera_state", camera="yard", state="offline") == 1:
            break
        assert time.monotonic() < deadline, "yard never showed offline"
        time.sleep(1)
    assert _value(samples, "edgenvr_camera_state", camera="yard", state="recording") == 0
    assert _value(samples, "edgenvr_camera_state", camera="gate", state="recording") == 1
    assert time.time() - 60 < _value(samples, "edgenvr_camera_state_since_timestamp_seconds", camera="yard") < time.time()


# --- a box that syncs to a hub, and the hub ------------------------------------------------------------------

WEB_PROCESS = ("import sys; from edgenvr.config.checking import load_config; "
               "from edgenvr.web.server import run_web_process; run_web_process(load_config(sys.argv[1]), 'web')")


@dataclass
class SyncedSite:
    """A box (tests/synced_box: real segment files, the real index writer and sync rounds) with its web process,
    the hub it syncs to, and tokens for both."""
    hub: Hub
    box: SyncedBox
    uploader: Uploader
    web_port: int
    started_ms: int
    box_tokens: dict[str, str] = field(default_factory=dict)
    hub_tokens: dict[str, str] = field(default_factory=dict)

    def box_scrape(self) -> Samples:
        answer = requests.get(f"http://127.0.0.1:{self.web_port}{METRICS}", timeout=30,
                              headers={"Authorization": f"Bearer {self.box_tokens['operator']}"})
        assert answer.status_code == 200, answer.text
        return _samples(answer.text)

    def hub_get(self, path: str, token: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.hub.url + path, headers=headers, timeout=30)

    def deliver(self) -> None:
        """Rounds of the box's sync process until its outbox is empty."""
        deadline = time.monotonic() + 60
        run_round(self.uploader)
        while outbox.backlog(self.box.writer.conn).count:
            assert time.monotonic() < deadline, self.hub.log.read_text()[-3000:]
            run_round(self.uploader)


def _hub_users(hub: Hub) -> dict[str, str]:
    """admin (the hub's command line), operator and viewer (made by admin through the API): their tokens."""
    made = subprocess.run([sys.executable, "-m", "edgenvr", "hub", "user", "add", "--config", str(hub.config),
                           "--name", "admin", "--role", "admin", "--password-stdin"], input=PASSWORDS["admin"] + "\n",
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    token = hub.cli("token", "create", "--name", "admin", "--label", "prometheus setup")
    assert token.returncode == 0, token.stderr
    tokens = {"admin": token.stdout.strip()}
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    for name in ("operator", "viewer"):
        added = requests.post(hub.url + "/api/users", headers=admin, timeout=30,
                              json={"name": name, "role": name, "password": PASSWORDS[name]})
        assert added.status_code == 201, added.text
        created = requests.post(f"{hub.url}/api/users/{name}/tokens", headers=admin, json={"label": "prometheus"},
                                timeout=30)
        assert created.status_code == 201, created.text
        tokens[name] = created.json()["token"]
    return tokens


@pytest.fixture(scope="module", params=backend_params())
def synced(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncedSite]:
    root = tmp_path_factory.mktemp("metrics-sync")
    with running_hub(root, request.param, postgres_for(request, request.param)) as hub:
        box = SyncedBox(root / "box", hub.url, hub.token(BOX_ID), open_footage())
        web_port = free_port()
        box.config_path.write_text(box.config_path.read_text() + f'[web]\nlisten = "127.0.0.1:{web_port}"\ntls = false\n')
        for name in ("admin", "operator", "viewer"):   # a box without an admin is not set up: it serves nothing
            add_user(box.config_path, name, name)
        with open(root / "web.log", "ab") as log:
            web = subprocess.Popen([sys.executable, "-c", WEB_PROCESS, str(box.config_path)], stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            site = SyncedSite(hub, box, box.uploader(), web_port, int(time.time() * 1000) - 3_600_000,
                              {name: make_token(box.config_path, name) for name in ("operator", "viewer")},
                              _hub_users(hub))
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(requests.ConnectionError):
                    if requests.get(f"http://127.0.0.1:{web_port}/api/health", timeout=5).status_code == 200:
                        break
                assert web.poll() is None and time.monotonic() < deadline, (root / "web.log").read_text()
                time.sleep(0.2)
            outbox.sync_since(box.writer.conn, site.started_ms)   # the box has synced for an hour
            yield site
        finally:
            web.terminate()
            web.wait(20)
            box.close()


def test_the_backlog_deliveries_and_hub_clips_are_the_outbox_s_and_the_hub_s_own(synced: SyncedSite) -> None:
    box, start, conn = synced.box, synced.started_ms, synced.box.writer.conn
    for n in range(6):
        box.record("gate", start + n * SEGMENT_SECONDS * 1000)
    box.event(EventKind.MOTION, "gate", start + 1_500, start + 2_500)
    box.commit()
    synced.deliver()   # enrols, then sends the first clip
    box.event(EventKind.MOTION, "gate", start + 9_500, start + 10_500)
    box.event(EventKind.TAMPER, "gate", start + 17_500, start + 18_500, subkind="covered")
    box.commit()
    queued = outbox.enqueue_closed_events(conn, start, SYSTEM_CLOCK.now_ms(), outbox.SETTLE_MARGIN_MS)
    assert queued == 2

    def delivered() -> tuple[int, int]:
        count, size = conn.execute("SELECT COUNT(*), SUM(bytes) FROM outbox WHERE state = 'synced'").fetchone()
        return count, size

    samples = synced.box_scrape()
    assert _value(samples, "edgenvr_sync_backlog_clips") == outbox.backlog(conn).count == queued
    assert _value(samples, "edgenvr_sync_backlog_bytes") == 0   # not exported yet: their size is not known
    oldest_age = time.time() - (start + 9_500 - PRE_MS) / 1000   # the oldest clip starts at its padded start
    assert abs(_value(samples, "edgenvr_sync_backlog_oldest_age_seconds") - oldest_age) < 10
    assert (_value(samples, "edgenvr_sync_delivered_clips_total"),
            _value(samples, "edgenvr_sync_delivered_bytes_total")) == delivered()
    assert delivered()[0] == 1

    # The box's channel sends its report (backlog 2); the hub shows it, and the one clip it stores.
    async def report() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(HubChannel(box.config, synced.uploader.identity, SYSTEM_CLOCK,
                                                 synced.uploader.hub_key).run(stop))
        deadline = time.monotonic() + 30
        while not [b for b in (await asyncio.to_thread(synced.hub_get, "/api/fleet", synced.hub_tokens["viewer"]))
                   .json()["boxes"] if b["backlog"] == queued]:
            assert time.monotonic() < deadline, synced.hub.log.read_text()[-3000:]
            await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(running, 30)
    asyncio.run(report())
    hub = _hub_samples(synced)
    stored = synced.hub_get("/api/clips", synced.hub_tokens["viewer"]).json()["clips"]
    zips = sorted((synced.hub.data_dir / "blobs" / "clips").glob("*.zip"))
    assert _value(hub, "edgenvr_hub_clips", box=BOX_ID) == len(stored) == len(zips) == 1
    assert _value(hub, "edgenvr_hub_clips_bytes", box=BOX_ID) == sum(z.stat().st_size for z in zips)
    assert _value(hub, "edgenvr_hub_uploads", state="complete") == 1
    assert _value(hub, "edgenvr_hub_upload_received_bytes", state="complete") == delivered()[1]
    assert _value(hub, "edgenvr_hub_uploads", state="rejected") == 0
    assert _value(hub, "edgenvr_hub_box_backlog_clips", box=BOX_ID) == queued
    assert _value(hub, "edgenvr_hub_boxes", state="enrolled") == 1
    assert _value(hub, "edgenvr_hub_boxes_connected") == 1 and _value(hub, "edgenvr_hub_boxes_silent") == 0

    synced.deliver()
    samples, hub = synced.box_scrape(), _hub_samples(synced)
    assert _value(samples, "edgenvr_sync_backlog_clips") == 0
    assert (_value(samples, "edgenvr_sync_delivered_clips_total"),
            _value(samples, "edgenvr_sync_delivered_bytes_total")) == delivered()
    assert delivered()[0] == 3
    assert _value(hub, "edgenvr_hub_clips", box=BOX_ID) == len(
        synced.hub_get("/api/clips", synced.hub_tokens["viewer"]).json()["clips"]) == 3
    assert _value(hub, "edgenvr_hub_clips_bytes", box=BOX_ID) == sum(
        z.stat().st_size for z in (synced.hub.data_dir / "blobs" / "clips").glob("*.zip"))


def test_closed_segments_count_once_before_and_after_their_batch_is_committed(synced: SyncedSite) -> None:
    box, start = synced.box, synced.started_ms + 1_800_000   # after the video the other tests recorded
    before = synced.box_scrape()
    written = [box.record("gate", start + n * SEGMENT_SECONDS * 1000).bytes for n in range(3)]   # closed, pending
    pending = synced.box_scrape()
    assert _value(pending, "edgenvr_camera_written_bytes_total", camera="gate") == \
        _value(before, "edgenvr_camera_written_bytes_total", camera="gate") + sum(written)
    assert _value(pending, "edgenvr_storage_used_bytes") >= _value(before, "edgenvr_storage_used_bytes") + sum(written)
    commits = _value(pending, "edgenvr_index_commit_seconds_count")
    box.commit()
    box.commit()   # the second carries the first one's duration (a commit's time is known once it is done)
    committed = synced.box_scrape()
    assert _value(committed, "edgenvr_camera_written_bytes_total", camera="gate") == \
        _value(pending, "edgenvr_camera_written_bytes_total", camera="gate")
    assert _value(committed, "edgenvr_index_commit_seconds_count") > commits


def _hub_samples(synced: SyncedSite) -> Samples:
    """A scrape of the hub, asked several times: with two workers the kernel hands the connections to both, and
    each must answer the same (nothing is counted in a worker's memory)."""
    answers = []
    for _ in range(6):
        answer = synced.hub_get(METRICS, synced.hub_tokens["operator"])
        assert answer.status_code == 200, answer.text
        answers.append(answer.text)
    _check_named_and_documented(answers[0])
    found = [{key: value for key, value in _samples(text).items() if not key[0].endswith("_age_seconds")}
             for text in answers]   # ages grow between scrapes; everything else is the database's, the same
    assert all(figures == found[0] for figures in found), found
    return _samples(answers[-1])


def test_the_hub_s_metrics_need_a_token_of_a_role_that_may_read_them(synced: SyncedSite) -> None:
    for token in (None, "envr_not-a-token"):
        assert synced.hub_get(METRICS, token).status_code == 401
    refused = synced.hub_get(METRICS, synced.hub_tokens["viewer"])
    assert refused.status_code == 403, refused.text
    assert synced.hub_get(METRICS, synced.hub_tokens["admin"]).status_code == 200
    box = requests.get(f"http://127.0.0.1:{synced.web_port}{METRICS}", timeout=30,
                       headers={"Authorization": f"Bearer {synced.box_tokens['viewer']}"})
    assert box.status_code == 403
