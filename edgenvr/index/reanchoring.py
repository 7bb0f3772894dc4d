"""Moving segments recorded on an unsynchronised wall clock to their true time once their boot's offset is known
(docs/architecture.md, "Clock trust").

Owns: the move of a segment row from clock_state 0 (unsynchronised) to 2 (re-anchored) or 3 (left as
recorded), the rename of its file, and the events and gaps of the same stretch, which move with it.

When and what: the supervisor's periodic work (runtime.periodic_work) calls `reanchor_segments` while the
clock is synchronised. A boot's offset (wall minus boot-time clock) is kept the first time the clock is seen
synchronised in that boot (index.recording_timeline); then every unsynchronised segment of that boot has a
known true start: its boot-time at start + the offset. This holds across a restart of edgenvr within the boot
(the offset and every segment's boot-time are in the index and the segment's attribute). Segments of a boot
whose clock was never seen synchronised while edgenvr ran (a box without network all that boot long; the
power cut before NTP answered) have no offset: nothing measured the time the box was off, so they keep their
recorded times, marked unsynchronised, and are still ordered and aged by the timeline.

Invariants:
- Never overwrites a file (storage.renaming.rename_no_replace): a true name already taken leaves the segment
  where it is (clock_state 3, logged). Each boot's stretch is moved from its far end inward (newest first
  when the shift is forward), so a segment never lands on the old name of one still to move.
- Never reorders: a segment's timeline position (so the ring's order and every age) does not change, only
  start_ms, end_ms and the file name, by the boot's shift.
- A shift under MIN_SHIFT_MS is not a move: those times were right (a box with an RTC whose NTP answered
  late); such rows are only marked re-anchored.

Crash safety, per batch of at most `limit` rows: (1) each file is renamed to its true name (no replace) and
its attribute marked re-anchored, (2) the directories are fsynced, (3) one transaction moves the rows,
shifts the events and gaps of the moved stretches and reclassifies the old and new ranges. A crash between
(1) and (3) leaves rows whose files have their new names: the start-up reconcile drops those rows with a
"segment file missing" gap in the old, unsynchronised stretch, and adopts the renamed files from their
attributes (which carry the boot, the boot-time and the re-anchored mark): no video is lost and none is
indexed twice; the gap row and the events of that stretch stay where they were. A failed rename other than
a taken name (disk trouble) ends the batch; what was renamed is committed, the rest is retried next time.
A failed commit is raised for the periodic work to log and retry: the retry finds each file already at its
true name (its attribute has the row's boot and boot-time) and commits the move.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from edgenvr.core.time_format import format_ms
from edgenvr.index.recording_timeline import (
    CLOCK_NOT_REANCHORED,
    CLOCK_REANCHORED,
    CLOCK_UNSYNCHRONISED,
    describe_step,
)
from edgenvr.index.retention_classes import classify
from edgenvr.index.writer import IndexWriter, reanchored_gap_reason
from edgenvr.storage.durable_writes import fsync_dir
from edgenvr.storage.layout import StorageLayout
from edgenvr.storage.permissions import make_data_dirs
from edgenvr.storage.renaming import rename_no_replace
from edgenvr.storage.segment_attributes import (
    ClockRecord,
    mark_reanchored,
    read_start_attribute,
)

log = logging.getLogger(__name__)

BATCH = 1000        # rows per batch (renames, then one transaction)
MIN_SHIFT_MS = 1000


@dataclass(frozen=True)
class _Move:
    row_id: int
    camera: str
    old_start_ms: int
    old_end_ms: int
    shift_ms: int
    state: int        # CLOCK_REANCHORED or CLOCK_NOT_REANCHORED


@dataclass
class ReanchorResult:
    moved: int = 0          # renamed to their true start
    left: int = 0           # true name taken: left as recorded
    shifts: set[int] = field(default_factory=set)


def reanchor_segments(writer: IndexWriter, layout: StorageLayout, limit: int = BATCH) -> ReanchorResult:
    """Move up to `limit` unsynchronised segments of boots with a known offset (see the module docstring).
    With nothing to move it costs one index seek per boot whose offset is known."""
    result = ReanchorResult()
    conn = writer.conn
    for boot in writer.timeline.boots_with_offset():   # the others stay as recorded (module docstring)
        assert boot.offset_ms is not None
        boot_row = boot.row_id
        newest = conn.execute("SELECT start_ms, timeline_ms FROM segments INDEXED BY segments_unsynchronised"
                              " WHERE clock_state = 0 AND boot = ? ORDER BY timeline_ms DESC LIMIT 1",
                              (boot_row,)).fetchone()
        if newest is None:
            continue
        forward = newest[1] - boot.base_ms + boot.offset_ms >= newest[0]
        rows = conn.execute("SELECT id, camera, start_ms, end_ms, timeline_ms FROM segments"
                            " INDEXED BY segments_unsynchronised WHERE clock_state = 0 AND boot = ? AND deleting = 0"
                            f" ORDER BY timeline_ms {'DESC' if forward else 'ASC'} LIMIT ?",
                            (boot_row, limit)).fetchall()
        moves = _rename(layout, [(row["id"], row["camera"], row["start_ms"], row["end_ms"],
                                  row["timeline_ms"] - boot.base_ms + boot.offset_ms - row["start_ms"],
                                  ClockRecord(False, boot.boot_id, row["timeline_ms"] - boot.base_ms))
                                 for row in rows], result)
        if moves:
            try:
                writer.transaction(lambda conn_: _move_rows(conn_, moves))
            except BaseException:
                # The rows still name the old files: put them back, so that a sweep meanwhile finds (and
                # counts) them where the index says; what cannot go back is found again by the retry.
                _undo_renames(layout, moves)
                raise
            for move in moves:
                if move.state == CLOCK_REANCHORED:
                    writer.moved_segment(move.camera, move.old_end_ms, move.old_end_ms + move.shift_ms)
        limit -= len(rows)
        if limit <= 0 or len(moves) < len(rows):
            break
    if result.moved or result.left:
        log.warning("re-anchored %d segments recorded before the clock was synchronised (shifted %s); %d left"
                    " as recorded (their true names were taken)", result.moved,
                    ", ".join(sorted({describe_step(s) for s in result.shifts})) or "-", result.left)
    return result


def _rename(layout: StorageLayout, rows: list[tuple[int, str, int, int, int, ClockRecord]],
            result: ReanchorResult) -> list[_Move]:
    """Step (1) and (2) of a batch. Returns the moves to commit, in order; stops at the first disk trouble."""
    moves: list[_Move] = []
    directories: set[Path] = set()
    for row_id, camera, start_ms, end_ms, shift_ms, clock in rows:
        if abs(shift_ms) < MIN_SHIFT_MS:
            moves.append(_Move(row_id, camera, start_ms, end_ms, 0, CLOCK_REANCHORED))
            continue
        old = layout.segment_path(camera, start_ms)
        new = layout.segment_path(camera, start_ms + shift_ms)
        try:
            make_data_dirs(new.parent)
            rename_no_replace(old, new)
        except FileExistsError:
            log.warning("%s: %s recorded before the clock was synchronised belongs at %s, whose name is taken;"
                        " left as recorded", camera, old.name, format_ms(start_ms + shift_ms))
            moves.append(_Move(row_id, camera, start_ms, end_ms, 0, CLOCK_NOT_REANCHORED))
            result.left += 1
            continue
        except FileNotFoundError:
            found = read_start_attribute(new)
            if found is None or (found.boot_id, found.boot_ms) != (clock.boot_id, clock.boot_ms):
                # its file went missing: the start-up reconcile drops the row; not retried here
                log.error("%s: %s to re-anchor is missing; left for the start-up reconcile", camera, old)
                moves.append(_Move(row_id, camera, start_ms, end_ms, 0, CLOCK_NOT_REANCHORED))
                continue
            # renamed by an earlier attempt whose commit failed (the file there has this segment's clock record)
        except OSError as exc:      # disk trouble: commit what moved, retry the rest next time
            log.error("%s: cannot re-anchor %s now: %s", camera, old.name, exc)
            break
        mark_reanchored(new)
        directories.update((old.parent, new.parent))
        moves.append(_Move(row_id, camera, start_ms, end_ms, shift_ms, CLOCK_REANCHORED))
        result.moved += 1
        result.shifts.add(shift_ms)
    for directory in directories:
        try:
            fsync_dir(directory)   # another OSError is raised before the index moves: as after a crash
        except FileNotFoundError:
            continue               # emptied and removed by an earlier attempt
    for directory in directories:
        _remove_if_empty(directory)
    return moves


def _move_rows(conn: sqlite3.Connection, moves: list[_Move]) -> None:
    """Step (3), inside one write transaction: the rows, the events and gaps of the moved stretches, the tiers."""
    conn.executemany("UPDATE segments SET start_ms = start_ms + ?, end_ms = end_ms + ?, clock_state = ?"
                     " WHERE id = ? AND clock_state = ?",
                     [(m.shift_ms, m.shift_ms, m.state, m.row_id, CLOCK_UNSYNCHRONISED) for m in moves])
    by_camera: dict[str, list[_Move]] = defaultdict(list)
    for move in moves:
        if move.shift_ms:
            by_camera[move.camera].append(move)
    for camera, camera_moves in by_camera.items():
        old_from = min(m.old_start_ms for m in camera_moves)
        old_to = max(m.old_end_ms for m in camera_moves)
        _shift_events(conn, camera, camera_moves, old_from, old_to)
        _shift_gaps(conn, camera, camera_moves, old_from, old_to)
        classify(conn, camera, old_from, old_to)   # what the moved events kept there is free again
        classify(conn, camera, min(m.old_start_ms + m.shift_ms for m in camera_moves),
                 max(m.old_end_ms + m.shift_ms for m in camera_moves))


def _shift_of(moves: list[_Move], time_ms: int | None, *, end: bool) -> int:
    """The shift of the moved segment that `time_ms` lies in (an end may lie on a segment's end), else 0."""
    if time_ms is None:
        return 0
    for move in moves:
        if move.old_start_ms <= time_ms < move.old_end_ms or (end and time_ms == move.old_end_ms):
            return move.shift_ms
    return 0


def _undo_renames(layout: StorageLayout, moves: list[_Move]) -> None:
    for move in moves:
        if move.state != CLOCK_REANCHORED or not move.shift_ms:
            continue
        old = layout.segment_path(move.camera, move.old_start_ms)
        try:
            rename_no_replace(layout.segment_path(move.camera, move.old_start_ms + move.shift_ms), old)
            fsync_dir(old.parent)
        except OSError as exc:
            log.error("%s: %s stays at its re-anchored name after a failed commit (%s); the retry finds it",
                      move.camera, old.name, exc)


def _shift_events(conn: sqlite3.Connection, camera: str, moves: list[_Move], old_from: int, old_to: int) -> None:
    """Events recorded in the moved stretch move with the video they point into (their start and end each
    with the segment it lies in). An event whose true start is taken by another event of its kind stays."""
    # An open event is left alone: its worker closes it by its (camera, kind, subkind, start) as it knows it,
    # and a moved row would never be closed (the close would make a second row).
    rows = conn.execute("SELECT id, start_ms, end_ms FROM events WHERE camera = ? AND end_ms IS NOT NULL AND"
                        " ((start_ms >= ? AND start_ms <= ?) OR (end_ms >= ? AND end_ms <= ?))",
                        (camera, old_from, old_to, old_from, old_to)).fetchall()
    for row in rows:
        start_shift = _shift_of(moves, row["start_ms"], end=False)
        end_shift = _shift_of(moves, row["end_ms"], end=True)
        if not (start_shift or end_shift):
            continue
        try:
            conn.execute("UPDATE events SET start_ms = start_ms + :s, keep_from_ms = keep_from_ms + :s,"
                         " end_ms = end_ms + :e, keep_to_ms = CASE WHEN end_ms IS NULL THEN keep_to_ms"
                         " ELSE keep_to_ms + :e END WHERE id = :id",
                         {"s": start_shift, "e": end_shift, "id": row["id"]})
        except sqlite3.IntegrityError:
            log.warning("%s: an event at %s recorded before the clock was synchronised was not moved: another"
                        " event of its kind starts at its true time", camera, format_ms(row["start_ms"]))


def _shift_gaps(conn: sqlite3.Connection, camera: str, moves: list[_Move], old_from: int, old_to: int) -> None:
    """Gaps inside the moved stretch move with it. The gap where the clock moved (its start at a moved
    segment's end, its end outside: "clock not synchronised (...)") is closed by the move, or, if video was
    really missing there, keeps that part with the reason of the loss."""
    rows = conn.execute("SELECT id, start_ms, end_ms, reason FROM gaps WHERE camera = ? AND start_ms >= ?"
                        " AND start_ms <= ?", (camera, old_from, old_to)).fetchall()
    for row in rows:
        start_shift = _shift_of(moves, row["start_ms"], end=True)
        if not start_shift:
            continue
        end_shift = _shift_of(moves, row["end_ms"], end=False)
        start, end = row["start_ms"] + start_shift, row["end_ms"] + end_shift
        reason = reanchored_gap_reason(start, end, row["reason"], end_moved=bool(end_shift))
        if reason is None:
            conn.execute("DELETE FROM gaps WHERE id = ?", (row["id"],))
        else:
            conn.execute("UPDATE gaps SET start_ms = ?, end_ms = ?, reason = ? WHERE id = ?",
                         (start, end, reason, row["id"]))


def _remove_if_empty(directory: Path) -> None:
    """An hour directory emptied by the move, and its day directory (a Pi lists them at every start-up)."""
    for path in (directory, directory.parent):
        try:
            os.rmdir(path)
        except OSError:
            return   # not empty (or gone): left
