"""The hub's end of each box's channel: a WebSocket the BOX opens (`GET /api/v1/channel`, signed like every
box request) and keeps open, so the city reaches boxes behind NAT or a firewall that accepts no connection.
Down it go remote pulls and where the hub's copy of the box's audit trail ends; up it come health reports
(hub.fleet), the box's word on its pulls, its audit records (hub.audit_copies) and the clips it lost before
it could send them (hub.lost_clips).

Owns this worker's open channels (box id -> socket). Invariants:
- Stateless across workers: a pull is in the database (hub.remote_pulls); each worker looks every POLL_S for
  open requests of the boxes connected to IT and sends them (one query per worker per look, whatever the
  fleet's size), and sends all of a box's open requests again whenever it (re)connects, so a request
  queued on any worker, or sent just before a link dropped, reaches the box.
- A box has one channel per worker: a new one from the same box replaces the old (a half-open TCP
  connection after a link cut is not left holding its place).
- What a box says is about itself only: its reports and audit records are stored under its signed id (the
  records also checked against its enrolled key), its pull updates change only its own requests.
Failure paths: a bad signature -> 401 before the upgrade; a malformed message -> logged with the box's id and
dropped, the channel stays; a database error while handling one -> logged, that message dropped (the box
sends its state again on change and every minute); the hub stopping -> every channel closed with 1001 (going
away), the boxes reconnect to whichever worker answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from aiohttp import WSCloseCode, WSMsgType, web

from edgenvr.core.clock import Clock
from edgenvr.hub import audit_copies, remote_pulls
from edgenvr.hub.box_enrolment import box_public_key
from edgenvr.hub.fleet import ReportRefused, store_report
from edgenvr.hub.lost_clips import record_losses
from edgenvr.hub.remote_pulls import Pull, PullRefused
from edgenvr.sync.hub_protocol import (
    CHANNEL_PATH,
    MAX_MESSAGE_BYTES,
    PING_S,
    PULL_ID,
    MessageType,
    PullState,
)

log = logging.getLogger(__name__)

POLL_S = 1.0


class BoxChannels:
    def __init__(self, engine: sa.Engine, authenticate: Callable[[web.Request], Awaitable[str]], clock: Clock) -> None:
        self.engine = engine
        self.authenticate = authenticate
        self.clock = clock
        self._sockets: dict[str, web.WebSocketResponse] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.get(CHANNEL_PATH, self.handle)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        box = await self.authenticate(request)
        socket = web.WebSocketResponse(heartbeat=PING_S, max_msg_size=MAX_MESSAGE_BYTES)
        await socket.prepare(request)
        replaced = self._sockets.get(box)
        self._sockets[box] = socket
        if replaced is not None:
            await replaced.close(code=WSCloseCode.POLICY_VIOLATION, message=b"replaced by a newer channel")
        log.info("box %s: channel open", box)
        try:
            await self._ack_audit(socket, await asyncio.to_thread(audit_copies.copy_end, self.engine, box))
            await self._send(box, socket, await asyncio.to_thread(
                remote_pulls.open_pulls, self.engine, [box], undelivered_only=False))
            async for message in socket:
                if message.type != WSMsgType.TEXT:
                    continue   # pings are answered by aiohttp; nothing else is spoken
                await self._receive(box, socket, message.data)
        finally:
            if self._sockets.get(box) is socket:
                del self._sockets[box]
            log.info("box %s: channel closed", box)
        return socket

    async def _ack_audit(self, socket: web.WebSocketResponse, seq: int) -> None:
        await socket.send_str(json.dumps({"type": MessageType.AUDIT_ACK, "seq": seq}))

    async def _receive(self, box: str, socket: web.WebSocketResponse, data: str) -> None:
        now = self.clock.now_ms()
        try:
            message: Any = json.loads(data)
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == MessageType.REPORT:
                await asyncio.to_thread(store_report, self.engine, box, data, now)
            elif kind == MessageType.PULL_STATE:
                pull_id, state = message.get("id"), PullState(message.get("state"))
                progress, detail = message.get("progress", 0), message.get("detail", "")
                if not (isinstance(pull_id, str) and PULL_ID.fullmatch(pull_id) and isinstance(progress, int)
                        and isinstance(detail, str)):
                    raise ValueError("a pull_state needs id (32 hex digits), state, progress (int), detail")
                await asyncio.to_thread(remote_pulls.box_says, self.engine, box, pull_id, state, progress, detail, now)
            elif kind == MessageType.AUDIT:
                records, head = message.get("records"), message.get("head")
                if not (isinstance(records, list) and all(isinstance(r, dict) for r in records)
                        and (head is None or isinstance(head, dict))):
                    raise ValueError("an audit message needs records (a list of objects) and head (an object)")
                key = await asyncio.to_thread(box_public_key, self.engine, box)
                if key is None:
                    raise ValueError("the box is not enrolled any more")
                await self._ack_audit(socket, await asyncio.to_thread(audit_copies.receive, self.engine, box, records,
                                                                      head, key, now))
            elif kind == MessageType.LOST:
                clips = message.get("clips")
                if not isinstance(clips, list):
                    raise ValueError("a lost message needs clips (a list)")
                recorded = await asyncio.to_thread(record_losses, self.engine, box, clips, now)
                log.warning("box %s reports %d clip(s) lost before they could be sent", box, len(recorded))
                await socket.send_str(json.dumps({"type": MessageType.LOST_ACK, "ids": recorded}))
            else:
                raise ValueError(f"unknown message type {str(kind)[:40]!r}")
        except (ValueError, ReportRefused, PullRefused) as exc:
            log.warning("box %s: a channel message was dropped: %s", box, exc)
        except sa.exc.SQLAlchemyError as exc:
            log.error("box %s: a channel message could not be stored: %s", box, exc)

    async def _send(self, box: str, socket: web.WebSocketResponse, pulls: list[Pull]) -> None:
        sent = []
        for pull in pulls:
            try:
                await socket.send_str(json.dumps(pull.message()))
            except (ConnectionError, RuntimeError):   # closed under us: sent again when it reconnects
                break
            sent.append(pull.id)
        if sent:
            await asyncio.to_thread(remote_pulls.note_sent, self.engine, sent, self.clock.now_ms())
            log.info("box %s: %d pull request(s) sent", box, len(sent))

    async def deliver_forever(self) -> None:
        """This worker's regular look for requests of the boxes connected to it."""
        while True:
            await asyncio.sleep(POLL_S)
            try:
                waiting = await asyncio.to_thread(remote_pulls.open_pulls, self.engine, list(self._sockets),
                                                  undelivered_only=True)
                for box in {pull.box for pull in waiting}:
                    socket = self._sockets.get(box)
                    if socket is not None:
                        await self._send(box, socket, [pull for pull in waiting if pull.box == box])
            except sa.exc.SQLAlchemyError as exc:   # the next look tries again
                log.error("channels: looking for pull requests failed: %s", exc)

    async def close_all(self, _app: web.Application | None = None) -> None:
        for socket in list(self._sockets.values()):
            await socket.close(code=WSCloseCode.GOING_AWAY, message=b"the hub is stopping")
