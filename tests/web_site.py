"""A real site for the web tests: `edgenvr run` with a [web] table recording RTSP test cameras, users made
with the real `edgenvr user` commands, and a small HTTP client over real loopback sockets (http.client, so a
test controls every header, the Host and the source address).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
from conftest import RunningSupervisor, config_text, edgenvr, start_supervisor

from edgenvr.simulator import (
    CLIP_CACHE,
    SimulatedCamera,
    decode_frame_counter,
    make_clip,
)
from edgenvr.storage.layout import StorageLayout

COUNTER_FPS = 25
COUNTER_CLIP_SECONDS = 120   # the burned-in counter wraps every 2 minutes: far longer than any jump a test makes
# A <video> showing frames (Playwright wait_for_function with the element).
PLAYING_JS = "(video) => video.readyState >= 2 && !video.paused && !video.seeking && video.currentTime > 0"

PASSWORDS = {"admin": "admin-password-1", "operator": "operator-password-1", "viewer": "viewer-password-1",
             "opgate": "opgate-password-1"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Session:
    cookie: str
    csrf: str


@dataclass
class Site:
    port: int
    config_path: Path
    layout: StorageLayout
    supervisor: RunningSupervisor
    cameras: dict[str, SimulatedCamera]
    tokens: dict[str, str] = field(default_factory=dict)
    logins: int = 0
    tls: bool = False

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None, body: Any = None,
                session: Session | None = None, token: str | None = None, source: str = "127.0.0.1",
                timeout: float = 60) -> Answer:
        conn: http.client.HTTPConnection
        if self.tls:   # the box's own certificate, pinned: the test trusts exactly the file the box made
            context = ssl.create_default_context(cafile=str(self.layout.web_tls_certificate_path))
            context.check_hostname = False
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, source_address=(source, 0),
                                               context=context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout, source_address=(source, 0))
        sent = dict(headers or {})
        if session is not None:
            sent.setdefault("Cookie", f"edgenvr_session={session.cookie}")
            if method not in ("GET", "HEAD"):
                sent.setdefault("X-CSRF-Token", session.csrf)
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def login(self, name: str, password: str | None = None, source: str | None = None) -> Session:
        """Sign in; by default from an address of its own (each address may try 10 times a minute)."""
        if source is None:
            self.logins += 1
            source = f"127.0.{3 + self.logins // 250}.{1 + self.logins % 250}"
        answer = self.request("POST", "/api/login", body={"name": name, "password": password or PASSWORDS[name]},
                              source=source)
        assert answer.status == 200, answer.body
        cookie = answer.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
        return Session(cookie, answer.json()["csrf_token"])

    def now_ms(self) -> int:
        return int(time.time() * 1000)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def add_user(config_path: Path, name: str, role: str, cameras: str | None = None) -> None:
    args = ["user", "add", "--config", str(config_path), "--name", name, "--role", role, "--password-stdin"]
    if cameras:
        args += ["--cameras", cameras]
    done = subprocess.run([sys.executable, "-m", "edgenvr", *args], input=PASSWORDS[name] + "\n",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def make_token(config_path: Path, name: str) -> str:
    done = edgenvr("user", "token", "--config", str(config_path), "--name", name, "--label", f"{name} script")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def running_site(root: Path, clip: Path, *, cameras: tuple[str, ...] = ("gate", "yard"),
                 record_seconds: float = 10, extra_config: str = "", tls: bool = False,
                 push_logs: bool = False) -> Iterator[Site]:
    """A site recording `cameras` (2 s segments) with users admin, operator, viewer (the first camera only)
    and opgate (operator, the first camera only), and bearer tokens for admin and viewer; yields once `record_seconds` are recorded."""
    servers = {name: SimulatedCamera({"main": (clip, "h264")}, log_path=root / f"{name}.log",
                                     push_log=root / f"{name}.push" if push_logs else None) for name in cameras}
    for server in servers.values():
        server.start()
    port = free_port()
    config_path = root / "edgenvr.toml"
    config_path.write_text(config_text(root / "data", {n: s.url("main") for n, s in servers.items()},
                                       segment_seconds=2)
                           + f'[web]\nlisten = "127.0.0.1:{port}"\ntls = {str(tls).lower()}\n' + extra_config)
    add_user(config_path, "admin", "admin")
    add_user(config_path, "operator", "operator")
    add_user(config_path, "viewer", "viewer", cameras[0])
    add_user(config_path, "opgate", "operator", cameras[0])
    supervisor = start_supervisor(config_path, root / "edgenvr.log")
    site = Site(port, config_path, StorageLayout(root / "data"), supervisor, servers, tls=tls)
    try:
        supervisor.wait_for_log("web UI at")
        supervisor.wait_for_log(f"recording {len(cameras)} camera")
        site.tokens = {name: make_token(config_path, name) for name in ("admin", "viewer")}
        time.sleep(record_seconds)
        yield site
    finally:
        if supervisor.process.poll() is None:
            supervisor.stop()
        for server in servers.values():
            server.stop()


def watch_live(site: Site, camera: str, session: Session, seconds: float) -> tuple[dict, list[bytes]]:
    """The messages a browser's live tile receives in `seconds`: the JSON header and the binary pieces."""
    async def watch() -> tuple[dict, list[bytes]]:
        pieces: list[bytes] = []
        headers = {"Cookie": f"edgenvr_session={session.cookie}", "Origin": f"http://127.0.0.1:{site.port}"}
        async with aiohttp.ClientSession() as client:
            async with client.ws_connect(f"http://127.0.0.1:{site.port}/api/cameras/{camera}/live",
                                         headers=headers) as socket:
                header = await socket.receive_json(timeout=20)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + seconds
                while loop.time() < deadline:
                    try:
                        message = await socket.receive(timeout=deadline - loop.time())
                    except asyncio.TimeoutError:
                        break
                    if message.type == aiohttp.WSMsgType.BINARY:
                        pieces.append(message.data)
        return header, pieces
    return asyncio.run(watch())


def recorded_counters(site: Site, camera: str, since_ms: int) -> list[int]:
    """The burned-in counter of every frame recorded since `since_ms`, in recording order."""
    files = sorted((p for p in (site.layout.data_dir / "segments" / camera).rglob("*.mp4") if int(p.stem) >= since_ms),
                   key=lambda p: int(p.stem))
    counters: list[int] = []
    for path in files:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                number = decode_frame_counter(frame.to_ndarray(format="gray"))
                assert number is not None, f"{path.name}: a frame without a readable counter"
                counters.append(number)
    return counters


def counter_clip() -> Path:
    """The browser tests' camera clip: QVGA, a key frame a second, its frame index burned into every picture."""
    return make_clip(CLIP_CACHE / f"qvga-25fps-{COUNTER_CLIP_SECONDS}s-counter.h264", codec="h264", width=320,
                     height=240, fps=COUNTER_FPS, seconds=COUNTER_CLIP_SECONDS)
