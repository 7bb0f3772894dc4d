"""The box's web server over HTTPS with its own certificate, as `tls = true` (the default) serves it."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from web_site import PASSWORDS, Site, running_site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, h264_clip: Path, simulator_ready: None) -> Iterator[Site]:
    yield from running_site(tmp_path_factory.mktemp("tls"), h264_clip, cameras=("gate",), record_seconds=0, tls=True)


def test_https_is_served_with_the_box_s_certificate_and_identity_shows_its_fingerprint(site: Site) -> None:
    answer = site.request("GET", "/api/health")
    assert answer.status == 200 and answer.json()["status"] == "ok"
    pem = ssl.get_server_certificate(("127.0.0.1", site.port))
    served = x509.load_pem_x509_certificate(pem.encode())
    fingerprint = served.fingerprint(hashes.SHA256()).hex(":").upper()
    shown = subprocess.run([sys.executable, "-m", "edgenvr", "identity", "--config", str(site.config_path)],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert f"web certificate (SHA-256, as browsers show it): {fingerprint}" in shown.stdout
    # valid whatever the box's clock says (no real-time clock: it may boot in 1970, then jump to now)
    assert served.not_valid_before_utc <= dt.datetime(2020, 1, 2, tzinfo=dt.timezone.utc)
    assert served.not_valid_after_utc.year == 9999
    key_mode = stat.S_IMODE(os.stat(site.layout.web_tls_key_path).st_mode)
    assert key_mode == 0o600


def test_the_session_cookie_is_secure_over_https_and_plain_http_is_not_answered(site: Site) -> None:
    answer = site.request("POST", "/api/login", body={"name": "viewer", "password": PASSWORDS["viewer"]})
    assert answer.status == 200
    assert "Secure" in answer.headers["set-cookie"] and "HttpOnly" in answer.headers["set-cookie"]
    import http.client
    plain = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    try:
        plain.request("GET", "/api/health")
        status = plain.getresponse().status
    except (ConnectionError, http.client.HTTPException, OSError):
        status = None
    finally:
        plain.close()
    assert status in (None, 400), "plain HTTP on the HTTPS port must not be served"


def test_a_restart_keeps_the_certificate_staff_were_shown(site: Site) -> None:
    before = site.layout.web_tls_certificate_path.read_bytes()
    from edgenvr.web.tls_certificate import ensure_certificate
    ensure_certificate(site.layout, "gate")
    assert site.layout.web_tls_certificate_path.read_bytes() == before
