"""The continuity report (`edgenvr report`): for a range of days, per camera and per box-local day, the share
of the time recorded and why the rest was not, every gap with its reason, the offline, tamper and alert
events, the holds, and the clips sent to the city hub (receipted, waiting, given up), as one JSON document
signed with the device key. evidence.continuity_report_html renders it as a printable page and
evidence.continuity_report_verification checks either form offline (`edgenvr verify`).

Owns the report's content and format (REPORT_FORMAT), the rule that gives every unrecorded moment one cause
(GapCause), the box-local days, and the report's files.

Invariants:
- Every millisecond of a camera's covered range is either recorded (a segment the index lists and is not
  deleting, or a closed file of the batch not committed yet) or not recorded with one cause and reason, so a
  day's figures add up: recorded_ms + the sum of not_recorded_ms = span_ms.
- Causes, first match wins: a gap row of the index (its reason as the index writer or the start-up reconcile
  derived it) or the camera's open gap (not recording now); a hole of at most GAP_THRESHOLD_MS between two
  recordings (reconnect jitter, no gap for the index either); after the camera's newest indexed video, the
  newest video not indexed yet; after its oldest known point (oldest segment or gap), video recorded and then
  deleted by retention (the index keeps a gap for every hole between two recordings and retention never
  deletes gaps, so a hole without one held video once); before it, the box cannot tell deleted from never
  recorded and says so.
- Days are the box's local days (TZ, else /etc/localtime: the appliance is set to its site's zone at
  provisioning), each named by its date and UTC offset, cut at the range's ends and at now: time still to
  come is not counted.
- Read-only on the index: one read transaction on a read-only connection (a consistent snapshot).
- Signed as an export's manifest is, over exact bytes: the document's canonical JSON (evidence.audit.
  canonical_json: sorted keys, no whitespace, UTF-8; integers only, no floats) and a detached raw Ed25519
  signature by the device key, whose fingerprint the document names; `openssl pkeyutl -verify -rawin` checks it.
  The HTML form's document also carries the SHA-256 of the page it is shown with, so the page cannot be edited
  without failing the check.
- No report without its audit record (an `export` record whose detail names the report, as exports are
  recorded), appended before the document is signed; the document carries its seq and hash.
- Files appear whole or not at all (a temporary name, fsync, then a rename that never replaces); an existing
  file is never overwritten.

Failure paths: ReportError for a request that cannot be done as asked (range reversed, empty, longer than
MAX_RANGE_DAYS or all in the future; unknown camera; --out not .html/.json, or already there): nothing is
written. OSError for an --out folder that cannot be written (checked before anything is read) or a disk that
fills; AuditError or IdentityError for the trail or the key: the temporary files are removed and, once the
audit record was appended, a second record says the report failed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import edgenvr
from edgenvr.config.records import Config
from edgenvr.core.camera_ids import is_camera_id
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.records import EventKind, GapRecord, RecorderState
from edgenvr.core.time_format import format_ms
from edgenvr.core.units import DAY_MS, OPEN_END_MS
from edgenvr.core.url_redaction import redact_url
from edgenvr.evidence.audit import AuditAction, AuditError, AuditTrail, canonical_json
from edgenvr.evidence.continuity_report_html import (
    PAGE_HASH_KEY,
    render_page,
    signature_section,
)
from edgenvr.evidence.hub_receipts import ReceiptInvalid, read_receipt
from edgenvr.evidence.identity import DeviceIdentity, IdentityError, load_public_key
from edgenvr.index.queries import (
    backlog,
    events,
    gaps,
    open_gap_reason,
    recorded_stretches,
    unindexed_segments,
)
from edgenvr.index.retention_classes import CLASS_NAMES, LONGEST_SEGMENT_MS
from edgenvr.index.writer import (
    GAP_CLOCK_JUMPED,
    GAP_CLOCK_NOT_SYNCHRONISED,
    GAP_FILE_DAMAGED,
    GAP_FILE_MISSING,
    GAP_RECORDER_NOT_RUNNING,
    GAP_RECORDING_STOPPED,
    GAP_THRESHOLD_MS,
)
from edgenvr.retention.holds import hold_to_json, list_holds
from edgenvr.storage.durable_writes import fsync_dir
from edgenvr.storage.layout import StorageLayout
from edgenvr.storage.renaming import rename_no_replace

REPORT_FORMAT = "edgenvr-continuity-report/1"
MAX_RANGE_DAYS = 366
HTML_SUFFIXES = (".html", ".htm")
JSON_SUFFIX = ".json"
SIGNATURE_SUFFIX = ".sig"     # beside FILE.json: the raw Ed25519 signature of its exact bytes (as manifest.sig)
PUBLIC_KEY_SUFFIX = ".pub"    # beside FILE.json: the device public key, PEM (as device.pub)

RECORDED = "recorded"
RECORDED_UNSYNCHRONISED = "recorded_clock_unsynchronised"   # recorded; its times are what an unset clock said

_EVERY_CLASS = "(" + ", ".join(str(value) for value in sorted(CLASS_NAMES)) + ")"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MS = dt.timedelta(milliseconds=1)


class GapCause(StrEnum):
    """Why a stretch of a camera's time has no video (what the timeline colours it by)."""
    CAMERA = "camera"                 # the camera or its network: the recorder's reported problem
    RECORDER = "recorder"             # edgenvr was not recording: stopped, not running, power cut
    CLOCK = "clock"                   # the wall clock was not synchronised or jumped: a hole in wall time
    FILE_LOST = "file_lost"           # a segment file found missing or damaged at start-up
    JITTER = "jitter"                 # a hole of at most GAP_THRESHOLD_MS at a reconnect
    NOT_INDEXED = "not_indexed"       # the newest video: not indexed yet, or still being recorded
    RETENTION = "retention"           # recorded, then deleted by retention (age rules, quota, free-space floor)
    NO_VIDEO_KEPT = "no_video_kept"   # before the oldest video or gap the box knows of for this camera


