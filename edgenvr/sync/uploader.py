"""The sync process (`edgenvr run` starts it when the config has [sync]): store-and-forward of the outbox to the
city hub whenever the link is up, beside the box's channel to the hub (sync.hub_channel: remote pulls, health).

Owns: the loop that enrols once, queues closed events (sync.outbox), builds each clip (the evidence export of
its range, zipped, in <data>/outbox/), uploads it with the hub client, and marks it synced with the receipt;
for a remote pull's clip it tells the channel how it stands (exporting, uploading %, failed, unavailable).
Invariants:
- It only reads the index and writes outbox rows in short transactions of its own: a slow or absent hub, a
  full link or this process dying never touches recording (a process of its own, restarted by the supervisor).
- A clip leaves the outbox only with a verified receipt naming the SHA-256 of the file this box sent; the
  file is removed only then. A restart goes on with the same file and the hub's offset (the upload path is
  kept in the row), so nothing is sent twice but the chunk in flight when it stopped.
- The link: one attempt, then, while the hub is unreachable, waits that double with jitter (core.link_backoff),
  never spinning; an attempt that got chunks through before the link dropped is followed at once, and the
  waits start over (a flaky link that still carries bytes is used, not waited out); one in which the hub
  answered (the link is up) but no chunk got through waits only the first wait. Chunks halve (down to
  MIN_CHUNK_BYTES) after an attempt that got nothing through and double back after each one committed: what
  a drop costs fits what the link carries.
  A hub that refuses a clip (422, 413) is not retried blindly: that clip waits REFUSED_RETRY_S, others go on.
- The upload cap (`upload_kbps`) is held over every chunk sent (a token bucket).
- Continuous video (`continuous_windows`) is queued a piece per camera at a time (outbox.enqueue_continuous)
  and sent only while a window is open; a piece under way when its window closes stops before its next
  chunk and resumes at the hub's offset in the next window. Events and pulls go at any time, before it.
Failure paths: not enrolled and no token -> logged once an hour, nothing sent; enrolment refused -> logged
with the hub's reason, tried again after REFUSED_RETRY_S; a clip's range no longer on the box (the ring
deleted it) -> the row ends `unavailable` with the reason; a sqlite3 or OS error -> logged, tried again on the
next round.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sqlite3
from pathlib import Path

from edgenvr.config.records import Config
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.link_backoff import LinkBackoff
from edgenvr.core.process_setup import BACKGROUND_NICE, become_child_process
from edgenvr.core.time_format import local_minute_of_day
from edgenvr.evidence.audit import AuditTrail
from edgenvr.evidence.bundle import ExportError, ExportRequest, export_clip, zip_export
from edgenvr.evidence.identity import DeviceIdentity, IdentityError, device_identity
from edgenvr.index import schema as index_schema
from edgenvr.storage.durable_writes import write_durably
from edgenvr.storage.file_digest import sha256_of
from edgenvr.storage.layout import StorageLayout
from edgenvr.sync import outbox
from edgenvr.sync.hub_channel import HubChannel
from edgenvr.sync.hub_client import CHUNK_BYTES, HubClient, HubRefused, HubUnreachable
from edgenvr.sync.hub_protocol import PullState
from edgenvr.sync.outbox import ClipKind, OutboxItem

log = logging.getLogger(__name__)

ROUND_SECONDS = 5.0          # how often the outbox is looked at while there is nothing to send
REFUSED_RETRY_S = 3600.0
EXPORTED_BY = "sync"
MIN_CHUNK_BYTES = 64 * 1024
CHUNK_SECONDS = 8


class WindowClosed(Exception):
    """A continuous piece's window closed while it was being sent: it waits for the next one."""


class Throttle:
    """A token bucket of `kbps` (0: no cap) that `spend` waits on before each chunk is sent."""

    def __init__(self, kbps: int, clock: Clock) -> None:
        self.rate = kbps * 1000 / 8
        self.clock = clock
        self._level = 0.0
        self._at = clock.monotonic()

    async def spend(self, size: int) -> None:
        if self.rate <= 0:
            return
        now = self.clock.monotonic()
        self._level = max(0.0, self._level - (now - self._at) * self.rate) + size
        self._at = now
        ahead = self._level / self.rate - 1.0   # a second's worth may go at once
        if ahead > 0:
            await asyncio.sleep(ahead)


def export_reason(item: outbox.OutboxItem) -> str:
    """What the clip's manifest and the box's audit record give as the export's reason."""
    said = f"upload to the city hub ({item.kind} clip {item.id})"
    if item.pull_id is not None:
        said += f", asked for by the hub (pull {item.pull_id}): {item.pull_reason or 'no reason given'}"
    return said


