"""The continuity report (`edgenvr report`) as an election warehouse or a police request relies on it.

A box records two cameras for two and a half days on a simulated clock (edgenvr.simulator.SimulatedRecordingLoad:
the real index writer, retention sweep and housekeeping, nothing sleeps): a hold keeps an hour of day one while
retention (max_age_days = 1) deletes the rest, the yard camera's stream is lost for 83 minutes on day three
(offline), the gate camera is covered for five and a half minutes (tamper), and the sync process's outbox has
clips the hub receipted, one still waiting and one given up as lost. The report is checked against what is on
the disk: the share recorded per box-local day (Asia/Jakarta) to the millisecond, every gap with its reason and
bounds, the events, holds and clips; its signature verifies offline (edgenvr and `openssl pkeyutl -rawin`) and a
changed byte does not; the page is self-contained, has a bar per camera-day, and prints to PDF in Chromium with
JavaScript off; bad requests are refused with a clear message.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edgenvr.config.checking import load_config
from edgenvr.config.records import Config
from edgenvr.core.clock import SimulatedClock
from edgenvr.core.records import (
    CameraState,
    EventKind,
    EventRecord,
    SegmentRecord,
    TamperKind,
)
from edgenvr.core.time_format import parse_time_ms
from edgenvr.core.units import DAY_MS, MINUTE_MS, SECOND_MS
from edgenvr.evidence.audit import AuditTrail, read_records
from edgenvr.evidence.continuity_report import (
    GapCause,
    ReportRequest,
    TimeZone,
    make_report,
)
from edgenvr.evidence.continuity_report_verification import verify_report
from edgenvr.evidence.hub_receipts import make_receipt
from edgenvr.evidence.identity import DeviceIdentity, device_identity, signing_key
from edgenvr.evidence.verification import VerificationFailed
from edgenvr.index import schema as index_schema
from edgenvr.index.queries import open_readonly
from edgenvr.retention.holds import add_hold, release_hold
from edgenvr.simulator import SimulatedRecordingLoad
from edgenvr.sync import outbox

ZONE = TimeZone("Asia/Jakarta", ZoneInfo("Asia/Jakarta"))   # UTC+07:00, no daylight saving
SEGMENT_S = 60
SEGMENT_MS = SEGMENT_S * SECOND_MS
BOX = "gudang-kpu-03"
OUTAGE_REASON = "connection refused"
HUB_RECEIPT_SHA = "5e" * 32
LOST_REASON = "deleted by the free-space floor before it reached the hub"


def local(text: str) -> int:
    """A wall time at the box (Asia/Jakarta) as UTC epoch ms."""
    return parse_time_ms(f"{text}+07:00")


START = local("2025-12-01T06:00")    # the box starts recording
END = local("2025-12-03T18:00")      # ... and the report is made now
REPORT_FROM, REPORT_TO = local("2025-12-01T00:00"), local("2025-12-04T00:00")
DAYS = ["2025-12-01", "2025-12-02", "2025-12-03"]
HELD = (local("2025-12-01T10:00"), local("2025-12-01T11:00"))
TAMPER = (local("2025-12-03T14:00:00"), local("2025-12-03T14:05:30"))
MOTION = [(local("2025-12-03T12:00:00"), local("2025-12-03T12:00:40")),
          (local("2025-12-03T15:00:00"), local("2025-12-03T15:01:00")),
          (local("2025-12-03T16:00:00"), local("2025-12-03T16:00:20"))]


class CamerasWithLostStreams(SimulatedRecordingLoad):
    """The simulated load, where a camera whose stream is lost (in `lost`) records nothing until it is back: the
    segments it would have closed meanwhile are never written, as a recorder without packets writes none."""

    def __init__(self, config: Config, clock: SimulatedClock) -> None:
        self.lost: set[str] = set()
        super().__init__(config, clock, segment_bytes=1000)

    def _announce(self, camera: str, end_boot_ms: int) -> SegmentRecord:
        if camera in self.lost:
            return None  # type: ignore[return-value]   # nothing recorded
        return super()._announce(camera, end_boot_ms)


@dataclass
class Box:
    root: Path
    config: Config
    load: CamerasWithLostStreams
    outage: tuple[int, int]        # the yard camera's lost stream: its last segment's end, its next one's start
    identity: DeviceIdentity
    clips: dict[str, int]          # outbox ids: tamper, synced motion, lost motion, queued motion

    def report(self, out: Path, *, camera: str | None = None) -> dict[str, Any]:
        conn = open_readonly(self.load.layout)
        trail = AuditTrail(self.load.layout, self.identity, self.load.clock)
        try:
            written = make_report(conn, self.config, self.load.layout, self.identity, trail,
                                  ReportRequest(REPORT_FROM, REPORT_TO, out, camera, "siti", "Bawaslu 12/XII"),
                                  clock=self.load.clock, zone=ZONE)
        finally:
            trail.close()
            conn.close()
        return written.document


def write_config(root: Path) -> Path:
    path = root / "edgenvr.toml"
    path.write_text(f'[box]\nid = "{BOX}"\nname = "Gudang logistik KPU 03"\n[storage]\ndata_dir = "{root / "data"}"\n'
                    'quota = "100%"\nmin_free = "0"\nmax_age_days = 1\nsweep_seconds = 60\n'
                    f"[recording]\nsegment_seconds = {SEGMENT_S}\n[motion]\nenabled = false\ntamper = false\n"
                    '[[cameras]]\nid = "gate"\nname = "Pintu utama"\nurl = "rtsp://192.0.2.1/gate"\n'
                    '[[cameras]]\nid = "yard"\nname = "Halaman"\nurl = "rtsp://192.0.2.1/yard"\n')
    return path


def run_until(load: SimulatedRecordingLoad, at_ms: int) -> None:
    """Record until `at_ms` (a step per segment, as the supervisor's loop would)."""
    load.run((at_ms - load.clock.now_ms()) / SECOND_MS, every=SEGMENT_S)


def recorded_box(root: Path) -> Box:
    config = load_config(write_config(root))
    load = CamerasWithLostStreams(config, SimulatedClock(START))
    sync = index_schema.connect(load.layout.index_path)   # the sync process's own connection
    since = outbox.sync_since(sync, START)
    add_hold(load.conn, config, "gate", *HELD, "Bawaslu: kotak suara hari pertama", clock=load.clock)

    run_until(load, local("2025-12-03T08:01"))
    down = max(s.end_ms for s in load.announced if s.camera == "yard")
    load.lost.add("yard")                     # the yard camera's stream is lost ...
    load.writer.set_state(CameraState("yard", "reconnecting", down, OUTAGE_REASON, {}))
    run_until(load, local("2025-12-03T08:02"))
    load.writer.set_state(CameraState("yard", "offline", down, OUTAGE_REASON, {}))
    run_until(load, local("2025-12-03T09:24"))
    load.lost.discard("yard")                 # ... and back 83 minutes later
    before = len(load.announced)
    run_until(load, local("2025-12-03T09:25"))
    up = min(s.start_ms for s in load.announced[before:] if s.camera == "yard")
    load.writer.set_state(CameraState("yard", "recording", up, "", {}))
    yard_hold = add_hold(load.conn, config, "yard", local("2025-12-03T10:00"), local("2025-12-03T10:30"),
                         "cek kedatangan logistik", clock=load.clock)
    run_until(load, local("2025-12-03T12:00"))
    release_hold(load.conn, yard_hold.id, "selesai diperiksa", clock=load.clock)
    run_until(load, local("2025-12-03T16:02"))
    for kind, subkind, (start, end) in [(EventKind.TAMPER, TamperKind.COVERED, TAMPER),
                                        *((EventKind.MOTION, "", motion) for motion in MOTION)]:
        load.writer.add_event(EventRecord("gate", kind, start, None, subkind))   # opened, then closed
        load.writer.add_event(EventRecord("gate", kind, start, end, subkind))
    run_until(load, END)
    load.close()

    # The sync process: every closed event is queued; the hub receipted the tamper clip and the first motion clip,
    # the second was lost to the free-space floor, the third still waits.
    assert outbox.enqueue_closed_events(sync, since, END, SEGMENT_MS + outbox.SETTLE_MARGIN_MS) == 4
    queued = {row[0]: row[1] for row in sync.execute("SELECT start_ms, id FROM outbox")}
    clips = {"tamper": queued[TAMPER[0] - 10_000], "synced": queued[MOTION[0][0] - 10_000],
             "lost": queued[MOTION[1][0] - 10_000], "queued": queued[MOTION[2][0] - 10_000]}
    hub_key = signing_key(root / "hub.key", root / "hub.pub")
    shutil.copy(root / "hub.pub", load.layout.hub_key_path)   # learnt at enrolment
    for name in ("tamper", "synced"):
        row = sync.execute("SELECT camera, start_ms, end_ms, kind FROM outbox WHERE id = ?", (clips[name],)).fetchone()
        outbox.note_upload(sync, clips[name], f"/api/v1/uploads/{name}", 123_456, "ab" * 32)
        receipt = make_receipt(hub_key, {"clip": f"clip-{name}", "box": BOX, "camera": row[0], "start_ms": row[1],
                                         "end_ms": row[2], "kind": row[3], "sha256": HUB_RECEIPT_SHA,
                                         "bytes": 123_456, "received_ms": END - MINUTE_MS})
        outbox.mark_synced(sync, clips[name], receipt, END - MINUTE_MS)
    outbox.mark_unavailable(sync, clips["lost"], LOST_REASON, END - MINUTE_MS)
    sync.close()
    identity = device_identity(load.layout, config.box.box_id, config.box.box_name)
    return Box(root, config, load, (down, up), identity, clips)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Box:
    return recorded_box(tmp_path_factory.mktemp("continuity"))


@pytest.fixture(scope="module")
def report(box: Box) -> dict[str, Any]:
    return box.report(box.root / "report.json")


def camera(document: dict[str, Any], camera_id: str) -> dict[str, Any]:
    return next(c for c in document["cameras"] if c["id"] == camera_id)


def on_disk(box: Box, camera_id: str) -> list[tuple[int, int]]:
    """What the disk holds of a camera: the segments it recorded whose files are still there, as stretches."""
    stretches: list[list[int]] = []
    for segment in sorted((s for s in box.load.announced if s and s.camera == camera_id), key=lambda s: s.start_ms):
        if not box.load.layout.segment_path(camera_id, segment.start_ms).exists():
            continue
        if stretches and segment.start_ms <= stretches[-1][1]:
            stretches[-1][1] = max(stretches[-1][1], segment.end_ms)
        else:
            stretches.append([segment.start_ms, segment.end_ms])
    return [(start, end) for start, end in stretches]


def overlap(stretches: list[tuple[int, int]], start: int, end: int) -> int:
    return sum(max(0, min(e, end) - max(s, start)) for s, e in stretches)


# -- figures ----------------------------------------------------------------------------------------------

def test_the_share_recorded_per_local_day_is_what_the_disk_holds_to_the_millisecond(box: Box,
                                                                                    report: dict[str, Any]) -> None:
    assert report["days"] == {"basis": "box-local", "time_zone": "Asia/Jakarta"}
    assert report["range"]["covered_to_ms"] == END          # the hours after now are not counted
    for camera_id in ("gate", "yard"):
        days = camera(report, camera_id)["days"]
        assert [(d["date"], d["utc_offset"]) for d in days] == [(day, "+07:00") for day in DAYS]
        disk = on_disk(box, camera_id)
        for day in days:
            start = local(f"{day['date']}T00:00")
            end = min(start + DAY_MS, END)
            assert (day["start_ms"], day["end_ms"], day["span_ms"]) == (start, end, end - start)
            assert day["recorded_ms"] == overlap(disk, start, end), (camera_id, day["date"])
            assert day["recorded_ms"] + sum(day["not_recorded_ms"].values()) == day["span_ms"]
            painted = sum(e - s for s, e, _kind in day["spans"])
            assert painted == day["span_ms"] and all(a[1] == b[0] for a, b in zip(day["spans"], day["spans"][1:]))
        totals = camera(report, camera_id)["totals"]
        assert totals["recorded_ms"] == overlap(disk, REPORT_FROM, END) == sum(d["recorded_ms"] for d in days)

    gate_day1 = camera(report, "gate")["days"][0]
    # retention kept only the held hour of day one
    assert gate_day1["recorded_ms"] == HELD[1] - HELD[0] and gate_day1["recorded_percent"] == "4.16"
    yard = camera(report, "yard")["days"][2]
    down, up = box.outage
    assert up - down == 83 * MINUTE_MS
    assert yard["not_recorded_ms"][GapCause.CAMERA] == 83 * MINUTE_MS


def test_every_gap_is_listed_with_its_reason_and_exact_bounds(box: Box, report: dict[str, Any]) -> None:
    down, up = box.outage
    yard_gaps = camera(report, "yard")["gaps"]
    lost_stream = [g for g in yard_gaps if g["cause"] == GapCause.CAMERA]
    assert lost_stream == [{"start_ms": down, "end_ms": up, "duration_ms": up - down, "cause": "camera",
                            "reason": OUTAGE_REASON, "index_gap": {"start_ms": down, "end_ms": up}}]

    gate = camera(report, "gate")
    first_kept = min(s for s, _e in on_disk(box, "gate") if s > HELD[1])
    assert [(g["cause"], g["start_ms"], g["end_ms"]) for g in gate["gaps"][:3]] == [
        # before the oldest video the box knows of: it cannot tell deleted from never recorded, and says so
        (GapCause.NO_VIDEO_KEPT, REPORT_FROM, HELD[0]),
        # between the held hour and what the ring kept: recorded, then deleted by retention
        (GapCause.RETENTION, HELD[1], first_kept),
        (GapCause.NOT_INDEXED, max(e for _s, e in on_disk(box, "gate")), END),   # the segment being recorded now
    ]
    assert "max_age_days" in gate["gaps"][0]["reason"]
    # the gaps account for all the time not recorded
    for camera_entry in report["cameras"]:
        assert sum(g["duration_ms"] for g in camera_entry["gaps"]) == \
            camera_entry["totals"]["span_ms"] - camera_entry["totals"]["recorded_ms"]


def test_offline_and_tamper_events_holds_and_clips_sent_upstream_are_listed(box: Box, report: dict[str, Any]) -> None:
    down, up = box.outage
    yard, gate = camera(report, "yard"), camera(report, "gate")
    assert [(e["kind"], e["start_ms"], e["end_ms"]) for e in yard["events"]] == [("offline", down, up)]
    assert [(e["kind"], e["subkind"], e["start_ms"], e["end_ms"]) for e in gate["events"]] == \
        [("tamper", "covered", *TAMPER)]
    assert gate["motion_events"] == 3

    assert [(h["from_ms"], h["to_ms"], h["in_force"], h["reason"]) for h in gate["holds"]] == \
        [(*HELD, True, "Bawaslu: kotak suara hari pertama")]
    assert [(h["in_force"], h["release_reason"]) for h in yard["holds"]] == [(False, "selesai diperiksa")]

    assert gate["clips_summary"] == {"synced": 2, "synced_bytes": 2 * 123_456, "queued": 1, "lost": 1}
    by_id = {clip["id"]: clip for clip in gate["clips"]}
    for name in ("tamper", "synced"):
        clip = by_id[box.clips[name]]
        assert clip["state"] == "synced" and clip["hub_receipt"]["verified"] is True
        assert clip["hub_receipt"]["fields"]["sha256"] == HUB_RECEIPT_SHA
        assert clip["hub_receipt"]["fields"]["received_ms"] == END - MINUTE_MS
    assert by_id[box.clips["tamper"]]["kind"] == "tamper"
    assert (by_id[box.clips["lost"]]["state"], by_id[box.clips["lost"]]["problem"]) == ("unavailable", LOST_REASON)
    assert by_id[box.clips["queued"]]["state"] == "queued"
    assert report["sync"]["queued_now"] == 1 and report["sync"]["since_ms"] == START


def test_a_box_that_never_synchronised_its_clock_says_its_video_times_are_not_vouched_for(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    load = SimulatedRecordingLoad(config, SimulatedClock(START, synchronised=False), segment_bytes=1000)
    run_until(load, START + 30 * MINUTE_MS)
    load.close()
    conn = open_readonly(load.layout)
    identity = device_identity(load.layout, BOX, BOX)
    with AuditTrail(load.layout, identity, load.clock) as trail:
        document = make_report(conn, config, load.layout, identity, trail,
                               ReportRequest(START, START + 30 * MINUTE_MS, tmp_path / "r.json", "gate", "siti"),
                               clock=load.clock, zone=ZONE).document
    conn.close()
    day = camera(document, "gate")["days"][0]
    assert day["recorded_ms"] > 25 * MINUTE_MS
    assert day["recorded_clock_unsynchronised_ms"] == day["recorded_ms"]
    assert document["generated"]["clock_synchronised"] is False


# -- the signature ------------------------------------------------------------------------------------------

def openssl_verifies(document: Path, signature: Path, public_key: Path) -> bool:
    result = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(public_key), "-rawin",
                             "-in", str(document), "-sigfile", str(signature)], capture_output=True, text=True)
    assert ("Signature Verified Successfully" in result.stdout) == (result.returncode == 0), result
    return result.returncode == 0


