"""A box and the city hub, each a real process of its own on loopback (issue 12, first step): the box enrols with
its one-time token, uploads an evidence export (zipped) over tus with every request signed by its device key,
and gets a receipt signed by the hub naming the SHA-256 it computed; the hub lists the clip and writes it back
out as a folder that `edgenvr verify` accepts with the box's key. Nobody else gets in: unsigned, re-keyed,
revoked, other boxes' requests, re-signed or unsafe zips, spent or foreign tokens are refused and leave nothing.

Every hub test runs twice: on the default hub (one process, SQLite) and on `[hub] workers = 2` with PostgreSQL
(tests/hub_site.py), whose workers the kernel hands connections to in turn: same results.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import time
import tomllib
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from edgenvr.config.checking import parse_config
from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.evidence.bundle import zip_export
from edgenvr.evidence.identity import DeviceIdentity, device_identity, signing_key
from edgenvr.evidence.request_signing import sign_request
from edgenvr.hub.tus_uploads import RELEASE_WAIT_SECONDS
from edgenvr.simulator import SimulatedCamera
from edgenvr.storage.layout import StorageLayout
from edgenvr.sync.hub_client import Delivered, HubClient, HubRefused, HubUnreachable
from edgenvr.sync.uploader import Throttle
from tests.conftest import config_text, edgenvr, start_supervisor
from tests.hub_site import (
    POSTGRES_2_WORKERS,
    Hub,
    backend_params,
    postgres_for,
    running_hub,
)
from tests.link_faults import FaultyLink

BOX = "rt08-kuningan"
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Export:
    folder: Path
    archive: Path
    camera: str
    start_ms: int
    end_ms: int


@dataclass
class Box:
    config: Path
    data_dir: Path
    identity: DeviceIdentity
    exports: list[Export]


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, h264_clip: Path, simulator_ready: None) -> Box:
    """A box that recorded ~8 s of a test camera, with two exports of it zipped as the uploader sends them."""
    root = tmp_path_factory.mktemp("box")
    data_dir, config = root / "data", root / "edgenvr.toml"
    with SimulatedCamera({"gate": (h264_clip, "h264", 25)}, log_path=root / "camera.log") as camera:
        config.write_text(f'[box]\nid = "{BOX}"\nname = "Pos RT 08 Kuningan"\n'
                          + config_text(data_dir, {"gate": camera.url("gate")}, segment_seconds=2))
        supervisor = start_supervisor(config, root / "edgenvr.log")
        try:
            supervisor.wait_for_log("recording 1 cameras")
            time.sleep(8)
        finally:
            assert supervisor.stop() == 0
    rows = [json.loads(line) for line in edgenvr("segments", "--config", str(config), "--json").stdout.splitlines()]
    exports = []
    for number, (start, end) in enumerate(((rows[0]["start_ms"], rows[1]["end_ms"]),
                                           (rows[1]["start_ms"], rows[-1]["end_ms"]))):
        folder = root / f"export-{number}"
        result = edgenvr("export", "--config", str(config), "--camera", "gate", "--from", f"{start}ms", "--to",
                         f"{end}ms", "--out", str(folder), "--reason", "motion event", "--by", "sync")
        assert result.returncode == 0, result.stderr
        exports.append(Export(folder, _zip(folder, root / f"export-{number}.zip"), "gate", start, end))
    return Box(config, data_dir, device_identity(StorageLayout(data_dir), BOX, "Pos RT 08"), exports)


def _zip(folder: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    """The folder zipped as the sync process sends it, plus `extra` entries (what a forger might add)."""
    zip_export(folder, archive)
    with zipfile.ZipFile(archive, "a") as out:
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return archive


@pytest.fixture(params=backend_params())
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hub]:
    with running_hub(tmp_path, request.param, postgres_for(request, request.param)) as running:
        yield running


@pytest.fixture
def sqlite_hub(tmp_path: Path) -> Iterator[Hub]:
    """The default hub alone, for what the hub's backend cannot change (the box's own upload pacing)."""
    with running_hub(tmp_path) as running:
        yield running


def _token(hub: Hub, box: str = BOX) -> str:
    return hub.token(box)


def _metadata(export: Export, key: str, camera: str | None = None) -> dict[str, str]:
    return {"camera": camera or export.camera, "kind": "motion", "start_ms": str(export.start_ms),
            "end_ms": str(export.end_ms), "idempotency_key": key}


async def _send(hub: Hub, identity: DeviceIdentity, token: str | None, archive: Path, metadata: dict[str, str],
                hub_key: bytes | None = None) -> tuple[bytes, Delivered]:
    async with HubClient(hub.url, identity, hub_key_pem=hub_key, chunk_bytes=256 * 1024) as client:
        if token is not None:
            hub_key = await client.enrol(token)
        return hub_key or b"", await client.upload(archive, metadata)


def test_an_enrolled_box_uploads_an_export_and_gets_a_receipt_for_exactly_those_bytes(
        box: Box, hub: Hub, tmp_path: Path) -> None:
    token = _token(hub)
    hub_key, delivered = asyncio.run(_send(hub, box.identity, token, box.exports[0].archive,
                                           _metadata(box.exports[0], "gate/motion/1")))
    sha256 = hashlib.sha256(box.exports[0].archive.read_bytes()).hexdigest()
    assert delivered.receipt["sha256"] == sha256 and delivered.receipt["box"] == BOX
    assert delivered.receipt["camera"] == "gate" and delivered.receipt["kind"] == "motion"
    assert (hub.data_dir / "keys" / "hub.pub").read_bytes() == hub_key

    # The same clip again (a box that lost its outbox state): the same receipt, one copy on the hub.
    _, again = asyncio.run(_send(hub, box.identity, None, box.exports[0].archive,
                                 _metadata(box.exports[0], "gate/motion/1"), hub_key))
    assert again.receipt == delivered.receipt
    listed = [json.loads(line) for line in hub.cli("clips", "--json").stdout.splitlines()]
    assert [(c["id"], c["box"], c["camera"], c["sha256"]) for c in listed] == \
        [(delivered.receipt["clip"], BOX, "gate", sha256)]

    out = tmp_path / "fetched"
    fetched = hub.cli("fetch", delivered.receipt["clip"], "--out", str(out))
    assert fetched.returncode == 0, fetched.stderr
    verified = edgenvr("verify", str(out), "--pubkey", str(box.data_dir / "device.pub"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert hub.cli("fetch", delivered.receipt["clip"], "--out", str(out)).returncode == 1   # never over files


def test_requests_not_signed_by_the_enrolled_key_are_refused_and_store_nothing(box: Box, hub: Hub,
                                                                              tmp_path: Path) -> None:
    token = _token(hub)
    hub_key, _ = asyncio.run(_send(hub, box.identity, token, box.exports[0].archive,
                                   _metadata(box.exports[0], "first")))
    created = {"Tus-Resumable": "1.0.0", "Upload-Length": "10"}
    assert requests.post(hub.url + "/api/v1/uploads/", headers=created, timeout=10).status_code == 401

    impostor = DeviceIdentity(BOX, "x", signing_key(tmp_path / "other.key", tmp_path / "other.pub"))
    signed = sign_request(impostor, "POST", "/api/v1/uploads/", created, None, now_s=time.time())
    reply = requests.post(hub.url + "/api/v1/uploads/", headers=signed, timeout=10)
    assert reply.status_code == 401 and "signature" in reply.text

    stale = sign_request(box.identity, "POST", "/api/v1/uploads/", created, None, now_s=time.time() - 3600)
    assert requests.post(hub.url + "/api/v1/uploads/", headers=stale, timeout=10).status_code == 401

    # Another key cannot take over the box with the spent token; a token is for its box only.
    with pytest.raises(HubRefused) as refused:
        asyncio.run(_send(hub, impostor, token, box.exports[1].archive, _metadata(box.exports[1], "x")))
    assert refused.value.status == 403
    other_token = _token(hub, "rt09-menteng")
    with pytest.raises(HubRefused) as refused:
        asyncio.run(_send(hub, box.identity, other_token, box.exports[1].archive, _metadata(box.exports[1], "x")))
    assert refused.value.status == 403 and "another box" in str(refused.value)

    assert hub.cli("revoke", "--box", BOX).returncode == 0
    with pytest.raises(HubRefused) as refused:
        asyncio.run(_send(hub, box.identity, None, box.exports[1].archive, _metadata(box.exports[1], "second"),
                          hub_key))
    assert refused.value.status == 401
    assert len(hub.cli("clips", "--json").stdout.splitlines()) == 1


def test_a_box_cannot_touch_another_boxs_upload(box: Box, hub: Hub, tmp_path: Path) -> None:
    other = DeviceIdentity("rt09-menteng", "x", signing_key(tmp_path / "rt09.key", tmp_path / "rt09.pub"))

    async def scenario() -> int:
        async with HubClient(hub.url, box.identity) as mine, HubClient(hub.url, other) as theirs:
            await mine.enrol(_token(hub))
            await theirs.enrol(_token(hub, "rt09-menteng"))
            upload = await mine.create(box.exports[0].archive.stat().st_size, _metadata(box.exports[0], "k"))
            with pytest.raises(HubRefused) as refused:
                await theirs.offset(upload)
            return refused.value.status
    assert asyncio.run(scenario()) == 403


@pytest.mark.parametrize("damage, named", [
    ("resigned", "does not verify"),      # a folder re-signed with another key and re-summed
    ("unsafe_name", "not a plain file name"),
    ("other_camera", "not what the upload says"),
    ("not_a_zip", "not a readable zip"),
    ("twice", "twice"),                   # a second manifest.json after the signed one
    ("compressed", "is compressed"),      # what a zip bomb needs
])
def test_a_clip_that_is_not_the_boxs_signed_evidence_is_rejected_and_not_kept(
        box: Box, hub: Hub, tmp_path: Path, damage: str, named: str) -> None:
    export = box.exports[0]
    metadata = _metadata(export, damage)
    if damage == "resigned":
        folder = tmp_path / "resigned"
        shutil.copytree(export.folder, folder)
        forger = DeviceIdentity(BOX, "x", signing_key(tmp_path / "f.key", tmp_path / "f.pub"))
        (folder / "manifest.sig").write_bytes(forger.sign((folder / "manifest.json").read_bytes()))
        (folder / "device.pub").write_bytes(forger.public_pem)
        sums = [f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}"
                for n in sorted(p.name for p in folder.iterdir() if p.name != "SHA256SUMS")]
        (folder / "SHA256SUMS").write_text("\n".join(sums) + "\n")
        archive = _zip(folder, tmp_path / "resigned.zip")
    elif damage == "unsafe_name":
        archive = _zip(export.folder, tmp_path / "unsafe.zip", {"../escape.txt": b"x"})
    elif damage == "other_camera":
        archive, metadata = export.archive, _metadata(export, damage, camera="yard")
    elif damage == "twice":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # zipfile warns of the duplicate name, as meant
            archive = _zip(export.folder, tmp_path / "twice.zip", {"manifest.json": b"{}"})
    elif damage == "compressed":
        archive = tmp_path / "deflated.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
            for path in sorted(export.folder.iterdir()):
                out.write(path, path.name)
    else:
        archive = tmp_path / "junk.zip"
        archive.write_bytes(b"PK\x03\x04" + b"\0" * 1000)
    with pytest.raises(HubRefused) as refused:
        asyncio.run(_send(hub, box.identity, _token(hub), archive, metadata))
    assert refused.value.status == 422 and named in str(refused.value), str(refused.value)
    assert hub.cli("clips", "--json").stdout == ""
    assert not list((hub.data_dir / "blobs" / "clips").glob("*.zip"))
    assert not (tmp_path.parent / "escape.txt").exists() and not list((hub.data_dir / "blobs").rglob("escape*"))


def test_enrolment_and_health_say_only_what_they_must(box: Box, hub: Hub) -> None:
    health = requests.get(hub.url + "/api/health", timeout=5).json()
    assert set(health) == {"status", "version", "worker"} and isinstance(health["worker"], int)
    for body in (b"not json", b"{}", json.dumps({"token": 1, "box": BOX, "public_key": "x"}).encode()):
        assert requests.post(hub.url + "/api/v1/enrol", data=body, timeout=5).status_code == 400
    unknown = requests.post(hub.url + "/api/v1/enrol", json={"token": "enrol_guess", "box": BOX,
                                                             "public_key": box.identity.public_pem.decode()},
                            timeout=5)
    assert unknown.status_code == 403 and "unknown enrolment token" in unknown.text
    assert "enrol_guess" not in unknown.text


def test_an_upload_through_a_link_that_keeps_dropping_arrives_once_resending_at_most_a_chunk_per_drop(
        box: Box, hub: Hub) -> None:
    """The link is cut at random (seeded, ~12 times over the clip): each retry asks the hub where it is and
    goes on; the clip arrives exactly once, and each drop costs at most the chunk that was in flight."""
    archive = box.exports[1].archive
    size = archive.stat().st_size
    chunk = max(4096, size // 40)
    hub_key, _ = asyncio.run(_send(hub, box.identity, _token(hub), box.exports[0].archive,
                                   _metadata(box.exports[0], "warm-up")))
    with FaultyLink(("127.0.0.1", hub.port)) as link:
        link.drop_at_random(mean_bytes=size // 12, seed=12)
        known: list[str] = []

        async def until_delivered() -> tuple[Delivered, int]:
            attempts = 0
            async with HubClient(f"http://127.0.0.1:{link.port}", box.identity, hub_key_pem=hub_key,
                                 chunk_bytes=chunk) as client:
                while True:
                    attempts += 1
                    try:
                        return await client.upload(archive, _metadata(box.exports[1], "dropping"),
                                                   upload=known[-1] if known else None,
                                                   progress=lambda url, _at, _size: known.append(url)), attempts
                    except HubUnreachable:
                        assert attempts < 500, "no progress through the dropping link"
        delivered, attempts = asyncio.run(until_delivered())
        drops, sent = link.drops, link.bytes_up
    assert drops >= 5, f"the link dropped only {drops} times: the test proves little"
    assert delivered.receipt["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    clips = [json.loads(line) for line in hub.cli("clips", "--json").stdout.splitlines()]
    assert sorted(c["sha256"] for c in clips) == sorted(
        hashlib.sha256(e.archive.read_bytes()).hexdigest() for e in box.exports)
    overhead = sent - size   # headers of every request, plus what each drop lost in flight
    print(f"\n{size} bytes through {drops} drops in {attempts} attempts: {sent} bytes sent up "
          f"({overhead / max(drops, 1):.0f} bytes over per drop, chunk {chunk})")
    assert overhead <= drops * (chunk + 4096) + attempts * 4096, overhead


def test_a_chunk_altered_in_flight_is_refused_sent_again_and_the_clip_is_right(
        box: Box, hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    archive = box.exports[1].archive
    with FaultyLink(("127.0.0.1", hub.port)) as link:
        async def send() -> Delivered:
            async with HubClient(f"http://127.0.0.1:{link.port}", box.identity, chunk_bytes=32 * 1024) as client:
                await client.enrol(_token(hub))
                link.corrupt_next("up", at_byte=20_000)   # inside the first chunk's body on this connection
                return await client.upload(archive, _metadata(box.exports[1], "altered"))
        with caplog.at_level("INFO", logger="edgenvr.sync.hub_client"):
            delivered = asyncio.run(send())
        assert link.corruptions, "nothing was altered: the test proves nothing"
    assert any(" 460 " in record.getMessage() for record in caplog.records), caplog.text
    assert delivered.receipt["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert "does not match its sha256 checksum" in hub.log.read_text()


def test_the_upload_cap_holds_within_ten_percent_over_thirty_seconds(box: Box, sqlite_hub: Hub,
                                                                    tmp_path: Path) -> None:
    """[sync] upload_kbps = 2000: what crosses the link (counted by the proxy, headers included) stays within
    10% of 2 Mbit/s over 30 s, however fast the link is. (The box paces itself: on one hub backend only.)"""
    hub = sqlite_hub
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))   # more than 30 s at the cap
    throttle = Throttle(2000, SYSTEM_CLOCK)
    with FaultyLink(("127.0.0.1", hub.port)) as link:
        async def send_for(seconds: float) -> tuple[int, float]:
            async with HubClient(f"http://127.0.0.1:{link.port}", box.identity, chunk_bytes=256 * 1024,
                                 pace=throttle.spend) as client:
                await client.enrol(_token(hub))
                before, started = link.bytes_up, time.monotonic()
                task = asyncio.create_task(client.upload(big, _metadata(box.exports[0], "big")))
                await asyncio.sleep(seconds)
                sent, took = link.bytes_up - before, time.monotonic() - started
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, HubRefused, HubUnreachable):
                    await task
                return sent, took
        sent, took = asyncio.run(send_for(30))
    rate_kbps = sent * 8 / took / 1000
    print(f"\nupload capped at 2000 kbit/s: {rate_kbps:.0f} kbit/s over {took:.1f} s")
    assert 1800 <= rate_kbps <= 2200, rate_kbps


class _Halfway(Exception):
    """Raised by a progress callback: the box stops sending here."""


def test_a_hub_killed_mid_upload_comes_back_and_the_upload_resumes_at_its_offset(box: Box, hub: Hub) -> None:
    """kill -9 of the hub while a clip is half sent (with workers: gunicorn's master, and its workers with it);
    the hub started again answers HEAD with every byte it had committed, the box goes on with the same upload,
    and the clip arrives once."""
    archive = box.exports[1].archive
    size = archive.stat().st_size
    metadata = _metadata(box.exports[1], "killed")
    uploads: list[str] = []

    def halfway(upload: str, at: int, _size: int) -> None:
        uploads.append(upload)
        if at >= size // 2:
            raise _Halfway

    async def first_half() -> tuple[bytes, int]:
        async with HubClient(hub.url, box.identity, chunk_bytes=16 * 1024) as client:
            hub_key = await client.enrol(hub.token(BOX))
            with pytest.raises(_Halfway):
                await client.upload(archive, metadata, progress=halfway)
            return hub_key, (await client.offset(uploads[-1]))[0]
    hub_key, committed = asyncio.run(first_half())
    assert size // 2 <= committed < size

    hub.kill_and_restart()

    async def the_rest() -> tuple[int, Delivered]:
        async with HubClient(hub.url, box.identity, hub_key_pem=hub_key, chunk_bytes=16 * 1024) as client:
            at, _ = await client.offset(uploads[-1])
            return at, await client.upload(archive, metadata, upload=uploads[-1])
    resumed_at, delivered = asyncio.run(the_rest())
    assert resumed_at == committed
    assert delivered.receipt["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    clips = [json.loads(line) for line in hub.cli("clips", "--json").stdout.splitlines()]
    assert [c["sha256"] for c in clips] == [delivered.receipt["sha256"]]


def _signed(box: Box, method: str, path: str, headers: dict[str, str]) -> dict[str, str]:
    return sign_request(box.identity, method, path, {"Tus-Resumable": "1.0.0", **headers}, None, now_s=time.time())


def test_two_workers_share_an_upload_a_stalled_patch_on_one_is_taken_over_by_a_head_on_the_other(
        box: Box, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """[hub] workers = 2 on PostgreSQL: a box's link froze mid-PATCH on one worker and its HEAD, on a new
    connection, reaches the other. The HEAD answers at once with what the stalled PATCH committed (the first
    worker let go because the second asked, through the database); then the first worker is killed (-9) and
    the upload completes on what is left: the clip arrives once, and the master still stops cleanly."""
    archive = box.exports[1].archive
    data = archive.read_bytes()
    half = len(data) // 2
    with running_hub(tmp_path, POSTGRES_2_WORKERS, postgres_for(request, POSTGRES_2_WORKERS)) as hub:
        async def enrol_and_create() -> tuple[bytes, str]:
            async with HubClient(hub.url, box.identity) as client:
                hub_key = await client.enrol(hub.token(BOX))
                return hub_key, await client.create(len(data), _metadata(box.exports[1], "two-workers"))
        hub_key, upload = asyncio.run(enrol_and_create())

        # Connections kept open (keep-alive: each stays with the worker that accepted it) until two workers
        # have answered; which worker accepts which connection is the kernel's choice.
        by_worker: dict[int, http.client.HTTPConnection] = {}
        deadline = time.monotonic() + 30
        while len(by_worker) < 2:
            assert time.monotonic() < deadline, f"one worker took every connection: {list(by_worker)}"
            connection = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
            connection.request("GET", "/api/health")
            worker = json.loads(connection.getresponse().read())["worker"]
            if worker in by_worker:
                connection.close()
            else:
                by_worker[worker] = connection
        (first, stalled), (_, resuming) = by_worker.items()

        stalled.putrequest("PATCH", upload)
        patch = _signed(box, "PATCH", upload, {"Upload-Offset": "0",
                                               "Content-Type": "application/offset+octet-stream"})
        for name, value in {**patch, "Content-Length": str(len(data))}.items():
            stalled.putheader(name, value)
        stalled.endheaders()
        stalled.send(data[:half])
        time.sleep(1.0)                          # the first worker has read what was sent; the link is frozen
        started = time.monotonic()
        resuming.request("HEAD", upload, headers=_signed(box, "HEAD", upload, {}))
        head = resuming.getresponse()
        head.read()
        assert head.status == 200 and head.getheader("Upload-Offset") == str(half)
        assert time.monotonic() - started < RELEASE_WAIT_SECONDS
        log = hub.log.read_text()
        assert f"[hub worker {first}] edgenvr.hub.tus_uploads: upload {upload.rsplit('/', 1)[1]}: let go of a " \
               f"stalled PATCH at {half} bytes" in log, log[-3000:]

        os.kill(first, signal.SIGKILL)          # a worker dies: nothing it knew was only its own
        # until it has died its listening socket still takes connections, which its death then resets (a box
        # tries again later; this test sends once): go on once it is gone
        with contextlib.suppress(psutil.NoSuchProcess):
            dying = psutil.Process(first)
            deadline = time.monotonic() + 10
            while dying.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
                time.sleep(0.02)
        stalled.close()
        resuming.close()

        async def finish() -> Delivered:
            async with HubClient(hub.url, box.identity, hub_key_pem=hub_key, chunk_bytes=64 * 1024) as client:
                return await client.upload(archive, _metadata(box.exports[1], "two-workers"), upload=upload)
        delivered = asyncio.run(finish())
        assert delivered.receipt["sha256"] == hashlib.sha256(data).hexdigest()
        clips = [json.loads(line) for line in hub.cli("clips", "--json").stdout.splitlines()]
        assert [c["sha256"] for c in clips] == [delivered.receipt["sha256"]]


@pytest.mark.parametrize("backend", backend_params())
def test_the_hub_serves_https_with_its_own_certificate_on_every_worker(
        request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> None:
    """tls = true: the hub makes its key and certificate at its first start (before any worker), and every
    worker serves with them: a client that pins keys/tls.crt gets in on any connection."""
    with running_hub(tmp_path, backend, postgres_for(request, backend), tls=True) as hub:
        workers = set()
        deadline = time.monotonic() + 30
        while len(workers) < (2 if backend == POSTGRES_2_WORKERS else 1):
            assert time.monotonic() < deadline, workers
            reply = requests.get(hub.url + "/api/health", verify=hub.verify, timeout=5)
            workers.add(reply.json()["worker"])
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(hub.url + "/api/health", timeout=5)   # not signed by anyone the system trusts


def test_the_sync_table_enrol_prints_gets_a_box_through_to_a_tls_hub_pinned_by_its_fingerprint(
        box: Box, tmp_path: Path) -> None:
    """What the city IT office pastes into a box's config, as `edgenvr hub enrol` prints it, is enough: the box
    enrols and uploads over the hub's self-signed certificate, pinned; another pin is refused before anything
    is sent (the token stays unused)."""
    with running_hub(tmp_path, tls=True) as hub:
        printed = hub.cli("enrol", "--box", BOX, "--site", "Pos RT 08")
        assert printed.returncode == 0, printed.stderr
        table = printed.stderr[printed.stderr.index("[sync]"):].rstrip(")\n")
        sync = tomllib.loads(table)["sync"]
        assert sync["enrolment_token"] == printed.stdout.strip()
        assert sync["hub_url"] == f"https://127.0.0.1:{hub.port}"
        pinned = parse_config(f'[box]\nid = "{BOX}"\n{table}\n').sync
        wrong = "AB:" * 31 + "AB"

        async def enrol_and_send(fingerprint: str) -> Delivered:
            async with HubClient(pinned.hub_url, box.identity, tls_fingerprint=fingerprint,
                                 chunk_bytes=256 * 1024) as client:
                await client.enrol(sync["enrolment_token"])
                return await client.upload(box.exports[0].archive, _metadata(box.exports[0], "gate/motion/tls"))
        with pytest.raises(HubUnreachable):
            asyncio.run(enrol_and_send(wrong))
        delivered = asyncio.run(enrol_and_send(pinned.hub_fingerprint or ""))
        assert delivered.receipt["sha256"] == hashlib.sha256(box.exports[0].archive.read_bytes()).hexdigest()