CAUSE_TEXT: dict[GapCause, str] = {
    GapCause.CAMERA: "the camera or its network (the recorder's reported problem)",
    GapCause.RECORDER: "edgenvr was not recording (stopped, not running, power cut)",
    GapCause.CLOCK: "the box's clock was not synchronised or jumped",
    GapCause.FILE_LOST: "a segment file was found missing or damaged",
    GapCause.JITTER: f"a hole of at most {GAP_THRESHOLD_MS} ms at a reconnect (not a gap for the index)",
    GapCause.NOT_INDEXED: "the newest video: not indexed yet, or still being recorded",
    GapCause.RETENTION: "recorded, then deleted by retention (age rules, disk quota or free-space floor)",
    GapCause.NO_VIDEO_KEPT: "no video on the box before the oldest it knows of for this camera",
}
# Gap reasons the index writes in words of its own (index.writer's default and stopped camera, and
# index.reconcile's repairs); every other reason is the recorder's report of its camera's problem. An open
# gap (index.queries.gaps) is "camera <state>" when the recorder gave no reason: "camera recording" and
# "camera stopped" then mean edgenvr itself is not recording.
_RECORDER_REASONS = frozenset({GAP_RECORDER_NOT_RUNNING, GAP_RECORDING_STOPPED,
                               *(open_gap_reason(state) for state in (RecorderState.STOPPED, RecorderState.UNKNOWN,
                                                                       RecorderState.RECORDING))})
_FILE_LOST_REASONS = frozenset({GAP_FILE_MISSING, GAP_FILE_DAMAGED})


def gap_cause(reason: str) -> GapCause:
    """The cause of an index gap, from its reason."""
    if reason.startswith((GAP_CLOCK_NOT_SYNCHRONISED, GAP_CLOCK_JUMPED)):
        return GapCause.CLOCK
    if reason in _FILE_LOST_REASONS:
        return GapCause.FILE_LOST
    if reason in _RECORDER_REASONS:
        return GapCause.RECORDER
    return GapCause.CAMERA


class ReportError(Exception):
    """The report cannot be made as asked; nothing was written. The message says why and what to do."""


class TimeZone(NamedTuple):
    name: str
    zone: dt.tzinfo


