"""The hub's receipt for a clip: what it stored (box, camera, range, the SHA-256 and size of the bytes it
re-read from its own disk), signed with the hub's Ed25519 key. The box marks a clip synced only when it holds
a receipt that verifies with the hub key it learnt at enrolment and whose SHA-256 is the one it computed.

Format (JSON, one line): {"receipt": {...fields...}, "signature": base64 of the Ed25519 signature over the
canonical JSON of "receipt" (evidence.audit.canonical_json: sorted keys, no spaces, UTF-8)}.
Failure path: anything malformed, or a signature that does not verify -> ReceiptInvalid naming why.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edgenvr.evidence.audit import canonical_json
from edgenvr.evidence.identity import fingerprint, signature_valid

FIELDS = ("clip", "box", "camera", "start_ms", "end_ms", "kind", "sha256", "bytes", "received_ms", "hub_key")


class ReceiptInvalid(Exception):
    """Not a receipt of this hub for this clip; the message says why."""


def make_receipt(key: Ed25519PrivateKey, fields: dict[str, Any]) -> str:
    receipt = {**fields, "hub_key": fingerprint(key.public_key())}
    if set(receipt) != set(FIELDS):
        raise ValueError(f"a receipt has exactly the fields {FIELDS}")
    signature = base64.b64encode(key.sign(canonical_json(receipt))).decode()
    return json.dumps({"receipt": receipt, "signature": signature}, sort_keys=True)


def read_receipt(text: str, hub_key: Ed25519PublicKey) -> dict[str, Any]:
    """The receipt's fields, once its signature verifies with `hub_key`."""
    try:
        document = json.loads(text)
        receipt, signature = document["receipt"], base64.b64decode(document["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ReceiptInvalid(f"not a receipt: {type(exc).__name__}") from None
    if not isinstance(receipt, dict) or set(receipt) != set(FIELDS):
        raise ReceiptInvalid("not a receipt: its fields are not the receipt's")
    if not signature_valid(hub_key, signature, canonical_json(receipt)):
        raise ReceiptInvalid("the receipt's signature does not verify with the hub's key")
    return receipt
