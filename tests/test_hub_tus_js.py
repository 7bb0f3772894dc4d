"""The hub's tus 1.0 endpoint driven by the official JavaScript client, `tus-js-client` 4.x under Node.js
(tests/node/tus_upload.mjs, installed by `scripts/setup test`), against a real hub process (issue 12): the
server side is the protocol, not a protocol only edgenvr's own client speaks.

What a third-party uploader relies on: a signed evidence clip sent in several chunks is kept exactly (the hub
lists it with the SHA-256 of the bytes sent and answers with a receipt); a run cut off by the link is resumed
by a new run given the upload's URL, which starts at the hub's offset, not over; a client without a valid
signature of the box's enrolled key is refused (401, saying why) and leaves nothing on the hub.

Signing: tus-js-client cannot make RFC 9421 signatures, and none is written in JavaScript here. The Node script
wraps tus-js-client's NodeHttpStack in a custom `httpStack` whose send() asks `SigningService` (below: the
box's DeviceIdentity and edgenvr.evidence.request_signing.sign_request on a loopback port) for the signature
headers of each request before it leaves, so what is signed is exactly what tus-js-client sends.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import pytest
import requests

from edgenvr.config.checking import load_config
from edgenvr.evidence.audit import AuditTrail
from edgenvr.evidence.bundle import ExportRequest, export_clip, zip_export
from edgenvr.evidence.hub_receipts import read_receipt
from edgenvr.evidence.identity import (
    DeviceIdentity,
    device_identity,
    load_public_key,
    signing_key,
)
from edgenvr.evidence.request_signing import sign_request
from edgenvr.hub.hub_server import ENROL_PATH
from edgenvr.hub.tus_uploads import UPLOADS_PATH
from edgenvr.index import schema as index_schema
from edgenvr.index.queries import open_readonly
from edgenvr.index.writer import IndexWriter
from edgenvr.recording.segment_files import SegmentWriter
from edgenvr.storage.layout import StorageLayout
from tests.hub_site import Hub, running_hub
from tests.link_faults import FaultyLink

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "tus_upload.mjs"
BOX = "rt08-kuningan"
NODE_RUN_SECONDS = 20   # a run takes well under a second on loopback; this only bounds a hung one


@dataclass(frozen=True)
class Clip:
    """A zipped evidence export of the box (what its sync process uploads), and what the hub is told of it."""
    identity: DeviceIdentity
    archive: Path
    sha256: str
    metadata: dict[str, str]


@pytest.fixture(scope="module")
def tus_js_client() -> None:
    assert shutil.which("node"), "node is not on PATH: run scripts/setup test (it installs nodejs and npm)"
    package = NODE_DIR / "node_modules" / "tus-js-client" / "package.json"
    assert package.is_file(), f"tus-js-client is not installed in {NODE_DIR}: run scripts/setup test " \
                              f"(it runs npm install --no-audit --no-fund --prefix tests/node)"
    version = json.loads(package.read_text())["version"]
    assert version.startswith("4."), f"tests/node has tus-js-client {version}, not 4.x: run scripts/setup test"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, h264_clip: Path) -> Clip:
    """A real export of a box: a 4 s recorded segment (written by the recorder's SegmentWriter from the test
    clip, and indexed), exported as `edgenvr export` does (signed with the box's device key, in its audit
    trail) and zipped as its sync process sends it. No camera and no recording run: seconds count here."""
    root = tmp_path_factory.mktemp("box")
    layout = StorageLayout(root / "data")
    identity = device_identity(layout, BOX, "Pos RT 08 Kuningan")
    start_ms = int(time.time() * 1000) - 60_000
    with av.open(str(h264_clip)) as source:
        stream = source.streams.video[0]
        packets = [packet for packet in source.demux(stream) if packet.size]
        for index, packet in enumerate(packets):   # a raw H.264 stream has no timestamps: 25 fps
            packet.pts = packet.dts = index * int(1 / (25 * stream.time_base))
        segment = SegmentWriter(layout, "gate", stream, start_ms, packets[0].dts, stream.time_base)
        for packet in packets:
            segment.write(packet)
        record = segment.close(start_ms + len(packets) * 40, start_ms + len(packets) * 40)
    writer = IndexWriter(index_schema.connect(layout.index_path))
    writer.add_segment(record)
    writer.commit()
    writer.conn.close()
    config = root / "edgenvr.toml"
    config.write_text(f'[box]\nid = "{BOX}"\nname = "Pos RT 08 Kuningan"\n[storage]\ndata_dir = "{layout.data_dir}"\n'
                      'min_free = "0"\n[[cameras]]\nid = "gate"\nurl = "rtsp://192.0.2.1/gate"\n')
    from_ms, to_ms = start_ms + 500, record.end_ms - 500
    # What `edgenvr export` does, in this process (a CLI process would cost a second of the budget)
    with contextlib.closing(open_readonly(layout)) as conn, AuditTrail(layout, identity) as trail:
        export_clip(conn, load_config(config), layout, identity, trail,
                    ExportRequest("gate", from_ms, to_ms, root / "export", "motion event", "sync"))
    archive = root / "export.zip"
    zip_export(root / "export", archive)
    return Clip(identity, archive, hashlib.sha256(archive.read_bytes()).hexdigest(),
                {"camera": "gate", "kind": "motion", "start_ms": str(from_ms), "end_ms": str(to_ms),
                 "filename": archive.name})


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, clip: Clip, tus_js_client: None) -> Iterator[Hub]:
    """A hub the box is enrolled with, shared by the module's tests (a hub process and its CLI cost seconds):
    each test looks only at its own uploads and clips."""
    with running_hub(tmp_path_factory.mktemp("hub")) as running:
        enrolled = requests.post(running.url + ENROL_PATH, json={
            "token": running.token(BOX), "box": BOX, "public_key": clip.identity.public_pem.decode()}, timeout=10)
        assert enrolled.status_code == 200, enrolled.text
        yield running


class SigningService:
    """The box's request signer on a loopback port, for the Node client: POST a JSON {method, path (with the
    query), headers, body (base64, or null for none and for tus chunks)} and get back the headers to add
    (Signature-Input, Signature, and Content-Digest for a body). `signed` lists what it signed."""

    def __init__(self, identity: DeviceIdentity) -> None:
        self.identity = identity
        self.signed: list[tuple[str, str]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body = base64.b64decode(asked["body"]) if asked["body"] is not None else None
                headers = sign_request(service.identity, asked["method"], asked["path"], asked["headers"], body,
                                       now_s=time.time())
                service.signed.append((asked["method"], asked["path"]))
                reply = json.dumps({k: v for k, v in headers.items() if k not in asked["headers"]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass   # the test reads `signed`, not stderr

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/sign"

    def __enter__(self) -> SigningService:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


@dataclass
class Run:
    """One tus-js-client run: its exit code and the JSON lines it reported (tests/node/tus_upload.mjs)."""
    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    @property
    def final(self) -> dict[str, Any]:
        return self.events[-1] if self.events else {}

    def sent(self, method: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "request" and method in (None, e["method"])]

    def answered(self) -> list[tuple[str, int]]:
        return [(e["method"], e["status"]) for e in self.events if e["event"] == "response"]

    def url(self) -> str:
        return next(e["url"] for e in self.events if e["event"] == "url")

    def __str__(self) -> str:
        return f"exit {self.returncode}\n" + "\n".join(map(json.dumps, self.events)) + f"\n{self.stderr[-3000:]}"


def tus_js(job: dict[str, Any], on_event: Callable[[dict[str, Any]], None] | None = None) -> Run:
    """Run tus-js-client once; `on_event` sees each reported line as it comes (to cut the link mid-upload)."""
    process = subprocess.Popen(["node", str(SCRIPT), json.dumps(job)], cwd=NODE_DIR, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(NODE_RUN_SECONDS, process.kill)   # a hung client fails the test, not CI
    watchdog.start()
    events: list[dict[str, Any]] = []
    try:
        assert process.stdout is not None and process.stderr is not None
        for line in process.stdout:
            events.append(json.loads(line))
            if on_event is not None:
                on_event(events[-1])
        stderr = process.stderr.read()
        returncode = process.wait()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    return Run(returncode, events, stderr)


def _job(hub_url: str, clip: Clip, signer: SigningService | None, chunk_bytes: int, key: str,
         **options: Any) -> dict[str, Any]:
    return {"endpoint": hub_url + UPLOADS_PATH, "file": str(clip.archive), "chunkSize": chunk_bytes,
            "metadata": {**clip.metadata, "idempotency_key": key}, "signer": signer.url if signer else None,
            **options}


def _signed(hub: Hub, identity: DeviceIdentity, method: str, path: str, headers: dict[str, str]
            ) -> requests.Response:
    signed = sign_request(identity, method, path, {"Tus-Resumable": "1.0.0", **headers}, None, now_s=time.time())
    return requests.request(method, hub.url + path, headers=signed, timeout=10)


def _state(hub: Hub, identity: DeviceIdentity, upload_url: str) -> tuple[int, int]:
    """The upload's (offset, length) as the hub reports them to its box (a signed HEAD)."""
    reply = _signed(hub, identity, "HEAD", urlsplit(upload_url).path, {})
    assert reply.status_code == 200, reply.status_code
    return int(reply.headers["Upload-Offset"]), int(reply.headers["Upload-Length"])