def box_time_zone() -> TimeZone:
    """The box's own time zone: TZ if set, else /etc/localtime's zone; a zone name that cannot be read falls back
    to the offset the C library uses now (no daylight-saving changes then)."""
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        try:
            target = os.readlink("/etc/localtime")
            name = target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else ""
        except OSError:
            name = ""
    if name:
        try:
            return TimeZone(name, ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    offset = dt.datetime.now().astimezone().strftime("%z")
    sign, hours, minutes = offset[0], int(offset[1:3]), int(offset[3:5])
    fixed = dt.timedelta(hours=hours, minutes=minutes) * (1 if sign == "+" else -1)
    return TimeZone(f"UTC{offset[:3]}:{offset[3:]}", dt.timezone(fixed))


@dataclass(frozen=True)
class LocalDay:
    date: dt.date
    start_ms: int        # the day's local midnight (the whole day, for its bar)
    end_ms: int          # the next local midnight
    utc_offset: str      # "+07:00" at the day's start


def local_days(from_ms: int, to_ms: int, zone: dt.tzinfo) -> list[LocalDay]:
    """The local days that [from_ms, to_ms) touches, whole (cut by the caller)."""
    days: list[LocalDay] = []
    date = (_EPOCH + from_ms * _MS).astimezone(zone).date()
    while True:
        start = dt.datetime.combine(date, dt.time(), tzinfo=zone)
        after = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), tzinfo=zone)
        start_ms, end_ms = (start - _EPOCH) // _MS, (after - _EPOCH) // _MS
        if end_ms > from_ms:
            offset = start.strftime("%z")
            days.append(LocalDay(date, start_ms, end_ms, f"{offset[:3]}:{offset[3:]}"))
        if end_ms >= to_ms:
            return days
        date += dt.timedelta(days=1)


@dataclass(frozen=True)
class ReportRequest:
    from_ms: int
    to_ms: int
    out: Path              # FILE.html or FILE.json
    camera: str | None     # None: every camera
    requested_by: str
    reason: str = ""


@dataclass(frozen=True)
class WrittenReport:
    files: list[Path]
    document: dict[str, Any]


@dataclass(frozen=True)
class _Span:
    """A stretch of a camera's covered range: recorded, or not with a cause (its `kind`) and a reason."""
    start_ms: int
    end_ms: int
    kind: str
    reason: str = ""
    gap: GapRecord | None = None   # the index's gap row it comes from


# -- the request -------------------------------------------------------------------------------------

def check_range(from_ms: int, to_ms: int) -> None:
    if from_ms >= to_ms:
        raise ReportError(f"the range must start before it ends: --from {format_ms(from_ms)} is not before"
                          f" --to {format_ms(to_ms)}")
    if to_ms - from_ms > MAX_RANGE_DAYS * DAY_MS:
        raise ReportError(f"the range is {(to_ms - from_ms) / DAY_MS:.1f} days; a report covers at most"
                          f" {MAX_RANGE_DAYS} days: make one per year")


def output_files(out: Path) -> list[Path]:
    """The files a report to `out` writes: FILE.html alone, or FILE.json with FILE.sig and FILE.pub."""
    suffix = out.suffix.lower()
    if suffix in HTML_SUFFIXES:
        return [out]
    if suffix == JSON_SUFFIX:
        return [out, out.with_suffix(SIGNATURE_SUFFIX), out.with_suffix(PUBLIC_KEY_SUFFIX)]
    raise ReportError(f"--out {out}: name a .html file (a printable page) or a .json file (the signed document,"
                      f" with .sig and .pub beside it)")


def _check_outputs(files: list[Path]) -> None:
    """Refuses existing targets; OSError if their folder cannot be written (a probe file is made and removed)."""
    for path in files:
        if path.exists() or path.is_symlink():
            raise ReportError(f"{path} exists: a report never overwrites a file")
    folder = files[0].parent
    if not folder.is_dir():
        raise OSError(f"{folder} is not a folder")
    probe = _partial(files[0])
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:   # a leftover of this pid's earlier, killed run
        pass
    except OSError as exc:
        raise OSError(f"cannot write in {folder}: {exc.strerror or exc}") from None
    probe.unlink()


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def _known_cameras(conn: sqlite3.Connection, config: Config) -> list[str]:
    """The config's cameras in its order, then cameras no longer in it whose video the index still knows."""
    configured = [camera.id for camera in config.cameras]
    indexed = [row[0] for row in conn.execute("SELECT id FROM cameras ORDER BY id")]
    return configured + [camera for camera in indexed if camera not in configured]


