"""The box's uploads to the city hub when the link and the hub fail under them (issue 12): what a site relies
on is that every clip reaches the hub exactly once, as the bytes the box signed, whatever is cut, and that a
failure costs at most the chunk that was in flight, never the clip sent again from its start.

Real components: the sync process's Uploader (in the test process, on a real index with real MP4 segments:
tests.synced_box) and `edgenvr hub` in a process of its own, through a TCP proxy that cuts the link
(tests.link_faults) or killed with SIGKILL and started again on the same port and data.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from edgenvr.core.clock import Clock
from edgenvr.core.records import EventKind
from edgenvr.evidence.hub_receipts import read_receipt
from edgenvr.evidence.identity import load_public_key
from edgenvr.evidence.verification import verify_export
from edgenvr.sync import outbox
from edgenvr.sync.uploader import MIN_CHUNK_BYTES, Throttle, Uploader
from tests.conftest import edgenvr
from tests.hub_site import Hub, running_hub
from tests.link_faults import FaultyLink
from tests.synced_box import BOX_ID, SEGMENT_SECONDS, SyncedBox, open_footage, run_round
from tests.web_site import free_port

pytestmark = pytest.mark.slow

CHUNK = MIN_CHUNK_BYTES   # the smallest chunk the uploader uses: what one drop may cost


class CountingThrottle(Throttle):
    """The uploader's pacing, which it awaits with each chunk's size just before sending it: here it also
    counts what the box put on the wire in PATCH bodies (each chunk as a whole, sent or cut short)."""

    def __init__(self, kbps: int, clock: Clock) -> None:
        super().__init__(kbps, clock)
        self.sizes: list[int] = []

    async def spend(self, size: int) -> None:
        self.sizes.append(size)
        await super().spend(size)


def _counting(uploader: Uploader) -> CountingThrottle:
    """Chunks of CHUNK bytes, counted; the uploader's own cap (upload_kbps) kept."""
    uploader.throttle = CountingThrottle(uploader.sync.upload_kbps, uploader.clock)
    uploader._chunk = uploader._max_chunk = CHUNK
    return uploader.throttle


def _rows(box: SyncedBox) -> list[sqlite3.Row]:
    conn = box.writer.conn
    return list(conn.execute("SELECT * FROM outbox ORDER BY id"))


def _hub_clips(hub: Hub) -> list[dict]:
    listed = hub.cli("clips", "--json")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


