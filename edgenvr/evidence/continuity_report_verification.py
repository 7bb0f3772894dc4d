"""Checking a continuity report (evidence.continuity_report) on any machine, without a config or the box:
`edgenvr verify FILE.json|FILE.html [--pubkey FILE]`.

Owns the order of the checks and their messages; each failure names the first problem found:
1. the parts are there: FILE.json with FILE.sig (and FILE.pub unless a key is given), or a page whose signature
   block holds the signed document, its signature and the public key;
2. the signature is a valid Ed25519 signature over the document's exact bytes, by the key given out of band
   (`--pubkey`: what a police officer should trust) or else by the key that came with the report;
3. the document is an edgenvr continuity report naming the signing key's fingerprint;
4. for a page: its signature block is exactly the one those parts make (nothing added to it), and the page
   before it has the SHA-256 the signed document names, so no figure on the page was edited.
Failures raise evidence.verification.VerificationFailed, as an export's do.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgenvr.evidence.continuity_report import (
    HTML_SUFFIXES,
    JSON_SUFFIX,
    PUBLIC_KEY_SUFFIX,
    REPORT_FORMAT,
    SIGNATURE_SUFFIX,
)
from edgenvr.evidence.continuity_report_html import (
    PAGE_HASH_KEY,
    signature_section,
    split_page,
)
from edgenvr.evidence.identity import IdentityError, fingerprint, load_public_key
from edgenvr.evidence.verification import (
    VerificationFailed,
    require_named_key,
    signer_fingerprint,
)

REPORT_SUFFIXES = (JSON_SUFFIX, *HTML_SUFFIXES)


@dataclass(frozen=True)
class VerifiedReport:
    box_id: str
    from_ms: int
    to_ms: int
    cameras: list[str]
    fingerprint: str
    page_checked: bool     # a page: its text is the signed report's


def is_report(path: Path) -> bool:
    return path.suffix.lower() in REPORT_SUFFIXES


def verify_report(path: Path, public_key_pem: bytes | None = None) -> VerifiedReport:
    """Check the report at `path` (see the module docstring); VerificationFailed naming the first problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VerificationFailed(f"{path}: {exc.strerror or exc}") from None
    page: bytes | None = None
    if path.suffix.lower() in HTML_SUFFIXES:
        try:
            embedded = split_page(data)
        except ValueError as exc:
            raise VerificationFailed(f"{path.name}: {exc}") from None
        page, signed, signature, shipped_key = embedded.page, embedded.signed, embedded.signature, embedded.public_pem
        key_source = "the key in the page"
    else:
        signed, sig_path, key_path = data, path.with_suffix(SIGNATURE_SUFFIX), path.with_suffix(PUBLIC_KEY_SUFFIX)
        signature = _read(sig_path)
        shipped_key = _read(key_path) if public_key_pem is None else b""
        key_source = key_path.name

    source = "the key given" if public_key_pem is not None else key_source
    key_fingerprint = signer_fingerprint(signed, signature, public_key_pem if public_key_pem is not None
                                         else shipped_key, source, "the report")
    document = _document(signed)
    require_named_key(document["box"]["key_fingerprint"], key_fingerprint, "the report")
    if page is not None:
        if public_key_pem is not None and _fingerprint_of(shipped_key) != key_fingerprint:
            raise VerificationFailed("the page carries another public key than the one given")
        if embedded.block != signature_section(signed, signature, shipped_key):
            raise VerificationFailed("the page's signature block was edited (it differs from the one its signed"
                                     " report makes)")
        if hashlib.sha256(page).hexdigest() != document.get(PAGE_HASH_KEY):
            raise VerificationFailed("the page was edited: its SHA-256 is not the one the signed report names")
    return VerifiedReport(document["box"]["id"], document["range"]["from_ms"], document["range"]["to_ms"],
                          [camera["id"] for camera in document["cameras"]], key_fingerprint, page is not None)


def _fingerprint_of(pem: bytes) -> str | None:
    try:
        return fingerprint(load_public_key(pem))
    except IdentityError:
        return None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise VerificationFailed(f"file missing: {path.name} (it comes with the report)") from None
    except OSError as exc:
        raise VerificationFailed(f"{path.name} unreadable: {exc.strerror or exc}") from None


def _document(signed: bytes) -> dict[str, Any]:
    try:
        document = json.loads(signed)
        if document.get("format") != REPORT_FORMAT:
            raise ValueError(f"format {document.get('format')!r}, expected {REPORT_FORMAT!r}")
        if not isinstance(document["box"]["key_fingerprint"], str) or not isinstance(document["box"]["id"], str):
            raise ValueError("its box is not named")
        if not all(isinstance(document["range"][key], int) for key in ("from_ms", "to_ms")):
            raise ValueError("its range is not two times")
        if not all(isinstance(camera["id"], str) for camera in document["cameras"]):
            raise ValueError("a camera has no id")
        return document
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VerificationFailed(f"not an edgenvr continuity report: {exc}") from None
