"""The TLS context the box connects to its MQTT broker with ([mqtt] tls, ca_file, broker_fingerprint).

Owns how the broker's certificate is trusted. Invariants:
- Without a pin: the system's authorities, or only ca_file's, and the host name must match (ssl's defaults).
- With broker_fingerprint: exactly that certificate (SHA-256 of its DER bytes, as [sync] pins the hub), self-signed
  or not, whatever authority or name it has. The check is in the handshake itself (the context's socket class,
  `SSLContext.sslsocket_class`), so nothing, not the MQTT CONNECT with the password, is ever sent to another
  certificate's holder.
- TLS 1.2 at least.
Failure paths: an unreadable ca_file -> BrokerTlsError (the publisher logs it and tries again later, the file
may be fixed meanwhile); a certificate that is not the pinned one -> ssl.SSLCertVerificationError from the
handshake, which the MQTT client reports as a failed connection.
"""

from __future__ import annotations

import hashlib
import ssl

from edgenvr.config.records import MqttConfig


class BrokerTlsError(Exception):
    """The TLS settings cannot be used (the CA file cannot be read)."""


def tls_context(mqtt: MqttConfig) -> ssl.SSLContext | None:
    """The context for ``mqtt``'s broker; None without tls."""
    if not mqtt.tls:
        return None
    if mqtt.broker_fingerprint is not None:
        return _pinned_context(bytes.fromhex(mqtt.broker_fingerprint.replace(":", "")))
    try:   # cafile None: the system's authorities
        context = ssl.create_default_context(cafile=None if mqtt.ca_file is None else str(mqtt.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise BrokerTlsError(f"mqtt.ca_file {str(mqtt.ca_file)!r} cannot be used: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _pinned_context(pin: bytes) -> ssl.SSLContext:
    class PinnedSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            der = self.getpeercert(binary_form=True)
            seen = hashlib.sha256(der).digest() if der else b""
            if seen != pin:
                self.close()
                raise ssl.SSLCertVerificationError(
                    f"the broker's certificate is not the pinned one (its SHA-256 is "
                    f"{seen.hex(':').upper() or 'none'}; mqtt.broker_fingerprint is {pin.hex(':').upper()})")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # The pin is the trust: no authority or name to check (a self-signed certificate has neither).
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.sslsocket_class = PinnedSocket
    return context
