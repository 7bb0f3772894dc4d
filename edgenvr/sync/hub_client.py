"""The box's client of the city hub: enrolment with the one-time token, the channel (sync.hub_protocol), and
tus 1.0 uploads of clip files that resume wherever the link dropped, every request signed with the box's
device key (evidence.request_signing).

Owns: the protocol from the box's side. Invariants:
- A chunk is sent with its SHA-256 (Upload-Checksum), so the hub keeps all of it or none; after any failure
  the next attempt asks the hub (HEAD) where to go on, so no byte is sent twice more than the one chunk in
  flight when the link dropped.
- A clip counts as delivered only with a receipt that verifies with the hub key learnt at enrolment and names
  the SHA-256 this box computed of the file (evidence.hub_receipts).
- The hub's TLS certificate, when a fingerprint is pinned, must be that one (SHA-256 of its DER bytes), CA or
  not: the city hub may well run a self-signed certificate.
- Never blocks an event loop: hashing runs in a thread.
Failure paths: the link (connection refused, reset, timeout) -> HubUnreachable, the caller backs off and tries
again; the hub refusing (401 bad signature/revoked, 403, 413, 422 rejected) -> HubRefused with its status
and message, which the caller logs and does not retry blindly; a receipt that does not verify or names
another hash -> HubRefused (nothing is marked delivered).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.evidence.hub_receipts import ReceiptInvalid, read_receipt
from edgenvr.evidence.identity import DeviceIdentity, load_public_key
from edgenvr.evidence.request_signing import sign_request
from edgenvr.sync.hub_protocol import (
    CHANNEL_PATH,
    ENROL_PATH,
    MAX_MESSAGE_BYTES,
    PING_S,
    UPLOADS_PATH,
)

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024          # what is at risk per drop (sent again whole); small enough for a 2 Mbit/s link
TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10, sock_read=60)


class HubUnreachable(Exception):
    """The link or the hub is down: try again later."""


class HubRefused(Exception):
    """The hub answered, and no: `status` and the hub's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the hub refused ({status}): {message.strip()[:300]}")
        self.status = status


@dataclass(frozen=True)
class Delivered:
    upload_url: str
    receipt: dict[str, Any]     # evidence.hub_receipts fields, verified
    receipt_text: str           # as the hub signed it, to keep


def _sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _checksum(data: bytes) -> str:
    return "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()


