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


def test_the_demo_with_a_hub_enrols_the_box_which_reports_and_sends_its_motion_clips(
        tmp_path: Path, simulator_ready: None) -> None:
    """`edgenvr demo --with-hub PORT`: the city side on the same machine, with its own login; the box enrols
    with the one-time token and the pinned certificate, shows up in the fleet, and its motion events arrive
    as signed clips."""
    port, hub_port = free_port(), free_port()
    demo = subprocess.Popen([sys.executable, "-m", "edgenvr", "demo", "--seconds", "170", "--port", str(port),
                             "--with-hub", str(hub_port), "--data-dir", str(tmp_path / "demo")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        printed = ""
        deadline = time.monotonic() + 90
        while "Ctrl-C stops" not in printed and time.monotonic() < deadline:
            printed += demo.stdout.readline()   # type: ignore[union-attr]
        assert f"https://localhost:{hub_port}/" in printed, printed
        name, password = re.search(r"hub sign in\s+: (\S+) / (\S+)", printed).groups()   # type: ignore[union-attr]
        context = ssl.create_default_context(cafile=str(tmp_path / "demo" / "hub" / "data" / "keys" / "tls.crt"))
        context.check_hostname = False
        login = urllib.request.Request(f"https://127.0.0.1:{hub_port}/api/login", method="POST",
                                       data=json.dumps({"name": name, "password": password}).encode(),
                                       headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(login, context=context, timeout=30) as answer:
            cookie = answer.headers["Set-Cookie"].split(";", 1)[0]

        def get(path: str) -> dict:
            request = urllib.request.Request(f"https://127.0.0.1:{hub_port}{path}", headers={"Cookie": cookie})
            with urllib.request.urlopen(request, context=context, timeout=30) as answer:
                return json.load(answer)
        boxes: list = []
        clips: list = []
        deadline = time.monotonic() + 150   # someone walks past twice a minute; the event closes, then it goes
        while time.monotonic() < deadline and not (clips and boxes):
            boxes = [b for b in get("/api/fleet")["boxes"] if b["cameras"].get("demo-gate") == "recording"]
            clips = [c for c in get("/api/clips")["clips"] if c["kind"] == "motion"]
            time.sleep(2)
        assert boxes and not boxes[0]["silent"], get("/api/fleet")
        assert clips and clips[0]["camera"] == "demo-gate", (tmp_path / "demo" / "hub" / "hub.log").read_text()[-3000:]
    finally:
        demo.terminate()
        demo.wait(60)