def test_the_signed_json_verifies_offline_and_with_openssl_and_one_changed_byte_fails(
        box: Box, report: dict[str, Any], tmp_path: Path) -> None:
    signed = box.root / "report.json"
    verified = verify_report(signed)
    assert (verified.box_id, verified.cameras, verified.fingerprint) == (BOX, ["gate", "yard"], box.identity.fingerprint)
    assert json.loads(signed.read_bytes()) == json.loads(json.dumps(report))
    assert openssl_verifies(signed, box.root / "report.sig", box.root / "report.pub")
    # it names the key that signed it, and its audit record
    assert report["box"]["key_fingerprint"] == box.identity.fingerprint
    record = [r for r in read_records(box.load.layout) if r.seq == report["audit_record"]["seq"]]
    assert record and record[0].hash == report["audit_record"]["hash"] and record[0].action == "report"
    assert json.loads(record[0].detail) == {"continuity_report": "report.json", "cameras": ["gate", "yard"]}

    data = signed.read_bytes()
    for copy_name, changed in (("percent", data.replace(b'"recorded_percent":"4.16"', b'"recorded_percent":"9.16"', 1)),
                               ("last byte", data[:-1] + bytes([data[-1] ^ 1]))):
        assert changed != data, copy_name
        copy = tmp_path / copy_name.replace(" ", "-")
        copy.mkdir()
        for suffix in (".sig", ".pub"):
            shutil.copy(box.root / f"report{suffix}", copy / f"report{suffix}")
        (copy / "report.json").write_bytes(changed)
        with pytest.raises(VerificationFailed, match="signature invalid"):
            verify_report(copy / "report.json")
        assert not openssl_verifies(copy / "report.json", copy / "report.sig", copy / "report.pub")

    # signed by another key than the box's: refused with the box's key given out of band
    other = signing_key(tmp_path / "other.key", tmp_path / "other.pub")
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "report.json").write_bytes(data)
    (forged / "report.sig").write_bytes(other.sign(data))
    shutil.copy(tmp_path / "other.pub", forged / "report.pub")
    with pytest.raises(VerificationFailed, match="names key"):
        verify_report(forged / "report.json")
    with pytest.raises(VerificationFailed, match="signature invalid"):
        verify_report(forged / "report.json", box.identity.public_pem)