def _cameras(conn: sqlite3.Connection, config: Config, camera: str | None) -> list[str]:
    known = _known_cameras(conn, config)
    if camera is None:
        return known
    if camera in known or (is_camera_id(camera) and conn.execute(
            "SELECT 1 FROM segments WHERE camera = ? LIMIT 1", (camera,)).fetchone()):
        return [camera]
    raise ReportError(f"unknown camera {camera!r}: not in {config.source} and never recorded (cameras:"
                      f" {', '.join(known) or 'none'})")


# -- making it ---------------------------------------------------------------------------------------

def make_report(conn: sqlite3.Connection, config: Config, layout: StorageLayout, identity: DeviceIdentity,
                audit: AuditTrail, request: ReportRequest, *, clock: Clock = SYSTEM_CLOCK,
                zone: TimeZone | None = None) -> WrittenReport:
    """Write the report `request` asks for (see the module docstring), from the read-only index `conn`."""
    check_range(request.from_ms, request.to_ms)
    files = output_files(request.out)
    now = clock.now_ms()
    if request.from_ms >= now:
        raise ReportError(f"the range starts at {format_ms(request.from_ms)}, after now ({format_ms(now)}):"
                          " nothing has been recorded there yet")
    _check_outputs(files)
    conn.execute("BEGIN")   # one snapshot of the index for the whole report
    try:
        cameras = _cameras(conn, config, request.camera)
        facts = _facts(conn, config, layout, identity, request, cameras, now, zone or box_time_zone(), clock)
    finally:
        conn.execute("COMMIT")
    record = audit.append(request.requested_by, AuditAction.REPORT, camera=request.camera,
                          from_ms=request.from_ms, to_ms=request.to_ms, reason=request.reason,
                          detail=json.dumps({"continuity_report": request.out.name, "cameras": cameras},
                                            sort_keys=True))
    facts["audit_record"] = {"seq": record.seq, "hash": record.hash}
    try:
        document = _write(files, facts, identity)
    except BaseException as exc:
        try:
            audit.append(request.requested_by, AuditAction.REPORT, camera=request.camera, from_ms=request.from_ms,
                         to_ms=request.to_ms, reason=request.reason, detail=f"failed: {exc}")
        except (AuditError, OSError, sqlite3.Error):
            pass   # the attempt is on record; the failure is raised
        raise
    return WrittenReport(files, document)


