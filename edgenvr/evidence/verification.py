"""Checking an export folder (evidence.bundle) on any machine, without a config or the box: `edgenvr verify`.

Owns the order of the checks and their messages; each failure names the first problem found:
1. SHA256SUMS is there and well-formed; every file it lists is there and no other file is (missing, added);
2. every file's SHA-256 is the one listed (altered);
3. manifest.sig is a valid Ed25519 signature over manifest.json's exact bytes, by device.pub, or by the key
   given out of band (`--pubkey`), which is what a police officer should trust: a folder re-signed with
   another key and re-summed passes 1-3 with its own device.pub, never with the box's real key;
4. the manifest agrees with the folder: its format, its video files' names, sizes and hashes, and the key
   fingerprint it names is the signing key's.

Reads files in 1 MB chunks (hashlib, so OpenSSL's SHA-256): memory stays flat whatever the export's size.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgenvr.evidence.export_folder import (
    MANIFEST,
    MANIFEST_FORMAT,
    PUBLIC_KEY,
    README,
    SIGNATURE,
    SUMS,
)
from edgenvr.evidence.identity import (
    IdentityError,
    fingerprint,
    load_public_key,
    signature_valid,
)
from edgenvr.storage.file_digest import sha256_of

_SUM_LINE = re.compile(r"([0-9a-f]{64})  ([^/\n]+)")


@dataclass(frozen=True)
class Verified:
    camera: str
    start: str
    end: str
    fingerprint: str
    files: int


class VerificationFailed(Exception):
    """The folder (or a continuity report) does not verify; the message names the first problem."""


def signer_fingerprint(signed: bytes, signature: bytes, key_pem: bytes, source: str, what: str) -> str:
    """The fingerprint of the key `key_pem` (read from `source`) once `signature` is checked as its Ed25519
    signature over the exact bytes `signed` (`what`, for the message); VerificationFailed otherwise. The one
    signature check of exports and continuity reports (evidence.continuity_report_verification)."""
    try:
        key = load_public_key(key_pem, source)
    except IdentityError as exc:
        raise VerificationFailed(str(exc)) from None
    if not signature_valid(key, signature, signed):
        raise VerificationFailed(f"signature invalid: {what} is not signed by {source} (it was edited, or signed"
                                 " by another key)")
    return fingerprint(key)


def require_named_key(named: object, key_fingerprint: str, what: str) -> None:
    """A signed document names its signing key's fingerprint: a valid signature by another key is refused."""
    if named != key_fingerprint:
        raise VerificationFailed(f"{what} names key {named}, but it is signed by {key_fingerprint}")


def verify_export(folder: Path, public_key_pem: bytes | None = None) -> Verified:
    """Check `folder` (see the module docstring); VerificationFailed naming the first problem."""
    if not folder.is_dir():
        raise VerificationFailed(f"{folder} is not a folder")
    listed = _read_sums(folder)
    present = {path.name for path in folder.iterdir()} - {SUMS}
    missing, added = sorted(set(listed) - present), sorted(present - set(listed))
    if missing:
        raise VerificationFailed(f"file missing: {missing[0]}")
    if added:
        raise VerificationFailed(f"file added: {added[0]} (not in {SUMS})")
    altered = [name for name in sorted(listed)
               if not (folder / name).is_file() or sha256_of(folder / name) != listed[name]]
    if altered:
        raise VerificationFailed(f"file altered: {altered[0]} (its SHA-256 is not the one in {SUMS})")

    source = "the key given" if public_key_pem is not None else PUBLIC_KEY
    manifest_bytes = _read_part(folder, MANIFEST)
    key_fingerprint = signer_fingerprint(
        manifest_bytes, _read_part(folder, SIGNATURE),
        public_key_pem if public_key_pem is not None else _read_part(folder, PUBLIC_KEY), source, MANIFEST)
    manifest = _manifest(manifest_bytes)
    require_named_key(manifest["box"]["key_fingerprint"], key_fingerprint, MANIFEST)
    videos = {entry["name"]: entry for entry in manifest["files"]}
    named = set(videos) | {MANIFEST, SIGNATURE, PUBLIC_KEY, README}
    if present != named:
        raise VerificationFailed(f"{MANIFEST} and the folder disagree on the files: {sorted(present ^ named)}")
    for name, entry in videos.items():
        if entry["sha256"] != listed[name] or entry["bytes"] != (folder / name).stat().st_size:
            raise VerificationFailed(f"{name}: size or SHA-256 differs from {MANIFEST}")
    return Verified(manifest["camera"]["id"], manifest["actual"]["start"], manifest["actual"]["end"],
                    key_fingerprint, len(videos))


def _read_part(folder: Path, name: str) -> bytes:
    """One of the export's own files (the sums need not list them for this to be asked: missing is refused)."""
    try:
        return (folder / name).read_bytes()
    except FileNotFoundError:
        raise VerificationFailed(f"file missing: {name}") from None
    except OSError as exc:
        raise VerificationFailed(f"{name} unreadable: {exc.strerror or exc}") from None


def _read_sums(folder: Path) -> dict[str, str]:
    try:
        text = (folder / SUMS).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VerificationFailed(f"file missing: {SUMS}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VerificationFailed(f"{SUMS} unreadable: {exc}") from None
    listed: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _SUM_LINE.fullmatch(line)
        if match is None or match.group(2) in listed or match.group(2) in (".", ".."):
            raise VerificationFailed(f"{SUMS} line {number} is not `<sha256>  <file name>`: {line[:80]!r}")
        listed[match.group(2)] = match.group(1)
    return listed


def _manifest(data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        if not all(isinstance(manifest[section][key], str) for section, key in
                   (("box", "key_fingerprint"), ("camera", "id"), ("actual", "start"), ("actual", "end"))):
            raise ValueError("its box, camera or range is not text")
        if not all(isinstance(entry["name"], str) and isinstance(entry["sha256"], str) and isinstance(entry["bytes"], int)
                   for entry in manifest["files"]):
            raise ValueError("a file entry lacks its name, sha256 or size")
        return manifest
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VerificationFailed(f"{MANIFEST} is not an edgenvr export manifest: {exc}") from None
