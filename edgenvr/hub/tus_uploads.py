"""The hub's upload endpoint: the tus 1.0.0 resumable upload protocol (core + creation, checksum, termination
and expiration) over aiohttp at /api/v1/uploads/, with every upload's state in the hub database so that any
worker can serve any request of it.

Owns: the protocol (headers, status codes), an upload's bytes until it is complete, its lock, and calling
`on_complete` exactly once when its last byte is committed. Who may upload (`authenticate`) and what a
complete upload is checked for (`on_complete`: signature, hashes, and its receipt) are given by the caller.

Invariants:
- `offset` in the database is what is fsynced in the .part file: a crash at any point loses at most the bytes
  of the PATCH in progress, and the client resumes from the offset HEAD then reports.
- A PATCH with Upload-Checksum commits all of its bytes or none (460 Checksum Mismatch, or a connection that
  dropped before its end: nothing of it counts). Without one, what arrived before a drop is committed, as tus
  core asks. Bytes written past the committed offset are garbage that the next PATCH overwrites (it truncates
  the file to the committed offset first).
- One PATCH at a time per upload, across workers: a lease in the database (LOCK_LEASE_MS, renewed while the
  body flows). A new HEAD or PATCH asks the holder to let go (a client that resumes has given up on its old
  connection) and waits up to RELEASE_WAIT_SECONDS; the holder stops reading, commits what the rules above
  allow and releases. A holder that died leaves a lease that lapses by itself. Whether a request got the lease
  is decided by one conditional UPDATE (hub_database: two workers cannot both win it).
- `on_complete` runs under the lease, renewed until it returns (filing a large clip outlasts a lease, and is
  not interrupted for anyone), and its outcome is recorded only while the upload is still `receiving`: one
  filing, one receipt, whichever worker the requests of an upload reach.
- Paths come from validated ids only (32 hex digits); nothing from a request is joined into a path.
- An upload belongs to whoever created it: another caller gets 403 and learns nothing else.

Failure paths: a header missing or malformed -> 400 naming it; wrong Tus-Resumable -> 412 with Tus-Version;
wrong Content-Type -> 415; unknown upload -> 404; expired or terminated -> 410 (expired ones are deleted by
`sweep_expired`); Upload-Offset other than the committed offset -> 409 with the right one in Upload-Offset;
more bytes than Upload-Length or a length over max_bytes -> 413, nothing committed; still locked after the
wait -> 423; a rejected upload (on_complete raised UploadRejected) -> 422 with the reason, its bytes deleted;
the disk full or another OSError while writing -> 507 (nothing committed, logged with the reason).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import hashlib
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.units import DAY_MS
from edgenvr.hub.hub_database import UPLOADS

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,expiration,checksum,termination"
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}   # tuspy sends sha1; edgenvr's box sends sha256
UPLOADS_PATH = "/api/v1/uploads/"
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
EXPIRES_AFTER_MS = 7 * DAY_MS        # an upload untouched this long is dropped (a box offline a week resumes
# within it: each PATCH pushes the expiry on)
LOCK_LEASE_MS = 10_000               # a PATCH's lock lapses this long after its holder last renewed it
RELEASE_WAIT_SECONDS = 5.0           # how long a request waits for a held lock to be let go
POLL_SECONDS = 0.5                   # how often a holder renews its lease and looks whether it is wanted (a
# database write per second per upload at most, whatever the number of boxes)
STALL_SECONDS = 60.0                 # a PATCH body that sends nothing this long is treated as dropped
PIECE_BYTES = 256 * 1024
CHECKSUM_MISMATCH = 460
HEADERS_EXPOSED = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"}


class _ChecksumMismatch(web.HTTPClientError):
    status_code = CHECKSUM_MISMATCH   # the checksum extension's own status

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(reason="Checksum Mismatch", **kwargs)


class _TooLarge(web.HTTPClientError):
    status_code = 413   # aiohttp's HTTPRequestEntityTooLarge wants sizes for its own message; ours names them


class _Locked(web.HTTPClientError):
    status_code = 423   # WebDAV's Locked, as tusd answers a request for an upload another one is writing


class UploadRejected(Exception):
    """Raised by on_complete: the bytes are not acceptable (bad signature, hashes that do not match)."""


@dataclass(frozen=True)
class CompletedUpload:
    id: str
    owner: str
    length: int
    metadata: dict[str, str]
    path: Path        # the complete bytes; on_complete may move it away (it is not used again here)


Authenticate = Callable[[web.Request], Awaitable[str]]          # the caller's id, or raise web.HTTPUnauthorized
OnComplete = Callable[[CompletedUpload], Awaitable[str]]        # the receipt, or raise UploadRejected


def parse_metadata(header: str) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64value` (the value may be absent). ValueError if malformed,
    or if a value holds a NUL character (PostgreSQL's text cannot, so no backend is asked to store one)."""
    result: dict[str, str] = {}
    if not header.strip():
        return result
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if not 1 <= len(parts) <= 2 or not re.fullmatch(r"[!-~]+", parts[0]) or parts[0] in result:
            raise ValueError(f"malformed Upload-Metadata pair {pair.strip()[:60]!r}")
        try:
            result[parts[0]] = base64.b64decode(parts[1], validate=True).decode() if len(parts) == 2 else ""
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"Upload-Metadata value of {parts[0]!r} is not base64 of UTF-8") from exc
        if "\x00" in result[parts[0]]:
            raise ValueError(f"Upload-Metadata value of {parts[0]!r} holds a NUL character")
    return result


