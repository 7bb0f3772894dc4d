"""What the hub does with an upload once its last byte is committed: check that it is an evidence folder
(evidence.bundle, zipped) signed by the key the box enrolled with, keep it, index it, and answer with a
signed receipt (evidence.hub_receipts).

Owns: the clips table's rows and <blobs>/clips/<id>.zip. Invariants:
- Nothing is kept unless the whole folder verifies (evidence.verification, every hash and the signature by
  the ENROLLED key, never by the device.pub inside the zip) and its manifest names the uploading box and the
  camera and range the upload's metadata announced.
- The receipt's SHA-256 is of the bytes as stored, re-read from the hub's own disk after they were moved into
  place and fsynced; the box compares it with its own before it marks the clip synced.
- The same clip (box, idempotency key) is kept once: a second upload of it gets the first one's receipt, also
  when two workers file it at once (the clips_box_key constraint decides; the loser deletes its copy).
- A requested clip answers a pull (hub.remote_pulls) of that box for exactly its camera and range, and makes
  it ready in the transaction that files the clip.
- The zip is opened with bounds (`checked_entries`): plain file names only (no directories, no `..`), each
  once, stored uncompressed, at most MAX_ENTRIES, their sizes adding up to no more than the upload; extracted
  into a private scratch directory that is removed whatever happens.
Failure paths: UploadRejected (422 to the box, bytes deleted) naming the first problem: not a zip, a bad
entry, a folder that does not verify, a manifest for another box/camera/range; the box is unknown or revoked
since it started (its key is gone). An OSError (disk full) propagates: tus_uploads answers 507 and keeps the
complete part file; the box's next PATCH (an empty one at the end) files it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgenvr.core.camera_ids import CAMERA_ID_RULE, is_camera_id
from edgenvr.core.clock import Clock
from edgenvr.evidence.export_folder import MANIFEST
from edgenvr.evidence.hub_receipts import make_receipt
from edgenvr.evidence.identity import public_pem
from edgenvr.evidence.verification import VerificationFailed, verify_export
from edgenvr.hub.box_enrolment import box_public_key
from edgenvr.hub.hub_database import CLIPS
from edgenvr.hub.remote_pulls import PullRefused, check_clip_for, mark_ready
from edgenvr.hub.tus_uploads import CompletedUpload, UploadRejected
from edgenvr.sync.outbox import ClipKind

log = logging.getLogger(__name__)

MAX_ENTRIES = 64
SAFE_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def checked_entries(archive: zipfile.ZipFile, size: int) -> list[zipfile.ZipInfo]:
    """The entries of a clip's zip (`size` bytes), once they are what the sync process writes: at most
    MAX_ENTRIES, each a plain file name (no directory, no `..`, not hidden) given once, stored uncompressed
    (so no entry can inflate past the zip: a bomb is refused before a byte is written). UploadRejected
    naming the first that is not."""
    entries = archive.infolist()
    if len(entries) > MAX_ENTRIES:
        raise UploadRejected(f"the zip has {len(entries)} entries, more than {MAX_ENTRIES}")
    names: set[str] = set()
    for entry in entries:
        name = entry.filename
        if entry.is_dir() or not name or set(name) - SAFE_NAME or name.startswith("."):
            raise UploadRejected(f"the zip has an entry that is not a plain file name: {name[:80]!r}")
        if name in names:
            raise UploadRejected(f"the zip has the entry {name!r} twice")
        if entry.compress_type != zipfile.ZIP_STORED:
            raise UploadRejected(f"the zip's entry {name!r} is compressed; clips are stored as they are")
        names.add(name)
    if sum(e.file_size for e in entries) > size:   # sizes the headers claim for stored data: they lie
        raise UploadRejected("the zip's entries add up to more than the zip itself: refused")
    return entries


class ClipIntake:
    def __init__(self, engine: sa.Engine, clips_dir: Path, receipt_key: Ed25519PrivateKey, clock: Clock) -> None:
        self.engine = engine
        self.clips_dir = clips_dir
        self.clips_dir.mkdir(parents=True, exist_ok=True)
        self.scratch_dir = clips_dir.parent / "scratch"
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        self.receipt_key = receipt_key
        self.clock = clock

    async def on_complete(self, upload: CompletedUpload) -> str:
        return await asyncio.to_thread(self._file, upload)

    def _file(self, upload: CompletedUpload) -> str:
        meta = upload.metadata
        try:
            camera, kind = meta["camera"], meta["kind"]
            start_ms, end_ms = int(meta["start_ms"]), int(meta["end_ms"])
        except (KeyError, ValueError):
            raise UploadRejected("its Upload-Metadata must name camera, kind, start_ms and end_ms") from None
        if kind not in set(ClipKind):
            raise UploadRejected(f"kind must be one of {', '.join(ClipKind)}, not {kind[:20]!r}")
        if not is_camera_id(camera):   # also what fits clips.camera (PostgreSQL enforces its length)
            raise UploadRejected(f"camera {camera[:40]!r} is not a camera id: {CAMERA_ID_RULE}")
        pull = meta.get("pull")
        if (kind == "requested") != (pull is not None):
            raise UploadRejected("a requested clip names its pull (and only a requested clip does)")
        if pull is not None:
            with self.engine.connect() as conn:
                try:
                    check_clip_for(conn, upload.owner, pull, camera, start_ms, end_ms)
                except PullRefused as exc:
                    raise UploadRejected(str(exc)) from None
        key = meta.get("idempotency_key")
        if key is not None:
            with self.engine.connect() as conn:
                earlier = conn.execute(sa.select(CLIPS).where(CLIPS.c.box == upload.owner,
                                                              CLIPS.c.idempotency_key == key)).first()
            if earlier is not None:   # the same clip sent twice (a box restored from an old index): one copy
                upload.path.unlink(missing_ok=True)
                return self._receipt(dict(earlier._mapping))
        enrolled = box_public_key(self.engine, upload.owner)
        if enrolled is None:
            raise UploadRejected(f"box {upload.owner} is not enrolled any more")
        manifest = self._verified_manifest(upload.path, public_pem(enrolled))
        if manifest["box"]["id"] != upload.owner or manifest["camera"]["id"] != camera:
            raise UploadRejected(f"the manifest is of box {manifest['box']['id']!r}, camera "
                                 f"{manifest['camera']['id']!r}, not what the upload says")
        actual = manifest["actual"]
        if not (actual["start_ms"] < end_ms and start_ms < actual["end_ms"]):
            raise UploadRejected("the manifest's range is not the range the upload announced")

        final = self.clips_dir / f"{upload.id}.zip"   # upload.id: 32 hex digits, checked by tus_uploads
        os.replace(upload.path, final)
        with open(final, "rb") as handle:
            os.fsync(handle.fileno())
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        directory = os.open(self.clips_dir, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        row = {"id": upload.id, "box": upload.owner, "camera": camera, "start_ms": actual["start_ms"],
               "end_ms": actual["end_ms"], "kind": kind, "sha256": digest, "bytes": final.stat().st_size,
               "received_ms": self.clock.now_ms(), "idempotency_key": key}
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(CLIPS).values(**row))
                if pull is not None:   # the request is answered with this clip, in the same commit
                    mark_ready(conn, pull, upload.id, row["received_ms"])
        except sa.exc.IntegrityError:   # another worker filed the same clip since we looked: its row stands
            same = CLIPS.c.id == upload.id
            if key is not None:
                same = sa.or_(same, sa.and_(CLIPS.c.box == upload.owner, CLIPS.c.idempotency_key == key))
            with self.engine.connect() as conn:
                earlier = conn.execute(sa.select(CLIPS).where(same)).first()
            if earlier is None:
                raise
            if earlier.id != upload.id:
                final.unlink(missing_ok=True)
            return self._receipt(dict(earlier._mapping))
        log.info("clip %s from %s/%s %s %d-%d filed (%d bytes)", upload.id, upload.owner, camera, kind,
                 row["start_ms"], row["end_ms"], row["bytes"])
        return self._receipt(row)

    def _receipt(self, clip: dict[str, Any]) -> str:
        fields = {name: clip[name] for name in ("box", "camera", "start_ms", "end_ms", "kind", "sha256", "bytes",
                                                "received_ms")}
        return make_receipt(self.receipt_key, {"clip": clip["id"], **fields})

    def _verified_manifest(self, path: Path, enrolled_pem: bytes) -> dict[str, Any]:
        """Unzip into scratch within bounds, verify with the enrolled key, return the manifest."""
        scratch = Path(tempfile.mkdtemp(dir=self.scratch_dir))
        try:
            try:
                with zipfile.ZipFile(path) as archive:
                    for entry in checked_entries(archive, path.stat().st_size):
                        with archive.open(entry) as source, open(scratch / entry.filename, "xb") as target:
                            shutil.copyfileobj(source, target, 1024 * 1024)
            except zipfile.BadZipFile as exc:
                raise UploadRejected(f"not a readable zip of an evidence folder: {exc}") from None
            try:
                verify_export(scratch, enrolled_pem)
            except VerificationFailed as exc:
                raise UploadRejected(f"the evidence folder does not verify with the box's enrolled key: {exc}") \
                    from None
            return json.loads((scratch / MANIFEST).read_bytes())
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
