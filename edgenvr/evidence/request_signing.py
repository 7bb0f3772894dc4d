"""How a box proves who it is to the city hub: every request it sends is signed with its device key (the one
that signs its evidence) as an HTTP Message Signature (RFC 9421, Ed25519; the `http-message-signatures`
library builds and checks the signature base). The hub knows each box's public key from its enrolment.

Owns: which parts of a request are signed, and the checks the hub makes. Invariants:
- Signed: the method, path and query, the tus headers that say what the bytes are (Upload-Offset,
  Upload-Length, Upload-Checksum, Upload-Metadata) when present, and the body through Content-Digest when
  the request has a body that is not a tus chunk (a tus chunk is bound by its signed Upload-Checksum, so a
  multi-MB chunk is never buffered twice). Not signed: the scheme and host, so a reverse proxy in front of
  the hub changes nothing.
- The key id is the box id; `created` must be within MAX_AGE of the hub's clock (a box without a real-time
  clock signs after NTP synchronises: the uploader waits for it). Within that window a captured request could
  be replayed; every signed request is idempotent at the hub (a tus PATCH at a stale offset gets 409, an
  enrolled box enrolling again gets the same answer), so a replay changes nothing.
- A failure says what was wrong (missing, malformed, unknown box, stale, does not verify) but never echoes a
  secret; callers answer 401 with it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from multidict import CIMultiDict

from edgenvr.evidence.identity import DeviceIdentity

MAX_AGE = dt.timedelta(minutes=5)
SIGNED_HEADERS = ("upload-offset", "upload-length", "upload-checksum", "upload-metadata")
TUS_CHUNK_TYPE = "application/offset+octet-stream"
TAG = "edgenvr-box"   # signed: a signature made for another purpose with the same key is not accepted
_BASE = "http://hub"   # scheme and authority are not signed; the library wants a whole URL


class SignatureRejected(Exception):
    """The request's signature is missing or does not verify; the message says why (no secrets)."""


@dataclass
class _Message:
    """What the library reads of a request: method, URL, headers (a multidict: repeated fields kept)."""
    method: str
    url: str
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)


class _Keys(HTTPSignatureKeyResolver):
    def __init__(self, public: Callable[[str], Ed25519PublicKey | None] | None = None,
                 private: DeviceIdentity | None = None) -> None:
        self._public = public
        self._private = private

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey | None:
        return self._public(key_id) if self._public is not None else None

    def resolve_private_key(self, key_id: str) -> object:
        if self._private is None or key_id != self._private.box_id:
            raise KeyError(key_id)
        return self._private._private   # noqa: SLF001 — the key never leaves this module's signer


def _covered(headers: Mapping[str, str], with_body: bool) -> tuple[str, ...]:
    present = tuple(name for name in SIGNED_HEADERS if name in {key.lower() for key in headers})
    return ("@method", "@path", "@query", *present, *(("content-digest",) if with_body else ()))


def sign_request(identity: DeviceIdentity, method: str, path_qs: str, headers: Mapping[str, str],
                 body: bytes | None, *, now_s: float) -> dict[str, str]:
    """The headers to send: `headers` plus Signature-Input, Signature (and Content-Digest for a body).
    `now_s`: the box's clock (UTC seconds) for `created`. A tus chunk's body is not digested (see above)."""
    message = _Message(method.upper(), _BASE + path_qs, CIMultiDict(headers))
    digest = body is not None and message.headers.get("Content-Type") != TUS_CHUNK_TYPE
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_Keys(private=identity))
    signer.sign(message, key_id=identity.box_id, created=dt.datetime.fromtimestamp(now_s, dt.timezone.utc),
                covered_component_ids=_covered(message.headers, digest), body=body if digest else None,
                tag=TAG)
    return dict(message.headers)


def verify_request(method: str, path_qs: str, headers: Mapping[str, str], body: bytes | None,
                   public_key: Callable[[str], Ed25519PublicKey | None]) -> str:
    """The box id that signed this request; SignatureRejected if none did. `body`: the bytes of a request
    that is not a tus chunk (None for a chunk: its Upload-Checksum is signed instead)."""
    if "Signature" not in headers or "Signature-Input" not in headers:
        raise SignatureRejected("the request is not signed (Signature and Signature-Input are required)")
    message = _Message(method.upper(), _BASE + path_qs, CIMultiDict(headers))
    chunk = message.headers.get("Content-Type") == TUS_CHUNK_TYPE
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=_Keys(public=public_key))
    try:
        results = verifier.verify(message, max_age=MAX_AGE, expect_tag=TAG,
                                  require_components=_covered(message.headers, False),
                                  body=None if chunk else (body or b""))
    except HTTPMessageSignaturesException as exc:
        raise SignatureRejected(f"the signature does not verify: {exc or 'it is not a signature of this request by that box'}") from None
    except KeyError:
        raise SignatureRejected("the signing key is not known here") from None
    if len(results) != 1 or not results[0].parameters.get("keyid"):
        raise SignatureRejected("expected exactly one signature with a key id")
    return str(results[0].parameters["keyid"])