def _receipt(hub: Hub, run: Run) -> dict[str, Any]:
    """The receipt tus-js-client got on the last PATCH's answer, once it verifies with the hub's key."""
    assert run.final["receipt"], run
    return read_receipt(run.final["receipt"], load_public_key((hub.data_dir / "keys" / "hub.pub").read_bytes()))


def _listed(hub: Hub) -> list[tuple[str, str, str, str]]:
    clips = [json.loads(line) for line in hub.cli("clips", "--json").stdout.splitlines()]
    return [(c["id"], c["box"], c["camera"], c["sha256"]) for c in clips]


def _hub_db(hub: Hub) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(f"file:{hub.data_dir / 'hub.sqlite3'}?mode=ro", uri=True))


def _clip_row(hub: Hub, clip_id: str) -> tuple[str, str, str, int] | None:
    with _hub_db(hub) as db:
        return db.execute("SELECT box, camera, sha256, bytes FROM clips WHERE id = ?", (clip_id,)).fetchone()


def _stored(hub: Hub) -> tuple[set[tuple[str, int]], set[tuple[str, int]], int]:
    """Everything the hub holds: uploads (id, offset) in its database, their part files (name, size) and clips."""
    with _hub_db(hub) as db:
        uploads = {(row[0], row[1]) for row in db.execute('SELECT id, "offset" FROM uploads')}
        clips = db.execute("SELECT COUNT(*) FROM clips").fetchone()[0]
    parts = {(p.name, p.stat().st_size) for p in (hub.data_dir / "blobs" / "uploads").iterdir()}
    return uploads, parts, clips