def signed_bytes(document: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and written: the document's canonical JSON."""
    return canonical_json(document)


def _write(files: list[Path], facts: dict[str, Any], identity: DeviceIdentity) -> dict[str, Any]:
    if len(files) == 1:   # the page, with the signed document inside it
        page = render_page(facts)
        document = {**facts, PAGE_HASH_KEY: hashlib.sha256(page).hexdigest()}
        signed = signed_bytes(document)
        contents = [page + signature_section(signed, identity.sign(signed), identity.public_pem)]
    else:
        document = facts
        signed = signed_bytes(document)
        contents = [signed, identity.sign(signed), identity.public_pem]
    partials = [_partial(path) for path in files]
    done: list[Path] = []
    try:
        for partial, data in zip(partials, contents):
            with open(partial, "wb") as handle:   # a name of this process's alone
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        # the document last: it appears with its signature and key beside it (a kill before leaves no document)
        for partial, path in reversed(list(zip(partials, files))):
            rename_no_replace(partial, path)
            done.append(path)
        fsync_dir(files[0].parent)
    except FileExistsError as exc:
        _remove(partials + done)
        raise ReportError(f"{exc.filename or files[0]} appeared meanwhile: a report never overwrites a file") from None
    except BaseException:
        _remove(partials + done)
        raise
    return document


def _remove(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


# -- the facts ---------------------------------------------------------------------------------------

def _facts(conn: sqlite3.Connection, config: Config, layout: StorageLayout, identity: DeviceIdentity,
           request: ReportRequest, cameras: list[str], now: int, zone: TimeZone, clock: Clock) -> dict[str, Any]:
    covered_to = min(request.to_ms, now)
    days = local_days(request.from_ms, covered_to, zone.zone)
    hub_key = _hub_key(layout)
    since = conn.execute("SELECT since_ms FROM sync_since WHERE id = 1").fetchone()
    waiting = backlog(conn)
    return {
        "format": REPORT_FORMAT,
        "box": {"id": identity.box_id, "name": identity.box_name, "key_fingerprint": identity.fingerprint},
        "generated": {"at_ms": now, "by": request.requested_by, "reason": request.reason,
                      "clock_synchronised": clock.synchronised(), "edgenvr_version": edgenvr.__version__},
        "range": {"from_ms": request.from_ms, "to_ms": request.to_ms, "covered_to_ms": covered_to,
                  "from": format_ms(request.from_ms), "to": format_ms(request.to_ms)},
        "days": {"basis": "box-local", "time_zone": zone.name},
        "causes": {str(cause): text for cause, text in CAUSE_TEXT.items()},
        "cameras": [_camera(conn, config, layout, camera, request.from_ms, covered_to, days, now, hub_key, clock)
                    for camera in cameras],
        "sync": {"configured": config.sync.enabled,
                 "hub_url": redact_url(config.sync.hub_url) if config.sync.enabled else "",
                 "since_ms": since[0] if since is not None else None,
                 "queued_now": waiting.count, "oldest_queued_ms": waiting.oldest_ms},
    }


def _camera(conn: sqlite3.Connection, config: Config, layout: StorageLayout, camera: str, from_ms: int,
            to_ms: int, days: list[LocalDay], now: int, hub_key: Ed25519PublicKey | None,
            clock: Clock) -> dict[str, Any]:
    try:
        configured = config.camera(camera)
        name, in_config, enabled = configured.name, True, configured.enabled
    except KeyError:
        name, in_config, enabled = "", False, False
    spans = _spans(conn, config, layout, camera, from_ms, to_ms, days, now, clock)
    day_entries = [_day(day, spans, from_ms, to_ms) for day in days]
    found = [event for kind in (EventKind.OFFLINE, EventKind.TAMPER, EventKind.ALERT)
             for event in events(conn, layout, camera, kind, from_ms, to_ms)]
    motion = conn.execute("SELECT COUNT(*) FROM events WHERE camera = ? AND kind = 'motion' AND start_ms < ?"
                          " AND COALESCE(end_ms, ?) >= ?", (camera, to_ms, OPEN_END_MS, from_ms)).fetchone()[0]
    holds = [hold_to_json(hold) for hold in list_holds(conn, camera, include_released=True)
             if hold.from_ms < to_ms and hold.to_ms > from_ms]
    clips = _clips(conn, camera, from_ms, to_ms, hub_key)
    return {
        "id": camera, "name": name, "in_config": in_config, "enabled": enabled,
        "totals": _totals(spans, from_ms, to_ms),
        "days": day_entries,
        "gaps": _gap_list(spans),
        "events": [{"id": e.id, "kind": e.kind, "subkind": e.subkind, "start_ms": e.start_ms, "end_ms": e.end_ms,
                    "detail": e.detail} for e in sorted(found, key=lambda e: (e.start_ms, e.id))],
        "motion_events": motion,
        "holds": holds,
        "clips": clips,
        "clips_summary": {
            "synced": sum(c["state"] == "synced" for c in clips),
            "synced_bytes": sum(c["bytes"] or 0 for c in clips if c["state"] == "synced"),
            "queued": sum(c["state"] == "queued" for c in clips),
            "lost": sum(c["state"] == "unavailable" for c in clips),
        },
    }


def _spans(conn: sqlite3.Connection, config: Config, layout: StorageLayout, camera: str, from_ms: int, to_ms: int,
           days: list[LocalDay], now: int, clock: Clock) -> list[_Span]:
    """The camera's covered range [from_ms, to_ms), cut into recorded and unrecorded spans (module docstring)."""
    # A little beyond the range on each side, so that a hole at its edge is judged by what lies around it.
    window = (from_ms - GAP_THRESHOLD_MS - 1, to_ms + GAP_THRESHOLD_MS + 1)
    chunks = [(window[0], from_ms), *((max(d.start_ms, from_ms), min(d.end_ms, to_ms)) for d in days),
              (to_ms, window[1])]
    recorded, unsynchronised = _recorded(conn, layout, camera, chunks, clock)
    row = conn.execute("SELECT last_end_ms FROM cameras WHERE id = ?", (camera,)).fetchone()
    unexplained = _Unexplained(window, row[0] if row is not None else None, _oldest_known(conn, camera), now,
                               config.retention_days(camera).max_age_days)
    gap_rows = sorted(gaps(conn, layout, camera, from_ms, to_ms, clock=clock), key=lambda g: g.start_ms)
    spans = sorted(_split_recorded(recorded, unsynchronised)
                   + _unrecorded(_holes(recorded, window), gap_rows, unexplained, now), key=lambda s: s.start_ms)
    return [_Span(max(s.start_ms, from_ms), min(s.end_ms, to_ms), s.kind, s.reason, s.gap)
            for s in spans if s.end_ms > from_ms and s.start_ms < to_ms]


def _recorded(conn: sqlite3.Connection, layout: StorageLayout, camera: str, chunks: list[tuple[int, int]],
              clock: Clock) -> tuple[list[list[int]], list[list[int]]]:
    """The camera's recorded stretches in the chunks (in order), and those recorded on an unsynchronised clock.
    A chunk (a day) at a time: memory is bounded by a day's segments, not the range's."""
    recorded: list[list[int]] = []
    unsynchronised: list[list[int]] = []
    recent = [(r.start_ms, r.end_ms) for r in unindexed_segments(conn, layout, camera, clock=clock)
              if not r.clock_synchronised]
    for start, end in chunks:
        for stretch in sorted(recorded_stretches(conn, layout, camera, start, end, 0, clock=clock),
                              key=lambda s: s.start_ms):
            _extend(recorded, stretch.start_ms, stretch.end_ms)
        rows = conn.execute("SELECT start_ms, end_ms FROM segments WHERE camera = ? AND deleting = 0"
                            f" AND retention_class IN {_EVERY_CLASS} AND start_ms >= ? AND start_ms < ?"
                            " AND end_ms > ? AND clock_state IN (0, 3)",
                            (camera, start - LONGEST_SEGMENT_MS, end, start)).fetchall()
        for row_start, row_end in sorted([*map(tuple, rows), *((s, e) for s, e in recent if e > start and s < end)]):
            _extend(unsynchronised, max(row_start, start), min(row_end, end))
    return recorded, unsynchronised


def _holes(recorded: list[list[int]], window: tuple[int, int]) -> list[tuple[int, int]]:
    """What `recorded` leaves of the window."""
    holes = []
    cursor = window[0]
    for start, end in recorded:
        if start > cursor:
            holes.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < window[1]:
        holes.append((cursor, window[1]))
    return holes


def _unrecorded(holes: list[tuple[int, int]], gap_rows: list[GapRecord], unexplained: _Unexplained,
                now: int) -> list[_Span]:
    """The holes, each moment given to the first gap row (by start) that covers it, the rest explained."""
    spans: list[_Span] = []
    first_gap = 0
    for hole in holes:
        # a gap ending before this hole ends before every later one (holes are in order and disjoint)
        while first_gap < len(gap_rows) and _gap_end(gap_rows[first_gap], now) <= hole[0]:
            first_gap += 1
        cursor = hole[0]
        index = first_gap
        while index < len(gap_rows) and gap_rows[index].start_ms < hole[1]:
            gap = gap_rows[index]
            index += 1
            start, end = max(gap.start_ms, cursor), min(_gap_end(gap, now), hole[1])
            if end <= start:
                continue
            if start > cursor:
                spans += unexplained.spans(cursor, start, hole)
            spans.append(_Span(start, end, gap_cause(gap.reason), gap.reason, gap))
            cursor = end
        if cursor < hole[1]:
            spans += unexplained.spans(cursor, hole[1], hole)
    return spans


@dataclass(frozen=True)
class _Unexplained:
    """Unrecorded time no gap row explains (the module docstring's order of causes)."""
    window: tuple[int, int]
    indexed_end: int | None     # the end of the camera's newest committed segment
    oldest: int | None          # the camera's oldest known point
    now: int
    max_age_days: float | None

    def spans(self, start: int, end: int, hole: tuple[int, int]) -> list[_Span]:
        if (start, end) == hole and self.window[0] < start and end < self.window[1] \
                and end - start <= GAP_THRESHOLD_MS:
            return [_Span(start, end, GapCause.JITTER, CAUSE_TEXT[GapCause.JITTER])]
        cuts = sorted({start, end, *(point for point in (self.oldest, self.indexed_end)
                                     if point is not None and start < point < end)})
        parts = []
        for part_start, part_end in zip(cuts, cuts[1:]):
            if self.indexed_end is not None and part_start >= self.indexed_end:
                parts.append(_Span(part_start, part_end, GapCause.NOT_INDEXED, CAUSE_TEXT[GapCause.NOT_INDEXED]))
            elif self.oldest is not None and part_start >= self.oldest:
                parts.append(_Span(part_start, part_end, GapCause.RETENTION, CAUSE_TEXT[GapCause.RETENTION]))
            else:
                parts.append(_Span(part_start, part_end, GapCause.NO_VIDEO_KEPT, self._before_oldest(part_end)))
        return parts

    def _before_oldest(self, end_ms: int) -> str:
        text = CAUSE_TEXT[GapCause.NO_VIDEO_KEPT]
        if self.max_age_days is not None and end_ms <= self.now - self.max_age_days * DAY_MS:
            return (f"{text}: older than max_age_days ({self.max_age_days:g}), so deleted by retention if it was"
                    " recorded")
        return f"{text}: deleted by retention, or never recorded"


def _extend(intervals: list[list[int]], start: int, end: int) -> None:
    """Add [start, end) to sorted, disjoint `intervals`, given in order of start."""
    if end <= start:
        return
    if intervals and start <= intervals[-1][1]:
        intervals[-1][1] = max(intervals[-1][1], end)
    else:
        intervals.append([start, end])


def _split_recorded(recorded: list[list[int]], unsynchronised: list[list[int]]) -> list[_Span]:
    """Recorded time, as recorded on a synchronised clock or not (both lists sorted and disjoint)."""
    spans: list[_Span] = []
    index = 0
    for start, end in recorded:
        cursor = start
        while index < len(unsynchronised) and unsynchronised[index][1] <= cursor:
            index += 1
        probe = index
        while probe < len(unsynchronised) and unsynchronised[probe][0] < end:
            low, high = max(unsynchronised[probe][0], cursor), min(unsynchronised[probe][1], end)
            if low > cursor:
                spans.append(_Span(cursor, low, RECORDED))
            if high > low:
                spans.append(_Span(low, high, RECORDED_UNSYNCHRONISED))
                cursor = high
            probe += 1
        if cursor < end:
            spans.append(_Span(cursor, end, RECORDED))
    return spans


def _gap_end(gap: GapRecord, now: int) -> int:
    return gap.end_ms if gap.end_ms is not None else now


def _oldest_known(conn: sqlite3.Connection, camera: str) -> int | None:
    """The camera's oldest known point: its oldest gap's start or oldest segment's (one index seek each)."""
    points = [conn.execute("SELECT MIN(start_ms) FROM gaps WHERE camera = ?", (camera,)).fetchone()[0]]
    points += [conn.execute("SELECT MIN(start_ms) FROM segments WHERE camera = ? AND retention_class = ?"
                            " AND deleting = 0", (camera, retention_class)).fetchone()[0]
               for retention_class in CLASS_NAMES]
    return min((point for point in points if point is not None), default=None)


def _day(day: LocalDay, spans: list[_Span], from_ms: int, to_ms: int) -> dict[str, Any]:
    start, end = max(day.start_ms, from_ms), min(day.end_ms, to_ms)
    inside = [_Span(max(s.start_ms, start), min(s.end_ms, end), s.kind) for s in spans
              if s.end_ms > start and s.start_ms < end]
    merged: list[_Span] = []
    for span in inside:   # touching spans of one kind are one stretch on the bar
        if merged and merged[-1].kind == span.kind and merged[-1].end_ms == span.start_ms:
            merged[-1] = _Span(merged[-1].start_ms, span.end_ms, span.kind)
        else:
            merged.append(span)
    return {"date": day.date.isoformat(), "utc_offset": day.utc_offset, "day_start_ms": day.start_ms,
            "day_end_ms": day.end_ms, "start_ms": start, "end_ms": end,
            **_figures(inside, end - start), "spans": [[s.start_ms, s.end_ms, s.kind] for s in merged]}


def _totals(spans: list[_Span], from_ms: int, to_ms: int) -> dict[str, Any]:
    return _figures(spans, to_ms - from_ms)


def _figures(spans: list[_Span], span_ms: int) -> dict[str, Any]:
    recorded = sum(s.end_ms - s.start_ms for s in spans if s.kind in (RECORDED, RECORDED_UNSYNCHRONISED))
    not_recorded: dict[str, int] = {}
    for span in spans:
        if span.kind not in (RECORDED, RECORDED_UNSYNCHRONISED):
            not_recorded[span.kind] = not_recorded.get(span.kind, 0) + span.end_ms - span.start_ms
    return {"span_ms": span_ms, "recorded_ms": recorded,
            "recorded_clock_unsynchronised_ms": sum(s.end_ms - s.start_ms for s in spans
                                                    if s.kind == RECORDED_UNSYNCHRONISED),
            "recorded_percent": percent(recorded, span_ms),
            "not_recorded_ms": dict(sorted(not_recorded.items()))}


def percent(part: int, whole: int) -> str:
    """part/whole as a percentage with two decimals, rounded down: 100.00 only when nothing is missing."""
    if whole <= 0:
        return "-"
    hundredths = part * 10_000 // whole
    return f"{hundredths // 100}.{hundredths % 100:02d}"


def _gap_list(spans: list[_Span]) -> list[dict[str, Any]]:
    """Every unrecorded stretch, with its cause and reason; one entry per index gap row (with the row's own
    bounds) and per stretch of one derived cause."""
    entries: list[dict[str, Any]] = []
    previous: _Span | None = None
    for span in spans:
        if span.kind in (RECORDED, RECORDED_UNSYNCHRONISED):
            previous = None
            continue
        if previous is not None and previous.end_ms == span.start_ms and previous.kind == span.kind \
                and previous.reason == span.reason and previous.gap == span.gap:
            entries[-1]["end_ms"] = span.end_ms
            entries[-1]["duration_ms"] = span.end_ms - entries[-1]["start_ms"]
        else:
            entries.append({"start_ms": span.start_ms, "end_ms": span.end_ms, "duration_ms": span.end_ms - span.start_ms,
                            "cause": span.kind, "reason": span.reason,
                            "index_gap": None if span.gap is None else {
                                "start_ms": span.gap.start_ms, "end_ms": span.gap.end_ms}})
        previous = span
    return entries


def _hub_key(layout: StorageLayout) -> Ed25519PublicKey | None:
    """The hub's receipt key learnt at enrolment, None if this box never enrolled (or it cannot be read)."""
    try:
        return load_public_key(layout.hub_key_path.read_bytes(), layout.hub_key_path.name)
    except (OSError, IdentityError):
        return None


def _clips(conn: sqlite3.Connection, camera: str, from_ms: int, to_ms: int,
           hub_key: Ed25519PublicKey | None) -> list[dict[str, Any]]:
    """The camera's clips for the city hub overlapping the range: receipted, waiting, or given up."""
    clips = []
    for row in conn.execute("SELECT id, kind, start_ms, end_ms, state, created_ms, done_ms, attempts, last_error,"
                            " bytes, sha256, receipt, pull_id, reported_ms FROM outbox WHERE camera = ?"
                            " AND start_ms < ? AND end_ms > ? ORDER BY start_ms, id", (camera, to_ms, from_ms)):
        clip = {"id": row["id"], "kind": row["kind"], "start_ms": row["start_ms"], "end_ms": row["end_ms"],
                "state": row["state"], "queued_ms": row["created_ms"], "done_ms": row["done_ms"],
                "attempts": row["attempts"], "bytes": row["bytes"], "sha256": row["sha256"],
                "pull_id": row["pull_id"], "problem": row["last_error"], "hub_told_ms": row["reported_ms"],
                "hub_receipt": None}
        if row["receipt"]:
            clip["hub_receipt"] = _receipt(row["receipt"], hub_key)
        clips.append(clip)
    return clips


def _receipt(text: str, hub_key: Ed25519PublicKey | None) -> dict[str, Any]:
    """The hub's signed receipt as stored (its fields and signature, checkable with the hub's key), and whether
    it verifies with the key this box enrolled with (None: that key is not on this box)."""
    try:
        stored = json.loads(text)
        fields, signature = dict(stored["receipt"]), str(stored["signature"])
    except (ValueError, KeyError, TypeError):
        return {"fields": None, "signature": None, "verified": False}
    verified: bool | None = None
    if hub_key is not None:
        try:
            read_receipt(text, hub_key)
            verified = True
        except ReceiptInvalid:
            verified = False
    return {"fields": fields, "signature": signature, "verified": verified}
