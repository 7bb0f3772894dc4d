"""Read-only questions asked of the index: segments, gaps and events in a time range, camera states.

Used by the CLI now and the web API later. Opens the index read-only, so it never blocks the writer
(WAL readers and the writer do not wait for each other).

Segment rows are committed in batches minutes apart (index.writer), so the newest few minutes of each
camera are read from the segment files themselves, which carry their row (recording.segment_files): readers see a
segment as soon as it is closed, and a camera that is recording never looks like an open gap.
"""

from __future__ import annotations

import heapq
import json
import os
import sqlite3
from dataclasses import dataclass
from typing import Iterator

from edgenvr.core.camera_ids import is_camera_id
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.records import GapRecord, SegmentOrigin, SegmentRecord
from edgenvr.core.units import HOUR_MS, MINUTE_MS, OPEN_END_MS
from edgenvr.index import schema as index_schema
from edgenvr.index.recording_timeline import (
    CLOCK_STATE_NAMES,
    CLOCK_SYNCHRONISED,
    CLOCK_UNSYNCHRONISED,
)
from edgenvr.index.retention_classes import CLASS_NAMES, LONGEST_SEGMENT_MS
from edgenvr.storage.layout import StorageLayout, parse_segment_name
from edgenvr.storage.segment_attributes import read_segment_attribute

# A camera whose newest segment ended longer ago than this is not recording now: it has an open gap.
OPEN_GAP_AFTER_MS = MINUTE_MS
# Every retention class, named in a camera's time-range queries so SQLite uses the (camera, retention_class,
# start_ms) index as three range scans: without it, it walks the camera's whole month through another index
# (a day of one camera out of 32 x 30 days: 48 ms of SQL, 15 ms with it; benchmarks/playback.py).
_EVERY_CLASS = "(" + ", ".join(str(value) for value in sorted(CLASS_NAMES)) + ")"

# How far back files are looked at for segments not indexed yet: batches are minutes apart; anything older
# without a row is adopted at the next start-up.
UNINDEXED_LOOKBACK_MS = 2 * HOUR_MS


@dataclass(frozen=True)
class SegmentRow:
    camera: str
    start_ms: int
    end_ms: int
    path: str
    bytes: int
    sha256: str
    codec: str
    width: int
    height: int
    origin: str
    indexed: bool = True  # False: closed and on disk, its row not committed yet
    # What vouches for start/end (index.recording_timeline.CLOCK_STATE_NAMES): "synchronised", "unsynchronised"
    # (recorded before the wall clock was set: its times are what that clock said), "re-anchored" (moved to
    # its true time from the boot-time clock since)
    clock: str = CLOCK_STATE_NAMES[CLOCK_SYNCHRONISED]


def _newest_indexed_start(conn: sqlite3.Connection, camera: str) -> int | None:
    # one MAX per class: each is a single seek at the end of the (camera, retention_class, start_ms) index
    starts = [conn.execute("SELECT MAX(start_ms) FROM segments WHERE camera = ? AND retention_class = ?",
                           (camera, retention_class)).fetchone()[0] for retention_class in CLASS_NAMES]
    return max((start for start in starts if start is not None), default=None)


