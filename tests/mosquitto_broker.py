"""A real Mosquitto broker for the [mqtt] tests (Debian's `mosquitto` package; its own, never the system's
service): a config in a temporary directory, served on free loopback ports, stopped and removed at the end.
`kill()` and `start()` again play a broker that crashes and comes back on the same port; it keeps nothing
(persistence off), like a broker restarted without a persistence file: whatever was retained is gone, so a
client has to publish it again.

The broker is this process's own child, killed by the kernel if the test process dies (PR_SET_PDEATHSIG).
As root it stays root (`user root`): it must read the test's files in a directory only root may enter.

`BrokerLog` subscribes to everything (paho, in its own thread) and keeps every message with when it came, for
tests that watch what a box publishes while they do other things.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgenvr.core.process_setup import die_with_parent_preexec
from tests.web_site import free_port

MOSQUITTO = Path("/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")


@dataclass(frozen=True)
class BrokerCertificate:
    ca_file: Path          # the authority's certificate (what [mqtt] ca_file names)
    cert_file: Path        # the broker's, signed by it, for 127.0.0.1 and localhost
    key_file: Path
    fingerprint: str       # SHA-256 of the broker's certificate, as [mqtt] broker_fingerprint takes it


@dataclass
class MosquittoBroker:
    directory: Path
    port: int
    tls_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([str(MOSQUITTO), "-c", str(self.directory / "mosquitto.conf")],
                                            stdout=log, stderr=subprocess.STDOUT,
                                            preexec_fn=die_with_parent_preexec(signal.SIGKILL))
        self.starts += 1
        deadline = time.monotonic() + 10
        while True:   # listening: a TCP connection is accepted
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            assert self.process.poll() is None and time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def kill(self) -> None:
        """A crash: SIGKILL, nothing said to the clients but the closed connections."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def broker_certificate(directory: Path) -> BrokerCertificate:
    """A site's own authority and the broker's certificate it signed (ECDSA P-256, valid 2020-2100)."""
    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    start, end = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("edgenvr test CA")).issuer_name(name("edgenvr test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name("broker.test")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = BrokerCertificate(directory / "ca.pem", directory / "broker.pem", directory / "broker.key",
                              hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest().hex(":").upper())
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return files


@contextlib.contextmanager
def running_broker(directory: Path, *, users: dict[str, str] | None = None,
                   certificate: BrokerCertificate | None = None) -> Iterator[MosquittoBroker]:
    """Mosquitto on a free loopback port (and a TLS one with ``certificate``); with ``users`` it takes only
    them (a password file made with mosquitto_passwd), else anyone."""
    if not MOSQUITTO.exists():
        pytest.fail(f"Mosquitto is not installed ({MOSQUITTO}): apt-get install mosquitto (scripts/setup test does)")
    directory.mkdir(parents=True, exist_ok=True)
    broker = MosquittoBroker(directory, free_port(), free_port() if certificate else None)
    lines = [f"listener {broker.port} 127.0.0.1", "persistence false", "log_dest stderr",
             "log_type error", "log_type warning", "log_type notice", "log_type information",
             "connection_messages true"]
    if os.geteuid() == 0:
        lines.append("user root")
    if users:
        password_file = directory / "passwords"
        for number, (user, password) in enumerate(users.items()):
            subprocess.run([str(MOSQUITTO_PASSWD), *(["-c"] if number == 0 else []), "-b", str(password_file), user,
                            password], check=True, capture_output=True, timeout=30)
        lines += ["allow_anonymous false", f"password_file {password_file}"]
    else:
        lines.append("allow_anonymous true")
    if certificate is not None:
        lines += [f"listener {broker.tls_port} 127.0.0.1", f"certfile {certificate.cert_file}",
                  f"keyfile {certificate.key_file}"]
    (directory / "mosquitto.conf").write_text("\n".join(lines) + "\n")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float             # time.time() when it arrived (wall clock: compared with the box's epoch-ms times)


@dataclass
class BrokerLog:
    """Every message the broker passes on ("#"), from when it is opened; reconnects by itself."""
    port: int
    username: str | None = None
    password: str | None = None
    messages: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-log-{id(self)}")
        if self.username is not None:
            self._client.username_pw_set(self.username, self.password)
        self._client.on_connect = lambda client, *_: client.subscribe("#", qos=1)
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(0.1, 0.5)
        self._client.connect("127.0.0.1", self.port, keepalive=10)
        self._client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, message.payload, bool(message.retain), time.time()))

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def on(self, topic: str) -> list[Received]:
        return [message for message in self.snapshot() if message.topic == topic]

    def latest(self, topic: str) -> bytes | None:
        found = self.on(topic)
        return found[-1].payload if found else None

    def wait_for(self, what: str, test: Callable[[Received], bool], timeout: float,
                 context: Callable[[], str] = lambda: "") -> Received:
        """The first message (in arrival order, from the start) that ``test`` accepts."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.snapshot():
                if test(message):
                    return message
            if time.monotonic() > deadline:
                topics = sorted({message.topic for message in self.snapshot()})
                raise AssertionError(f"no {what} within {timeout} s; topics seen: {topics}\n{context()}")
            time.sleep(0.05)

    def __enter__(self) -> BrokerLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
