"""The continuity report as one printable HTML page (evidence.continuity_report makes the document): a summary
table, per camera a timeline bar per day (inline SVG: recorded, gaps by cause, offline, tamper, held), the
gaps, events, holds and clips, and a signature block that embeds the exact signed JSON.

Owns the page's layout and the signature block's format: `signature_section` writes it and `split_page` reads
it back for evidence.continuity_report_verification.

Invariants:
- Self-contained and static: no script, no external resource (no src, no href but in-page #anchors, no url()
  in the CSS), system fonts; inline CSS with @media print, so it opens and prints the same with JS off.
- The page is a function of the document alone (the same document gives the same bytes), every text from it
  HTML-escaped; it ends where the signature block's first line (SIGNATURE_SECTION_LINE) begins, which no
  escaped text can contain. The signed document carries the page's SHA-256, so the page is covered by the
  signature; the block itself holds only what the signature covers or proves (the document, the signature,
  the public key) and fixed text, so a check can rebuild it byte for byte.
- The block's armour is line-based, so `sed`, `base64 -d` and `openssl` extract and check it by hand (the
  commands are printed in it): the document and the signature as base64 between BEGIN/END lines, the public
  key as PEM.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import html
import json
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PAGE_HASH_KEY = "html_page_sha256"   # the document's field holding the SHA-256 of the page shown with it
SIGNATURE_SECTION_LINE = b'<section id="signature">\n'
DOCUMENT_ARMOUR = "EDGENVR SIGNED REPORT"
SIGNATURE_ARMOUR = "ED25519 SIGNATURE"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MS = dt.timedelta(milliseconds=1)
_MIN_MARK_S = 90   # a stretch this short is drawn this wide (seconds of the day) so that it shows at all

# What each kind on a bar is called (Indonesian / English) and its colour.
KINDS: dict[str, tuple[str, str]] = {
    "recorded": ("Terekam / Recorded", "#2e7d32"),
    "recorded_clock_unsynchronised": ("Terekam, jam belum sinkron / Recorded, clock not synchronised", "#9ccc65"),
    "camera": ("Kamera atau jaringan / Camera or network", "#c62828"),
    "recorder": ("Perekam tidak berjalan / Recorder not running", "#6a1b9a"),
    "clock": ("Jam tidak tepercaya / Clock not trusted", "#ef6c00"),
    "file_lost": ("Berkas hilang atau rusak / File missing or damaged", "#4e342e"),
    "jitter": ("Sambung ulang, di bawah 0,5 s / Reconnect, under 0.5 s", "#fdd835"),
    "not_indexed": ("Terbaru, belum diindeks / Newest, not indexed yet", "#64b5f6"),
    "retention": ("Dihapus oleh retensi / Deleted by retention", "#8d8d8d"),
    "no_video_kept": ("Tidak ada video tersimpan / No video kept", "#cfcfcf"),
    "offline": ("Kamera offline / Camera offline", "#b71c1c"),
    "tamper": ("Sabotase kamera / Camera tampering", "#ff6f00"),
    "held": ("Ditahan (hold) / Held", "#1565c0"),
    "held_released": ("Hold dilepas / Hold released", "#9fb8d9"),
    "outside": ("Di luar rentang / Outside the range", "#f1f1f1"),
}
_STATE = {"synced": "diterima hub / received by the hub", "queued": "menunggu / waiting",
          "unavailable": "hilang / lost"}
_CSS = """
body { font: 13px/1.4 system-ui, "DejaVu Sans", sans-serif; color: #111; margin: 1.5rem; }
h1 { font-size: 1.5rem; margin: 0 0 .5rem; } h2 { font-size: 1.2rem; margin: 1.5rem 0 .5rem; }
h3 { font-size: 1rem; margin: 1rem 0 .3rem; }
table { border-collapse: collapse; width: 100%; margin: .3rem 0; }
th, td { border-bottom: 1px solid #ccc; padding: .15rem .35rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } .num { text-align: right; font-variant-numeric: tabular-nums; }
.time { white-space: nowrap; }
code, .mono { font-family: "DejaVu Sans Mono", monospace; font-size: .9em; overflow-wrap: anywhere; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; margin: 0; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.legend { display: flex; flex-wrap: wrap; gap: .3rem 1rem; margin: .5rem 0; }
.swatch { display: inline-block; width: .9rem; height: .9rem; vertical-align: -.15rem; margin-right: .25rem;
          border: 1px solid #999; }
svg.day-bar { display: block; width: 100%; height: 30px; }
.hours { display: grid; grid-template-columns: repeat(8, 1fr); font-size: .75rem; color: #555; }
tbody.day td { border-bottom: none; } tbody.day tr.bar td { border-bottom: 1px solid #ccc; padding-bottom: .4rem; }
.none { color: #666; font-style: italic; }
pre.armour { font-size: .7rem; white-space: pre; overflow-x: auto; }
pre.howto { white-space: pre-wrap; overflow-wrap: anywhere; font-size: .8rem; }
#signature { border-top: 2px solid #333; margin-top: 2rem; }
@page { size: A4; margin: 12mm; }
@media print {
  body { margin: 0; font-size: 8.5pt; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  section.camera { break-before: page; }
  tbody.day, tr { break-inside: avoid; }
  details { display: none; }
}
"""


# -- the page ----------------------------------------------------------------------------------------

def render_page(document: dict[str, Any]) -> bytes:
    """The page up to the signature block, for `document` (evidence.continuity_report's, without its page
    hash): UTF-8, ending in a newline."""
    zone = _zone(document["days"]["time_zone"])
    box = document["box"]
    parts = [
        "<!DOCTYPE html>\n<html lang=\"id\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        f"<title>Laporan kontinuitas / Continuity report: {_e(box['name'])}</title>\n",
        f"<style>{_CSS}{_kind_css()}</style>\n</head>\n<body>\n",
        _header(document, zone),
        _summary(document),
        *(_camera(camera, document, zone) for camera in document["cameras"]),
        _sync(document, zone),
    ]
    return "".join(parts).encode("utf-8")


def _header(document: dict[str, Any], zone: dt.tzinfo) -> str:
    box, generated, covered = document["box"], document["generated"], document["range"]
    audit = document.get("audit_record") or {}
    rows = [
        ("Perangkat / Box", f"{_e(box['name'])} ({_e(box['id'])})"),
        ("Sidik jari kunci / Key fingerprint", f"<code>{_e(box['key_fingerprint'])}</code>"),
        ("Rentang / Range", f"{_local(covered['from_ms'], zone)} &ndash; {_local(covered['to_ms'], zone)}"
                            f" (UTC: {_e(covered['from'])} &ndash; {_e(covered['to'])})"),
        ("Tercakup sampai / Covered to", _local(covered["covered_to_ms"], zone)
         + (" (sekarang; waktu setelahnya belum terjadi / now: later time is not counted)"
            if covered["covered_to_ms"] < covered["to_ms"] else "")),
        ("Hari / Days", f"hari lokal perangkat / box-local days, {_e(document['days']['time_zone'])}"),
        ("Dibuat / Generated", f"{_local(generated['at_ms'], zone)} oleh / by {_e(generated['by'])}"
                               + (f": {_e(generated['reason'])}" if generated["reason"] else "")),
        ("Jam perangkat / Box clock", "sinkron / synchronised" if generated["clock_synchronised"]
         else "TIDAK sinkron / NOT synchronised: waktu di laporan ini menurut jam yang belum disetel / the times"
              " here are what an unset clock said"),
        ("Catatan audit / Audit record", f"#{_e(audit.get('seq', '-'))} <code>{_e(audit.get('hash', '-'))}</code>"),
        ("Versi / Version", f"edgenvr {_e(generated['edgenvr_version'])}, {_e(document['format'])}"),
    ]
    facts = "".join(f"<dt>{label}</dt><dd>{value}</dd>\n" for label, value in rows)
    return (f"<header>\n<h1>Laporan kontinuitas rekaman / Recording continuity report</h1>\n"
            f"<dl class=\"facts\">\n{facts}</dl>\n</header>\n")


def _summary(document: dict[str, Any]) -> str:
    rows = []
    for camera in document["cameras"]:
        totals, clips = camera["totals"], camera["clips_summary"]
        offline = [e for e in camera["events"] if e["kind"] == "offline"]
        gaps = [g for g in camera["gaps"] if g["cause"] != "jitter"]
        rows.append(
            f"<tr><td><a href=\"#camera-{_e(camera['id'])}\">{_e(camera['id'])}</a> {_e(camera['name'])}</td>"
            f"<td class=\"num\">{_e(totals['recorded_percent'])}%</td>"
            f"<td class=\"num\">{_duration(totals['recorded_ms'])}</td>"
            f"<td class=\"num\">{_duration(totals['span_ms'] - totals['recorded_ms'])}</td>"
            f"<td class=\"num\">{len(gaps)}</td>"
            f"<td class=\"num\">{len(offline)}</td>"
            f"<td class=\"num\">{sum(e['kind'] == 'tamper' for e in camera['events'])}</td>"
            f"<td class=\"num\">{len(camera['holds'])}</td>"
            f"<td class=\"num\">{clips['synced']} / {clips['queued']} / {clips['lost']}</td></tr>\n")
    legend = "".join(f"<span><span class=\"swatch k-{kind}\"></span>{_e(label)}</span>"
                     for kind, (label, _colour) in KINDS.items())
    return ("<section id=\"summary\">\n<h2>Ringkasan / Summary</h2>\n<table>\n<thead><tr>"
            "<th>Kamera / Camera</th><th class=\"num\">Terekam / Recorded</th><th class=\"num\">Waktu terekam /"
            " Time recorded</th><th class=\"num\">Tidak terekam / Not recorded</th><th class=\"num\">Celah /"
            " Gaps</th><th class=\"num\">Offline</th><th class=\"num\">Sabotase / Tamper</th><th class=\"num\">"
            "Hold</th><th class=\"num\">Klip hub / Hub clips*</th></tr></thead>\n<tbody>\n" + "".join(rows) + "</tbody>\n</table>\n"
            "<p>* diterima hub / menunggu / hilang &ndash; received by the hub / waiting / lost</p>\n"
            f"<div class=\"legend\">{legend}</div>\n</section>\n")


def _camera(camera: dict[str, Any], document: dict[str, Any], zone: dt.tzinfo) -> str:
    state = "" if camera["in_config"] else " (tidak lagi di konfigurasi / no longer in the config)"
    if camera["in_config"] and not camera["enabled"]:
        state = " (dinonaktifkan / disabled)"
    parts = [f"<section class=\"camera\" id=\"camera-{_e(camera['id'])}\">\n",
             f"<h2>Kamera / Camera {_e(camera['id'])} {_e(camera['name'])}{state}</h2>\n",
             "<table>\n<thead><tr><th>Hari / Day</th><th class=\"num\">Terekam / Recorded</th>"
             "<th class=\"num\">Waktu terekam / Time recorded</th><th>Tidak terekam, per sebab /"
             " Not recorded, by cause</th></tr></thead>\n"]
    for day in camera["days"]:
        causes = ", ".join(f"{_e(KINDS[kind][0])}: {_duration(ms)}" for kind, ms in day["not_recorded_ms"].items())
        nothing = "<span class=\"none\">-</span>"
        unsynchronised = day["recorded_clock_unsynchronised_ms"]
        if unsynchronised:
            causes = (causes + "; " if causes else "") + \
                f"{_e(KINDS['recorded_clock_unsynchronised'][0])}: {_duration(unsynchronised)}"
        parts.append(
            f"<tbody class=\"day\"><tr><td>{_e(day['date'])} (UTC{_e(day['utc_offset'])})</td>"
            f"<td class=\"num\">{_e(day['recorded_percent'])}%</td>"
            f"<td class=\"num\">{_duration(day['recorded_ms'])} / {_duration(day['span_ms'])}</td>"
            f"<td>{causes or nothing}</td></tr>\n"
            f"<tr class=\"bar\"><td colspan=\"4\">{_bar(day, camera, document, zone)}"
            "<div class=\"hours\">" + "".join(f"<span>{hour:02d}</span>" for hour in range(0, 24, 3))
            + "</div></td></tr></tbody>\n")
    parts.append("</table>\n")
    parts.append(_gap_table(camera, zone))
    parts.append(_event_table(camera, document, zone))
    parts.append(_hold_table(camera, zone))
    parts.append(_clip_table(camera, zone))
    parts.append("</section>\n")
    return "".join(parts)


def _bar(day: dict[str, Any], camera: dict[str, Any], document: dict[str, Any], zone: dt.tzinfo) -> str:
    """A day's timeline as inline SVG, in seconds from the local midnight: events on top (offline, tamper),
    the recording in the middle (recorded, or not by cause), holds below."""
    origin, end = day["day_start_ms"], day["day_end_ms"]
    width = (end - origin) / 1000
    now = document["range"]["covered_to_ms"]
    marks = [_rect("outside", 0, width, 0, 30, "")]
    marks.append(_rect("lane", (day["start_ms"] - origin) / 1000, (day["end_ms"] - day["start_ms"]) / 1000, 8, 14, ""))
    for start, stop, kind in day["spans"]:
        marks.append(_mark(kind, start, stop, origin, 8, 14, zone, kind not in ("recorded", "recorded_clock_unsynchronised")))
    for event in camera["events"]:
        if event["kind"] in ("offline", "tamper"):
            stop = event["end_ms"] if event["end_ms"] is not None else now
            marks.append(_clipped_mark(event["kind"], event["start_ms"], stop, day, 0, 6, zone,
                                       event["subkind"] or event["detail"]))
    for hold in camera["holds"]:
        marks.append(_clipped_mark("held" if hold["in_force"] else "held_released", hold["from_ms"], hold["to_ms"],
                                   day, 24, 6, zone, hold["reason"]))
    label = f"{day['date']}: {day['recorded_percent']}% terekam / recorded"
    return (f"<svg class=\"day-bar\" viewBox=\"0 0 {_number(width)} 30\" preserveAspectRatio=\"none\" role=\"img\""
            f" aria-label=\"{_e(label)}\">{''.join(mark for mark in marks if mark)}</svg>")


def _clipped_mark(kind: str, start: int, stop: int, day: dict[str, Any], y: int, height: int, zone: dt.tzinfo,
                  note: str) -> str:
    low, high = max(start, day["start_ms"]), min(stop, day["end_ms"])
    if high <= low:
        return ""
    return _mark(kind, low, high, day["day_start_ms"], y, height, zone, True, note)


def _mark(kind: str, start: int, stop: int, origin: int, y: int, height: int, zone: dt.tzinfo, widen: bool,
          note: str = "") -> str:
    width = (stop - start) / 1000
    title = f"{KINDS[kind][0]}: {_local_text(start, zone)} - {_local_text(stop, zone)} ({_duration(stop - start)})"
    if note:
        title += f": {note}"
    return _rect(kind, (start - origin) / 1000, max(width, _MIN_MARK_S) if widen else width, y, height, title)


def _rect(kind: str, x: float, width: float, y: int, height: int, title: str) -> str:
    inner = f"<title>{_e(title)}</title>" if title else ""
    return (f"<rect class=\"k-{kind}\" x=\"{_number(x)}\" y=\"{y}\" width=\"{_number(width)}\""
            f" height=\"{height}\">{inner}</rect>")


def _gap_table(camera: dict[str, Any], zone: dt.tzinfo) -> str:
    if not camera["gaps"]:
        return "<h3>Celah / Gaps</h3>\n<p class=\"none\">tidak ada / none</p>\n"
    rows = []
    for gap in camera["gaps"]:
        index_gap = gap["index_gap"]
        note = ""
        if index_gap is not None and (index_gap["start_ms"], index_gap["end_ms"]) != (gap["start_ms"], gap["end_ms"]):
            until = _local(index_gap["end_ms"], zone) if index_gap["end_ms"] is not None else \
                "berlangsung / ongoing"
            note = f"<br>celah di indeks / index gap: {_local(index_gap['start_ms'], zone)} - {until}"
        rows.append(f"<tr><td class=\"num\">{_local(gap['start_ms'], zone)}</td>"
                    f"<td class=\"num\">{_local(gap['end_ms'], zone)}</td>"
                    f"<td class=\"num\">{_duration(gap['duration_ms'])}</td>"
                    f"<td><span class=\"swatch k-{_e(gap['cause'])}\"></span>{_e(KINDS[gap['cause']][0])}</td>"
                    f"<td>{_e(gap['reason'])}{note}</td></tr>\n")
    return ("<h3>Celah / Gaps</h3>\n<table>\n<thead><tr><th class=\"num\">Mulai / Start</th><th class=\"num\">"
            "Selesai / End</th><th class=\"num\">Lama / Length</th><th>Sebab / Cause</th><th>Alasan / Reason"
            "</th></tr></thead>\n<tbody>\n" + "".join(rows) + "</tbody>\n</table>\n")


def _event_table(camera: dict[str, Any], document: dict[str, Any], zone: dt.tzinfo) -> str:
    motion = f"<p>Gerakan / Motion events: {camera['motion_events']}</p>\n"
    if not camera["events"]:
        return ("<h3>Offline, sabotase, peringatan / Offline, tamper, alerts</h3>\n"
                "<p class=\"none\">tidak ada / none</p>\n" + motion)
    rows = []
    for event in camera["events"]:
        ongoing = event["end_ms"] is None
        stop = document["range"]["covered_to_ms"] if ongoing else event["end_ms"]
        kind = event["kind"] + (f": {event['subkind']}" if event["subkind"] else "")
        rows.append(f"<tr><td>{_e(kind)}</td><td class=\"num\">{_local(event['start_ms'], zone)}</td>"
                    f"<td class=\"num\">{'berlangsung / ongoing' if ongoing else _local(event['end_ms'], zone)}</td>"
                    f"<td class=\"num\">{_duration(max(0, stop - event['start_ms']))}</td>"
                    f"<td>{_e(event['detail'])}</td></tr>\n")
    return ("<h3>Offline, sabotase, peringatan / Offline, tamper, alerts</h3>\n<table>\n<thead><tr><th>Jenis / Kind"
            "</th><th class=\"num\">Mulai / Start</th><th class=\"num\">Selesai / End</th><th class=\"num\">Lama /"
            " Length</th><th>Keterangan / Detail</th></tr></thead>\n<tbody>\n" + "".join(rows)
            + "</tbody>\n</table>\n" + motion)


def _hold_table(camera: dict[str, Any], zone: dt.tzinfo) -> str:
    if not camera["holds"]:
        return "<h3>Hold / Holds</h3>\n<p class=\"none\">tidak ada / none</p>\n"
    rows = []
    for hold in camera["holds"]:
        state = "berlaku / in force" if hold["in_force"] else \
            f"dilepas / released {_local(hold['released_ms'], zone)} {_e(hold['release_reason'])}"
        rows.append(f"<tr><td class=\"num\">{hold['id']}</td><td class=\"num\">{_local(hold['from_ms'], zone)}</td>"
                    f"<td class=\"num\">{_local(hold['to_ms'], zone)}</td><td>{state}</td>"
                    f"<td class=\"num\">{_local(hold['created_ms'], zone)}</td><td>{_e(hold['reason'])}</td></tr>\n")
    return ("<h3>Hold / Holds</h3>\n<table>\n<thead><tr><th class=\"num\">#</th><th class=\"num\">Dari / From</th>"
            "<th class=\"num\">Sampai / To</th><th>Status</th><th class=\"num\">Dibuat / Made</th><th>Alasan / Reason"
            "</th></tr></thead>\n<tbody>\n" + "".join(rows) + "</tbody>\n</table>\n")


def _clip_table(camera: dict[str, Any], zone: dt.tzinfo) -> str:
    title = "<h3>Klip ke hub kota / Clips for the city hub</h3>\n"
    if not camera["clips"]:
        return title + "<p class=\"none\">tidak ada / none</p>\n"
    rows = []
    for clip in camera["clips"]:
        receipt = clip["hub_receipt"]
        received = sha256 = ""
        if receipt is not None and receipt["fields"] is not None:
            received = _local(receipt["fields"].get("received_ms"), zone)
            sha256 = f"<code>{_e(receipt['fields'].get('sha256'))}</code>"
            if receipt["verified"] is False:
                sha256 += " <strong>tanda terima tidak sah / receipt does not verify</strong>"
        note = _e(clip["problem"])
        if clip["state"] == "unavailable" and clip["hub_told_ms"] is not None:
            note += f" (hub diberi tahu / hub told {_local(clip['hub_told_ms'], zone)})"
        rows.append(f"<tr><td>{_e(clip['kind'])}</td><td class=\"num\">{_local(clip['start_ms'], zone)}<br>"
                    f"{_local(clip['end_ms'], zone)}</td><td>{_e(_STATE.get(clip['state'], clip['state']))}</td>"
                    f"<td class=\"num\">{received}</td><td>{sha256}</td><td>{note}</td></tr>\n")
    return (title + "<table>\n<thead><tr><th>Jenis / Kind</th><th class=\"num\">Rentang / Range</th><th>Status</th>"
            "<th class=\"num\">Diterima / Received</th><th>SHA-256 tanda terima hub / hub receipt</th>"
            "<th>Keterangan / Note</th></tr></thead>\n<tbody>\n" + "".join(rows) + "</tbody>\n</table>\n")


def _sync(document: dict[str, Any], zone: dt.tzinfo) -> str:
    sync = document["sync"]
    if not sync["configured"] and not any(camera["clips"] for camera in document["cameras"]):
        text = "Sinkronisasi ke hub tidak dikonfigurasi / Sync to a city hub is not configured."
    else:
        since = _local(sync["since_ms"], zone) if sync["since_ms"] is not None else "-"
        text = (f"Hub: <code>{_e(sync['hub_url'] or '-')}</code>; sejak / since {since}; menunggu saat laporan"
                f" dibuat / waiting when the report was made: {sync['queued_now']} klip / clips")
    return f"<section id=\"sync\">\n<h2>Sinkronisasi / Sync</h2>\n<p>{text}</p>\n</section>\n"


# -- the signature block -----------------------------------------------------------------------------

def signature_section(signed: bytes, signature: bytes, public_pem: bytes) -> bytes:
    """The block after the page: the document's signature and key, how to check them by hand, and the exact
    signed bytes; the end of the file. Rebuilt byte for byte by a check from what it carries."""
    document = json.loads(signed)
    fingerprint = document["box"]["key_fingerprint"]
    page_hash = document.get(PAGE_HASH_KEY, "")
    howto = html.escape(
        f"sed -n '/^-----BEGIN {DOCUMENT_ARMOUR}-----$/,/^-----END {DOCUMENT_ARMOUR}-----$/{{//!p}}' report.html"
        " | base64 -d > report.json\n"
        f"sed -n '/^-----BEGIN {SIGNATURE_ARMOUR}-----$/,/^-----END {SIGNATURE_ARMOUR}-----$/{{//!p}}' report.html"
        " | base64 -d > report.sig\n"
        "sed -n '/^-----BEGIN PUBLIC KEY-----$/,/^-----END PUBLIC KEY-----$/p' report.html > report.pub\n"
        "openssl pkeyutl -verify -pubin -inkey report.pub -rawin -in report.json -sigfile report.sig\n"
        f"sed '/^{SIGNATURE_SECTION_LINE.decode().strip()}$/,$d' report.html | sha256sum\n"
        "openssl pkey -pubin -in report.pub -outform DER | tail -c 32 | sha256sum\n")
    text = (
        SIGNATURE_SECTION_LINE.decode()
        + "<h2>Tanda tangan / Signature</h2>\n"
        f"<p>Laporan ini ditandatangani dengan kunci Ed25519 perangkat / This report is signed with the box's"
        f" Ed25519 key, fingerprint (SHA-256):<br><code>{html.escape(fingerprint)}</code></p>\n"
        f"<p>SHA-256 halaman di atas / of the page above: <code>{html.escape(page_hash)}</code></p>\n"
        f"<p>Tanda tangan / Signature: <code>{signature.hex()}</code></p>\n"
        "<p>[ID] Periksa dengan <code>edgenvr verify report.html --pubkey box.pub</code>, atau tanpa edgenvr"
        " (Linux, openssl 3): perintah berikut harus mencetak \"Signature Verified Successfully\", SHA-256 halaman"
        " yang sama dengan di atas (dan dengan html_page_sha256 di report.json), dan sidik jari kunci yang sama"
        " dengan yang ditunjukkan perangkat (<code>edgenvr identity</code>) atau diberikan oleh Diskominfo.<br>"
        "[EN] Check it with <code>edgenvr verify report.html --pubkey box.pub</code>, or without edgenvr (Linux,"
        " openssl 3): these commands must print \"Signature Verified Successfully\", the page SHA-256 shown above"
        " (also html_page_sha256 in report.json), and the key fingerprint the box shows (<code>edgenvr"
        " identity</code>) or the city's IT office gave you.</p>\n"
        f"<pre class=\"howto\">{howto}</pre>\n"
        "<details><summary>Data bertanda tangan / Signed data</summary>\n<pre class=\"armour\">\n"
        + _armour(DOCUMENT_ARMOUR, signed) + _armour(SIGNATURE_ARMOUR, signature) + public_pem.decode("ascii")
        + "</pre>\n</details>\n</section>\n</body>\n</html>\n")
    return text.encode("utf-8")


def _armour(name: str, data: bytes) -> str:
    return f"-----BEGIN {name}-----\n{base64.encodebytes(data).decode('ascii')}-----END {name}-----\n"


@dataclass(frozen=True)
class EmbeddedReport:
    page: bytes        # the file up to the signature block
    signed: bytes      # the signed document's exact bytes
    signature: bytes
    public_pem: bytes
    block: bytes       # the signature block as found (to compare with signature_section's)


def split_page(data: bytes) -> EmbeddedReport:
    """The parts of a report page; ValueError naming what is missing or malformed."""
    start = data.find(b"\n" + SIGNATURE_SECTION_LINE)
    if start < 0 or data.find(b"\n" + SIGNATURE_SECTION_LINE, start + 1) >= 0:
        raise ValueError("it has no signature block, or more than one: not an edgenvr continuity report page")
    page, block = data[:start + 1], data[start + 1:]
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("its signature block is not the one edgenvr writes (it holds non-ASCII bytes)") from None
    signed, signature = _unarmour(text, DOCUMENT_ARMOUR), _unarmour(text, SIGNATURE_ARMOUR)
    key = re.search(r"^-----BEGIN PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+?-----END PUBLIC KEY-----\n", text, re.MULTILINE)
    if key is None:
        raise ValueError("its signature block holds no public key")
    return EmbeddedReport(page, signed, signature, key.group(0).encode("ascii"), block)


def _unarmour(text: str, name: str) -> bytes:
    found = re.findall(rf"^-----BEGIN {name}-----\n([A-Za-z0-9+/=\n]*?)-----END {name}-----$", text, re.MULTILINE)
    if len(found) != 1:
        raise ValueError(f"its signature block must hold one {name} block, not {len(found)}")
    try:
        return base64.b64decode(found[0].replace("\n", ""), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"its {name} block is not base64: {exc}") from None


def page_sha256(page: bytes) -> str:
    return hashlib.sha256(page).hexdigest()


# -- formatting --------------------------------------------------------------------------------------

def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _kind_css() -> str:
    return "".join(f"rect.k-{kind} {{ fill: {colour}; }} .swatch.k-{kind} {{ background: {colour}; }}\n"
                   for kind, (_label, colour) in KINDS.items()) + "rect.k-lane { fill: #ffffff; }\n"


def _zone(name: str) -> dt.tzinfo:
    """The document's time zone: a zone name, or `UTC+07:00` for a fixed offset."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        pass
    match = re.fullmatch(r"UTC([+-])(\d\d):(\d\d)", name)
    if match is None:
        return dt.timezone.utc
    minutes = int(match[2]) * 60 + int(match[3])
    return dt.timezone(dt.timedelta(minutes=minutes if match[1] == "+" else -minutes))


def _local(epoch_ms: int | None, zone: dt.tzinfo) -> str:
    """A time in the box's zone for a table: its date and its time each kept on one line."""
    text = _local_text(epoch_ms, zone)
    if epoch_ms is None:
        return text
    date, time = text.split(" ", 1)
    return f"<span class=\"time\">{date}</span> <span class=\"time\">{time}</span>"


def _local_text(epoch_ms: int | None, zone: dt.tzinfo) -> str:
    """A time in the box's zone, to the millisecond, with its offset: 2025-12-03 08:00:00.000 +07:00."""
    if epoch_ms is None:
        return "-"
    moment = (_EPOCH + epoch_ms * _MS).astimezone(zone)
    offset = moment.strftime("%z")
    return f"{moment:%Y-%m-%d %H:%M:%S}.{epoch_ms % 1000:03d} {offset[:3]}:{offset[3:]}"


def _duration(ms: int) -> str:
    """h:mm:ss, with .mmm when there are milliseconds."""
    seconds, milli = divmod(ms, 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, second = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{second:02d}" + (f".{milli:03d}" if milli else "")


def _number(value: float) -> str:
    """An SVG coordinate, to the millisecond."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"