def unindexed_segments(conn: sqlite3.Connection, layout: StorageLayout, camera: str, *,
                       clock: Clock = SYSTEM_CLOCK) -> list[SegmentRecord]:
    """The camera's closed segment files newer than its newest row, oldest first: their batch is not
    committed yet. Read from the rows stored on the files; a file without one is left to the next
    start-up's reconcile."""
    if not is_camera_id(camera):
        return []  # no such camera can have files (`--camera` is whatever the user typed)
    now = clock.now_ms()
    newest = _newest_indexed_start(conn, camera)
    after = max(newest if newest is not None else -OPEN_END_MS, now - UNINDEXED_LOOKBACK_MS)
    found: list[SegmentRecord] = []
    for hour in range(after // HOUR_MS, now // HOUR_MS + 1):
        directory = layout.segment_path(camera, hour * HOUR_MS).parent
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            parsed = parse_segment_name(name)
            if parsed is None or parsed[1] or parsed[0] <= after:
                continue
            record = read_segment_attribute(layout, camera, directory / name, origin=SegmentOrigin.RECORDER)
            if record is not None:
                found.append(record)
    return sorted(found, key=lambda record: record.start_ms)


def open_readonly(layout: StorageLayout) -> sqlite3.Connection:
    """The index, read-only. FileNotFoundError if nothing was ever recorded; IndexVersionError (an
    sqlite3.DatabaseError) if a newer edgenvr wrote it, as for the writer (checked in index.schema.connect)."""
    if not layout.index_path.exists():
        raise FileNotFoundError(f"no index at {layout.index_path}: nothing has been recorded with this data_dir yet")
    return index_schema.connect(layout.index_path, readonly=True)


def segments(conn: sqlite3.Connection, layout: StorageLayout, camera: str | None = None,
             since_ms: int | None = None, until_ms: int | None = None, *,
             clock: Clock = SYSTEM_CLOCK) -> Iterator[SegmentRow]:
    """Segments overlapping [since, until), oldest first."""
    # Segments are bounded in length (retention_classes.LONGEST_SEGMENT_MS), so a start_ms bound uses the index.
    lower = (since_ms - LONGEST_SEGMENT_MS) if since_ms is not None else -OPEN_END_MS
    query = ("SELECT camera, start_ms, end_ms, bytes, sha256, codec, width, height, origin, clock_state FROM segments"
             " WHERE deleting = 0 AND start_ms >= ? AND start_ms < ? AND end_ms > ?")
    args: list[object] = [lower, until_ms if until_ms is not None else OPEN_END_MS,
                          since_ms if since_ms is not None else -OPEN_END_MS]
    if camera is not None:
        query += f" AND camera = ? AND retention_class IN {_EVERY_CLASS}"
        args.append(camera)
    indexed = (SegmentRow(row["camera"], row["start_ms"], row["end_ms"],
                          str(layout.segment_path(row["camera"], row["start_ms"])), row["bytes"], row["sha256"].hex(),
                          row["codec"], row["width"], row["height"], row["origin"],
                          clock=CLOCK_STATE_NAMES.get(row["clock_state"], CLOCK_STATE_NAMES[CLOCK_SYNCHRONISED]))
               for row in conn.execute(query + " ORDER BY start_ms, camera", args))
    cameras = [camera] if camera is not None else [row[0] for row in conn.execute("SELECT id FROM cameras")]
    recent = [SegmentRow(r.camera, r.start_ms, r.end_ms, str(layout.absolute(r.path)), r.bytes, r.sha256, r.codec,
                         r.width, r.height, r.origin, indexed=False,
                         clock=CLOCK_STATE_NAMES[CLOCK_SYNCHRONISED if r.clock_synchronised else CLOCK_UNSYNCHRONISED])
              for name in cameras for r in unindexed_segments(conn, layout, name, clock=clock)
              if (since_ms is None or r.end_ms > since_ms) and (until_ms is None or r.start_ms < until_ms)]
    yield from heapq.merge(indexed, sorted(recent, key=lambda r: (r.start_ms, r.camera)),
                           key=lambda r: (r.start_ms, r.camera))


def last_video_ms(conn: sqlite3.Connection, layout: StorageLayout, camera: str, indexed_end_ms: int | None, *,
                  clock: Clock = SYSTEM_CLOCK) -> int | None:
    """End of the camera's newest closed segment, indexed or not."""
    recent = unindexed_segments(conn, layout, camera, clock=clock)
    return max(indexed_end_ms or 0, recent[-1].end_ms) if recent else indexed_end_ms


def open_gap_reason(state: str) -> str:
    """The reason of an open gap whose recorder reported no problem: its camera's state."""
    return f"camera {state}"


def gaps(conn: sqlite3.Connection, layout: StorageLayout, camera: str | None = None, since_ms: int | None = None,
         until_ms: int | None = None, *, clock: Clock = SYSTEM_CLOCK) -> list[GapRecord]:
    """Closed gaps overlapping the range, plus an open gap for each camera not recording now."""
    query = "SELECT camera, start_ms, end_ms, reason FROM gaps WHERE end_ms > ? AND start_ms < ?"
    args: list[object] = [since_ms if since_ms is not None else -OPEN_END_MS,
                          until_ms if until_ms is not None else OPEN_END_MS]
    if camera is not None:
        query += " AND camera = ?"
        args.append(camera)
    result = [GapRecord(r["camera"], r["start_ms"], r["end_ms"], r["reason"])
              for r in conn.execute(query + " ORDER BY start_ms", args)]
    now = clock.now_ms()
    for row in conn.execute("SELECT id, last_end_ms, state, state_reason FROM cameras"):
        if camera is not None and row["id"] != camera:
            continue
        last_end = last_video_ms(conn, layout, row["id"], row["last_end_ms"], clock=clock)
        if last_end is None or now - last_end <= OPEN_GAP_AFTER_MS:
            continue
        if (until_ms is None or last_end < until_ms) and (since_ms is None or now > since_ms):
            reason = row["state_reason"] or open_gap_reason(row["state"])
            result.append(GapRecord(row["id"], last_end, None, reason))
    return sorted(result, key=lambda g: (g.start_ms, g.camera))


def camera_states(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT id, state, state_since_ms, state_reason, dropped_json, last_end_ms, motion_json FROM cameras"
                        " ORDER BY id").fetchall()


@dataclass(frozen=True)
class EventRow:
    camera: str
    kind: str              # motion | tamper | offline | alert
    subkind: str           # tamper: covered | defocused | moved; "" otherwise
    start_ms: int
    end_ms: int | None     # None while the event is still open
    zones: list[str]
    peak_score: float
    snapshot: str | None   # absolute path of the JPEG, None if there is none
    detail: str
    id: int = 0            # the index's event id (the web API's /api/events/{id})


def events(conn: sqlite3.Connection, layout: StorageLayout, camera: str | None = None, kind: str | None = None,
           since_ms: int | None = None, until_ms: int | None = None) -> list[EventRow]:
    """Events overlapping [since, until) (an open event overlaps everything after its start), oldest first."""
    query = ("SELECT id, camera, kind, subkind, start_ms, end_ms, zones, peak_score, snapshot, detail FROM events"
             " WHERE start_ms < ? AND COALESCE(end_ms, ?) >= ?")
    args: list[object] = [until_ms if until_ms is not None else OPEN_END_MS, OPEN_END_MS,
                          since_ms if since_ms is not None else -OPEN_END_MS]
    for column, value in (("camera", camera), ("kind", kind)):
        if value is not None:
            query += f" AND {column} = ?"
            args.append(value)
    return [EventRow(r["camera"], r["kind"], r["subkind"], r["start_ms"], r["end_ms"], json.loads(r["zones"]),
                     r["peak_score"], str(layout.absolute(r["snapshot"])) if r["snapshot"] else None, r["detail"],
                     r["id"])
            for r in conn.execute(query + " ORDER BY start_ms, camera", args)]


def latest_reference(conn: sqlite3.Connection, camera: str) -> sqlite3.Row | None:
    """The camera's reference view in use (approved_ms, image, approved_by); None before its first one.
    approved_by is core.records.COMMISSIONING while nobody has approved a view."""
    return conn.execute("SELECT approved_ms, image, approved_by FROM reference_views WHERE camera = ?"
                        " ORDER BY approved_ms DESC LIMIT 1", (camera,)).fetchone()


def newest_codec(conn: sqlite3.Connection, camera: str, last_end_ms: int | None) -> str | None:
    """The codec of the camera's newest segment, given the end of its newest video (its camera row's
    last_end_ms). A few seeks in segments_camera_class, one per class, from a longest segment before that end
    (segments are bounded in length), instead of ordering every segment of the camera."""
    if last_end_ms is None:
        return None
    row = conn.execute(f"SELECT codec FROM segments WHERE camera = ? AND retention_class IN {_EVERY_CLASS}"
                       " AND start_ms >= ? ORDER BY start_ms DESC LIMIT 1",
                       (camera, last_end_ms - LONGEST_SEGMENT_MS)).fetchone()
    return None if row is None else row[0]


def event_by_id(conn: sqlite3.Connection, layout: StorageLayout, event_id: int) -> EventRow | None:
    row = conn.execute("SELECT start_ms, camera FROM events WHERE id = ?", (event_id,)).fetchone()
    if row is None:
        return None
    found = [e for e in events(conn, layout, row["camera"], None, row["start_ms"], row["start_ms"] + 1)
             if e.id == event_id]
    return found[0] if found else None


@dataclass(frozen=True)
class Stretch:
    """Recorded video without a hole longer than the writer's gap threshold, in one codec."""
    start_ms: int
    end_ms: int
    codec: str


def recorded_stretches(conn: sqlite3.Connection, layout: StorageLayout, camera: str, since_ms: int, until_ms: int,
                       join_ms: int, *, clock: Clock = SYSTEM_CLOCK) -> list[Stretch]:
    """The camera's recorded stretches overlapping [since, until), clipped to it: the timeline's bars. Reads
    only the index segments_camera_class (it covers every column used; a day of 2 s segments is 43,200 rows)
    plus the closed files not indexed yet."""
    cursor = conn.cursor()
    cursor.row_factory = None   # plain tuples: a day is tens of thousands of rows
    rows = cursor.execute("SELECT start_ms, end_ms, codec FROM segments WHERE camera = ? AND deleting = 0"
                          f" AND retention_class IN {_EVERY_CLASS}"
                          " AND start_ms >= ? AND start_ms < ? AND end_ms > ? ORDER BY start_ms",
                          (camera, since_ms - LONGEST_SEGMENT_MS, until_ms, since_ms)).fetchall()
    recent = [(r.start_ms, r.end_ms, r.codec) for r in unindexed_segments(conn, layout, camera, clock=clock)
              if r.end_ms > since_ms and r.start_ms < until_ms]
    stretches: list[Stretch] = []
    first = last = -OPEN_END_MS
    kind: str | None = None
    for start, end, codec in [*rows, *recent]:
        start, end = max(start, since_ms), min(end, until_ms)
        if kind == codec and start - last <= join_ms:
            last = max(last, end)
        elif end > start:
            if kind is not None:
                stretches.append(Stretch(first, last, kind))
            first, last, kind = start, end, codec
    if kind is not None:
        stretches.append(Stretch(first, last, kind))
    return stretches


# Running totals of the clips the hub has receipted, rows of `counters` (index migration 9): sync.outbox adds to
# them when it marks a clip synced, web.box_metrics reads them.
DELIVERED_CLIPS = "sync_delivered_clips"
DELIVERED_BYTES = "sync_delivered_bytes"


@dataclass(frozen=True)
class Backlog:
    """Clips queued for the city hub (the outbox, sync.outbox owns its rows), for `edgenvr status` and the web."""
    count: int               # clips queued, not yet receipted
    oldest_ms: int | None    # start of the oldest of them
    bytes_known: int         # sizes of those whose clip file is built (the rest is not known until exported)
    last_error: str          # why the clip tried last did not go (the link, the hub's answer), "" if none


def backlog(conn: sqlite3.Connection) -> Backlog:
    count, oldest, known = conn.execute("SELECT COUNT(*), MIN(start_ms), COALESCE(SUM(bytes), 0) FROM outbox"
                                        " WHERE state = 'queued'").fetchone()
    error = conn.execute("SELECT last_error FROM outbox WHERE state = 'queued' AND last_error != ''"
                         " ORDER BY priority, start_ms, id LIMIT 1").fetchone()
    return Backlog(count, oldest, known, error[0] if error else "")
