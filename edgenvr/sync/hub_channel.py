"""The box's end of its channel to the city hub (sync.hub_protocol): opened BY THE BOX and kept open, so the
city can ask a box behind NAT for video. Up it go health reports (sync.box_report) every REPORT_EVERY_S and
within CHECK_S of a change that matters, how each remote pull stands, and the audit trail's new records
(from where the hub says its copy ends: nothing is kept here about it), and each clip lost before it could
be sent (until the hub acknowledges it: outbox.reported_ms); down it come remote pulls.

Owns: answering pulls (queued in the outbox as `requested` clips, sync.outbox.enqueue_pull) and the latest
word on each. Invariants:
- A pull is queued once whatever the hub repeats (the outbox's unique pull id); its answer comes from the
  outbox row and the latest state the uploader told (`tell`), so a reconnect repeats where it stands, never
  an older state.
- A range with no recorded video left on the box, or a camera it does not have, is answered `unavailable`
  with the reason at once (the hub must not wait in silence); a range not over yet waits until it is
  recorded and settled.
- The channel only reads the index and writes outbox rows in short transactions: nothing here can delay
  recording (its own process, sync.uploader).
Failure paths: not enrolled yet -> waits for the uploader to enrol; the hub unreachable or refusing -> logged,
tried again after core.link_backoff; a malformed message from the hub -> logged and ignored; sqlite3 errors
while answering -> logged, the pull answered again when the hub repeats it (on the next reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import aiohttp

from edgenvr.config.records import Config
from edgenvr.core.camera_ids import is_camera_id
from edgenvr.core.clock import Clock
from edgenvr.core.link_backoff import LinkBackoff
from edgenvr.core.time_format import format_ms
from edgenvr.evidence.audit import AuditError, upstream_batch
from edgenvr.evidence.identity import DeviceIdentity
from edgenvr.index import queries
from edgenvr.index import schema as index_schema
from edgenvr.storage.layout import StorageLayout
from edgenvr.sync import outbox
from edgenvr.sync.box_report import box_report, what_matters
from edgenvr.sync.hub_client import HubClient, HubRefused, HubUnreachable
from edgenvr.sync.hub_protocol import (
    AUDIT_BATCH,
    PULL_ID,
    REPORT_EVERY_S,
    MessageType,
    PullState,
)
from edgenvr.sync.outbox import OutboxState

log = logging.getLogger(__name__)

CHECK_S = 5.0            # how often what the report says is looked at for a change


class HubChannel:
    def __init__(self, config: Config, identity: DeviceIdentity, clock: Clock,
                 hub_key: Callable[[], bytes | None]) -> None:
        self.config = config
        self.identity = identity
        self.clock = clock
        self.layout = StorageLayout(config.storage.data_dir)
        self.hub_key = hub_key          # None until the uploader has enrolled the box
        self.settle_ms = int(config.recording.segment_seconds * 1000) + outbox.SETTLE_MARGIN_MS
        self._latest: dict[str, dict[str, Any]] = {}   # pull id -> the last pull_state told
        self._unsent: asyncio.Queue[str] = asyncio.Queue()
        self._backoff = LinkBackoff()
        self._audit_acked: int | None = None   # where the hub's copy of the audit trail ends (this connection)
        self._audit_ack = asyncio.Event()

    def tell(self, pull_id: str, state: PullState, progress: int = 0, detail: str = "") -> None:
        """How a pull stands now (the uploader's word); sent at once if the channel is open, else on reconnect."""
        self._latest[pull_id] = {"type": MessageType.PULL_STATE, "id": pull_id, "state": state,
                                 "progress": progress, "detail": detail}
        self._unsent.put_nowait(pull_id)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            wait = CHECK_S
            key = self.hub_key()
            if key is not None:
                try:
                    async with HubClient(self.config.sync.hub_url, self.identity, hub_key_pem=key,
                                         tls_fingerprint=self.config.sync.hub_fingerprint, clock=self.clock) as client:
                        socket = await client.open_channel()
                        log.info("sync: channel to the hub open")
                        self._backoff.reset()
                        await self._serve(socket, stop)
                        log.info("sync: channel to the hub closed (%s)", socket.close_code)
                except (HubUnreachable, HubRefused, aiohttp.ClientError, ConnectionError) as exc:
                    log.warning("sync: no channel to the hub: %s", exc)
                    wait = self._backoff.failed()
                except (sqlite3.Error, OSError) as exc:   # reading the index for a report: next time
                    log.error("sync: the channel stopped: %s", exc)
                    wait = self._backoff.failed()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def _serve(self, socket: aiohttp.ClientWebSocketResponse, stop: asyncio.Event) -> None:
        for pull_id in list(self._latest):   # where each stands, in case the hub missed it while we were apart
            self._unsent.put_nowait(pull_id)
        self._audit_acked, self._audit_ack = None, asyncio.Event()
        tasks = [asyncio.create_task(self._report(socket)), asyncio.create_task(self._send_states(socket)),
                 asyncio.create_task(self._send_audit(socket)), asyncio.create_task(self._send_losses(socket))]
        stopping = asyncio.create_task(stop.wait())
        try:
            receiving = asyncio.create_task(self._receive(socket))
            await asyncio.wait([receiving, stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in (receiving, *tasks):
                if task.done() and task.exception() is not None:
                    raise task.exception()   # type: ignore[misc]
        finally:
            for task in (*tasks, stopping):
                task.cancel()
            await socket.close()

    async def _receive(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        async for message in socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                request: Any = json.loads(message.data)
                kind = request.get("type") if isinstance(request, dict) else None
                if kind == MessageType.AUDIT_ACK and isinstance(request.get("seq"), int):
                    self._audit_acked = request["seq"]
                    self._audit_ack.set()
                elif kind == MessageType.LOST_ACK and isinstance(request.get("ids"), list):
                    self._note_reported([i for i in request["ids"] if isinstance(i, int)])
                elif kind == MessageType.PULL:
                    self._on_pull(request)
                else:
                    raise ValueError(f"unexpected message {str(request)[:80]!r}")
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("sync: a message from the hub was ignored: %s", exc)
            except sqlite3.Error as exc:
                log.error("sync: could not answer a pull request: %s", exc)

    async def _report(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        sent_at, sent = -REPORT_EVERY_S, None
        while True:
            conn = index_schema.connect(self.layout.index_path, readonly=True)
            try:
                report = box_report(conn, self.config, self.clock)
            finally:
                conn.close()
            if what_matters(report) != sent or self.clock.monotonic() - sent_at >= REPORT_EVERY_S:
                await socket.send_str(json.dumps(report))
                sent_at, sent = self.clock.monotonic(), what_matters(report)
            await asyncio.sleep(CHECK_S)

    async def _send_audit(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        """The audit trail's records after where the hub's copy ends, a batch per acknowledgement; the head
        again whenever it moved (a head that went back is what the hub must see)."""
        sent_head: dict[str, Any] | None = None
        while True:
            self._audit_ack.clear()
            if self._audit_acked is not None:
                try:
                    records, head = await asyncio.to_thread(upstream_batch, self.layout, self._audit_acked, AUDIT_BATCH)
                except AuditError as exc:
                    log.error("sync: cannot read the audit trail for the hub: %s", exc)
                    records, head = [], sent_head
                if records or head != sent_head:
                    before = self._audit_acked
                    await socket.send_str(json.dumps({"type": MessageType.AUDIT, "records": records, "head": head}))
                    sent_head = head
                    with contextlib.suppress(asyncio.TimeoutError):   # the hub's ack comes at once
                        await asyncio.wait_for(self._audit_ack.wait(), REPORT_EVERY_S)
                    if records and self._audit_acked == before:   # not taken (the hub logged why): not again at once
                        await asyncio.sleep(REPORT_EVERY_S)
                    continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._audit_ack.wait(), CHECK_S)

    async def _send_losses(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        """Clips lost before they could be sent (the outbox rows the free-space floor gave up), until the hub
        acknowledges them; each one again after REPORT_EVERY_S if it did not."""
        while True:
            conn = index_schema.connect(self.layout.index_path, readonly=True)
            try:
                losses = outbox.unreported_losses(conn, AUDIT_BATCH)
            finally:
                conn.close()
            if losses:
                await socket.send_str(json.dumps({"type": MessageType.LOST, "clips": [
                    {"id": loss.id, "kind": loss.kind, "camera": loss.camera, "start_ms": loss.start_ms,
                     "end_ms": loss.end_ms, "reason": loss.reason, "at_ms": loss.at_ms} for loss in losses]}))
            await asyncio.sleep(REPORT_EVERY_S if losses else CHECK_S)

    def _note_reported(self, ids: list[int]) -> None:
        conn = index_schema.connect(self.layout.index_path)
        try:
            outbox.note_reported(conn, ids, self.clock.now_ms())
        finally:
            conn.close()

    async def _send_states(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            pull_id = await self._unsent.get()
            said = self._latest.get(pull_id)
            if said is not None:
                await socket.send_str(json.dumps(said))
                if said["state"] == PullState.UNAVAILABLE:   # final: the hub asks no more (if it missed it, it
                    self._latest.pop(pull_id, None)          # asks again on reconnect and gets it again)

    def forget(self, pull_id: str) -> None:
        """Its clip is at the hub (which marked it ready itself): nothing more to say about it."""
        self._latest.pop(pull_id, None)

    # --- a pull request --------------------------------------------------------------------------------

    def _on_pull(self, request: dict[str, Any]) -> None:
        pull_id, camera = request["id"], request["camera"]
        start_ms, end_ms = request["start_ms"], request["end_ms"]
        if not (isinstance(pull_id, str) and PULL_ID.fullmatch(pull_id) and is_camera_id(camera)
                and isinstance(start_ms, int) and isinstance(end_ms, int) and start_ms < end_ms):
            raise ValueError(f"a malformed pull request {str(request)[:120]!r}")
        conn = index_schema.connect(self.layout.index_path)
        try:
            row = outbox.pull_row(conn, pull_id)
            if row is None and pull_id not in self._latest:
                missing = self._missing(conn, camera, start_ms, end_ms)
                if missing:
                    log.warning("sync: pull %s of %s %s-%s: %s", pull_id, camera, format_ms(start_ms),
                                format_ms(end_ms), missing)
                    self.tell(pull_id, PullState.UNAVAILABLE, detail=missing)
                    return
                now = self.clock.now_ms()
                reason = request.get("reason")
                reason = reason if isinstance(reason, str) else ""
                outbox.enqueue_pull(conn, pull_id, camera, start_ms, end_ms, now, max(now, end_ms + self.settle_ms),
                                    reason)
                log.info("sync: the hub asks for %s %s-%s (pull %s, %r)", camera, format_ms(start_ms),
                         format_ms(end_ms), pull_id, reason[:200])
                row = outbox.pull_row(conn, pull_id)
            if row is None or (row[0] == OutboxState.QUEUED and pull_id in self._latest):
                self._unsent.put_nowait(pull_id)   # asked again (a reconnect): the latest word on it
            elif row[0] == OutboxState.UNAVAILABLE:   # the export found it gone, or the disk floor took it
                self.tell(pull_id, PullState.UNAVAILABLE, detail=row[1])
            elif row[0] == OutboxState.SYNCED:
                self.tell(pull_id, PullState.UPLOADING, 100, "delivered")
            else:
                ahead = outbox.queued_ahead(conn, pull_id)
                self.tell(pull_id, PullState.QUEUED, detail=f"accepted; {ahead} clip(s) go before it" if ahead
                          else "accepted")
        finally:
            conn.close()

    def _missing(self, conn: sqlite3.Connection, camera: str, start_ms: int, end_ms: int) -> str:
        """Why the range cannot be sent ("" if it can, or may once it is recorded)."""
        if camera not in {c.id for c in self.config.cameras}:
            return f"this box has no camera {camera!r}"
        if end_ms + self.settle_ms > self.clock.now_ms():
            return ""   # not over yet: it is sent once recorded
        if next(queries.segments(conn, self.layout, camera, start_ms, end_ms, clock=self.clock), None) is None:
            return (f"no video of camera {camera} from {format_ms(start_ms)} to {format_ms(end_ms)} is on this box"
                    " (deleted by the ring, or never recorded)")
        return ""
