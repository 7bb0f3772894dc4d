"""The web server's self-signed TLS certificate: made once, at the first start with `tls = true`, kept in the
data directory (key 0600), and shown by its SHA-256 fingerprint (`edgenvr identity`) so staff can check the
browser's warning page against the box's own display before trusting it.

Invariants: an ECDSA P-256 key of its own (browsers refuse Ed25519 certificates, so the device key cannot
serve); the certificate is valid from 2020 to 9999-12-31 (RFC 5280's "no expiry"), so a box without a
real-time clock that boots in 1970, or runs for decades, never serves an expired or not-yet-valid one; names:
the box id, `<box id>.local` and `localhost`. The key is written before the certificate, so a crash between
leaves a key without a certificate, and the next start makes both again.

Failure paths: an unreadable or damaged key or certificate -> CertificateError naming the file (nothing is
overwritten: a replaced certificate would silently change the fingerprint staff were told); a full disk
while making them -> OSError and no certificate.
"""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgenvr.storage.durable_writes import write_durably
from edgenvr.storage.layout import StorageLayout
from edgenvr.storage.permissions import SECRET_MODE

VALID_FROM = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
VALID_UNTIL = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)


class CertificateError(Exception):
    """The web server's key or certificate cannot be read."""


def ensure_certificate(layout: StorageLayout, box_id: str) -> x509.Certificate:
    """The box's web certificate, made the first time."""
    return _ensure(layout.web_tls_key_path, layout.web_tls_certificate_path, box_id)


def certificate_at(path: Path) -> x509.Certificate:
    """The certificate at `path` (the hub's); CertificateError if it cannot be read."""
    return _read(path)


def read_certificate(layout: StorageLayout) -> x509.Certificate:
    return _read(layout.web_tls_certificate_path)


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate, as browsers show it (AB:CD:...)."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def server_context(layout: StorageLayout, box_id: str) -> ssl.SSLContext:
    return tls_server_context(layout.web_tls_key_path, layout.web_tls_certificate_path, box_id)


def tls_server_context(key_path: Path, certificate_path: Path, name: str) -> ssl.SSLContext:
    """A server context with the key and self-signed certificate at these paths (the box's web server, or the
    hub's), made the first time with `name` as its common and DNS name."""
    _ensure(key_path, certificate_path, name)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate_path, key_path)
    except (OSError, ssl.SSLError) as error:
        raise CertificateError(f"cannot use the TLS key and certificate in {key_path.parent}: {error}") from None
    return context


def _ensure(key_path: Path, certificate_path: Path, name: str) -> x509.Certificate:
    if not certificate_path.exists() or not key_path.exists():
        _create(key_path, certificate_path, name)
    return _read(certificate_path)


def _read(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as error:
        raise CertificateError(f"cannot read the TLS certificate {path}: {error}") from None


def _create(key_path: Path, certificate_path: Path, name_text: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name_text),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgenvr")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(VALID_FROM).not_valid_after(VALID_UNTIL)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name_text), x509.DNSName(f"{name_text}.local"),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_durably(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), mode=SECRET_MODE)
    write_durably(certificate_path, certificate.public_bytes(serialization.Encoding.PEM))
