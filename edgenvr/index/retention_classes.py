"""Retention tiers: which class each segment is in, kept up to date as events, holds and the outbox change.

Classes (segments.retention_class), first match wins: 2 held (overlaps a hold in force), 3 awaiting upload
(overlaps a clip queued for the city hub: an outbox row in state 'queued'), 1 event video (overlaps an
event's padded range), 0 continuous ring. The numbers are not the deletion order (3 was added after 2, and
no row is renumbered): the sweep deletes 0 then 1 for age and space; 3 only under the free-space floor once 0
and 1 are gone; 2 never. It finds them through the (retention_class, timeline_ms, start_ms) and (camera,
retention_class, ...) indexes, so a sweep never has to look at events, holds or the outbox. A class is
recomputed for a camera and time range whenever something there changes: segments indexed, an event
indexed, closed or deleted, a hold added or released, an outbox row queued or leaving 'queued'. Callers run
`classify` inside the same write transaction as the change, so a crash never leaves a class out of step
with its cause. `classes_after` answers the same question without writing, for predicting a sweep.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Mapping

CONTINUOUS = 0
EVENT = 1
HOLD = 2
AWAITING_UPLOAD = 3
CLASS_NAMES = {CONTINUOUS: "continuous", EVENT: "event", HOLD: "held", AWAITING_UPLOAD: "awaiting upload"}
# What the ring may delete for age and for the quota: everything below HOLD. Video awaiting upload is deleted
# only by the free-space floor, after all of that, or past the legal maximum (retention_max_days); held video
# only ever by releasing its hold.
DELETABLE_BELOW = HOLD
# Every class, for `retention_class IN (...)` in a camera's index scans (one range scan per class).
_EVERY_CLASS = ", ".join(str(value) for value in sorted(CLASS_NAMES))

# Bounds the start_ms index scans. The recorder cuts every segment at the first key frame after
# segment_seconds (at most 10 min) and, for a camera that sends no key frame, reconnects after
# recording.segment_cutter.FORCED_CUT_MS (15 min), so no segment is longer than this.
LONGEST_SEGMENT_MS = 1_200_000

# An event is kept (with its snapshot) while a hold in force overlaps it, whatever its age: the hold is
# usually about what the event shows. Overlap is with the video the event keeps, or with the event itself
# for kinds that keep no video. For use in a WHERE clause over `events e`.
EVENT_HELD_SQL = """EXISTS (SELECT 1 FROM holds h WHERE h.camera = e.camera AND h.released_ms IS NULL
    AND h.from_ms <= COALESCE(e.keep_to_ms, e.end_ms, e.start_ms)
    AND h.to_ms > COALESCE(e.keep_from_ms, e.start_ms))"""


def _wanted(event_condition: str) -> str:
    """id, current class and wanted class of the camera's segments overlapping [:from_ms, :to_ms).
    `event_condition` (SQL over `events e`) narrows which events count.

    Holds and events are looked up once for the range, then joined to their segments by time, so the cost
    is the segments in the range plus the segments they keep, however many events the camera has.
    `retention_class IN (0, 1, 2, 3)` (every class there is) lets SQLite walk the (camera, retention_class,
    start_ms) index by time for each class instead of every segment of the camera. Queued clips are found
    through outbox_waiting (camera, state, end_ms, start_ms, index migration 7): the queued rows of the camera
    ending after the range starts, a few however long the outbox's history."""
    return f"""
        WITH held(id) AS (
            SELECT s.id FROM holds h JOIN segments s
              ON s.camera = h.camera AND s.retention_class IN ({_EVERY_CLASS})
             AND s.start_ms >= MAX(h.from_ms - {LONGEST_SEGMENT_MS}, :lower) AND s.start_ms < MIN(h.to_ms, :to_ms)
             AND s.end_ms > h.from_ms
            WHERE h.camera = :camera AND h.released_ms IS NULL AND h.from_ms < :upper AND h.to_ms > :lower),
        queued(id) AS (
            SELECT s.id FROM outbox o JOIN segments s
              ON s.camera = o.camera AND s.retention_class IN ({_EVERY_CLASS})
             AND s.start_ms >= MAX(o.start_ms - {LONGEST_SEGMENT_MS}, :lower) AND s.start_ms < MIN(o.end_ms, :to_ms)
             AND s.end_ms > o.start_ms
            WHERE o.camera = :camera AND o.state = 'queued' AND o.end_ms > :lower AND o.start_ms < :upper),
        kept(id) AS (
            SELECT s.id FROM events e JOIN segments s
              ON s.camera = e.camera AND s.retention_class IN ({_EVERY_CLASS})
             AND s.start_ms >= MAX(e.keep_from_ms - {LONGEST_SEGMENT_MS}, :lower)
             AND s.start_ms < MIN(e.keep_to_ms, :to_ms) AND s.end_ms > e.keep_from_ms
            WHERE e.camera = :camera AND e.keep_to_ms > :lower AND e.keep_from_ms < :upper AND ({event_condition}))
        SELECT s.id, s.camera, s.start_ms, s.end_ms, s.bytes, s.retention_class, s.timeline_ms, CASE
            WHEN s.id IN (SELECT id FROM held) THEN {HOLD}
            WHEN s.id IN (SELECT id FROM queued) THEN {AWAITING_UPLOAD}
            WHEN s.id IN (SELECT id FROM kept) THEN {EVENT}
            ELSE {CONTINUOUS} END AS class
        FROM segments s
        WHERE s.camera = :camera AND s.retention_class IN ({_EVERY_CLASS})
          AND s.start_ms >= :lower AND s.start_ms < :to_ms AND s.end_ms > :from_ms AND s.deleting = 0"""


def _range(camera: str, from_ms: int, to_ms: int) -> dict[str, Any]:
    # Segments overlapping [from, to) start at or after from - longest and end before to + longest.
    return {"camera": camera, "lower": from_ms - LONGEST_SEGMENT_MS, "upper": to_ms + LONGEST_SEGMENT_MS,
            "from_ms": from_ms, "to_ms": to_ms}


def classify(conn: sqlite3.Connection, camera: str, from_ms: int, to_ms: int) -> int:
    """Recompute the class of the camera's segments overlapping [from_ms, to_ms). Returns rows changed."""
    # Only rows whose class changes are written: an unchanged row would still cost a page write.
    cursor = conn.execute(
        f"""
        UPDATE segments SET retention_class = wanted.class FROM ({_wanted("1")}) AS wanted
        WHERE segments.id = wanted.id AND segments.retention_class != wanted.class
        """,
        _range(camera, from_ms, to_ms))
    return cursor.rowcount


def classes_after(conn: sqlite3.Connection, camera: str, from_ms: int, to_ms: int, events_left: str,
                  params: Mapping[str, Any]) -> list[sqlite3.Row]:
    """What `classify` would give the camera's segments overlapping [from_ms, to_ms) if only the events
    matching `events_left` (SQL over `events e`, with named `params`) were left. Writes nothing.
    Rows: id, camera, start_ms, end_ms, bytes, retention_class (now), timeline_ms, class (then)."""
    return conn.execute(_wanted(events_left), {**params, **_range(camera, from_ms, to_ms)}).fetchall()
