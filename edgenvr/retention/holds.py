"""Holds: video an operator wants kept whatever its age or the disk's state (an incident, a legal request).

This module owns adding, listing and releasing holds, and what a valid hold is. While a hold is in force,
its camera's segments overlapping [from_ms, to_ms) are in class HOLD (see index.retention_classes) and retention
never deletes them, even past retention_max_days or with the disk short; events overlapping it are kept
too. A hold may reach into the future: segments indexed later in its range are classified as held when
the writer commits them. A released hold stays in the table as a record of who kept what and why.

Holds are admin actions from the CLI, made while the supervisor runs. They write the index directly in
short transactions (the connection's busy timeout waits out the supervisor's writer, which waits out us)
and re-classify the hold's range in the same transaction: held video is safe from the next sweep the
moment `add_hold` returns, and a crash never leaves a hold without its effect.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from edgenvr.config.records import Config
from edgenvr.core.camera_ids import is_camera_id
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.time_format import format_ms
from edgenvr.core.units import LATEST_TIME_MS
from edgenvr.index import schema as index_schema
from edgenvr.index.retention_classes import HOLD, LONGEST_SEGMENT_MS, classify
from edgenvr.storage.layout import StorageLayout

MAX_REASON_CHARS = 500


class HoldError(ValueError):
    """A hold request that cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Hold:
    id: int
    camera: str
    from_ms: int
    to_ms: int
    reason: str
    created_ms: int
    released_ms: int | None = None
    release_reason: str = ""
    segments: int = 0   # segments this hold keeps now (0 once released)
    bytes: int = 0

    @property
    def in_force(self) -> bool:
        return self.released_ms is None

    def describe(self) -> str:
        state = "in force" if self.in_force else f"released {format_ms(self.released_ms)}"
        return (f"hold {self.id} on {self.camera} from {format_ms(self.from_ms)} to {format_ms(self.to_ms)}"
                f" ({state}): {self.segments} segments ({self.bytes / 1e6:.1f} MB) held")


def open_index(layout: StorageLayout) -> sqlite3.Connection:
    """The index for writing holds; FileNotFoundError if nothing was ever recorded in this data dir."""
    if not layout.index_path.exists():
        raise FileNotFoundError(f"no index at {layout.index_path}: nothing has been recorded with this data_dir yet")
    return index_schema.connect(layout.index_path)


def check_reason(reason: str, what: str = "reason") -> str:
    text = reason.strip()
    if not text:
        raise HoldError(f"{what} must not be empty: say why the video is kept (an incident number, a request)")
    if any(ord(character) < 0x20 or character == "\x7f" for character in text):
        raise HoldError(f"{what} must be one line of text without control characters")
    if any(0xD800 <= ord(character) <= 0xDFFF for character in text):
        # bytes the terminal's encoding could not decode (argv keeps them as surrogates); SQLite would refuse them
        raise HoldError(f"{what} is not valid text in this terminal's encoding")
    if len(text) > MAX_REASON_CHARS:
        raise HoldError(f"{what} is {len(text)} characters; at most {MAX_REASON_CHARS}")
    return text


def _check_camera(conn: sqlite3.Connection, config: Config, camera: str) -> None:
    if any(c.id == camera for c in config.cameras):
        return
    if is_camera_id(camera) and (
            conn.execute("SELECT 1 FROM cameras WHERE id = ?", (camera,)).fetchone()
            or conn.execute("SELECT 1 FROM segments WHERE camera = ? LIMIT 1", (camera,)).fetchone()):
        return  # removed from the config, but its video is still on disk
    known = ", ".join(sorted({c.id for c in config.cameras})) or "none"
    raise HoldError(f"unknown camera {camera!r}: not in {config.source} and never recorded (cameras: {known})")