# -- the page -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def page(box: Box) -> Path:
    box.report(box.root / "report.html")
    return box.root / "report.html"


def shell(command: str, cwd: Path) -> str:
    return subprocess.run(["sh", "-c", command], cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_the_page_is_self_contained_with_a_bar_per_camera_day(page: Path, box: Box) -> None:
    text = page.read_text(encoding="utf-8")
    lost_at = datetime.fromtimestamp(box.outage[0] / 1000, ZONE.zone).strftime("%Y-%m-%d %H:%M:%S.000 +07:00")
    assert "<script" not in text.lower() and "url(" not in text and "@import" not in text
    links = re.findall(r"""\b(?:src|href|xlink:href|action|srcset|poster|data)\s*=\s*["']?([^"'\s>]*)""", text, re.I)
    assert links and all(link.startswith(("#", "data:")) for link in links), links
    assert "@media print" in text
    assert len(re.findall(r'<svg class="day-bar"', text)) == 2 * len(DAYS)
    assert "<svg" not in text.replace('<svg class="day-bar"', "")
    for visible in ("Gudang logistik KPU 03", OUTAGE_REASON, "Bawaslu: kotak suara hari pertama", HUB_RECEIPT_SHA, lost_at,
                    LOST_REASON, "1:23:00"):
        assert visible in text, visible


def test_the_page_verifies_by_hand_with_sed_base64_and_openssl_and_any_edit_fails(page: Path, box: Box,
                                                                                  tmp_path: Path) -> None:
    verified = verify_report(page, box.identity.public_pem)
    assert verified.page_checked and verified.fingerprint == box.identity.fingerprint
    # the commands the page prints, as they stand
    commands = re.search(r'<pre class="howto">(.*?)</pre>', page.read_text(), re.S)
    assert commands is not None
    work = tmp_path / "by-hand"
    work.mkdir()
    shutil.copy(page, work / "report.html")
    lines = html.unescape(commands.group(1)).splitlines()
    outputs = [shell(line, work) for line in lines]
    assert "Signature Verified Successfully" in outputs[3]
    document = json.loads((work / "report.json").read_bytes())
    assert outputs[4].split()[0] == document["html_page_sha256"]
    assert outputs[5].split()[0] == box.identity.fingerprint.replace(" ", "")
    assert (work / "report.pub").read_bytes() == box.identity.public_pem

    data = page.read_bytes()
    visible = data.index(b"4.16%")
    armoured = data.index(b"-----BEGIN EDGENVR SIGNED REPORT-----\n") + 50
    for name, changed, problem in (
            ("figure", data[:visible] + b"9" + data[visible + 1:], "the page was edited"),
            ("signed data", data[:armoured] + (b"B" if data[armoured:armoured + 1] == b"A" else b"A")
             + data[armoured + 1:], "signature invalid"),
            ("added text", data.replace(b"</section>\n</body>", b"<p>OK</p></section>\n</body>"), "signature block")):
        assert changed != data, name
        (tmp_path / "edited.html").write_bytes(changed)
        with pytest.raises(VerificationFailed, match=problem):
            verify_report(tmp_path / "edited.html")


@pytest.mark.slow
def test_the_page_opens_in_chromium_with_javascript_off_and_prints_to_pdf(page: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        try:
            context = browser.new_context(java_script_enabled=False, viewport={"width": 1200, "height": 900})
            view = context.new_page()
            view.on("request", lambda request: requests.append(request.url))
            view.goto(page.as_uri())
            assert view.locator("svg.day-bar").count() == 2 * len(DAYS)
            bar = view.locator("svg.day-bar").first.bounding_box()
            assert bar is not None and bar["width"] > 600 and bar["height"] >= 20   # drawn, full width
            assert view.locator("#camera-yard").is_visible()
            pdf = view.pdf(path=str(tmp_path / "report.pdf"), format="A4", print_background=True)
        finally:
            browser.close()
    assert requests == [page.as_uri()], "the page loads nothing else"
    assert pdf.startswith(b"%PDF-") and len(pdf) > 20_000
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert pages >= 3, "a summary page, then a page per camera"


# -- the command line ---------------------------------------------------------------------------------------

def edgenvr_at_the_box(*args: str) -> subprocess.CompletedProcess[str]:
    """`edgenvr` in a process of its own, on a box set to Asia/Jakarta (as provisioning sets /etc/localtime)."""
    return subprocess.run([sys.executable, "-m", "edgenvr", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TZ": "Asia/Jakarta"})


@pytest.mark.slow
def test_the_command_writes_a_signed_page_and_json_that_verify_records_it_and_refuses_bad_requests(
        box: Box, tmp_path: Path) -> None:
    config = str(box.root / "edgenvr.toml")
    common = ("report", "--config", config, "--from", "2025-12-02T00:00+07:00", "--to", "2025-12-03T00:00+07:00")
    audited = len(read_records(box.load.layout))

    made = edgenvr_at_the_box(*common, "--camera", "yard", "--out", str(tmp_path / "yard.json"), "--reason", "KPU 4")
    assert made.returncode == 0, made.stderr
    assert "yard" in made.stdout and box.identity.fingerprint in made.stdout
    document = json.loads((tmp_path / "yard.json").read_bytes())
    assert document["days"]["time_zone"] == "Asia/Jakarta" and [c["id"] for c in document["cameras"]] == ["yard"]
    assert [d["date"] for d in document["cameras"][0]["days"]] == ["2025-12-02"]
    assert document["generated"]["reason"] == "KPU 4"
    checked = edgenvr_at_the_box("verify", str(tmp_path / "yard.json"), "--pubkey", str(box.load.layout.device_public_key_path))
    assert checked.returncode == 0 and checked.stdout.startswith("OK: continuity report of box"), checked
    made = edgenvr_at_the_box(*common, "--out", str(tmp_path / "all.html"))
    assert made.returncode == 0, made.stderr
    checked = edgenvr_at_the_box("verify", str(tmp_path / "all.html"))
    assert checked.returncode == 0 and "page's text is the signed report's" in checked.stdout, checked
    records = read_records(box.load.layout)[audited:]
    assert [(r.action, r.camera, r.reason) for r in records] == [("report", "yard", "KPU 4"), ("report", None, "")]

    (tmp_path / "all.html").write_bytes((tmp_path / "all.html").read_bytes().replace(b"Halaman", b"Halamam"))
    assert edgenvr_at_the_box("verify", str(tmp_path / "all.html")).returncode == 1

    existing = tmp_path / "existing.html"
    existing.write_text("keep me")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    for args, code, message in [
        (("--from", "2025-12-03", "--to", "2025-12-02", "--out", str(tmp_path / "x.html")), 2,
         "must start before it ends"),
        (("--from", "2025-01-01", "--to", "2026-01-03", "--out", str(tmp_path / "x.html")), 2, "at most 366 days"),
        (("--from", "2025-12-02", "--to", "2025-12-03", "--camera", "garage", "--out", str(tmp_path / "x.html")), 2,
         "unknown camera 'garage'"),
        (("--from", "2025-12-02", "--to", "2025-12-03", "--out", str(tmp_path / "x.pdf")), 2, ".html"),
        (("--from", "2025-12-02", "--to", "2025-12-03", "--out", str(existing)), 2, "never overwrites"),
        (("--from", "2025-12-02", "--to", "2025-12-03", "--out", str(blocked / "x.html")), 1, "not a folder"),
        (("--from", "2025-12-02", "--to", "2025-12-03", "--out", "/proc/edgenvr-report.html"), 1, "report not written"),
    ]:
        result = edgenvr_at_the_box("report", "--config", config, *args)
        assert result.returncode == code and message in result.stderr, (args, result)
        assert "Traceback" not in result.stderr
    assert existing.read_text() == "keep me"
    assert not list(tmp_path.glob("x.*")) and not list(Path("/proc").glob("edgenvr-report*"))
    assert len(read_records(box.load.layout)) == audited + 2, "a refused report leaves no audit record"
