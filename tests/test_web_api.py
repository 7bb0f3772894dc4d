"""The box's HTTP API as site staff, the city IT office's scripts and an attacker on the LAN meet it: a real
`edgenvr run` with [web] recording two RTSP test cameras, users made by `edgenvr user`, requests over real
loopback sockets. Security checks walk the server's full route table, so a route added later cannot escape.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterator

import av
import pytest
from web_site import PASSWORDS, Site, running_site, watch_live

from edgenvr.core.units import DAY_MS, HOUR_MS
from edgenvr.web.api_routes import Access
from edgenvr.web.server import all_routes

SAMPLE_VALUES = {"camera": "gate", "event": "1", "user": "viewer", "token": "1", "hold": "1", "name": "app.js"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, h264_clip: Path, simulator_ready: None) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("web")
    for found in running_site(root, h264_clip):
        _add_events(found)
        yield found


def _add_events(site: Site) -> None:
    """A motion event on each camera with its snapshot, as the motion worker stores them."""
    now = site.now_ms()
    snapshots = site.layout.data_dir / "snapshots"
    with sqlite3.connect(site.layout.index_path, timeout=30) as conn:
        for camera in ("gate", "yard"):
            path = site.layout.snapshot_path(camera, now - 5000, "motion")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_jpeg())
            conn.execute("INSERT INTO events (camera, kind, start_ms, end_ms, snapshot) VALUES (?, 'motion', ?, ?, ?)",
                         (camera, now - 5000, now - 3000, path.relative_to(site.layout.data_dir).as_posix()))
        # an event whose stored snapshot path leads outside the snapshots directory (an edited index)
        conn.execute("INSERT INTO events (camera, kind, start_ms, end_ms, snapshot) VALUES ('gate', 'alert', ?, ?, ?)",
                     (now - 4000, now - 3500, "../../../../etc/passwd"))
    outside = site.layout.data_dir.parent / "secret.jpg"
    outside.write_bytes(b"not yours")
    (snapshots / "gate" / "link.jpg").symlink_to(outside)


def _jpeg() -> bytes:
    import cv2
    import numpy as np
    return cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()


def _event_ids(site: Site) -> dict[str, int]:
    with sqlite3.connect(site.layout.index_path) as conn:
        return {camera: event_id for event_id, camera in
                conn.execute("SELECT id, camera FROM events WHERE kind = 'motion'")}


def _concrete(path: str, **values: str) -> str:
    return re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: {**SAMPLE_VALUES, **values}[m.group(1)], path)


def _protected_routes() -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in all_routes() if r.access is not Access.PUBLIC]


# --- who may call what -----------------------------------------------------------------------------------

def test_every_route_but_login_health_and_static_files_refuses_callers_without_credentials(site: Site) -> None:
    routes = _protected_routes()
    assert len(routes) >= 20
    spoofed = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1", "Host": "localhost",
               "Forwarded": "for=127.0.0.1"}
    for method, path in routes:
        url = _concrete(path)
        attempts = {
            "nothing": {},
            "wrong token": {"Authorization": "Bearer envr_not-a-real-token"},
            "a password as basic auth": {"Authorization": "Basic YWRtaW46YWRtaW4tcGFzc3dvcmQtMQ=="},
            "made-up session": {"Cookie": "edgenvr_session=forged"},
            "localhost and proxy headers": spoofed,
        }
        for what, headers in attempts.items():
            answer = site.request(method, url, headers=headers, body={} if method != "GET" else None)
            assert answer.status == 401, f"{method} {url} with {what}: {answer.status} {answer.body[:200]!r}"
            assert "error" in answer.json()


def test_health_says_ok_and_the_version_and_nothing_more(site: Site) -> None:
    answer = site.request("GET", "/api/health")
    assert answer.status == 200
    assert set(answer.json()) == {"status", "version"} and answer.json()["status"] == "ok"


def test_a_viewer_without_a_grant_gets_403_on_every_media_and_export_url_of_that_camera(site: Site) -> None:
    now = site.now_ms()
    viewer = site.login("viewer")
    ids = _event_ids(site)
    window = f"start_ms={now - 60_000}&end_ms={now - 1000}"
    urls = [("GET", f"/api/cameras/yard/timeline?{window}"), ("GET", f"/api/cameras/yard/video.mp4?{window}"),
            ("HEAD", f"/api/cameras/yard/video.mp4?{window}"), ("GET", "/api/cameras/yard/reference.png"),
            ("GET", f"/api/events?camera=yard&{window}"), ("GET", f"/api/events/{ids['yard']}/snapshot.jpg"),
            ("GET", "/api/holds?camera=yard")]
    for method, url in urls:
        for credentials in ({"session": viewer}, {"token": site.tokens["viewer"]}):
            answer = site.request(method, url, **credentials)   # type: ignore[arg-type]
            assert answer.status == 403, f"{method} {url}: {answer.status} {answer.body[:200]!r}"
    # the granted camera works, and the camera list and event search leave the other one out
    assert site.request("GET", f"/api/events/{ids['gate']}/snapshot.jpg", session=viewer).status == 200
    assert [c["id"] for c in site.request("GET", "/api/cameras", session=viewer).json()["cameras"]] == ["gate"]
    events = site.request("GET", "/api/events", session=viewer).json()["events"]
    assert events and {e["camera"] for e in events} == {"gate"}
    # an operator granted only gate cannot export or hold yard
    opgate = site.login("opgate")
    body = {"camera": "yard", "start_ms": now - 20_000, "end_ms": now - 10_000, "reason": "test"}
    assert site.request("POST", "/api/exports", body=body, session=opgate).status == 403
    assert site.request("POST", "/api/holds", body=body, session=opgate).status == 403


def test_roles_limit_what_a_user_may_do(site: Site) -> None:
    now = site.now_ms()
    viewer, operator = site.login("viewer"), site.login("operator")
    body = {"camera": "gate", "start_ms": now - 20_000, "end_ms": now - 10_000, "reason": "role test"}
    assert site.request("POST", "/api/exports", body=body, session=viewer).status == 403
    assert site.request("POST", "/api/holds", body=body, session=viewer).status == 403
    for method, url in (("GET", "/api/users"), ("GET", "/api/audit"), ("GET", "/api/tokens"),
                        ("POST", "/api/cameras/gate/reference/approve")):
        assert site.request(method, url, session=operator).status == 403, url
    assert site.request("GET", "/api/audit", token=site.tokens["admin"]).status == 200


# --- hostile input ---------------------------------------------------------------------------------------

def test_paths_from_requests_never_read_outside_the_box_s_files(site: Site) -> None:
    admin = site.login("admin")
    for url in ("/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                "/static/..%2f..%2f..%2fetc%2fpasswd", "/static//etc/passwd", "/static/%2Fetc%2Fpasswd",
                "/api/cameras/..%2f..%2fetc/timeline?start_ms=1&end_ms=2",
                "/api/cameras/%2e%2e/reference.png", "/api/events/..%2f1/snapshot.jpg"):
        answer = site.request("GET", url, session=admin)
        assert answer.status in (400, 404), f"{url}: {answer.status}"
        assert b"root:" not in answer.body
    # a path an edited index stored, leading out of the snapshots directory, is refused too
    with sqlite3.connect(site.layout.index_path) as conn:
        escaping = conn.execute("SELECT id FROM events WHERE snapshot LIKE '../%'").fetchone()[0]
    answer = site.request("GET", f"/api/events/{escaping}/snapshot.jpg", session=admin)
    assert answer.status == 404 and b"root:" not in answer.body


def test_a_symlink_planted_in_the_snapshots_directory_is_not_followed_out(site: Site) -> None:
    admin = site.login("admin")
    now = site.now_ms()
    with sqlite3.connect(site.layout.index_path, timeout=30) as conn:
        event_id = conn.execute("INSERT INTO events (camera, kind, start_ms, end_ms, snapshot) VALUES "
                                "('gate', 'alert', ?, ?, 'snapshots/gate/link.jpg')", (now - 2500, now - 2400)).lastrowid
    answer = site.request("GET", f"/api/events/{event_id}/snapshot.jpg", session=admin)
    assert answer.status == 404 and b"not yours" not in answer.body


@pytest.mark.parametrize("value", ["' OR 1=1 --", "gate'; DROP TABLE segments; --", '" OR ""="', "gate%00",
                                   "1; SELECT * FROM users", "%27%20OR%201%3D1"])
def test_sql_metacharacters_in_parameters_are_harmless(site: Site, value: str) -> None:
    admin = site.tokens["admin"]
    now = site.now_ms()
    from urllib.parse import quote
    q = quote(value, safe="")
    for url in (f"/api/cameras/{q}/timeline?start_ms={now - 60_000}&end_ms={now}", f"/api/events?camera={q}",
                f"/api/events?kind={q}", f"/api/audit?actor={q}&action={q}&text={q}",
                f"/api/cameras/gate/timeline?start_ms={q}&end_ms={now}", f"/api/tokens?user={q}",
                f"/api/holds?camera={q}"):
        answer = site.request("GET", url, token=admin)
        assert answer.status in (200, 400, 404), f"{url}: {answer.status} {answer.body[:200]!r}"
    assert site.request("POST", "/api/users", token=admin,
                        body={"name": value, "role": "viewer", "password": "long-enough-1"}).status == 400
    with sqlite3.connect(site.layout.index_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0] > 0


def test_state_changing_requests_need_the_session_s_csrf_token_and_the_same_origin(site: Site) -> None:
    now = site.now_ms()
    operator = site.login("operator")
    body = {"camera": "gate", "start_ms": now - 20_000, "end_ms": now - 19_000, "reason": "csrf test"}
    cookie = {"Cookie": f"edgenvr_session={operator.cookie}"}
    assert site.request("POST", "/api/holds", headers=cookie, body=body).status == 403
    assert site.request("POST", "/api/holds", headers={**cookie, "X-CSRF-Token": "wrong"}, body=body).status == 403
    foreign = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    assert site.request("POST", "/api/holds", headers=foreign, body=body, session=operator).status == 403
    assert site.request("POST", "/api/logout", headers=cookie).status == 403
    made = site.request("POST", "/api/holds", body=body, session=operator)
    assert made.status == 201, made.body
    hold_id = made.json()["id"]
    # a script with a token needs no CSRF token (no browser sends it on its own)
    released = site.request("POST", f"/api/holds/{hold_id}/release", body={"reason": "done"},
                            token=site.tokens["admin"])
    assert released.status == 200 and released.json()["in_force"] is False


def test_sign_in_is_rate_limited_per_address_and_20_wrong_passwords_lock_the_account(site: Site) -> None:
    # one address: 10 attempts a minute, then 429 even with the right password
    for _ in range(10):
        assert site.request("POST", "/api/login", body={"name": "operator", "password": "wrong-password-x"},
                            source="127.0.0.200").status == 401
    assert site.request("POST", "/api/login", body={"name": "operator", "password": PASSWORDS["operator"]},
                        source="127.0.0.200").status == 429
    site.login("operator", source="127.0.0.201")   # the right password still works: 10 are not 20
    # 20 wrong passwords from 20 addresses lock the account; the right one is then refused too
    for n in range(20):
        answer = site.request("POST", "/api/login", body={"name": "opgate", "password": f"guess-{n:04d}-x"},
                              source=f"127.0.1.{n + 1}")
        assert answer.status == (401 if n < 19 else 423), (n, answer.body)
    locked = site.request("POST", "/api/login", body={"name": "opgate", "password": PASSWORDS["opgate"]},
                          source="127.0.2.1")
    assert locked.status == 423 and "locked" in locked.json()["error"]
    audit = site.request("GET", "/api/audit?actor=opgate", token=site.tokens["admin"]).json()["records"]
    actions = [r["action"] for r in audit]
    assert actions.count("login_failed") >= 20 and "lockout" in actions
    assert all(PASSWORDS["opgate"] not in json.dumps(r) for r in audit)


def test_a_session_ends_at_logout_and_the_cookie_is_httponly_and_samesite(site: Site) -> None:
    answer = site.request("POST", "/api/login", body={"name": "viewer", "password": PASSWORDS["viewer"]})
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    session = site.login("viewer")
    assert site.request("GET", "/api/me", session=session).status == 200
    assert site.request("POST", "/api/logout", session=session).status == 200
    assert site.request("GET", "/api/me", session=session).status == 401


# --- ranges and video ----------------------------------------------------------------------------------

def test_bad_ranges_get_400_with_a_message_and_a_range_without_recording_404_naming_the_gap(site: Site) -> None:
    viewer = site.login("viewer")
    now = site.now_ms()
    base = "/api/cameras/gate/video.mp4"
    for query, words in ((f"start_ms={now - 1000}&end_ms={now - 2000}", "after"),
                         ("start_ms=yesterday&end_ms=now", "whole number"),
                         (f"start_ms={now - 2 * DAY_MS}&end_ms={now - 1000}", "longer"),
                         (f"start_ms={now + HOUR_MS}&end_ms={now + 2 * HOUR_MS}", "future"),
                         (f"end_ms={now}", "missing"), (f"start_ms=-5&end_ms={now}", "between")):
        answer = site.request("GET", f"{base}?{query}", session=viewer)
        assert answer.status == 400, (query, answer.status)
        assert words in answer.json()["error"], answer.json()
    answer = site.request("GET", f"{base}?start_ms={now - 3 * HOUR_MS}&end_ms={now - 2 * HOUR_MS}", session=viewer)
    assert answer.status == 404 and "no recording" in answer.json()["error"], answer.body


def test_video_of_a_range_plays_and_seeks_by_range_requests_and_playback_is_audited(site: Site, tmp_path: Path) -> None:
    viewer = site.login("viewer")
    now = site.now_ms()
    url = f"/api/cameras/gate/video.mp4?start_ms={now - 9000}&end_ms={now - 2000}"
    whole = site.request("GET", url, session=viewer)
    assert whole.status == 200 and whole.headers["content-type"] == "video/mp4", whole.body[:300]
    assert whole.headers["accept-ranges"] == "bytes"
    size = int(whole.headers["content-length"])
    assert size == len(whole.body)
    part = site.request("GET", url, session=viewer, headers={"Range": f"bytes=1000-{size - 1}"})
    assert part.status == 206 and part.body == whole.body[1000:]
    assert part.headers["content-range"] == f"bytes 1000-{size - 1}/{size}"
    assert site.request("GET", url, session=viewer, headers={"Range": f"bytes={size + 10}-"}).status == 416
    tail = site.request("GET", url, session=viewer, headers={"Range": "bytes=-500"})
    assert tail.status == 206 and tail.body == whole.body[-500:]
    other_version = site.request("GET", url, session=viewer, headers={"Range": "bytes=10-", "If-Range": '"old"'})
    assert other_version.status == 200 and other_version.body == whole.body
    (tmp_path / "v.mp4").write_bytes(whole.body)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                            str(tmp_path / "v.mp4")], capture_output=True, text=True)
    assert probe.returncode == 0 and probe.stderr == "", probe.stderr
    assert float(probe.stdout) > 4
    with av.open(io.BytesIO(whole.body)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 50
    audit = site.request("GET", "/api/audit?action=playback&camera=gate", token=site.tokens["admin"]).json()["records"]
    assert any(r["actor"] == "viewer" and r["from_ms"] == now - 9000 for r in audit)


def test_video_is_progressive_by_default_and_fragmented_when_asked(site: Site) -> None:
    """Progressive (a moov with every sample, then one mdat: every player seeks in it, Firefox too) unless
    `layout=fragmented` (moov, sidx, the recorded fragments); the two never share an ETag."""
    viewer = site.login("viewer")
    now = site.now_ms()
    url = f"/api/cameras/gate/video.mp4?start_ms={now - 9000}&end_ms={now - 2000}"
    progressive = site.request("GET", url, session=viewer)
    fragmented = site.request("GET", url + "&layout=fragmented", session=viewer)
    assert progressive.status == fragmented.status == 200
    def top_boxes(data: bytes) -> list[bytes]:
        kinds, at = [], 0
        while at + 8 <= len(data):
            size, kind = struct.unpack(">I4s", data[at:at + 8])
            size = struct.unpack(">Q", data[at + 8:at + 16])[0] if size == 1 else size or len(data) - at
            kinds.append(kind)
            at += size
        return kinds
    assert top_boxes(progressive.body) == [b"ftyp", b"moov", b"mdat"]
    assert b"mvex" not in progressive.body[:progressive.body.find(b"mdat")]   # no fragments announced
    fragments = top_boxes(fragmented.body)
    assert fragments[:3] == [b"ftyp", b"moov", b"sidx"] and set(fragments[3:]) == {b"moof", b"mdat"}
    assert progressive.headers["etag"] != fragmented.headers["etag"]
    wrong = site.request("GET", url + "&layout=dash", session=viewer)
    assert wrong.status == 400 and "layout must be progressive or fragmented" in wrong.body.decode()


def test_an_export_downloads_a_zip_that_edgenvr_verify_accepts(site: Site, tmp_path: Path) -> None:
    operator = site.login("operator")
    now = site.now_ms()
    body = {"camera": "gate", "start_ms": now - 8000, "end_ms": now - 3000, "reason": "laporan polisi 12/XI"}
    answer = site.request("POST", "/api/exports", body=body, session=operator)
    assert answer.status == 200, answer.body[:300]
    assert answer.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(answer.body)) as bundle:
        bundle.extractall(tmp_path)
    (folder,) = tmp_path.iterdir()
    done = subprocess.run([sys.executable, "-m", "edgenvr", "verify", str(folder)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["reason"] == body["reason"] and manifest["exported_by"] == "operator"
    assert not list(site.layout.exports_dir.iterdir()), "nothing of the export is left on the box"
    audit = site.request("GET", "/api/audit?action=export", token=site.tokens["admin"]).json()["records"]
    assert audit[0]["reason"] == body["reason"] and audit[0]["actor"] == "operator"


# --- the description -----------------------------------------------------------------------------------

def test_the_openapi_description_lists_exactly_the_router_s_routes(site: Site) -> None:
    document = site.request("GET", "/api/openapi.json", token=site.tokens["viewer"]).json()
    described = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    routed = {(r.method, r.path) for r in all_routes() if r.path.startswith("/api/")}
    assert described == routed
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            names = set(re.findall(r"\{(\w+)", path))
            assert names == {p["name"] for p in operation["parameters"] if p["in"] == "path"}, (method, path)


def test_users_and_tokens_are_managed_by_admins_and_changes_are_audited(site: Site) -> None:
    admin = site.login("admin")
    made = site.request("POST", "/api/users", session=admin,
                        body={"name": "petugas", "role": "viewer", "password": "petugas-password-1", "cameras": ["yard"]})
    assert made.status == 201, made.body
    token = site.request("POST", "/api/users/petugas/tokens", session=admin, body={"label": "kiosk"}).json()
    assert site.request("GET", "/api/cameras", token=token["token"]).json()["cameras"][0]["id"] == "yard"
    assert site.request("DELETE", f"/api/tokens/{token['id']}", session=admin).status == 200
    assert site.request("GET", "/api/cameras", token=token["token"]).status == 401
    assert site.request("PATCH", "/api/users/petugas", session=admin, body={"cameras": None}).status == 200
    assert site.request("DELETE", "/api/users/petugas", session=admin).status == 200
    assert site.request("DELETE", "/api/users/admin", session=admin).status == 400   # the last admin stays
    actions = {r["action"] for r in site.request("GET", "/api/audit", session=admin).json()["records"]}
    assert {"user_add", "token_create", "token_revoke", "user_role", "user_remove", "login"} <= actions


# --- live view -------------------------------------------------------------------------------------------

def test_live_view_relays_the_recorded_stream_and_stops_when_nobody_watches(site: Site) -> None:
    viewer = site.login("viewer")
    log_before = site.supervisor.log().count("camera gate: live view started")
    header, pieces = watch_live(site, "gate", viewer, 4)
    assert header["mime"].startswith('video/mp4; codecs="avc1.')
    assert pieces and pieces[0][4:8] == b"ftyp", "the init segment comes first"
    assert sum(1 for p in pieces if p[4:8] == b"moof") >= 2
    with av.open(io.BytesIO(b"".join(pieces))) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 25, frames   # a second of 25 fps video or more, decodable from the first piece on
    log = site.supervisor.log()
    assert log.count("camera gate: live view started") == log_before + 1
    import time
    deadline = time.monotonic() + 5
    while "camera gate: live view ended" not in site.supervisor.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "camera gate: live view ended" in site.supervisor.log(), "the recorder stops sending when nobody watches"
    audit = site.request("GET", "/api/audit?action=live_view", token=site.tokens["admin"]).json()["records"]
    assert audit and audit[0]["actor"] == "viewer" and audit[0]["camera"] == "gate"


def test_a_live_view_websocket_from_another_site_is_refused(site: Site) -> None:
    viewer = site.login("viewer")
    answer = site.request("GET", "/api/cameras/gate/live", session=viewer, headers={
        "Origin": "http://evil.example", "Upgrade": "websocket", "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"})
    assert answer.status == 403
