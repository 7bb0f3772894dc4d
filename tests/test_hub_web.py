"""The city hub's HTTP API for people (issue 12, points 1 and 6) as Diskominfo's staff, their scripts and an
attacker meet it: a real `edgenvr hub` process, its first admin made with `edgenvr hub user add`, the others by
that admin through the API; a box (tests/synced_box: real MP4 segments, the real sync process's rounds run by
the test) that enrolled and uploaded a signed motion clip; requests over real loopback sockets (http.client, so
a test sets every header and the source address).

What the city relies on: every route for people refuses a caller without credentials and a role without the
permission, walking the hub's whole route table (so a route added later cannot escape); the boxes' routes take
no user credential; session requests that change something need the CSRF token and the same origin; a clip
plays with Range requests as exactly the bytes the box signed; a pull asked for through the API is the one
`edgenvr hub pulls` lists and becomes its clip; every sign-in, playback, download, pull and user change is in
the hub's audit trail, signed by the hub's key.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.core.records import EventKind
from edgenvr.evidence.audit import verify_trail
from edgenvr.evidence.identity import load_public_key, signing_key
from edgenvr.hub import hub_database
from edgenvr.hub.hub_config import load_hub_config
from edgenvr.hub.hub_server import make_hub_app
from edgenvr.hub.hub_web import hub_routes
from edgenvr.storage.layout import StorageLayout
from edgenvr.sync import outbox
from edgenvr.sync.uploader import Uploader
from edgenvr.web.accounts import ROLE_PERMISSIONS, Permission, Role
from edgenvr.web.api_routes import ROUTE_RULE_KEY, Access
from tests.conftest import edgenvr
from tests.hub_site import Hub, running_hub
from tests.synced_box import BOX_ID, SEGMENT_SECONDS, SyncedBox, open_footage, run_round
from tests.web_site import Answer, Session

pytestmark = pytest.mark.slow   # a hub process and its command line

PASSWORDS = {"admin": "admin-password-1", "operator": "operator-password-1", "viewer": "viewer-password-1"}
REASON = "Laporan polisi 21/XII: pencurian motor"


@dataclass
class HubSite:
    """The hub, its users' API tokens, and the box that uploaded `clip` (a motion clip of camera gate)."""

    hub: Hub
    box: SyncedBox
    uploader: Uploader
    started_ms: int                # the box's recording starts here (an hour ago)
    clip: dict[str, Any]
    tokens: dict[str, str] = field(default_factory=dict)
    logins: int = 0

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None, body: Any = None,
                session: Session | None = None, token: str | None = None, source: str = "127.0.0.1") -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.hub.port, timeout=60, source_address=(source, 0))
        sent = dict(headers or {})
        if session is not None:
            sent.setdefault("Cookie", f"edgenvr_session={session.cookie}")
            if method not in ("GET", "HEAD"):
                sent.setdefault("X-CSRF-Token", session.csrf)
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def login(self, name: str, password: str | None = None) -> Session:
        """Sign in from an address of its own (each address may try 10 times a minute)."""
        self.logins += 1
        answer = self.request("POST", "/api/login", body={"name": name, "password": password or PASSWORDS[name]},
                              source=f"127.0.{3 + self.logins // 250}.{1 + self.logins % 250}")
        assert answer.status == 200, answer.body
        return Session(answer.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1], answer.json()["csrf_token"])

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """`edgenvr hub --config HUB.toml ARGS...`, stdin given."""
        return subprocess.run([sys.executable, "-m", "edgenvr", "hub", "--config", str(self.hub.config), *args],
                              input=stdin, capture_output=True, text=True, timeout=60)

    def audit(self) -> list[dict[str, Any]]:
        listed = self.cli("audit", "--json")
        assert listed.returncode == 0, listed.stderr
        return [json.loads(line) for line in listed.stdout.splitlines()]

    def deliver(self) -> None:
        """Rounds of the box's sync process until its outbox is empty (what it does while its link is up)."""
        deadline = time.monotonic() + 30
        run_round(self.uploader)   # queues what is due, then sends it
        while outbox.backlog(self.box.writer.conn).count:
            assert time.monotonic() < deadline, f"the box's backlog did not drain:\n{self.hub.log.read_text()[-3000:]}"
            run_round(self.uploader)