class HubClient:
    def __init__(self, hub_url: str, identity: DeviceIdentity, *, hub_key_pem: bytes | None = None,
                 tls_fingerprint: str | None = None, clock: Clock = SYSTEM_CLOCK,
                 chunk_bytes: int = CHUNK_BYTES, pace: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.hub_url = hub_url.rstrip("/")
        self.identity = identity
        self.hub_key = load_public_key(hub_key_pem, "the hub's key") if hub_key_pem else None
        self.clock = clock
        self.chunk_bytes = chunk_bytes
        self.pace = pace   # awaited with each chunk's size before it is sent: the upload cap
        self._ssl: ssl.SSLContext | aiohttp.Fingerprint | bool = True
        if tls_fingerprint:
            self._ssl = aiohttp.Fingerprint(bytes.fromhex(tls_fingerprint.replace(":", "").replace(" ", "")))
        self._session: aiohttp.ClientSession | None = None
        self.answered = False   # the hub answered a request of this client (the link is up, if flaky)

    async def __aenter__(self) -> HubClient:
        self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    # --- requests ---------------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, headers: dict[str, str] | None = None,
                       body: bytes | None = None, *, signed: bool = True) -> tuple[int, dict[str, str], str]:
        assert self._session is not None, "use `async with HubClient(...)`"
        sent = {"Tus-Resumable": "1.0.0", **(headers or {})}
        if signed:
            sent = sign_request(self.identity, method, path, sent, body, now_s=self.clock.now_ms() / 1000)
        try:
            async with self._session.request(method, self.hub_url + path, headers=sent, data=body,
                                             ssl=self._ssl) as reply:
                text = await reply.text(errors="replace")
                self.answered = True
                return reply.status, dict(reply.headers), text
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise HubUnreachable(f"{method} {self.hub_url}{path}: {type(exc).__name__}: {exc}") from None

    @staticmethod
    def _refused(status: int, text: str) -> Exception:
        if status >= 500:   # the hub's own trouble (a full disk, a restart): like a link down, try later
            return HubUnreachable(f"the hub answered {status}: {text.strip()[:200]}")
        return HubRefused(status, text or f"HTTP {status}")

    async def enrol(self, token: str) -> bytes:
        """Present the one-time token with this box's public key; the hub's receipt key (PEM) to keep."""
        body = json.dumps({"token": token, "box": self.identity.box_id,
                           "public_key": self.identity.public_pem.decode()}).encode()
        status, _, text = await self._request("POST", ENROL_PATH, {"Content-Type": "application/json"}, body,
                                              signed=False)
        if status != 200:
            raise self._refused(status, text)
        pem = json.loads(text)["hub_key"].encode()
        self.hub_key = load_public_key(pem, "the hub's key")
        return pem

    async def open_channel(self) -> aiohttp.ClientWebSocketResponse:
        """The box's channel to the hub (sync.hub_protocol), signed like every request; the caller reads it
        until it closes. HubRefused if the hub will not have this box (401/403), HubUnreachable otherwise."""
        assert self._session is not None, "use `async with HubClient(...)`"
        headers = sign_request(self.identity, "GET", CHANNEL_PATH, {}, None, now_s=self.clock.now_ms() / 1000)
        try:
            return await self._session.ws_connect(self.hub_url + CHANNEL_PATH, headers=headers, ssl=self._ssl,
                                                  heartbeat=PING_S, max_msg_size=MAX_MESSAGE_BYTES)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise HubRefused(exc.status, exc.message) from None
            raise HubUnreachable(f"channel: the hub answered {exc.status}: {exc.message}") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise HubUnreachable(f"channel {self.hub_url}{CHANNEL_PATH}: {type(exc).__name__}: {exc}") from None

    # --- uploads ----------------------------------------------------------------------------------------

    async def create(self, size: int, metadata: dict[str, str]) -> str:
        """A new upload (or the one already made for metadata's idempotency_key): its path on the hub."""
        encoded = ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items())
        status, headers, text = await self._request("POST", UPLOADS_PATH, {"Upload-Length": str(size),
                                                                            "Upload-Metadata": encoded})
        if status != 201 or "Location" not in headers:
            raise self._refused(status, text)
        return headers["Location"]

    async def offset(self, upload: str) -> tuple[int, str | None]:
        """Where the hub is (committed bytes) and its receipt if the upload is complete."""
        status, headers, text = await self._request("HEAD", upload)
        if status != 200:
            raise self._refused(status, text)
        receipt = headers.get("Edgenvr-Receipt")
        return int(headers["Upload-Offset"]), base64.b64decode(receipt).decode() if receipt else None

    async def upload(self, path: Path, metadata: dict[str, str], *, upload: str | None = None,
                     progress: Callable[[str, int, int], None] | None = None) -> Delivered:
        """Send `path` (created, or resumed at `upload`), chunk by chunk from the hub's offset; its receipt.
        `progress(upload, offset, size)` after every chunk the hub committed (the caller keeps `upload`, so a
        restart resumes instead of starting over)."""
        size = path.stat().st_size
        digest = await asyncio.to_thread(_sha256_of, path)
        if upload is None:
            upload = await self.create(size, metadata)
            if progress:
                progress(upload, 0, size)
        at, receipt = await self.offset(upload)
        with path.open("rb") as handle:
            while receipt is None:
                handle.seek(at)
                chunk = handle.read(min(self.chunk_bytes, size - at))
                if self.pace is not None:
                    await self.pace(len(chunk))
                status, headers, text = await self._request(
                    "PATCH", upload, {"Content-Type": "application/offset+octet-stream", "Upload-Offset": str(at),
                                      "Upload-Checksum": _checksum(chunk)}, chunk)
                if status == 204:
                    at = int(headers["Upload-Offset"])
                    encoded = headers.get("Edgenvr-Receipt")
                    receipt = base64.b64decode(encoded).decode() if encoded else None
                    if progress:
                        progress(upload, at, size)
                elif status in (409, 423, 460):   # out of step, a stalled PATCH still letting go, or damaged
                    log.info("upload %s: %d at %d (%s); asking the hub where it is", upload, status, at,
                             text.strip()[:80])
                    at, receipt = await self.offset(upload)
                else:
                    raise self._refused(status, text)
                if receipt is None and at >= size and status == 204:
                    raise HubRefused(status, "the hub has every byte but gave no receipt")
        return self._delivered(upload, receipt, digest)

    def _delivered(self, upload: str, receipt_text: str, digest: str) -> Delivered:
        if self.hub_key is None:
            raise HubRefused(0, "no hub key to check the receipt with (enrol first)")
        try:
            receipt = read_receipt(receipt_text, self.hub_key)
        except ReceiptInvalid as exc:
            raise HubRefused(0, f"bad receipt: {exc}") from None
        if receipt["sha256"] != digest or receipt["box"] != self.identity.box_id:
            raise HubRefused(0, f"the receipt names {receipt['sha256']} of box {receipt['box']}, not this clip")
        return Delivered(upload, receipt, receipt_text)