@pytest.mark.parametrize("override", [False, True], ids=["patch", "post-override"])
def test_tus_js_client_uploads_a_signed_clip_in_chunks_and_the_hub_lists_it_with_its_sha256(
        clip: Clip, hub: Hub, override: bool) -> None:
    """Also with overridePatchMethod, as behind a proxy that drops PATCH: each chunk a POST with
    X-HTTP-Method-Override."""
    size = clip.archive.stat().st_size
    chunk = size // 5 + 1
    chunk_method = "POST" if override else "PATCH"
    with SigningService(clip.identity) as signer:
        run = tus_js(_job(hub.url, clip, signer, chunk, f"gate/motion/whole/{override}",
                          options={"overridePatchMethod": override}))
        signed = list(signer.signed)
    assert run.returncode == 0 and run.final["event"] == "success", run
    chunks = [e for e in run.sent(chunk_method) if e["upload_offset"] is not None]
    assert [e["upload_offset"] for e in chunks] == [str(at) for at in range(0, size, chunk)], run
    assert len(chunks) == 5
    assert run.answered() == [("POST", 201)] + [(chunk_method, 204)] * 5, run
    assert [(e["method"], urlsplit(e["url"]).path) for e in run.sent()] == signed   # each request signed

    receipt = _receipt(hub, run)
    assert (receipt["sha256"], receipt["box"], receipt["camera"], receipt["bytes"]) == (clip.sha256, BOX, "gate", size)
    assert (receipt["clip"], BOX, "gate", clip.sha256) in _listed(hub)
    assert (hub.data_dir / "blobs" / "clips" / f"{receipt['clip']}.zip").read_bytes() == clip.archive.read_bytes()
    assert _state(hub, clip.identity, run.final["url"]) == (size, size)


