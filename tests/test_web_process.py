"""The web server is a process of its own: whatever happens to it (frozen mid-live-view, killed), recording
goes on without losing a frame, and the supervisor brings the web server back."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from typing import Iterator

import pytest
from web_site import Site, recorded_counters, running_site, watch_live

from edgenvr.simulator import make_clip
from edgenvr.simulator.camera import CLIP_CACHE

CLIP_FRAMES = 250


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, simulator_ready: None) -> Iterator[Site]:
    clip = make_clip(CLIP_CACHE / "qvga-25fps-10s-counter.h264", width=320, height=240, fps=25, seconds=10)
    yield from running_site(tmp_path_factory.mktemp("webproc"), clip, cameras=("gate",), record_seconds=4)


def _web_pid(site: Site) -> int:
    return int(re.findall(r"web server started \(pid (\d+)\)", site.supervisor.log())[-1])


def _no_lost_frames(site: Site, since_ms: int) -> None:
    counters = recorded_counters(site, "gate", since_ms)
    holes = [(a, b) for a, b in zip(counters, counters[1:]) if (b - a) % CLIP_FRAMES != 1]
    assert counters and not holes, f"frames lost between counters {holes[:5]}"


def test_a_frozen_web_server_with_live_viewers_costs_recording_nothing(site: Site) -> None:
    since = int(time.time() * 1000)
    viewer = site.login("viewer")
    watching = threading.Thread(target=watch_live, args=(site, "gate", viewer, 12))
    watching.start()
    time.sleep(3)   # the recorder now sends live fragments
    pid = _web_pid(site)
    os.kill(pid, signal.SIGSTOP)   # a web server that stops reading: its queue fills, the recorder drops
    try:
        time.sleep(12)
    finally:
        os.kill(pid, signal.SIGCONT)
    watching.join(30)
    time.sleep(3)
    _no_lost_frames(site, since - 2000)
    assert site.request("GET", "/api/health").status == 200


def test_a_killed_web_server_is_restarted_and_recording_goes_on(site: Site) -> None:
    since = int(time.time() * 1000)
    pid = _web_pid(site)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _web_pid(site) == pid:
        time.sleep(0.2)
    assert _web_pid(site) != pid, "the supervisor did not restart the web server"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if site.request("GET", "/api/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.3)
    session = site.login("viewer")   # accounts and sessions live on disk, not in the process
    assert site.request("GET", "/api/cameras", session=session).status == 200
    time.sleep(4)
    _no_lost_frames(site, since - 2000)
    assert "recorders-1 exited" not in site.supervisor.log()