@contextlib.contextmanager
def people_site(root: Path) -> Iterator[HubSite]:
    """A hub with users admin (made on the command line), operator and viewer (made by admin through the API),
    an API token each, and one motion clip uploaded by box BOX_ID."""
    with running_hub(root) as hub:
        box = SyncedBox(root / "box", hub.url, hub.token(BOX_ID), open_footage())
        try:
            site = HubSite(hub, box, box.uploader(), int(time.time() * 1000) - 3_600_000, {})
            made = site.cli("user", "add", "--name", "admin", "--role", "admin", "--password-stdin",
                            stdin=PASSWORDS["admin"] + "\n")
            assert made.returncode == 0, made.stderr
            made = site.cli("token", "create", "--name", "admin", "--label", "city scripts")
            assert made.returncode == 0, made.stderr
            site.tokens["admin"] = made.stdout.strip()
            for name in ("operator", "viewer"):
                added = site.request("POST", "/api/users", token=site.tokens["admin"],
                                     body={"name": name, "role": name, "password": PASSWORDS[name]})
                assert added.status == 201, added.body
                created = site.request("POST", f"/api/users/{name}/tokens", token=site.tokens["admin"],
                                       body={"label": f"{name} script"})
                assert created.status == 201, created.body
                site.tokens[name] = created.json()["token"]

            outbox.sync_since(box.writer.conn, site.started_ms)   # the box has synced for an hour
            for n in range(3):
                box.record("gate", site.started_ms + n * SEGMENT_SECONDS * 1000)
            box.event(EventKind.MOTION, "gate", site.started_ms + 1_500, site.started_ms + 2_500)
            box.commit()
            site.deliver()   # enrols, then sends the event's clip
            clips = site.request("GET", "/api/clips", token=site.tokens["viewer"]).json()["clips"]
            assert len(clips) == 1, clips
            site.clip = clips[0]
            yield site
        finally:
            box.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubSite]:
    with people_site(tmp_path_factory.mktemp("hub-web")) as made:
        yield made


def _stored_video(site: HubSite) -> bytes:
    """The clip's video file as the box signed it, read from the hub's stored zip."""
    with zipfile.ZipFile(site.hub.data_dir / "blobs" / "clips" / f"{site.clip['id']}.zip") as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".mp4")]
        return archive.read(name)


def _sample(path: str, site: HubSite) -> str:
    values = {"clip": site.clip["id"], "user": "nobody", "token": "999999", "name": "dom.js",
              "upload": "0" * 32}
    return re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: values[m.group(1)], path)


def _people_routes() -> list[Any]:
    return [route for route in hub_routes([], []) if route.access not in (Access.PUBLIC, Access.BOX)]


# --- who may call what -----------------------------------------------------------------------------------

def test_every_route_for_people_refuses_callers_without_credentials_and_box_routes_take_no_user_token(
        site: HubSite) -> None:
    routes = _people_routes()
    assert len(routes) >= 15
    for route in routes:
        path = _sample(route.path, site)
        for headers in ({}, {"Authorization": "Bearer envr_not-a-token"}, {"Cookie": "edgenvr_session=forged"}):
            answer = site.request(route.method, path, headers=headers, body={} if route.state_changing else None)
            assert answer.status == 401, (route.method, route.path, headers, answer.status, answer.body)
            assert "content-security-policy" in answer.headers and answer.headers["cache-control"] == "no-store"
    # The boxes' routes answer to a box's signature only: an admin's token is no credential there.
    admin = {"Authorization": f"Bearer {site.tokens['admin']}"}
    created = site.request("POST", "/api/v1/uploads/", headers={**admin, "Tus-Resumable": "1.0.0", "Upload-Length": "9"})
    assert created.status == 401, created.body
    assert site.request("GET", "/api/v1/channel", headers=admin).status == 401
    # Health and the UI need nothing.
    assert site.request("GET", "/api/health").json()["status"] == "ok"
    assert site.request("GET", "/").status == 200 and b"/static/hub.js" in site.request("GET", "/").body