def _http_date(epoch_ms: int) -> str:
    return email.utils.format_datetime(datetime.fromtimestamp(epoch_ms / 1000, timezone.utc), usegmt=True)


def _whole(request: web.Request, name: str) -> int:
    value = request.headers.get(name)
    if value is None or not value.isdigit() or len(value) > 18:
        raise _error(web.HTTPBadRequest, f"{name} must be a non-negative whole number, got {value!r}")
    return int(value)


def _error(kind: type[web.HTTPException], message: str, **headers: str) -> web.HTTPException:
    return kind(text=message + "\n", headers={**HEADERS_EXPOSED, **headers})


@web.middleware
async def tus_resumable_header(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every answer under the uploads path carries Tus-Resumable, as the protocol asks of all but OPTIONS
    (clients check it): also the ones made before the endpoint runs (401 from the signature check, 405 and
    404 from routing), which `_error` cannot reach."""
    if not request.path.startswith(UPLOADS_PATH):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as answer:
        answer.headers.setdefault("Tus-Resumable", TUS_VERSION)
        raise
    response.headers.setdefault("Tus-Resumable", TUS_VERSION)
    return response


class TusUploads:
    """The endpoint. `routes()` are added to the hub's app; `sweep_expired()` is called now and then."""

    def __init__(self, engine: sa.Engine, blob_dir: Path, authenticate: Authenticate, on_complete: OnComplete,
                 *, max_bytes: int, clock: Clock = SYSTEM_CLOCK) -> None:
        self.engine = engine
        self.parts_dir = blob_dir / "uploads"
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.authenticate = authenticate
        self.on_complete = on_complete
        self.max_bytes = max_bytes
        self.clock = clock

    def routes(self) -> list[web.RouteDef]:
        one = UPLOADS_PATH + "{upload}"
        return [web.options(UPLOADS_PATH, self.options), web.post(UPLOADS_PATH, self.create),
                web.options(one, self.options), web.head(one, self.head), web.patch(one, self.patch),
                web.delete(one, self.terminate), web.post(one, self.overridden)]

    async def overridden(self, request: web.Request) -> web.StreamResponse:
        """A PATCH or DELETE sent as POST with X-HTTP-Method-Override (the protocol's way through proxies and
        clients that cannot send them). The box's signature covers the method actually sent (POST), so it is
        checked as usual; anything else is the 405 a POST to an upload would get without the header."""
        action = {"PATCH": self.patch, "DELETE": self.terminate}.get(
            request.headers.get("X-HTTP-Method-Override", "").upper())
        if action is None:
            raise web.HTTPMethodNotAllowed("POST", ("OPTIONS", "HEAD", "PATCH", "DELETE"), headers=HEADERS_EXPOSED,
                                           text="an upload takes POST only with X-HTTP-Method-Override: PATCH or "
                                                "DELETE\n")
        return await action(request)

    # --- database work (in a thread: never on the event loop) -------------------------------------------

    async def _db(self, work: Callable[[sa.Connection], Any]) -> Any:
        def run() -> Any:
            with self.engine.begin() as conn:
                return work(conn)
        return await asyncio.to_thread(run)

    def _part(self, upload_id: str) -> Path:
        return self.parts_dir / f"{upload_id}.part"   # upload_id matched UPLOAD_ID

    async def _row(self, request: web.Request, owner: str) -> Any:
        """The upload of the URL, checked to be the caller's and alive."""
        upload_id = request.match_info["upload"]
        if not UPLOAD_ID.fullmatch(upload_id):
            raise _error(web.HTTPNotFound, "no such upload")
        row = await self._db(lambda c: c.execute(sa.select(UPLOADS).where(UPLOADS.c.id == upload_id)).first())
        if row is None:
            raise _error(web.HTTPNotFound, "no such upload")
        if row.owner != owner:
            raise _error(web.HTTPForbidden, "this upload is not yours")
        if row.state == "receiving" and row.expires_ms <= self.clock.now_ms():
            raise _error(web.HTTPGone, "this upload expired")
        if row.state == "rejected":
            raise _error(web.HTTPUnprocessableEntity, f"this upload was rejected: {row.outcome}")
        return row

    # --- protocol ---------------------------------------------------------------------------------------

    async def _begin(self, request: web.Request) -> str:
        """Version check and authentication, common to every request but OPTIONS."""
        if request.headers.get("Tus-Resumable") != TUS_VERSION:
            raise _error(web.HTTPPreconditionFailed, f"Tus-Resumable must be {TUS_VERSION}", **{"Tus-Version": TUS_VERSION})
        return await self.authenticate(request)

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={
            **HEADERS_EXPOSED, "Tus-Version": TUS_VERSION, "Tus-Extension": EXTENSIONS,
            "Tus-Max-Size": str(self.max_bytes), "Tus-Checksum-Algorithm": ",".join(CHECKSUMS)})

    async def create(self, request: web.Request) -> web.Response:
        owner = await self._begin(request)
        if "Upload-Defer-Length" in request.headers:
            raise _error(web.HTTPBadRequest, "Upload-Defer-Length is not supported: send Upload-Length")
        length = _whole(request, "Upload-Length")
        if length > self.max_bytes:
            raise _error(_TooLarge, f"Upload-Length {length} is over {self.max_bytes} bytes")
        raw = request.headers.get("Upload-Metadata", "")
        try:
            metadata = parse_metadata(raw)
        except ValueError as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from None
        key = metadata.get("idempotency_key") or None
        if key is not None and len(key) > 128:
            raise _error(web.HTTPBadRequest, "idempotency_key is longer than 128 characters")
        now = self.clock.now_ms()
        upload_id = secrets.token_hex(16)

        def insert(conn: sa.Connection) -> tuple[str, int]:
            if key is not None:   # the same clip again (a client that lost the answer): the same upload
                found = conn.execute(sa.select(UPLOADS.c.id, UPLOADS.c.length, UPLOADS.c.expires_ms).where(
                    UPLOADS.c.owner == owner, UPLOADS.c.idempotency_key == key)).first()
                if found is not None:
                    if found.length != length:
                        raise _error(web.HTTPConflict, f"idempotency_key {key!r} was used for an upload of "
                                                       f"{found.length} bytes")
                    return found.id, found.expires_ms
            conn.execute(sa.insert(UPLOADS).values(id=upload_id, owner=owner, idempotency_key=key, length=length,
                                                   metadata=raw, created_ms=now, expires_ms=now + EXPIRES_AFTER_MS))
            return upload_id, now + EXPIRES_AFTER_MS

        try:
            chosen, expires = await self._db(insert)
        except sa.exc.IntegrityError:   # two creations with one key raced: the other one won, take it
            chosen, expires = await self._db(insert)
        if chosen == upload_id:
            self._part(upload_id).touch(exist_ok=True)
            log.info("upload %s created by %s: %d bytes", upload_id, owner, length)
        return web.Response(status=201, headers={**HEADERS_EXPOSED, "Location": UPLOADS_PATH + chosen,
                                                 "Upload-Expires": _http_date(expires)})

    def _state_headers(self, row: Any) -> dict[str, str]:
        headers = {**HEADERS_EXPOSED, "Upload-Offset": str(row.offset), "Upload-Length": str(row.length),
                   "Upload-Expires": _http_date(row.expires_ms)}
        if row.metadata:
            headers["Upload-Metadata"] = row.metadata
        if row.state == "complete":   # a client that lost the last PATCH's answer finds its receipt here
            headers["Edgenvr-Receipt"] = base64.b64encode(row.outcome.encode()).decode()
        return headers

    async def head(self, request: web.Request) -> web.Response:
        owner = await self._begin(request)
        row = await self._row(request, owner)
        if row.lock_token is not None:
            await self._take_over(row.id)   # let a stalled PATCH commit what it may, so the offset is current
            row = await self._row(request, owner)
        return web.Response(status=200, headers=self._state_headers(row))

    async def terminate(self, request: web.Request) -> web.Response:
        owner = await self._begin(request)
        row = await self._row(request, owner)
        token = await self._lock(row.id)
        try:
            await self._db(lambda c: c.execute(sa.delete(UPLOADS).where(UPLOADS.c.id == row.id)))
        finally:
            await self._unlock(row.id, token)
        self._part(row.id).unlink(missing_ok=True)
        log.info("upload %s terminated by %s at %d of %d bytes", row.id, owner, row.offset, row.length)
        return web.Response(status=204, headers=HEADERS_EXPOSED)

    async def patch(self, request: web.Request) -> web.Response:
        owner = await self._begin(request)
        if request.content_type != OFFSET_CONTENT_TYPE:
            raise _error(web.HTTPUnsupportedMediaType, f"Content-Type must be {OFFSET_CONTENT_TYPE}")
        offset = _whole(request, "Upload-Offset")
        checksum = self._checksum(request.headers.get("Upload-Checksum"))
        row = await self._row(request, owner)
        token = await self._lock(row.id)
        try:
            row = await self._row(request, owner)   # what the holder before us committed
            if offset != row.offset:
                raise _error(web.HTTPConflict, f"Upload-Offset is {offset}, the upload is at {row.offset}",
                             **{"Upload-Offset": str(row.offset)})
            if request.content_length is not None and offset + request.content_length > row.length:
                raise _error(_TooLarge, f"{request.content_length} bytes at {offset} would pass "
                                                            f"Upload-Length {row.length}")
            await self._receive(request, row, token, checksum)
            row = await self._row(request, owner)
            if row.offset == row.length and row.state == "receiving":   # also an empty PATCH at the end: a
                row = await self._complete(row, request, owner, token)   # filing that failed is tried again
            return web.Response(status=204, headers=self._state_headers(row))
        finally:
            await self._unlock(row.id, token)

    def _checksum(self, header: str | None) -> tuple[str, bytes] | None:
        if header is None:
            return None
        parts = header.split(" ")
        if len(parts) != 2 or parts[0] not in CHECKSUMS:
            raise _error(web.HTTPBadRequest, f"Upload-Checksum must be '<{'|'.join(CHECKSUMS)}> <base64 digest>'")
        try:
            digest = base64.b64decode(parts[1], validate=True)
        except binascii.Error:
            raise _error(web.HTTPBadRequest, "Upload-Checksum digest is not base64") from None
        if len(digest) != CHECKSUMS[parts[0]]().digest_size:
            raise _error(web.HTTPBadRequest, f"Upload-Checksum digest is not a {parts[0]} digest")
        return parts[0], digest

    async def _receive(self, request: web.Request, row: Any, token: str,
                       checksum: tuple[str, bytes] | None) -> None:
        """Write the body at the committed offset and commit what the rules allow."""
        room = row.length - row.offset
        hasher = CHECKSUMS[checksum[0]]() if checksum else None
        written = 0
        whole = False      # the body arrived to its end
        wanted = False     # another request asked for the lock
        too_much = False
        loop = asyncio.get_running_loop()
        quiet_since = checked = loop.time()
        path = self._part(row.id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            log.error("upload %s: cannot open its file: %s", row.id, exc)
            raise _error(web.HTTPInsufficientStorage, "the hub cannot store this upload now") from None
        try:
            os.ftruncate(fd, row.offset)   # drop what an uncommitted PATCH left past the offset
            while True:
                if loop.time() - checked >= POLL_SECONDS:   # renew the lease, and let go if it is wanted
                    checked = loop.time()
                    if await self._wanted(row.id, token):
                        wanted = True
                        break
                try:
                    piece = await asyncio.wait_for(request.content.readany(), POLL_SECONDS)
                except asyncio.TimeoutError:
                    if loop.time() - quiet_since > STALL_SECONDS:
                        log.warning("upload %s: nothing received for %.0f s; treating the PATCH as dropped",
                                    row.id, STALL_SECONDS)
                        break
                    continue
                except (ConnectionError, asyncio.IncompleteReadError, web.HTTPException) as exc:
                    log.info("upload %s: the connection dropped after %d bytes (%s)", row.id, written,
                             type(exc).__name__)
                    break
                except Exception as exc:   # aiohttp's payload errors (a body cut short)
                    log.info("upload %s: the body ended early after %d bytes (%s)", row.id, written, exc)
                    break
                if not piece:
                    whole = True
                    break
                quiet_since = loop.time()
                if written + len(piece) > room:
                    too_much = True
                    break
                os.pwrite(fd, piece, row.offset + written)
                if hasher is not None:
                    hasher.update(piece)
                written += len(piece)
            if too_much:
                raise _error(_TooLarge, f"the body passes Upload-Length {row.length}",
                             **{"Upload-Offset": str(row.offset)})
            if checksum is not None and not whole:
                return   # all or nothing: the client sends the chunk again
            if hasher is not None and checksum is not None and hasher.digest() != checksum[1]:
                log.info("upload %s: a chunk of %d bytes at %d does not match its %s checksum: not kept", row.id,
                         written, row.offset, checksum[0])
                raise _ChecksumMismatch(text="the chunk does not match its Upload-Checksum\n",
                                        headers={**HEADERS_EXPOSED, "Upload-Offset": str(row.offset)})
            if written:   # in a thread: an fsync can take 100 ms on a busy disk, the loop serves other boxes
                await asyncio.to_thread(os.fsync, fd)
        except OSError as exc:
            log.error("upload %s: cannot write %d bytes at %d: %s (nothing of this PATCH is kept)", row.id, written,
                      row.offset, exc)
            raise _error(web.HTTPInsufficientStorage, "the hub cannot store this upload now") from None
        finally:
            os.close(fd)
        if not written:
            return
        new_offset = row.offset + written
        now = self.clock.now_ms()
        await self._db(lambda c: c.execute(sa.update(UPLOADS).where(UPLOADS.c.id == row.id, UPLOADS.c.lock_token == token)
                                            .values(offset=new_offset, expires_ms=now + EXPIRES_AFTER_MS)))
        if wanted:
            log.info("upload %s: let go of a stalled PATCH at %d bytes for a newer request", row.id, new_offset)

    async def _complete(self, row: Any, request: web.Request, owner: str, token: str) -> Any:
        """Hand the complete bytes to on_complete, keeping the lease meanwhile; store its receipt, or reject the
        upload."""
        completed = CompletedUpload(row.id, row.owner, row.length, parse_metadata(row.metadata), self._part(row.id))
        keeping = asyncio.create_task(self._keep_lease(row.id, token))
        try:
            receipt, state = await self.on_complete(completed), "complete"
        except OSError as exc:   # the hub's disk: keep the bytes; an empty PATCH at the end tries again
            log.error("upload %s from %s: cannot file it: %s", row.id, owner, exc)
            raise _error(web.HTTPInsufficientStorage, "the hub cannot file this clip now; try again later") from None
        except UploadRejected as exc:
            receipt, state = str(exc), "rejected"
            log.warning("upload %s from %s rejected: %s", row.id, owner, exc)
            self._part(row.id).unlink(missing_ok=True)
        finally:
            keeping.cancel()
        recorded = await self._db(lambda c: c.execute(
            sa.update(UPLOADS).where(UPLOADS.c.id == row.id, UPLOADS.c.state == "receiving")
            .values(state=state, outcome=receipt)).rowcount)
        if not recorded:   # only if this worker lost its lease mid-filing: the outcome recorded first stands
            log.warning("upload %s from %s: filed again while its first outcome was recorded; that one stands",
                        row.id, owner)
            return await self._row(request, owner)
        if state == "rejected":
            raise _error(web.HTTPUnprocessableEntity, f"this upload was rejected: {receipt}")
        log.info("upload %s from %s complete: %d bytes", row.id, owner, row.length)
        return await self._row(request, owner)

    # --- the lock ---------------------------------------------------------------------------------------

    async def _lock(self, upload_id: str) -> str:
        """Take the upload's lease, asking a holder to let go first; 423 if it does not within the wait."""
        token = secrets.token_hex(16)
        deadline = asyncio.get_running_loop().time() + RELEASE_WAIT_SECONDS
        while True:
            now = self.clock.now_ms()
            taken = await self._db(lambda c: c.execute(
                sa.update(UPLOADS).where(UPLOADS.c.id == upload_id,
                                         sa.or_(UPLOADS.c.lock_token.is_(None), UPLOADS.c.lock_until_ms < now))
                .values(lock_token=token, lock_until_ms=now + LOCK_LEASE_MS, release_wanted=False)).rowcount)
            if taken:
                return token
            if asyncio.get_running_loop().time() > deadline:
                raise _error(_Locked, "another request is writing this upload; try again shortly")
            await self._db(lambda c: c.execute(sa.update(UPLOADS).where(UPLOADS.c.id == upload_id)
                                                .values(release_wanted=True)))
            await asyncio.sleep(POLL_SECONDS / 2)

    async def _take_over(self, upload_id: str) -> None:
        """Ask a holder to let go and wait (at most the wait) until it has; the lock is not kept."""
        try:
            token = await self._lock(upload_id)
        except _Locked:
            return   # a holder that died: its lease lapses by itself; report the committed offset meanwhile
        await self._unlock(upload_id, token)

    async def _keep_lease(self, upload_id: str, token: str) -> None:
        """Renew the lease every POLL_SECONDS until cancelled, whoever asks for it."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                await self._wanted(upload_id, token)
            except sa.exc.SQLAlchemyError as exc:   # the lease may lapse; recording the outcome stays single
                log.warning("upload %s: cannot renew its lease while filing it: %s", upload_id, exc)

    async def _wanted(self, upload_id: str, token: str) -> bool:
        """Renew the lease; whether another request wants it."""
        until = self.clock.now_ms() + LOCK_LEASE_MS

        def renew(conn: sa.Connection) -> bool:
            conn.execute(sa.update(UPLOADS).where(UPLOADS.c.id == upload_id, UPLOADS.c.lock_token == token)
                         .values(lock_until_ms=until))
            found = conn.execute(sa.select(UPLOADS.c.release_wanted, UPLOADS.c.lock_token)
                                 .where(UPLOADS.c.id == upload_id)).first()
            return found is None or found.lock_token != token or bool(found.release_wanted)
        return bool(await self._db(renew))

    async def _unlock(self, upload_id: str, token: str) -> None:
        await self._db(lambda c: c.execute(sa.update(UPLOADS).where(UPLOADS.c.id == upload_id,
                                                                     UPLOADS.c.lock_token == token)
                                            .values(lock_token=None, lock_until_ms=None, release_wanted=False)))

    # --- expiration -------------------------------------------------------------------------------------

    async def sweep_expired(self) -> int:
        """Delete unfinished uploads past their expiry (and their bytes); how many."""
        now = self.clock.now_ms()

        def expired(conn: sa.Connection) -> list[str]:
            stale = sa.and_(UPLOADS.c.state == "receiving", UPLOADS.c.expires_ms <= now,
                            sa.or_(UPLOADS.c.lock_token.is_(None), UPLOADS.c.lock_until_ms < now))
            ids = [r.id for r in conn.execute(sa.select(UPLOADS.c.id).where(stale))]
            # each DELETE repeats the conditions: another worker may have locked or resumed it since the SELECT
            return [upload_id for upload_id in ids
                    if conn.execute(sa.delete(UPLOADS).where(UPLOADS.c.id == upload_id, stale)).rowcount]
        ids = await self._db(expired)
        for upload_id in ids:
            self._part(upload_id).unlink(missing_ok=True)
        if ids:
            log.info("uploads: %d expired unfinished upload(s) deleted", len(ids))
        return len(ids)