class Uploader:
    def __init__(self, config: Config, clock: Clock = SYSTEM_CLOCK, channel: HubChannel | None = None) -> None:
        self.config = config
        self.channel = channel   # where a remote pull's progress is told (None: nobody to tell)
        self.sync = config.sync
        self.clock = clock
        self.layout = StorageLayout(config.storage.data_dir)
        self.identity: DeviceIdentity = device_identity(self.layout, config.box.box_id, config.box.box_name)
        self.throttle = Throttle(self.sync.upload_kbps, clock)
        self._backoff = LinkBackoff()
        self._progressed = False   # the hub committed a chunk since the last failure
        self._sending: OutboxItem | None = None
        # Under a cap a chunk is at most CHUNK_SECONDS of it: a drop then loses seconds, not minutes, of the link.
        self._max_chunk = CHUNK_BYTES if self.sync.upload_kbps <= 0 else \
            max(MIN_CHUNK_BYTES, min(CHUNK_BYTES, self.sync.upload_kbps * 1000 // 8 * CHUNK_SECONDS))
        self._chunk = self._max_chunk   # halved after an attempt that got nothing through, doubled after a chunk

    # --- one round --------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                wait = await self.round()
            except (sqlite3.Error, OSError) as exc:
                log.error("sync: %s; trying again in %.0f s", exc, ROUND_SECONDS)
                wait = ROUND_SECONDS
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except asyncio.TimeoutError:
                pass

    async def round(self) -> float:
        """Queue, then send what is due while the link holds; how long to wait before the next round."""
        conn = index_schema.connect(self.layout.index_path)
        try:
            now = self.clock.now_ms()
            settle_ms = int(self.config.recording.segment_seconds * 1000) + outbox.SETTLE_MARGIN_MS
            since = outbox.sync_since(conn, now)
            queued = outbox.enqueue_closed_events(conn, since, now, settle_ms)
            if self._window_open():
                queued += outbox.enqueue_continuous(conn, [camera.id for camera in self.config.cameras], since, now,
                                                    settle_ms)
            if queued:
                log.info("sync: %d clip(s) queued for the hub", queued)
            if outbox.next_due(conn, now, continuous=self._window_open()) is None and self.layout.hub_key_path.exists():
                return ROUND_SECONDS
            async with HubClient(self.sync.hub_url, self.identity, hub_key_pem=self.hub_key(),
                                 tls_fingerprint=self.sync.hub_fingerprint, pace=self._pace,
                                 chunk_bytes=self._chunk) as client:
                try:
                    if client.hub_key is None and not await self._enrol(conn, client):
                        return REFUSED_RETRY_S
                    while (item := outbox.next_due(conn, self.clock.now_ms(),
                                                   continuous=self._window_open())) is not None:
                        await self._send(conn, client, item)
                        self._backoff.reset()
                except HubUnreachable as exc:
                    if self._progressed:   # a flaky link that still carries bytes: go on at once, not later
                        self._backoff.reset()
                        wait = 0.0
                    else:                  # nothing got through: smaller chunks fit between the drops
                        self._chunk = max(MIN_CHUNK_BYTES, self._chunk // 2)
                        if client.answered:   # the hub is there, the link cut the chunk: the first wait, not longer
                            self._backoff.reset()
                        wait = self._backoff.failed()
                    self._progressed = False
                    log.warning("sync: the hub is unreachable (%s); %d clip(s) wait; trying again in %.0f s",
                                exc, outbox.backlog(conn).count, wait)
                    outbox.note_problem(conn, f"the hub is unreachable: {exc}")
                    return wait
        finally:
            conn.close()
        return ROUND_SECONDS

    def _window_open(self) -> bool:
        return self.sync.allows_continuous(local_minute_of_day(self.clock.now_ms()))

    async def _pace(self, size: int) -> None:
        """Before each chunk: the cap, and a continuous piece stops when its window closes (resumed in the next)."""
        if self._sending is not None and self._sending.kind == ClipKind.CONTINUOUS and not self._window_open():
            raise WindowClosed
        await self.throttle.spend(size)

    def hub_key(self) -> bytes | None:
        """The hub's receipt key, learnt at enrolment; None until the box is enrolled."""
        try:
            return self.layout.hub_key_path.read_bytes()
        except FileNotFoundError:
            return None

    async def _enrol(self, conn: sqlite3.Connection, client: HubClient) -> bool:
        if not self.sync.enrolment_token:
            outbox.note_problem(conn, "not enrolled at the hub and [sync] has no enrolment_token")
            log.error("sync: this box is not enrolled at %s and [sync] has no enrolment_token: nothing is sent "
                      "(ask the city IT office for `edgenvr hub enrol`)", self.sync.hub_url)
            return False
        try:
            pem = await client.enrol(self.sync.enrolment_token)   # HubUnreachable: the caller backs off
        except HubRefused as exc:
            log.error("sync: enrolment refused: %s", exc)
            outbox.note_problem(conn, f"enrolment refused: {exc}")
            return False
        write_durably(self.layout.hub_key_path, pem)
        log.info("sync: enrolled at %s", self.sync.hub_url)
        return True

    # --- one clip ---------------------------------------------------------------------------------------

    def _tell(self, item: OutboxItem, state: PullState, progress: int = 0, detail: str = "") -> None:
        if item.pull_id is not None and self.channel is not None:
            self.channel.tell(item.pull_id, state, progress, detail)

    async def _send(self, conn: sqlite3.Connection, client: HubClient, item: OutboxItem) -> None:
        archive = self.layout.outbox_dir / f"{item.id}.zip"
        if not archive.exists():
            self._tell(item, PullState.EXPORTING)
            try:
                await asyncio.to_thread(self._build, item, archive)
            except ExportError as exc:
                log.warning("sync: clip %d (%s %s %d-%d) is no longer on this box: %s", item.id, item.kind,
                            item.camera, item.start_ms, item.end_ms, exc)
                outbox.mark_unavailable(conn, item.id, str(exc), self.clock.now_ms())
                self._tell(item, PullState.UNAVAILABLE, detail=str(exc))
                return
        digest = await asyncio.to_thread(sha256_of, archive)
        metadata = {"camera": item.camera, "kind": str(item.kind), "start_ms": str(item.start_ms),
                    "end_ms": str(item.end_ms), "idempotency_key": item.idempotency_key}
        if item.pull_id is not None:
            metadata["pull"] = item.pull_id

        def remember(upload: str, at: int, size: int) -> None:
            if at:   # a chunk was committed: the link carries this much; try more next time
                self._progressed = True
                self._chunk = min(self._max_chunk, self._chunk * 2)
                client.chunk_bytes = self._chunk
            if upload != item.upload:
                outbox.note_upload(conn, item.id, upload, size, digest)
            self._tell(item, PullState.UPLOADING, 100 * at // max(1, size))

        self._sending = item
        try:
            delivered = await client.upload(archive, metadata, upload=item.upload, progress=remember)
        except WindowClosed:   # the row stays queued with its upload: the next window resumes at the hub's offset
            log.info("sync: the window for continuous video closed; clip %d goes on in the next one", item.id)
            return
        except HubRefused as exc:
            forget = exc.status in (403, 404, 410)   # the upload is gone or not ours any more: start anew
            log.error("sync: clip %d refused by the hub: %s; trying it again in %.0f s", item.id, exc,
                      REFUSED_RETRY_S)
            outbox.retry_later(conn, item.id, str(exc), self.clock.now_ms() + int(REFUSED_RETRY_S * 1000),
                               forget_upload=forget)
            self._tell(item, PullState.FAILED, detail=f"{exc}; trying again in {REFUSED_RETRY_S / 60:.0f} min")
            return
        finally:
            self._sending = None
        outbox.mark_synced(conn, item.id, delivered.receipt_text, self.clock.now_ms())
        if item.pull_id is not None and self.channel is not None:
            self.channel.forget(item.pull_id)   # the hub marked it ready when it filed the clip
        archive.unlink(missing_ok=True)
        log.info("sync: clip %d (%s %s) delivered: %s", item.id, item.kind, item.camera, delivered.receipt["clip"])

    def _build(self, item: OutboxItem, archive: Path) -> None:
        """The evidence export of the clip's range, zipped (the folder is removed once zipped)."""
        folder = self.layout.outbox_dir / f"{item.id}"
        shutil.rmtree(folder, ignore_errors=True)   # a leftover of a build that was killed
        self.layout.outbox_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        conn = index_schema.connect(self.layout.index_path, readonly=True)
        trail = AuditTrail(self.layout, self.identity, self.clock)
        try:
            export_clip(conn, self.config, self.layout, self.identity, trail,
                        ExportRequest(item.camera, item.start_ms, item.end_ms, folder, export_reason(item), EXPORTED_BY))
        finally:
            trail.close()
            conn.close()
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        zip_export(folder, partial)
        partial.rename(archive)   # whole or absent: a killed build starts over
        shutil.rmtree(folder, ignore_errors=True)


def run_sync_process(config: Config, name: str) -> None:
    """Process entry point (started by the supervisor when the config has [sync])."""
    become_child_process(None, name, config.log_level, nice=BACKGROUND_NICE)   # the hub waits, recording never
    try:
        uploader = Uploader(config)
    except IdentityError as exc:
        log.error("sync: cannot use the box's key: %s", exc)
        raise SystemExit(1) from None
    uploader.channel = HubChannel(config, uploader.identity, uploader.clock, uploader.hub_key)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        assert uploader.channel is not None
        await asyncio.gather(uploader.run(stop), uploader.channel.run(stop))
    asyncio.run(main())
