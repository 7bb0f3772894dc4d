"""An export folder anyone can check without edgenvr: the clip's video files, `manifest.json` (what they are,
where they come from, who exported them and why), `manifest.sig` (the box's Ed25519 signature over the
manifest's exact bytes), `device.pub`, `SHA256SUMS` (as `sha256sum -c` reads it) and `VERIFY.txt` (how to
check it all by hand, in Indonesian and English).

Owns how the folder is built and the manifest's content; its names and format are evidence.export_folder's,
which evidence.verification reads too.

Invariants:
- The folder appears whole or not at all: everything is written into a hidden temporary folder next to it
  (`.NAME.partial-PID`), fsynced, then renamed; a folder that already exists is never written into. A kill
  leaves only the hidden partial folder, which has no SHA256SUMS until the end and never passes a check.
- No export without its audit record: the record is appended (evidence.audit) before the manifest is
  signed, and the manifest carries its hash; if the audit write fails, the export fails and the partial
  folder is removed.
- The manifest is JSON with sorted keys and two-space indentation, UTF-8, ending in a newline; times are UTC
  epoch ms with their ISO 8601 form beside them.

Failure paths: nothing recorded in the range, a source altered (evidence.clip_builder.ClipError), a full
disk (OSError), the audit trail unwritable (AuditError): raised with the partial folder removed and the
target never created.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import edgenvr
from edgenvr.config.records import Config
from edgenvr.core.records import EventKind
from edgenvr.core.time_format import format_ms
from edgenvr.evidence.audit import AuditAction, AuditTrail
from edgenvr.evidence.clip_builder import Clip, build_clip
from edgenvr.evidence.export_folder import (
    MANIFEST,
    MANIFEST_FORMAT,
    PUBLIC_KEY,
    README,
    SIGNATURE,
    SUMS,
)
from edgenvr.evidence.identity import DeviceIdentity
from edgenvr.index.queries import events
from edgenvr.storage.durable_writes import fsync_dir
from edgenvr.storage.file_digest import sha256_of
from edgenvr.storage.layout import StorageLayout


class ExportError(Exception):
    """The export cannot be made as asked (its folder exists, ...); nothing was written."""


@dataclass(frozen=True)
class ExportRequest:
    camera: str
    from_ms: int
    to_ms: int
    out_dir: Path
    reason: str
    exported_by: str
    allow_altered: bool = False


def export_clip(conn: sqlite3.Connection, config: Config, layout: StorageLayout, identity: DeviceIdentity,
                audit: AuditTrail, request: ExportRequest, *,
                progress: Callable[[int, int], None] | None = None) -> tuple[Clip, dict[str, Any]]:
    """Build the export folder `request.out_dir` (see the module docstring). Returns the clip and the manifest."""
    target = request.out_dir
    if target.exists() or target.is_symlink():
        raise ExportError(f"{target} exists: an export never writes into an existing folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)   # a leftover of this pid's earlier, killed run
    partial.mkdir()
    try:
        clip = build_clip(conn, layout, request.camera, request.from_ms, request.to_ms, partial,
                          allow_altered=request.allow_altered, progress=progress)
        record = audit.append(request.exported_by, AuditAction.EXPORT, camera=request.camera,
                              from_ms=request.from_ms, to_ms=request.to_ms, reason=request.reason,
                              detail=json.dumps({"folder": target.name, "files": {f.name: f.sha256 for f in clip.files}},
                                                sort_keys=True))
        manifest = _manifest(conn, config, layout, identity, request, clip, {"seq": record.seq, "hash": record.hash})
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
        _write(partial / MANIFEST, manifest_bytes)
        _write(partial / SIGNATURE, identity.sign(manifest_bytes))
        _write(partial / PUBLIC_KEY, identity.public_pem)
        _write(partial / README, verify_text(identity.fingerprint, request.camera, manifest).encode())
        sums = "".join(f"{sha256_of(partial / name)}  {name}\n" for name in sorted(os.listdir(partial)))
        _write(partial / SUMS, sums.encode())
        fsync_dir(partial)
        os.rename(partial, target)   # refuses a non-empty target made meanwhile; never merges into it
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return clip, manifest


def zip_export(folder: Path, archive: Path, inside: str = "") -> None:
    """The export folder as one zip (stored, not compressed: video does not compress), each file under
    `inside/` if given; nothing is left at `archive` if it fails."""
    try:
        with zipfile.ZipFile(archive, "x", compression=zipfile.ZIP_STORED, allowZip64=True) as bundle:
            for path in sorted(folder.iterdir()):
                bundle.write(path, f"{inside}/{path.name}" if inside else path.name)
    except BaseException:
        archive.unlink(missing_ok=True)
        raise


def _write(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _times(start_ms: int, end_ms: int) -> dict[str, Any]:
    return {"start_ms": start_ms, "end_ms": end_ms, "start": format_ms(start_ms), "end": format_ms(end_ms)}


def _manifest(conn: sqlite3.Connection, config: Config, layout: StorageLayout, identity: DeviceIdentity,
              request: ExportRequest, clip: Clip, audit_record: dict[str, Any]) -> dict[str, Any]:
    try:
        camera_name = config.camera(request.camera).name
    except KeyError:   # a camera removed from the config since: its video can still be exported
        camera_name = request.camera
    tamper = [{"subkind": e.subkind, "start_ms": e.start_ms, "end_ms": e.end_ms, "detail": e.detail}
              for e in events(conn, layout, request.camera, EventKind.TAMPER, request.from_ms, request.to_ms)]
    return {
        "format": MANIFEST_FORMAT,
        "box": {"id": identity.box_id, "name": identity.box_name, "key_fingerprint": identity.fingerprint},
        "camera": {"id": request.camera, "name": camera_name},
        "requested": _times(request.from_ms, request.to_ms),
        "actual": _times(clip.start_ms, clip.end_ms),
        "files": [{"name": f.name, "bytes": f.bytes, "sha256": f.sha256, "codec": f.codec, "width": f.width,
                   "height": f.height, "packets": f.packets, **_times(f.start_ms, f.end_ms),
                   "sources": [{"path": s.path, "bytes": s.bytes, "sha256_recorded": s.sha256, "altered": s.altered,
                                **_times(s.start_ms, s.end_ms)} for s in f.sources]}
                  for f in clip.files],
        "gaps": [{"reason": g.reason, **_times(g.start_ms, g.end_ms)} for g in clip.gaps],
        "tamper_events": tamper,
        "altered_sources": sum(s.altered for f in clip.files for s in f.sources),
        "edgenvr_version": edgenvr.__version__,
        "exported_by": request.exported_by,
        "reason": request.reason,
        "audit_record": audit_record,
    }


def verify_text(fingerprint: str, camera: str, manifest: dict[str, Any]) -> str:
    """VERIFY.txt: what the folder is and how to check it without edgenvr, in Indonesian and English."""
    requested = manifest["requested"]
    return f"""\
