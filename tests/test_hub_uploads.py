"""The hub's tus 1.0 upload endpoint (edgenvr.hub.tus_uploads), served over real HTTP on loopback from a real
hub database, driven by an independent client (`tuspy`) and by raw requests for what a client would never
send on purpose. Every test runs twice: on SQLite in one worker, and on PostgreSQL with two workers (each its
own event loop, engine and listening socket on the one port, SO_REUSEPORT, so the kernel sends the requests
of one upload to either), as `[hub] workers = 2` serves them.

What boxes rely on: an upload resumes at the hub's offset after any drop or a hub restart; a chunk that does
not match its checksum is refused (460) and nothing of it is kept; a stalled connection never blocks the
resuming one; nobody but its creator can touch an upload; malformed requests get a 4xx naming the problem and
store nothing; the receipt is given once the last byte is committed, and again on HEAD if the answer was lost.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from aiohttp import web

from edgenvr.core.clock import SimulatedClock
from edgenvr.core.units import DAY_MS
from edgenvr.hub import hub_database, tus_uploads
from edgenvr.hub.tus_uploads import CompletedUpload, TusUploads, UploadRejected
from tests.hub_site import SQLITE, backend_params, postgres_for

tusclient = pytest.importorskip("tusclient.client")

TOKENS = {"box-a-token": "box-a", "box-b-token": "box-b"}
MAX_BYTES = 8 * 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


async def _cancel_the_rest() -> None:
    """End what is left on a stopped worker's loop (handlers of connections that closed as its runner stopped),
    so that nothing pending is destroyed with the loop."""
    left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)


@dataclass
class Worker:
    """A hub's upload endpoint in a thread of its own (its own event loop and engine), as a worker runs it."""
    uploads: TusUploads
    engine: sa.Engine
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    runner: web.AppRunner

    def run(self, work: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    def stop(self) -> None:
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.run_until_complete(_cancel_the_rest())
        self.loop.close()
        self.engine.dispose()


@dataclass
class Hub:
    """`workers` upload endpoints on one port, one database (SQLite in root, or `database_url`) and one blob
    directory."""
    root: Path
    clock: SimulatedClock
    database_url: str | None = None
    workers: int = 1
    completed: list[CompletedUpload] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.running = [self._worker() for _ in range(self.workers)]

    def _worker(self) -> Worker:
        engine = hub_database.connect(hub_database.database_url(self.root, self.database_url))
        uploads = TusUploads(engine, self.root / "blobs", self._authenticate, self._complete,
                             max_bytes=MAX_BYTES, clock=self.clock)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        app = web.Application(middlewares=[tus_uploads.tus_resumable_header])   # as hub_server's app
        app.add_routes(uploads.routes())
        worker = Worker(uploads, engine, loop, thread, web.AppRunner(app))
        worker.run(worker.runner.setup())
        # the same port again after a restart, and for every worker (each its own socket: SO_REUSEPORT)
        worker.run(web.TCPSite(worker.runner, "127.0.0.1", self.port, reuse_port=self.workers > 1).start())
        self.port = worker.runner.addresses[0][1]
        return worker

    async def _authenticate(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        owner = TOKENS.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        if owner is None:
            raise web.HTTPUnauthorized(text="no valid credentials\n")
        return owner

    async def _complete(self, upload: CompletedUpload) -> str:
        digest = hashlib.sha256(upload.path.read_bytes()).hexdigest()
        if upload.metadata.get("sha256", digest) != digest:
            raise UploadRejected(f"its bytes hash to {digest}, not to the sha256 it was sent with")
        self.completed.append(upload)
        return json.dumps({"upload": upload.id, "sha256": digest})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{tus_uploads.UPLOADS_PATH}"

    def sweep(self) -> int:
        return sum(worker.run(worker.uploads.sweep_expired()) for worker in self.running)   # each worker sweeps

    def stop(self) -> None:
        for worker in self.running:
            worker.stop()


@pytest.fixture(params=backend_params())
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hub]:
    postgres = postgres_for(request, request.param)
    running = Hub(tmp_path / "hub", SimulatedClock()) if request.param == SQLITE else \
        Hub(tmp_path / "hub", SimulatedClock(), postgres.new_database(), workers=2)
    yield running
    running.stop()


def _auth(owner: str = "box-a") -> dict[str, str]:
    return {**TUS, "Authorization": f"Bearer {owner}-token"}


def _clip(tmp_path: Path, size: int = 3 * 1024 * 1024 + 17) -> Path:
    path = tmp_path / "clip.bin"
    path.write_bytes(hashlib.sha256(b"seed").digest() * (size // 32) + b"x" * (size % 32))
    return path


def _create(hub: Hub, length: int, owner: str = "box-a", metadata: str = "") -> str:
    reply = requests.post(hub.url, headers={**_auth(owner), "Upload-Length": str(length),
                                            **({"Upload-Metadata": metadata} if metadata else {})}, timeout=10)
    assert reply.status_code == 201, reply.text
    return f"http://127.0.0.1:{hub.port}{reply.headers['Location']}"


def _patch(url: str, offset: int, body: bytes, owner: str = "box-a", checksum: str | None = None
           ) -> requests.Response:
    headers = {**_auth(owner), "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
    if checksum is not None:
        headers["Upload-Checksum"] = checksum
    return requests.patch(url, data=body, headers=headers, timeout=30)


def _sha256(body: bytes) -> str:
    return "sha256 " + base64.b64encode(hashlib.sha256(body).digest()).decode()


def _offset(url: str) -> int:
    reply = requests.head(url, headers=_auth(), timeout=10)
    assert reply.status_code == 200, reply.status_code
    return int(reply.headers["Upload-Offset"])


def test_tuspy_uploads_a_clip_in_checksummed_chunks_and_gets_a_receipt(hub: Hub, tmp_path: Path) -> None:
    clip = _clip(tmp_path)
    client = tusclient.TusClient(hub.url, headers={"Authorization": "Bearer box-a-token"})
    uploader = client.uploader(str(clip), chunk_size=256 * 1024, upload_checksum=True,   # sha1, as tuspy does
                               metadata={"filename": "clip.bin", "sha256": hashlib.sha256(clip.read_bytes()).hexdigest()})
    uploader.upload()
    assert [u.length for u in hub.completed] == [clip.stat().st_size]
    assert hub.completed[0].path.read_bytes() == clip.read_bytes()
    assert hub.completed[0].owner == "box-a" and hub.completed[0].metadata["filename"] == "clip.bin"
    head = requests.head(uploader.url, headers=_auth(), timeout=10)
    receipt = json.loads(base64.b64decode(head.headers["Edgenvr-Receipt"]))
    assert receipt["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(clip.stat().st_size)


def test_an_upload_resumes_at_the_hubs_offset_after_a_drop_and_after_a_hub_restart(hub: Hub, tmp_path: Path) -> None:
    clip = _clip(tmp_path)
    client = tusclient.TusClient(hub.url, headers={"Authorization": "Bearer box-a-token"})
    first = client.uploader(str(clip), chunk_size=512 * 1024, upload_checksum=True)
    first.upload(stop_at=1024 * 1024)          # the link drops after two chunks
    assert _offset(first.url) == 1024 * 1024

    hub.stop()                                 # the hub restarts on the same database and blob directory
    hub.start()
    resumed = client.uploader(str(clip), url=first.url, chunk_size=512 * 1024, upload_checksum=True)
    assert resumed.offset == 1024 * 1024       # asked the hub (HEAD), not started over
    resumed.upload()
    assert hub.completed[0].path.read_bytes() == clip.read_bytes()


def test_a_chunk_that_does_not_match_its_checksum_is_refused_and_not_kept(hub: Hub) -> None:
    body = b"a" * 100_000
    url = _create(hub, 2 * len(body))
    altered = b"b" + body[1:]                  # one byte changed in flight
    reply = _patch(url, 0, altered, checksum=_sha256(body))
    assert reply.status_code == 460 and reply.reason == "Checksum Mismatch"
    assert _offset(url) == 0
    assert _patch(url, 0, body, checksum=_sha256(body)).status_code == 204
    sha1 = "sha1 " + base64.b64encode(hashlib.sha1(body).digest()).decode()
    assert _patch(url, len(body), body, checksum=sha1).status_code == 204
    assert hub.completed[0].path.read_bytes() == body + body


def test_a_stalled_patch_lets_go_for_the_client_that_resumes(hub: Hub) -> None:
    """A box whose link froze mid-chunk reconnects: its HEAD must not wait for the dead connection, and sees
    what was committed (the whole stalled part without a checksum, nothing of it with one)."""
    for checksum, kept in ((False, 100_000), (True, 0)):
        url = _create(hub, 1_000_000)
        path = url.split(f":{hub.port}", 1)[1]
        stalled = socket.create_connection(("127.0.0.1", hub.port))
        head = (f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
                f"Authorization: Bearer box-a-token\r\nContent-Type: application/offset+octet-stream\r\n"
                f"Upload-Offset: 0\r\nContent-Length: 1000000\r\n")
        if checksum:
            head += f"Upload-Checksum: {_sha256(b'z' * 1_000_000)}\r\n"
        stalled.sendall(head.encode() + b"\r\n" + b"z" * 100_000)
        time.sleep(1.0)                          # the hub has read what was sent; the link is frozen now
        started = time.monotonic()
        assert _offset(url) == kept
        assert time.monotonic() - started < tus_uploads.RELEASE_WAIT_SECONDS
        rest = b"z" * (1_000_000 - kept)
        assert _patch(url, kept, rest, checksum=_sha256(rest)).status_code == 204
        assert _offset(url) == 1_000_000
        stalled.close()
    assert [u.path.read_bytes() for u in hub.completed] == [b"z" * 1_000_000] * 2


def test_only_its_creator_can_touch_an_upload(hub: Hub) -> None:
    url = _create(hub, 10)
    for method in ("HEAD", "PATCH", "DELETE"):
        headers = {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
        other = requests.request(method, url, headers={**_auth("box-b"), **headers}, data=b"0123456789", timeout=10)
        assert other.status_code == 403, method
        nobody = requests.request(method, url, headers={**TUS, **headers}, data=b"0123456789", timeout=10)
        wrong = requests.request(method, url, headers={**TUS, **headers, "Authorization": "Bearer guess"},
                                 data=b"0123456789", timeout=10)
        assert nobody.status_code == wrong.status_code == 401, method
        assert nobody.headers["Tus-Resumable"] == wrong.headers["Tus-Resumable"] == "1.0.0", method
    assert requests.post(hub.url, headers={**TUS, "Upload-Length": "10"}, timeout=10).status_code == 401
    assert _offset(url) == 0 and not hub.completed


def test_malformed_requests_get_a_4xx_naming_the_problem_and_store_nothing(hub: Hub) -> None:
    url = _create(hub, 10)
    created = {**_auth(), "Upload-Length": "10"}
    cases = [
        (requests.post, hub.url, {**created, "Tus-Resumable": "0.2.2"}, b"", 412),
        (requests.post, hub.url, {k: v for k, v in created.items() if k != "Tus-Resumable"}, b"", 412),
        (requests.post, hub.url, {**created, "Upload-Length": "-1"}, b"", 400),
        (requests.post, hub.url, {**created, "Upload-Length": "ten"}, b"", 400),
        (requests.post, hub.url, {**created, "Upload-Length": str(MAX_BYTES + 1)}, b"", 413),
        (requests.post, hub.url, {**created, "Upload-Metadata": "name not-base64!"}, b"", 400),
        (requests.post, hub.url, {**created, "Upload-Metadata": "a YQ==,a YQ=="}, b"", 400),
        (requests.post, hub.url, {**created, "Upload-Metadata": "idempotency_key YQBi"}, b"", 400),   # "a\0b"
        (requests.post, hub.url, {**_auth(), "Upload-Defer-Length": "1"}, b"", 400),
    ]
    patching = {**_auth(), "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    cases += [
        (requests.patch, url, {**patching, "Upload-Offset": "-1"}, b"0123456789", 400),
        (requests.patch, url, {**patching, "Upload-Offset": "5"}, b"01234", 409),
        (requests.patch, url, {**patching, "Content-Type": "application/json"}, b"0123456789", 415),
        (requests.patch, url, {**patching, "Upload-Checksum": "md5 AAAA"}, b"0123456789", 400),
        (requests.patch, url, {**patching, "Upload-Checksum": "sha256 not base64"}, b"0123456789", 400),
        (requests.patch, url, patching, b"0123456789ABC", 413),            # past Upload-Length
        (requests.patch, url.rsplit("/", 1)[0] + "/..%2f..%2fetc", patching, b"0123456789", 404),
        (requests.patch, url.rsplit("/", 1)[0] + "/" + "0" * 32, patching, b"0123456789", 404),
    ]
    for send, target, headers, body, status in cases:
        reply = send(target, headers=headers, data=body, timeout=10)
        assert reply.status_code == status, (headers, reply.status_code, reply.text)
        assert reply.status_code == 412 or reply.text.strip(), "the answer names the problem"
    assert _offset(url) == 0 and not hub.completed
    parts = list((hub.root / "blobs" / "uploads").iterdir())
    assert [p.stat().st_size for p in parts] == [0]   # the one valid upload, empty


def test_patch_and_delete_also_arrive_as_post_with_a_method_override(hub: Hub) -> None:
    """Clients behind proxies that drop PATCH (tus-js-client's overridePatchMethod) send POST with
    X-HTTP-Method-Override; a POST without it is refused with the methods an upload takes."""
    url = _create(hub, 10)
    patching = {**_auth(), "Content-Type": "application/offset+octet-stream"}
    for offset, body in ((0, b"01234"), (5, b"56789")):
        reply = requests.post(url, data=body, timeout=10, headers={
            **patching, "Upload-Offset": str(offset), "X-HTTP-Method-Override": "PATCH",
            "Upload-Checksum": _sha256(body)})
        assert reply.status_code == 204 and reply.headers["Upload-Offset"] == str(offset + 5), reply.text
    assert [u.path.read_bytes() for u in hub.completed] == [b"0123456789"]
    plain = requests.post(url, data=b"x", headers={**patching, "Upload-Offset": "10"}, timeout=10)
    assert plain.status_code == 405 and plain.headers["Tus-Resumable"] == "1.0.0"
    assert set(plain.headers["Allow"].split(",")) == {"OPTIONS", "HEAD", "PATCH", "DELETE"}
    other = _create(hub, 10)
    assert requests.post(other, headers={**_auth("box-b"), "X-HTTP-Method-Override": "DELETE"},
                         timeout=10).status_code == 403
    assert requests.post(other, headers={**_auth(), "X-HTTP-Method-Override": "DELETE"}, timeout=10).status_code == 204
    assert requests.head(other, headers=_auth(), timeout=10).status_code == 404


def test_creating_again_with_the_same_idempotency_key_gives_the_same_upload(hub: Hub) -> None:
    key = "idempotency_key " + base64.b64encode(b"gate/1764547200000/motion").decode()
    first, second = _create(hub, 10, metadata=key), _create(hub, 10, metadata=key)
    assert first == second
    assert _create(hub, 10, owner="box-b", metadata=key) != first     # keys are per box
    reply = requests.post(hub.url, headers={**_auth(), "Upload-Length": "11", "Upload-Metadata": key}, timeout=10)
    assert reply.status_code == 409


def test_termination_and_expiration_delete_the_upload_and_its_bytes(hub: Hub) -> None:
    ended = _create(hub, 10)
    assert _patch(ended, 0, b"01234").status_code == 204
    assert requests.delete(ended, headers=_auth(), timeout=10).status_code == 204
    assert requests.head(ended, headers=_auth(), timeout=10).status_code == 404

    idle = _create(hub, 10)
    assert _patch(idle, 0, b"01234").status_code == 204
    hub.clock.advance(tus_uploads.EXPIRES_AFTER_MS / 1000 - 60)   # each PATCH pushes the expiry on
    assert _patch(idle, 5, b"5").status_code == 204
    hub.clock.advance(tus_uploads.EXPIRES_AFTER_MS / 1000 - 60)
    assert _offset(idle) == 6
    hub.clock.advance(2 * DAY_MS / 1000)
    assert requests.head(idle, headers=_auth(), timeout=10).status_code == 410
    assert hub.sweep() == 1
    assert requests.head(idle, headers=_auth(), timeout=10).status_code == 404
    assert list((hub.root / "blobs" / "uploads").iterdir()) == []


def test_a_rejected_upload_says_why_and_keeps_nothing(hub: Hub) -> None:
    claimed = "sha256 " + base64.b64encode(b"0" * 64).decode()
    url = _create(hub, 10, metadata=claimed)
    reply = _patch(url, 0, b"0123456789")
    assert reply.status_code == 422 and "hash" in reply.text
    assert requests.head(url, headers=_auth(), timeout=10).status_code == 422
    assert list((hub.root / "blobs" / "uploads").iterdir()) == [] and not hub.completed


def test_options_describes_the_server_without_credentials(hub: Hub) -> None:
    reply = requests.options(hub.url, timeout=10)
    assert reply.status_code == 204
    assert reply.headers["Tus-Version"] == "1.0.0" and reply.headers["Tus-Max-Size"] == str(MAX_BYTES)
    assert set(reply.headers["Tus-Extension"].split(",")) == {"creation", "expiration", "checksum", "termination"}
    assert set(reply.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "sha256"}


def test_creations_with_one_idempotency_key_at_the_same_moment_give_one_upload(hub: Hub) -> None:
    """A box whose first POST timed out sends it again while the first is still being answered (by another
    worker): both get the same upload, and there is one."""
    with ThreadPoolExecutor(8) as pool:
        for round_ in range(5):
            key = "idempotency_key " + base64.b64encode(f"gate/{round_}/motion".encode()).decode()
            together = threading.Barrier(8)

            def create(_: int) -> str:
                together.wait()
                return _create(hub, 10, metadata=key)
            assert len(set(pool.map(create, range(8)))) == 1, round_
    assert len(list((hub.root / "blobs" / "uploads").iterdir())) == 5