@pytest.mark.parametrize("role", list(Role))
def test_each_role_may_call_exactly_the_routes_its_permissions_allow(site: HubSite, role: Role) -> None:
    """viewer: fleet, clips, playback; operator: + pulls, evidence; admin: + users, tokens, audit. Walked over the
    whole table with an empty body for changes (a permitted call then fails its body check, 400, never 403)."""
    allowed = ROLE_PERMISSIONS[role]
    for route in _people_routes():
        answer = site.request(route.method, _sample(route.path, site), token=site.tokens[str(role)],
                              body={} if route.state_changing else None)
        permitted = not isinstance(route.access, Permission) or route.access in allowed
        if permitted:
            assert answer.status not in (401, 403), (role, route.method, route.path, answer.status, answer.body)
        else:
            assert answer.status == 403, (role, route.method, route.path, answer.status, answer.body)
    assert {Permission.VIEW} <= allowed   # every role sees the fleet and plays clips


def test_session_changes_need_the_csrf_token_and_the_same_origin(site: HubSite) -> None:
    session = site.login("operator")
    body = {"box": BOX_ID, "camera": "gate", "start_ms": site.started_ms, "end_ms": site.started_ms + 4_000,
            "reason": REASON}
    assert site.request("GET", "/api/fleet", session=session).status == 200   # reading needs no token
    no_csrf = site.request("POST", "/api/pulls", session=session, body=body, headers={"X-CSRF-Token": ""})
    assert no_csrf.status == 403 and "X-CSRF-Token" in no_csrf.json()["error"]
    foreign = site.request("POST", "/api/pulls", session=session, body=body, headers={"Origin": "http://evil.example"})
    assert foreign.status == 403
    cross = site.request("POST", "/api/pulls", session=session, body=body, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status == 403
    made = site.request("POST", "/api/pulls", session=session, body=body,
                        headers={"Origin": f"http://127.0.0.1:{site.hub.port}", "Sec-Fetch-Site": "same-origin"})
    assert made.status == 201, made.body
    assert made.json()["requested_by"] == "operator"
    me = site.request("GET", "/api/me", session=session).json()
    assert me["user"]["role"] == "operator" and me["hub"]["id"] == "hub"
    assert site.request("POST", "/api/logout", session=session).status == 200
    assert site.request("GET", "/api/fleet", session=session).status == 401   # the session is gone
    wrong = site.request("POST", "/api/login", body={"name": "operator", "password": "not-the-password"},
                         source="127.0.2.9")
    assert wrong.status == 401


def test_ids_are_checked_before_anything_is_looked_up(site: HubSite) -> None:
    viewer = site.tokens["viewer"]
    for path in ("/api/clips?box=../etc", "/api/clips?box=a%2Fb", "/api/clips?camera=Gate%2F..",
                 "/api/clips?kind=everything", "/api/clips?from_ms=yesterday", "/api/clips/" + site.clip["id"]
                 + "/video.mp4?part=0"):
        assert site.request("GET", path, token=viewer).status == 400, path
    for path in ("/api/clips/not-a-clip", "/api/clips/..%2F..%2Fhub.sqlite3/video.mp4", "/api/clips/" + "0" * 32,
                 "/api/clips/" + "0" * 32 + "/video.mp4", "/api/clips/" + site.clip["id"] + "/video.mp4?part=2"):
        assert site.request("GET", path, token=viewer).status == 404, path
    operator = site.tokens["operator"]
    assert site.request("GET", "/api/pulls?box=a/b", token=operator).status == 400
    for bad in ({"box": "../x"}, {"box": "rt99-nowhere"}, {"camera": "Gate"}, {"start_ms": site.started_ms + 9_000},
                {"end_ms": site.started_ms + 25 * 3_600_000}, {"reason": ""}, {"extra": 1}):
        body = {"box": BOX_ID, "camera": "gate", "start_ms": site.started_ms, "end_ms": site.started_ms + 8_000,
                "reason": REASON, **bad}
        answer = site.request("POST", "/api/pulls", token=operator, body=body)
        assert answer.status == 400, (bad, answer.status, answer.body)


# --- clips: search, playback, download ---------------------------------------------------------------------

def test_clips_are_found_by_box_camera_kind_and_time(site: HubSite) -> None:
    viewer, clip = site.tokens["viewer"], site.clip
    assert clip["box"] == BOX_ID and clip["camera"] == "gate" and clip["kind"] == "motion"

    def found(query: str) -> list[str]:
        answer = site.request("GET", f"/api/clips?{query}", token=viewer)
        assert answer.status == 200, answer.body
        return [c["id"] for c in answer.json()["clips"] if c["kind"] == "motion"]
    assert found(f"box={BOX_ID}&camera=gate&kind=motion") == [clip["id"]]
    assert found(f"from_ms={clip['start_ms']}&to_ms={clip['end_ms']}") == [clip["id"]]
    assert found(f"to_ms={clip['start_ms']}") == [] and found(f"from_ms={clip['end_ms']}") == []
    assert found("box=rt09-menteng") == [] and found("camera=yard") == [] and found("kind=tamper") == []
    detail = site.request("GET", f"/api/clips/{clip['id']}", token=viewer).json()
    assert detail["clip"] == clip and detail["manifest"]["box"]["id"] == BOX_ID
    (video,) = detail["files"]
    assert video["part"] == 1 and video["codec"] == "h264" and video["bytes"] == len(_stored_video(site))


def test_playback_answers_range_requests_with_exactly_the_signed_video_bytes(site: HubSite) -> None:
    viewer, path = site.tokens["viewer"], f"/api/clips/{site.clip['id']}/video.mp4"
    video = _stored_video(site)
    size = len(video)
    whole = site.request("GET", path, token=viewer)
    assert whole.status == 200 and whole.body == video
    assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
    assert hashlib.sha256(whole.body).hexdigest() == \
        site.request("GET", f"/api/clips/{site.clip['id']}", token=viewer).json()["files"][0]["sha256"]
    etag = whole.headers["etag"]
    for asked, first, end in (("bytes=0-99", 0, 100), ("bytes=1000-", 1000, size), ("bytes=-500", size - 500, size),
                              (f"bytes=100-{size + 50}", 100, size), ("bytes=7-7", 7, 8)):
        part = site.request("GET", path, token=viewer, headers={"Range": asked})
        assert part.status == 206, (asked, part.status)
        assert part.body == video[first:end], asked
        assert part.headers["content-range"] == f"bytes {first}-{end - 1}/{size}", asked
    assert site.request("GET", path, token=viewer, headers={"Range": f"bytes={size}-"}).status == 416
    same = site.request("GET", path, token=viewer, headers={"Range": "bytes=10-19", "If-Range": etag})
    assert same.status == 206 and same.body == video[10:20]
    changed = site.request("GET", path, token=viewer, headers={"Range": "bytes=10-19", "If-Range": '"another"'})
    assert changed.status == 200 and changed.body == video
    head = site.request("HEAD", path, token=viewer)
    assert head.status == 200 and head.body == b"" and head.headers["content-length"] == str(size)


def test_the_evidence_download_is_the_stored_zip_which_verifies_with_the_box_key(site: HubSite, tmp_path: Path) -> None:
    path = f"/api/clips/{site.clip['id']}/evidence.zip?reason=Polsek%20request%20114"
    assert site.request("GET", path, token=site.tokens["viewer"]).status == 403
    answer = site.request("GET", path, token=site.tokens["operator"])
    assert answer.status == 200 and answer.headers["content-type"] == "application/zip"
    assert hashlib.sha256(answer.body).hexdigest() == site.clip["sha256"]
    assert f'filename="{BOX_ID}_gate_' in answer.headers["content-disposition"]
    zipfile.ZipFile(io.BytesIO(answer.body)).extractall(tmp_path / "evidence")
    verified = edgenvr("verify", str(tmp_path / "evidence"), "--pubkey", str(site.box.layout.device_public_key_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    record = [r for r in site.audit() if r["action"] == "export"][-1]
    assert record["actor"] == "operator (API token)" and record["camera"] == f"{BOX_ID}/gate"
    assert record["reason"] == "Polsek request 114" and site.clip["id"] in record["detail"]


# --- remote pulls ------------------------------------------------------------------------------------------

def test_a_pull_asked_for_through_the_api_is_listed_by_the_cli_and_becomes_its_clip(site: HubSite) -> None:
    start_ms, end_ms = site.started_ms + 4_000, site.started_ms + 12_000
    body = {"box": BOX_ID, "camera": "gate", "start_ms": start_ms, "end_ms": end_ms, "reason": REASON}
    assert site.request("POST", "/api/pulls", token=site.tokens["viewer"], body=body).status == 403
    made = site.request("POST", "/api/pulls", token=site.tokens["operator"], body=body)
    assert made.status == 201, made.body
    pull = made.json()
    assert (pull["state"], pull["requested_by"]) == ("queued", "operator (API token)")

    listed = site.cli("pulls", "--json")
    assert listed.returncode == 0, listed.stderr
    by_cli = {p["id"]: p for p in map(json.loads, listed.stdout.splitlines())}
    assert by_cli[pull["id"]]["state"] == "queued" and by_cli[pull["id"]]["reason"] == REASON
    assert by_cli[pull["id"]]["requested_by"] == "operator (API token)"

    # The box gets the request (here straight into its outbox; over its channel in test_remote_pull) and sends it.
    now = int(time.time() * 1000)
    assert outbox.enqueue_pull(site.box.writer.conn, pull["id"], "gate", start_ms, end_ms, now, now)
    site.deliver()
    answered = {p["id"]: p for p in site.request("GET", "/api/pulls", token=site.tokens["operator"]).json()["pulls"]}
    ready = answered[pull["id"]]
    assert ready["state"] == "ready" and ready["progress"] == 100 and ready["clip_id"], ready
    detail = site.request("GET", f"/api/clips/{ready['clip_id']}", token=site.tokens["viewer"]).json()
    assert detail["clip"]["kind"] == "requested" and detail["clip"]["camera"] == "gate"
    assert site.request("GET", f"/api/clips/{ready['clip_id']}/video.mp4", token=site.tokens["viewer"],
                        headers={"Range": "bytes=0-7"}).status == 206
    records = [r for r in site.audit() if r["action"] == "pull_request" and r["reason"] == REASON
               and r["from_ms"] == start_ms]
    assert records and records[0]["actor"] == "operator (API token)" and records[0]["camera"] == f"{BOX_ID}/gate"


# --- users, tokens and the audit trail ----------------------------------------------------------------------

def test_users_are_managed_by_admins_carry_no_camera_grant_and_every_change_is_audited(site: HubSite) -> None:
    admin = site.tokens["admin"]
    granted = site.request("POST", "/api/users", token=admin,
                           body={"name": "polsek", "role": "viewer", "password": "polsek-password-1", "cameras": ["gate"]})
    assert granted.status == 400   # a hub user sees every camera of every box: there is no grant to give
    made = site.request("POST", "/api/users", token=admin,
                        body={"name": "polsek", "role": "viewer", "password": "polsek-password-1"})
    assert made.status == 201 and made.json()["cameras"] is None
    promoted = site.cli("user", "role", "--name", "polsek", "--role", "operator", "--by", "kepala-it")
    assert promoted.returncode == 0, promoted.stderr
    session = site.login("polsek", "polsek-password-1")
    assert site.request("GET", "/api/pulls", session=session).status == 200   # an operator now
    token = site.cli("token", "create", "--name", "polsek", "--label", "polsek script", "--by", "kepala-it")
    assert token.returncode == 0, token.stderr
    secret = token.stdout.strip()
    assert site.request("GET", "/api/fleet", token=secret).status == 200
    (listed,) = site.request("GET", "/api/tokens?user=polsek", token=admin).json()["tokens"]
    assert site.cli("token", "revoke", "--id", str(listed["id"])).returncode == 0
    assert site.request("GET", "/api/fleet", token=secret).status == 401
    changed = site.cli("user", "password", "--name", "polsek", "--password-stdin", stdin="polsek-password-2\n")
    assert changed.returncode == 0, changed.stderr
    assert site.request("GET", "/api/fleet", session=session).status == 401   # a new password ends sessions
    assert site.request("DELETE", "/api/users/polsek", token=admin).status == 200
    users = [json.loads(line)["name"] for line in site.cli("user", "list", "--json").stdout.splitlines()]
    assert users == ["admin", "operator", "viewer"]
    actions = [(r["actor"], r["action"]) for r in site.audit()]
    for expected in (("admin (API token)", "user_add"), ("kepala-it", "user_role"), ("polsek", "login"),
                     ("kepala-it", "token_create"), ("admin (API token)", "user_remove")):
        assert expected in actions, expected
    assert {"token_revoke", "user_password"} <= {action for _, action in actions}


def test_the_hub_audit_trail_has_every_action_and_is_signed_by_the_hub_key(site: HubSite) -> None:
    session = site.login("viewer")
    assert site.request("GET", f"/api/clips/{site.clip['id']}/video.mp4", session=session,
                        headers={"Range": "bytes=0-1"}).status == 206
    assert site.request("GET", f"/api/clips/{site.clip['id']}/video.mp4", session=session).status == 200
    assert site.request("POST", "/api/logout", session=session).status == 200
    records = site.audit()
    mine = [r["action"] for r in records if r["actor"] == "viewer"]
    assert mine[-3:] == ["login", "playback", "logout"], mine   # one playback record for the player's requests
    playback = [r for r in records if r["actor"] == "viewer" and r["action"] == "playback"][-1]
    assert playback["camera"] == f"{BOX_ID}/gate" and site.clip["id"] in playback["detail"]
    assert {"user_add", "token_create", "login", "login_failed", "logout", "playback", "export", "pull_request"} <= \
        {r["action"] for r in records}
    answer = site.request("GET", "/api/audit?action=pull_request", token=site.tokens["admin"])
    assert answer.status == 200 and all(r["action"] == "pull_request" for r in answer.json()["records"])
    assert answer.json()["records"]
    one_camera = site.request("GET", f"/api/audit?camera={BOX_ID}/gate", token=site.tokens["admin"])
    assert one_camera.status == 200 and one_camera.json()["records"]
    assert {r["camera"] for r in one_camera.json()["records"]} == {f"{BOX_ID}/gate"}
    for bad in ("../gate", f"{BOX_ID}/../x", "a%20b/gate"):
        assert site.request("GET", f"/api/audit?camera={bad}", token=site.tokens["admin"]).status == 400, bad
    checked = site.cli("audit", "verify")
    assert checked.returncode == 0 and "intact" in checked.stdout, checked.stdout + checked.stderr
    hub_key = load_public_key((site.hub.data_dir / "keys" / "hub.pub").read_bytes())
    assert verify_trail(StorageLayout(site.hub.data_dir), hub_key).ok
    for secret in (*site.tokens.values(), *PASSWORDS.values()):
        assert secret not in site.hub.log.read_text()


# --- the description --------------------------------------------------------------------------------------

def test_the_openapi_description_lists_exactly_the_hub_s_routes_and_every_route_has_a_rule(
        site: HubSite, tmp_path: Path) -> None:
    document = site.request("GET", "/api/openapi.json", token=site.tokens["viewer"]).json()
    described = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    config = load_hub_config(site.hub.config)
    engine = hub_database.connect(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    try:
        app = make_hub_app(config, engine, signing_key(tmp_path / "k.key", tmp_path / "k.pub"), SYSTEM_CLOCK)
        registered = [(route.method, route.resource.canonical, getattr(route, ROUTE_RULE_KEY, None))
                      for route in app.router.routes()]
    finally:
        engine.dispose()
    assert all(rule is not None for _, _, rule in registered), [r[:2] for r in registered if r[2] is None]
    routed = {(method, path) for method, path, rule in registered if path.startswith("/api/")
              and (method != "HEAD" or rule.method == "HEAD")}
    assert described == routed
    box_routes = {(m, p) for m, p, rule in registered if rule.access is Access.BOX}
    assert {("POST", "/api/v1/enrol"), ("POST", "/api/v1/uploads/"), ("PATCH", "/api/v1/uploads/{upload}"),
            ("GET", "/api/v1/channel")} <= box_routes
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert set(re.findall(r"\{(\w+)", path)) == {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            expected = [{"box_signature": []}] if (method.upper(), path) in box_routes else None
            if expected:
                assert operation["security"] == expected, (method, path)