BUKTI VIDEO / VIDEO EVIDENCE
Kamera / camera: {camera}    Rentang / range (UTC): {requested['start']} - {requested['end']}
Sidik jari kunci perangkat / device key fingerprint:
    {fingerprint}

[ID] Folder ini berisi rekaman asli (disalin tanpa diubah, tanpa encode ulang) dari perekam edgenvr
"{manifest['box']['name']}" ({manifest['box']['id']}). manifest.json menjelaskan setiap berkas video, asalnya,
siapa yang mengekspor dan alasannya; manifest.sig adalah tanda tangan Ed25519 perangkat atas manifest.json.
Cara memeriksa tanpa edgenvr, di folder ini (Linux/macOS, sha256sum dan openssl 3):
  1. sha256sum -c SHA256SUMS            -> setiap baris harus "OK" (tidak ada berkas yang diubah)
  2. openssl pkeyutl -verify -pubin -inkey device.pub -rawin -in manifest.json -sigfile manifest.sig
                                        -> harus "Signature Verified Successfully"
  3. openssl pkey -pubin -in device.pub -outform DER | tail -c 32 | sha256sum
                                        -> harus sama dengan sidik jari di atas (tanpa spasi) DAN dengan
                                           sidik jari yang ditunjukkan perangkat (`edgenvr identity`)
                                           atau yang diberikan oleh Diskominfo.
Berkas yang hilang, ditambah atau diubah membuat pemeriksaan gagal.

[EN] This folder holds original recordings (copied unchanged, never re-encoded) from the edgenvr recorder
"{manifest['box']['name']}" ({manifest['box']['id']}). manifest.json describes every video file, where it comes
from, who exported it and why; manifest.sig is the device's Ed25519 signature over manifest.json.
To check it without edgenvr, in this folder (Linux/macOS, sha256sum and openssl 3):
  1. sha256sum -c SHA256SUMS            -> every line must say "OK" (no file was changed)
  2. openssl pkeyutl -verify -pubin -inkey device.pub -rawin -in manifest.json -sigfile manifest.sig
                                        -> must print "Signature Verified Successfully"
  3. openssl pkey -pubin -in device.pub -outform DER | tail -c 32 | sha256sum
                                        -> must equal the fingerprint above (without spaces) AND the one the
                                           device shows (`edgenvr identity`) or the one the city's IT office
                                           (Diskominfo) gave you.
A missing, added or changed file makes the check fail. With edgenvr: `edgenvr verify FOLDER [--pubkey FILE]`.
"""
