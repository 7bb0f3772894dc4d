"""Watching and playing back never costs recording a frame: 8 cameras recorded by `edgenvr run` while every
camera is watched live and 8 clients play back and seek as fast as they can. Every recorded frame is then
checked against the test clip's burned-in frame counter: the sequence has no hole, across every segment.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Iterator

import aiohttp
import pytest
from web_site import Site, recorded_counters, running_site

from edgenvr.simulator import make_clip
from edgenvr.simulator.camera import CLIP_CACHE

CAMERAS = tuple(f"cam-{n}" for n in range(1, 9))
LOAD_SECONDS = 20
CLIP_FRAMES = 250


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, simulator_ready: None) -> Iterator[Site]:
    clip = make_clip(CLIP_CACHE / "qvga-25fps-10s-counter.h264", width=320, height=240, fps=25, seconds=10)
    yield from running_site(tmp_path_factory.mktemp("load"), clip, cameras=CAMERAS, record_seconds=8)


async def _load(site: Site, seconds: float) -> tuple[int, int]:
    """Live viewers on every camera and 8 playback clients seeking at random; (live bytes, playback bytes)."""
    session = site.login("admin")
    headers = {"Cookie": f"edgenvr_session={session.cookie}", "Origin": f"http://127.0.0.1:{site.port}"}
    base = f"http://127.0.0.1:{site.port}"
    end = time.monotonic() + seconds
    received = {"live": 0, "playback": 0}

    async def watch(client: aiohttp.ClientSession, camera: str) -> None:
        async with client.ws_connect(f"{base}/api/cameras/{camera}/live", headers=headers) as socket:
            while time.monotonic() < end:
                try:
                    message = await socket.receive(timeout=max(0.1, end - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                if message.type == aiohttp.WSMsgType.BINARY:
                    received["live"] += len(message.data)

    async def play(client: aiohttp.ClientSession, seed: int) -> None:
        chance = random.Random(seed)
        while time.monotonic() < end:
            now = int(time.time() * 1000)
            start = now - chance.randint(6_000, 12_000)
            url = f"{base}/api/cameras/{chance.choice(CAMERAS)}/video.mp4?start_ms={start}&end_ms={now - 1000}"
            async with client.get(url, headers=headers) as answer:
                size = int(answer.headers.get("Content-Length", "0"))
                received["playback"] += len(await answer.read())
            if size > 1000:   # then a seek, as a player does
                async with client.get(url, headers={**headers, "Range": f"bytes={chance.randrange(size)}-"}) as part:
                    received["playback"] += len(await part.read())

    async with aiohttp.ClientSession() as client:
        await asyncio.gather(*(watch(client, camera) for camera in CAMERAS), *(play(client, n) for n in range(8)))
    return received["live"], received["playback"]


def test_live_view_and_playback_of_8_cameras_lose_no_recorded_frame(site: Site) -> None:
    started_ms = int(time.time() * 1000)
    live_bytes, playback_bytes = asyncio.run(_load(site, LOAD_SECONDS))
    time.sleep(4)   # the segments open during the load close
    assert live_bytes > 8 * 100_000 and playback_bytes > 1_000_000, (live_bytes, playback_bytes)
    for camera in CAMERAS:
        counters = recorded_counters(site, camera, started_ms - 2000)
        assert len(counters) >= 25 * LOAD_SECONDS, (camera, len(counters))
        holes = [(a, b) for a, b in zip(counters, counters[1:]) if (b - a) % CLIP_FRAMES != 1]
        assert not holes, f"{camera}: frames lost between counters {holes[:5]}"
    answer = site.request("GET", "/api/cameras", token=site.tokens["admin"]).json()["cameras"]
    assert {c["id"]: c["state"] for c in answer} == {camera: "recording" for camera in CAMERAS}
