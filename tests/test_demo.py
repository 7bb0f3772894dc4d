"""`edgenvr demo` as a newcomer runs it: it records the built-in camera and serves the web UI, printing the
address, the certificate's fingerprint and a login made for this run."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from web_site import free_port


def test_the_demo_serves_the_ui_with_a_one_time_admin_login(tmp_path: Path, simulator_ready: None) -> None:
    port = free_port()
    demo = subprocess.Popen([sys.executable, "-m", "edgenvr", "demo", "--seconds", "60", "--port", str(port),
                             "--data-dir", str(tmp_path / "demo")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        printed = ""
        deadline = time.monotonic() + 60
        while "Ctrl-C stops" not in printed and time.monotonic() < deadline:
            printed += demo.stdout.readline()   # type: ignore[union-attr]
        assert f"https://localhost:{port}/" in printed, printed
        name, password = re.search(r"sign in\s+: (\S+) / (\S+)", printed).groups()   # type: ignore[union-attr]
        shown_fingerprint = re.search(r"([0-9A-F]{2}(?::[0-9A-F]{2}){31})", printed).group(1)   # type: ignore[union-attr]
        context = ssl.create_default_context(cafile=str(tmp_path / "demo" / "web-tls.crt"))
        context.check_hostname = False
        served = x509.load_pem_x509_certificate(ssl.get_server_certificate(("127.0.0.1", port)).encode()) \
            if _wait_listening(port) else None
        assert served is not None and served.fingerprint(hashes.SHA256()).hex(":").upper() == shown_fingerprint
        login = urllib.request.Request(f"https://127.0.0.1:{port}/api/login", method="POST",
                                       data=json.dumps({"name": name, "password": password}).encode(),
                                       headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(login, context=context, timeout=30) as answer:
            cookie = answer.headers["Set-Cookie"].split(";", 1)[0]
        deadline = time.monotonic() + 30
        state = None
        while time.monotonic() < deadline and state != "recording":
            cameras = urllib.request.Request(f"https://127.0.0.1:{port}/api/cameras", headers={"Cookie": cookie})
            with urllib.request.urlopen(cameras, context=context, timeout=30) as answer:
                state = json.load(answer)["cameras"][0]["state"]
            time.sleep(1)
        assert state == "recording"
    finally:
        demo.terminate()
        demo.wait(60)


def _wait_listening(port: int) -> bool:
    import socket
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False