def _fetched_and_verified(hub: Hub, clip_id: str, out: Path, box: SyncedBox) -> None:
    """What the city does with a clip: `edgenvr hub fetch`, then `edgenvr verify` with the box's key."""
    fetched = hub.cli("fetch", clip_id, "--out", str(out))
    assert fetched.returncode == 0, fetched.stderr
    verified = edgenvr("verify", str(out), "--pubkey", str(box.layout.device_public_key_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _no_hub_errors(hub: Hub, expected: str) -> None:
    """The hub answered every request as the protocol says (`expected`): none ended in a traceback (a 500)."""
    log = hub.log.read_text()
    if "Traceback" in log:
        first = log[log.index("Traceback"):].split("\n20")[0]
        pytest.fail(f"the hub failed on a request (the box got a 500 and backed off) where {expected}:\n"
                    f"{first[-2500:]}", pytrace=False)


def test_fifty_clips_through_a_link_cut_200_times_arrive_once_each_signed_and_a_cut_costs_at_most_one_chunk(
        tmp_path: Path) -> None:
    """50 motion clips of ~200 kB go in 64 kB chunks while the link is cut at random (seeded, a cut every
    ~70 kB on average: more than 200 cuts before the last clip is through). The box goes on after each cut
    at once (a round of its sync process each time: its back-off waits are not slept here)."""
    with running_hub(tmp_path) as hub, FaultyLink(("127.0.0.1", hub.port)) as link:
        box = SyncedBox(tmp_path / "box", f"http://127.0.0.1:{link.port}", hub.token(BOX_ID), open_footage())
        uploader = box.uploader()
        started_ms = int(time.time() * 1000) - 3_600_000
        outbox.sync_since(box.writer.conn, started_ms)    # the box has synced for an hour
        run_round(uploader)                               # enrolled while the link held
        assert box.layout.hub_key_path.exists(), hub.log.read_text()[-3000:]
        events = []
        for n in range(50):
            segment = box.record("gate", started_ms + n * SEGMENT_SECONDS * 1000)
            events.append((segment.start_ms + 1_500, segment.start_ms + 2_500))
            box.event(EventKind.MOTION, "gate", *events[-1])
        box.commit()

        sent = _counting(uploader)
        link.drop_at_random(mean_bytes=70_000, seed=12)
        began, rounds = time.monotonic(), 0
        while True:
            run_round(uploader)
            rounds += 1
            if outbox.backlog(box.writer.conn).count == 0:
                break
            assert time.monotonic() - began < 80 and rounds < 2000, \
                f"{outbox.backlog(box.writer.conn)} after {rounds} rounds and {link.drops} cuts"
        link.drop_at_random(None)
        took, drops, bytes_up = time.monotonic() - began, link.drops, link.bytes_up
        rows, clips = _rows(box), _hub_clips(hub)
        hub_key = load_public_key(box.layout.hub_key_path.read_bytes())

        # Exactly the 50 clips, each the bytes the box hashed, its receipt signed by the hub naming them.
        assert drops >= 200, f"the link was cut {drops} times only: the test proves less than it says"
        assert len(rows) == 50 and all(row["state"] == "synced" for row in rows), [dict(r) for r in rows]
        assert len(clips) == 50 and len({clip["id"] for clip in clips}) == 50
        assert sorted(clip["sha256"] for clip in clips) == sorted(row["sha256"] for row in rows)
        assert all((c["box"], c["camera"], c["kind"]) == (BOX_ID, "gate", "motion") for c in clips)
        for row in rows:
            receipt = read_receipt(row["receipt"], hub_key)
            assert receipt["sha256"] == row["sha256"] and receipt["bytes"] == row["bytes"], (receipt, dict(row))
        assert [(row["start_ms"], row["end_ms"]) for row in rows] == \
            [(start - 1_000, end + 1_000) for start, end in events]   # one clip per event, its padded range

        # Every clip as the hub keeps it is the box's signed evidence: all 50 checked with the box's key, two
        # of them the way the city does it (`edgenvr hub fetch` and `edgenvr verify`).
        device_pem = box.layout.device_public_key_path.read_bytes()
        for clip in clips:
            folder = tmp_path / "unpacked" / clip["id"]
            with zipfile.ZipFile(hub.data_dir / "blobs" / "clips" / f"{clip['id']}.zip") as archive:
                archive.extractall(folder)
            verify_export(folder, device_pem)   # VerificationFailed naming the first problem
        for clip in (clips[0], clips[-1]):
            _fetched_and_verified(hub, clip["id"], tmp_path / "fetched" / clip["id"], box)

        # A cut costs at most the chunk in flight: no chunk the hub had committed was sent again, and no
        # chunk was sent more than once more per cut.
        committed = sum(clip["bytes"] for clip in clips)
        committed_chunks = sum(math.ceil(clip["bytes"] / CHUNK) for clip in clips)
        resent_bytes, resent_chunks = sum(sent.sizes) - committed, len(sent.sizes) - committed_chunks
        hub_log = hub.log.read_text()
        cut_uploads = {line.split("upload ")[1].split(":")[0] for line in hub_log.splitlines()
                       if "the connection dropped after" in line}
        print(f"\n50 clips, {committed} bytes, in {took:.1f} s and {rounds} rounds through {drops} cuts "
              f"({len(cut_uploads)} clips cut mid-chunk at least once); PATCH bodies sent {sum(sent.sizes)} bytes "
              f"in {len(sent.sizes)} chunks: {resent_bytes} bytes ({resent_chunks} chunks) sent again, at most "
              f"{drops * CHUNK} ({drops} x {CHUNK}) allowed; {bytes_up} bytes crossed the link up, headers included")
        assert resent_chunks <= drops and resent_bytes <= drops * CHUNK, (resent_chunks, resent_bytes, drops)
        assert len(cut_uploads) >= 30, f"the cuts hit {len(cut_uploads)} of the 50 clips only"
        _no_hub_errors(hub, "each resuming HEAD gets the committed offset")
        box.close()


# -- the hub killed mid-upload --------------------------------------------------------------------------------

class RestartableHub:
    """`edgenvr hub` as running_hub starts it (same config file, port and data dir), but one a test may kill
    with SIGKILL and start again; the instance running at the end must stop cleanly (exit 0)."""

    def __init__(self, root: Path) -> None:
        port = free_port()
        config = root / "hub.toml"
        config.write_text(f'[hub]\nlisten = "127.0.0.1:{port}"\ntls = false\ndata_dir = "{root / "hub-data"}"\n'
                          "max_clip_mb = 64\n")
        self.hub = Hub(config, root / "hub-data", f"http://127.0.0.1:{port}", port, root / "hub.log",
                       self._start(config, root / "hub.log"))
        self._healthy()

    @staticmethod
    def _start(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "edgenvr", "hub", "--config", str(config)], stdout=log,
                                    stderr=subprocess.STDOUT)

    def _healthy(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(self.hub.url + "/api/health", timeout=2).json()["status"] == "ok":
                    return
            except (requests.ConnectionError, ValueError):
                pass
            assert self.hub.process.poll() is None and time.monotonic() < deadline, self.hub.log.read_text()
            time.sleep(0.1)

    def kill(self) -> None:
        os.kill(self.hub.process.pid, signal.SIGKILL)
        assert self.hub.process.wait(10) == -signal.SIGKILL

    def restart(self) -> None:
        self.hub.process = self._start(self.hub.config, self.hub.log)
        self._healthy()

    def stop(self) -> None:
        if self.hub.process.poll() is None:
            self.hub.process.terminate()
            assert self.hub.process.wait(20) == 0, self.hub.log.read_text()[-3000:]


@contextlib.contextmanager
def restartable_hub(root: Path) -> Iterator[RestartableHub]:
    running = RestartableHub(root)
    try:
        yield running
    finally:
        running.stop()


class HubKiller:
    """On a thread of its own: `kill -9` of the hub `delay` seconds after it has committed `at_least` bytes of
    an upload (in the middle of the next chunk), then the hub started again at once on its port and data, as
    its service manager would."""

    def __init__(self, running: RestartableHub, at_least: int, delay: float, sent: CountingThrottle) -> None:
        self.running, self.at_least, self.delay, self.sent = running, at_least, delay, sent
        self.killed_at: tuple[str, int, int, str] | None = None   # the upload as the hub had it when killed
        self.sent_before = 0                                       # chunks the box had begun by then
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._watch, name="hub-killer", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            deadline = time.monotonic() + 60
            while not any(offset >= self.at_least for _, offset, _, _ in _hub_uploads(self.running.hub)):
                assert time.monotonic() < deadline, "no upload got going"
                time.sleep(0.01)
            time.sleep(self.delay)
            self.running.kill()
            self.sent_before = len(self.sent.sizes)
            (self.killed_at,) = _hub_uploads(self.running.hub)
            self.running.restart()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread by done()
            self.error = exc

    def done(self) -> bool:
        self._thread.join(30)
        if self.error is not None:
            raise self.error
        return self.killed_at is not None


def _hub_uploads(hub: Hub) -> list[tuple[str, int, int, str]]:
    """(id, committed offset, length, state) of each upload in the hub's database."""
    conn = sqlite3.connect(f"file:{hub.data_dir / 'hub.sqlite3'}?mode=ro", uri=True)
    try:
        return [tuple(row) for row in conn.execute('SELECT id, "offset", length, state FROM uploads')]
    finally:
        conn.close()


def test_a_hub_killed_mid_upload_and_restarted_gets_the_rest_of_the_same_upload_and_files_the_clip_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One ~1.2 MB motion clip sent in 64 kB chunks over a 2.4 Mbit/s link (each chunk takes 0.2 s); `kill -9`
    of the hub in the middle of a chunk once it has committed three, the hub started again at once on its
    port and data. The box's
    sync process, never restarted, goes on round after round (its back-off waits not slept: the rounds are a
    quarter second apart) with the same upload from the offset the hub had committed: what it sends after the
    kill is the rest of the clip (plus at most the chunk that was in flight), and the hub files the clip once,
    with the box's SHA-256."""
    with restartable_hub(tmp_path) as running, FaultyLink(("127.0.0.1", running.hub.port)) as link:
        hub = running.hub
        link.throttle(300_000, "up")
        box = SyncedBox(tmp_path / "box", f"http://127.0.0.1:{link.port}", hub.token(BOX_ID), open_footage())
        started_ms = int(time.time() * 1000) - 600_000
        outbox.sync_since(box.writer.conn, started_ms)
        for n in range(6):
            box.record("gate", started_ms + n * SEGMENT_SECONDS * 1000)
        box.event(EventKind.MOTION, "gate", started_ms + 2_000, started_ms + 5 * SEGMENT_SECONDS * 1000 + 2_000)
        box.commit()

        uploader = box.uploader()
        sent = _counting(uploader)
        killer = HubKiller(running, 3 * CHUNK, 0.1, sent)
        deadline = time.monotonic() + 60
        while _rows(box) == [] or _rows(box)[0]["state"] != "synced":   # its sync process's rounds
            run_round(uploader)
            assert time.monotonic() < deadline, "the clip never arrived:\n" + hub.log.read_text()[-3000:]
            time.sleep(0.25)
        assert killer.done() and killer.killed_at is not None, "the hub was never killed: the test proves nothing"
        upload_id, killed_at, length, state = killer.killed_at
        sent_before = killer.sent_before
        assert state == "receiving" and 0 < killed_at < length, (killed_at, length, state)
        (done,) = _rows(box)
        uploads, clips = _hub_uploads(hub), _hub_clips(hub)

        assert done["upload"] == f"/api/v1/uploads/{upload_id}", \
            "a new upload was started instead of going on with the hub's"
        assert uploads == [(upload_id, length, length, "complete")], uploads
        assert [(c["box"], c["sha256"], c["bytes"]) for c in clips] == [(BOX_ID, done["sha256"], length)]
        after = sum(sent.sizes[sent_before:])
        print(f"\nhub killed at {killed_at} of {length} bytes; sent after the kill: {after} bytes "
              f"({len(sent.sizes) - sent_before} chunks); the rest was {length - killed_at}")
        assert length - killed_at <= after <= length - killed_at + CHUNK, (after, length, killed_at)
        assert hub.log.read_text().count(" created by ") == 1, "the hub made another upload for the clip"
        assert any("the hub is unreachable" in r.getMessage() for r in caplog.records), "no failure was seen"
        _fetched_and_verified(hub, clips[0]["id"], tmp_path / "fetched", box)
        box.close()
        # Its HEAD after the restart finds the lease of the PATCH the kill cut short, held by no one: the hub
        # must report the committed offset (and a PATCH 423) until the lease lapses, never fail.
        _no_hub_errors(hub, "a HEAD finding the lease of a PATCH the kill cut short reports the committed "
                            "offset, and a PATCH gets 423, until that lease lapses (tus_uploads._lock/_take_over)")