def test_an_interrupted_tus_js_upload_resumes_in_a_new_run_at_the_hubs_offset(clip: Clip, hub: Hub) -> None:
    """The cable is cut in the middle of the third chunk: the hub keeps what arrived of it (no Upload-Checksum:
    tus core), so its offset is past the chunks the client saw accepted, and the new run must ask (HEAD)."""
    size = clip.archive.stat().st_size
    chunk = 8 * 1024
    with SigningService(clip.identity) as signer, FaultyLink(("127.0.0.1", hub.port)) as link:
        link_url = f"http://127.0.0.1:{link.port}"
        link.throttle(32 * 1024, "up")   # a chunk takes a quarter of a second: time to cut one mid-way

        def cut_inside_the_third_chunk(event: dict[str, Any]) -> None:
            if event["event"] == "request" and event["upload_offset"] == str(2 * chunk):
                sent, deadline = link.bytes_up, time.monotonic() + 5
                while link.bytes_up < sent + 4096 and time.monotonic() < deadline:   # its headers and ~3 KB
                    time.sleep(0.01)
                link.down()
        first = tus_js(_job(link_url, clip, signer, chunk, "gate/motion/resumed"), cut_inside_the_third_chunk)
        assert first.returncode == 1 and first.final["event"] == "error" and first.final["status"] is None, first
        assert [e["accepted"] for e in first.events if e["event"] == "chunk"] == [chunk, 2 * chunk], first
        upload_url = first.url()
        offset, length = _state(hub, clip.identity, upload_url)   # asked of the hub itself, not through the link
        assert 2 * chunk < offset < 3 * chunk and length == size, offset

        link.down(False)                 # the link is back; a new run of the tool, given the upload's URL
        link.throttle(None)
        second = tus_js(_job(link_url, clip, signer, chunk, "gate/motion/resumed", uploadUrl=upload_url))
    assert second.returncode == 0 and second.final["event"] == "success", second
    assert [e["method"] for e in second.sent()][:2] == ["HEAD", "PATCH"] and not second.sent("POST"), second
    assert second.sent("PATCH")[0]["upload_offset"] == str(offset), "the new run did not start at the hub's offset"
    assert second.final["url"] == upload_url
    receipt = _receipt(hub, second)
    assert receipt["sha256"] == clip.sha256
    assert _clip_row(hub, receipt["clip"]) == (BOX, "gate", clip.sha256, size)
    print(f"\ncut with {offset} of {size} bytes committed; the new run resumed there with "
          f"{len(second.sent('PATCH'))} PATCHes ({-(-size // chunk)} for the whole clip)")


def test_tus_js_client_without_a_valid_signature_is_refused_and_nothing_is_stored(
        clip: Clip, hub: Hub, tmp_path: Path) -> None:
    size = clip.archive.stat().st_size
    created = _signed(hub, clip.identity, "POST", UPLOADS_PATH, {"Upload-Length": str(size)})
    assert created.status_code == 201
    existing = hub.url + created.headers["Location"]   # the box's own upload, which the refused try to resume
    before = _stored(hub)
    impostor = DeviceIdentity(BOX, "impostor", signing_key(tmp_path / "other.key", tmp_path / "other.pub"))
    for signer_identity, why in ((None, "not signed"), (impostor, "does not verify")):
        with contextlib.ExitStack() as stack:
            signer = stack.enter_context(SigningService(signer_identity)) if signer_identity else None
            fresh = tus_js(_job(hub.url, clip, signer, 16 * 1024, "gate/motion/refused"))
            resuming = tus_js(_job(hub.url, clip, signer, 16 * 1024, "gate/motion/refused", endpoint=None,
                                   uploadUrl=existing))
        assert fresh.returncode == 1 and fresh.answered() == [("POST", 401)], fresh
        assert why in fresh.final["body"], fresh   # the answer says why (a HEAD's answer has no body)
        assert resuming.returncode == 1 and resuming.answered() == [("HEAD", 401)], resuming
    assert _stored(hub) == before
    upload_id = urlsplit(existing).path.rsplit("/", 1)[1]
    assert (upload_id, 0) in before[0] and (f"{upload_id}.part", 0) in before[1]
