"""Opening the index at start-up: as it is, or, when it is missing or corrupt, a fresh one to rebuild.

This module owns that decision. Invariants:
- Only damage that SQLite itself reports moves a file: "file is not a database" or "malformed" (on open,
  migration or `PRAGMA quick_check`), or quick_check finding anything wrong. The damaged index is moved
  aside with its -wal and -shm (index.sqlite3.corrupt-<epoch ms>, storage.layout), never deleted, and
  the move is fsynced. A fresh index takes its place.
- An index from a newer edgenvr is not corrupt: it is refused (IndexVersionError) and left where it is.
  Any other failure (locked, I/O error, permissions, disk full) is raised as it is, touching nothing.
- A missing or empty index is created fresh; a -wal or -shm left without their database belong to no
  index and are moved aside like a corrupt one (SQLite would otherwise replay them into the new file).

The start-up reconcile (index.reconcile) then rebuilds the segment rows from the row each segment file
carries in its `user.edgenvr` attribute, in batches. What has no second source is lost with the old
index: events, holds (held video becomes ordinary ring video), reference views, camera states, and the
reasons of gaps (gaps are derived again, as "recorder was not running"). That is logged as an ERROR with
where the old file went: it still holds them for a human.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.index import schema as index_schema
from edgenvr.storage.durable_writes import fsync_dir
from edgenvr.storage.layout import StorageLayout, sqlite_companions

log = logging.getLogger(__name__)

LOST_WITH_THE_INDEX = ("events, holds (held video is ordinary ring video again), reference views, camera states"
                       " and the reasons of gaps cannot be rebuilt")
# SQLite's primary result codes for a damaged file (the extended codes keep them in their low byte)
_DAMAGE_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_QUICK_CHECK_LINES = 5   # problems quick_check reports at most (it stops counting there)


@dataclass(frozen=True)
class OpenedIndex:
    conn: sqlite3.Connection
    rebuild: str = ""              # why the index is new and must be rebuilt from the files ("": opened as it was)
    moved_to: Path | None = None   # where the damaged index went


def is_damage(exc: BaseException) -> bool:
    """Whether SQLite says the file itself is damaged (not locked, not an I/O error, not a newer schema)."""
    if isinstance(exc, index_schema.IndexVersionError) or not isinstance(exc, sqlite3.DatabaseError):
        return False   # a newer schema is a DatabaseError too, and must never be moved aside
    code = getattr(exc, "sqlite_errorcode", None)   # set only on what SQLite itself raised
    return code is not None and code & 0xFF in _DAMAGE_CODES


def open_or_rebuild(layout: StorageLayout, *, clock: Clock = SYSTEM_CLOCK) -> OpenedIndex:
    """The index, opened and migrated; a fresh one in place of a missing, empty or corrupt one (see the
    module docstring). Raises IndexVersionError for a newer index, sqlite3.Error / OSError for the rest."""
    path = layout.index_path
    cameras = layout.cameras_on_disk()
    if not path.exists():
        leftovers = [p for p in sqlite_companions(path) if p.exists()]
        if leftovers:
            moved = _move_aside(layout, leftovers, clock)
            log.warning("%s left without their index moved to %s", ", ".join(p.name for p in leftovers), moved)
        return _fresh(layout, index_schema.connect(path), cameras, "missing")
    try:
        version, damage = _inspect(path)
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        version, damage = 0, str(exc)
    if not damage:
        try:
            conn = index_schema.connect(path)   # refuses a newer schema
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            damage = str(exc)
        else:
            if version == 0:   # an empty file (no schema before `connect` made one): nothing was ever in it
                return _fresh(layout, conn, cameras, "empty")
            return OpenedIndex(conn)
    moved = _move_aside(layout, [path, *sqlite_companions(path)], clock)
    log.error("index %s is corrupt (%s): moved to %s (kept, not deleted); a new index is rebuilt from the rows the"
              " segment files carry; %s", path, damage, moved, LOST_WITH_THE_INDEX)
    return OpenedIndex(index_schema.connect(path), f"corrupt: {damage}", moved)


def _inspect(path: Path) -> tuple[int, str]:
    """(schema version, damage found by quick_check or ""). Reads only: a damaged file is moved as it was.
    A newer schema is not checked (it is refused when opened)."""
    # Read-only: closing a read-write connection would checkpoint the WAL into a file that may be damaged.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, isolation_level=None)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(index_schema.MIGRATIONS):
            return version, ""
        found = [row[0] for row in conn.execute(f"PRAGMA quick_check({_QUICK_CHECK_LINES})")]
        return version, "" if found == ["ok"] else "quick_check: " + " | ".join(" ".join(f.split()) for f in found)
    finally:
        conn.close()


def _fresh(layout: StorageLayout, conn: sqlite3.Connection, cameras: list[str], why: str) -> OpenedIndex:
    if not cameras:   # a new box: nothing to rebuild
        log.info("created index %s", layout.index_path)
        return OpenedIndex(conn)
    log.error("index %s is %s but the data dir has video of %s: a new index is rebuilt from the rows the segment"
              " files carry; %s", layout.index_path, why, ", ".join(cameras), LOST_WITH_THE_INDEX)
    return OpenedIndex(conn, why)


def _move_aside(layout: StorageLayout, paths: list[Path], clock: Clock) -> Path:
    """Rename the database and its companions that exist to the set-aside name (companions keep SQLite's
    -wal/-shm suffixes on it) and make the renames durable. Returns the new database name."""
    at_ms = clock.now_ms()
    target = layout.index_set_aside_path(at_ms)
    while any(p.exists() for p in (target, *sqlite_companions(target))):
        at_ms += 1   # never overwrite an earlier one (a clock without RTC may give the same time again)
        target = layout.index_set_aside_path(at_ms)
    wal, shm = sqlite_companions(layout.index_path)
    names = {layout.index_path: target, wal: sqlite_companions(target)[0], shm: sqlite_companions(target)[1]}
    for path in paths:   # the database first: a crash half-way leaves companions, moved aside at the next start
        if path.exists():
            os.rename(path, names[path])
    fsync_dir(layout.data_dir)
    return target