def _check_range(from_ms: int, to_ms: int) -> None:
    # Refused before anything is written: a hold beyond year 9999 was once saved and then made every
    # `hold add/list/release` fail for good (no date can show it).
    for name, value in (("from", from_ms), ("to", to_ms)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise HoldError(f"the hold's {name} time must be whole epoch milliseconds, got {value!r}")
        if not 0 <= value <= LATEST_TIME_MS:
            raise HoldError(f"the hold's {name} time {format_ms(value)} is not a time edgenvr keeps: "
                            f"use a time from 1970 to {format_ms(LATEST_TIME_MS)}")
    if from_ms >= to_ms:
        raise HoldError(f"the hold must start before it ends: from {format_ms(from_ms)} is not before"
                        f" to {format_ms(to_ms)}")


def add_hold(conn: sqlite3.Connection, config: Config, camera: str, from_ms: int, to_ms: int, reason: str,
             at_ms: int | None = None, *, clock: Clock = SYSTEM_CLOCK) -> Hold:
    """Put [from_ms, to_ms) of `camera` on hold; its video moves to the held class in the same commit."""
    _check_range(from_ms, to_ms)
    _check_camera(conn, config, camera)
    text = check_reason(reason)
    created = clock.now_ms() if at_ms is None else at_ms
    with index_schema.write_transaction(conn):
        hold_id = conn.execute("INSERT INTO holds (camera, from_ms, to_ms, reason, created_ms) VALUES (?,?,?,?,?)",
                               (camera, from_ms, to_ms, text, created)).lastrowid
        classify(conn, camera, from_ms, to_ms)
    assert hold_id is not None
    return get_hold(conn, hold_id)


def release_hold(conn: sqlite3.Connection, hold_id: int, reason: str = "", at_ms: int | None = None, *,
                 clock: Clock = SYSTEM_CLOCK) -> Hold:
    """End a hold; its video goes back to event or continuous retention (and may be due at once)."""
    text = check_reason(reason, "release reason") if reason.strip() else ""
    released = clock.now_ms() if at_ms is None else at_ms
    with index_schema.write_transaction(conn):
        row = conn.execute("SELECT camera, from_ms, to_ms, reason, released_ms FROM holds WHERE id = ?",
                           (hold_id,)).fetchone()
        if row is None:
            raise HoldError(f"no hold {hold_id}: see `edgenvr hold list --all`")
        if row["released_ms"] is not None:
            raise HoldError(f"hold {hold_id} was already released at {format_ms(row['released_ms'])}")
        conn.execute("UPDATE holds SET released_ms = ?, release_reason = ? WHERE id = ?", (released, text, hold_id))
        classify(conn, row["camera"], row["from_ms"], row["to_ms"])
    return get_hold(conn, hold_id)


def get_hold(conn: sqlite3.Connection, hold_id: int) -> Hold:
    row = conn.execute("SELECT * FROM holds WHERE id = ?", (hold_id,)).fetchone()
    if row is None:
        raise HoldError(f"no hold {hold_id}: see `edgenvr hold list --all`")
    return _hold(conn, row)


def list_holds(conn: sqlite3.Connection, camera: str | None = None, include_released: bool = False) -> list[Hold]:
    """Holds in force (and released ones with `include_released`), oldest first."""
    query = "SELECT * FROM holds WHERE (? IS NULL OR camera = ?)"
    if not include_released:
        query += " AND released_ms IS NULL"
    return [_hold(conn, row) for row in conn.execute(query + " ORDER BY id", (camera, camera)).fetchall()]


def _hold(conn: sqlite3.Connection, row: sqlite3.Row) -> Hold:
    segments = size = 0
    if row["released_ms"] is None:
        # (camera, retention_class, start_ms) index: costs the held segments, not the camera's whole history.
        segments, size = conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM segments WHERE camera = ? AND retention_class = {HOLD}"
            " AND start_ms >= ? AND start_ms < ? AND end_ms > ? AND deleting = 0",
            (row["camera"], row["from_ms"] - LONGEST_SEGMENT_MS, row["to_ms"], row["from_ms"])).fetchone()
    return Hold(row["id"], row["camera"], row["from_ms"], row["to_ms"], row["reason"], row["created_ms"],
                row["released_ms"], row["release_reason"], segments, size)


def hold_to_json(hold: Hold) -> dict[str, object]:
    return {"id": hold.id, "camera": hold.camera, "from_ms": hold.from_ms, "to_ms": hold.to_ms,
            "reason": hold.reason, "created_ms": hold.created_ms, "released_ms": hold.released_ms,
            "release_reason": hold.release_reason, "in_force": hold.in_force, "segments": hold.segments,
            "bytes": hold.bytes}


__all__ = ["Hold", "HoldError", "add_hold", "check_reason", "get_hold", "hold_to_json", "list_holds",
           "open_index", "release_hold"]
