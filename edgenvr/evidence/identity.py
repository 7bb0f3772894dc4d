"""The box's identity: its id and name (config `[box]`), and its Ed25519 key pair, which signs export manifests
and the audit trail's head, so that anyone holding the public key can check them offline.

Owns the key files in the data directory (paths from storage.layout): `device.key` (private, PKCS#8 PEM, mode 0600, created once at first
use and never logged, printed or exported) and `device.pub` (public, PEM). The fingerprint people compare is
the SHA-256 of the raw 32-byte public key, in hex, grouped by four for reading aloud.

Failure paths: a key file that exists but cannot be read or parsed raises IdentityError naming the file; it
is never replaced by a new key (a new key would silently orphan every signature made with the old one). A
key that cannot be created (disk full, read-only) raises OSError with nothing half-written (written to a
temporary name and renamed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edgenvr.storage.durable_writes import write_durably
from edgenvr.storage.layout import StorageLayout
from edgenvr.storage.permissions import SECRET_MODE


class IdentityError(Exception):
    """The box's key cannot be used (unreadable or not an Ed25519 key)."""


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key, hex, in groups of four: `3f2a 9c01 ...`."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    digest = hashlib.sha256(raw).hexdigest()
    return " ".join(digest[i:i + 4] for i in range(0, len(digest), 4))


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(pem: bytes, source: str = "the public key") -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; IdentityError if it is not one."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{source} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise IdentityError(f"{source} is not an Ed25519 key")
    return key


def signature_valid(public_key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        public_key.verify(signature, data)
        return True
    except InvalidSignature:
        return False


@dataclass(frozen=True)
class DeviceIdentity:
    box_id: str
    box_name: str
    _private: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._private.public_key()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    @property
    def public_pem(self) -> bytes:
        return public_pem(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def __repr__(self) -> str:   # never the private key
        return f"DeviceIdentity(box_id={self.box_id!r}, fingerprint={self.fingerprint!r})"


def device_identity(layout: StorageLayout, box_id: str, box_name: str) -> DeviceIdentity:
    """The box's identity; its key pair is created in the data directory the first time."""
    return DeviceIdentity(box_id, box_name, signing_key(layout.device_key_path, layout.device_public_key_path))


def signing_key(private_path: Path, public_path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key pair at these paths (the box's, or the hub's for its receipts), created the first time."""
    if not private_path.exists():
        _create_key(private_path, public_path)
    try:
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise IdentityError(f"cannot read the key {private_path}: {type(exc).__name__}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{private_path} is not an Ed25519 key")
    return key


def _create_key(private_path: Path, public_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # the public half first: a crash in between leaves no private key, and the next use makes both again
    write_durably(public_path, public_pem(key.public_key()))
    write_durably(private_path, pem, mode=SECRET_MODE)
