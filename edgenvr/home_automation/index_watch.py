"""What the MQTT process publishes, read from the index: each camera's state (its recorder's state, whether a
motion event is open, which tamper events are open) and the events that started or ended since the last look.

Owns turning index rows into those views and deciding what is news. Invariants:
- Read-only and short: a look is a few reads by key (the camera rows; the event rows above the highest event id
  seen; the rows of the events known to be open, by id), never a scan of the event history, so looking every
  half second costs the recorder's writer nothing (WAL readers never block it). Only the first look scans the
  open events once.
- The first look is where news starts: what is open then is state, not news, so a (re)started process publishes
  the current states and never replays the history of events.
- Each event is news once per phase: START when its row is first seen (with END at once if it is already
  closed: it opened and closed between two looks), END when its end appears. SQLite gives a new row the highest
  id + 1, so rows above the mark are new; when the mark's own row is gone or another (the newest events were
  deleted and an id reused), the mark moves below it and every row above it is new.
Failure paths: sqlite3 errors propagate (the caller logs them and looks again later); the state of a camera the
index has no row for yet is "unknown".
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from enum import StrEnum

from edgenvr.core.records import EventKind, RecorderState

_EVENT_COLUMNS = "id, camera, kind, subkind, start_ms, end_ms, zones, peak_score, snapshot, detail"


class EventPhase(StrEnum):
    START = "start"
    END = "end"


@dataclass(frozen=True)
class CameraView:
    """A camera as the index says it is now."""
    camera: str
    state: str                 # a RecorderState value
    since_ms: int | None
    reason: str
    motion: bool               # a motion event is open
    tamper: tuple[str, ...]    # the open tamper events' kinds, sorted

    @property
    def online(self) -> bool:
        return self.state == RecorderState.RECORDING


@dataclass(frozen=True)
class EventNews:
    """An event that started or ended (index.queries.EventRow's fields, and which of the two happened)."""
    phase: EventPhase
    id: int
    camera: str
    kind: str
    subkind: str
    start_ms: int
    end_ms: int | None
    zones: tuple[str, ...]
    peak_score: float
    snapshot: str | None       # path relative to the data dir
    detail: str


@dataclass(frozen=True)
class Look:
    cameras: dict[str, CameraView]      # every configured camera, in config order
    news: list[EventNews]               # oldest first
    newest_snapshots: dict[str, str]    # first look only: camera -> its newest event snapshot (relative path)
    unconfigured: tuple[str, ...]       # cameras the index knows that the config no longer has


@dataclass
class _Open:
    camera: str
    kind: str
    subkind: str


@dataclass
class IndexWatch:
    camera_ids: tuple[str, ...]
    _mark: int | None = None                              # highest event id seen; None before the first look
    _mark_key: tuple[str, str, str, int] | None = None    # that row's (camera, kind, subkind, start_ms)
    _open: dict[int, _Open] = field(default_factory=dict)

    def look(self, conn: sqlite3.Connection) -> Look:
        first = self._mark is None
        news: list[EventNews] = []
        snapshots: dict[str, str] = {}
        if first:
            self._mark, self._mark_key = self._newest(conn)
            for row in conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE end_ms IS NULL"):
                self._open[row[0]] = _Open(row[1], row[2], row[3])
            for camera in self.camera_ids:   # newest first by id: stops at the camera's newest snapshot
                found = conn.execute("SELECT snapshot FROM events WHERE camera = ? AND snapshot IS NOT NULL"
                                     " ORDER BY id DESC LIMIT 1", (camera,)).fetchone()
                if found is not None:
                    snapshots[camera] = found[0]
        else:
            self._check_mark(conn)
            rows = conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id > ? ORDER BY id",
                                (self._mark,)).fetchall()
            for row in rows:
                news.append(_news(EventPhase.START, row))
                if row[5] is None:   # end_ms
                    self._open[row[0]] = _Open(row[1], row[2], row[3])
                else:
                    news.append(_news(EventPhase.END, row))
            if rows:
                last = rows[-1]
                self._mark, self._mark_key = last[0], (last[1], last[2], last[3], last[4])
            news += self._closed(conn, {row[0] for row in rows})
        configured = set(self.camera_ids)
        rows = {row[0]: row for row in conn.execute("SELECT id, state, state_since_ms, state_reason FROM cameras")}
        return Look(self._cameras(rows), [item for item in news if item.camera in configured], snapshots,
                    tuple(sorted(set(rows) - configured)))

    def _newest(self, conn: sqlite3.Connection) -> tuple[int, tuple[str, str, str, int] | None]:
        row = conn.execute("SELECT id, camera, kind, subkind, start_ms FROM events ORDER BY id DESC LIMIT 1").fetchone()
        return (0, None) if row is None else (row[0], (row[1], row[2], row[3], row[4]))

    def _check_mark(self, conn: sqlite3.Connection) -> None:
        if self._mark_key is None:
            return
        row = conn.execute("SELECT camera, kind, subkind, start_ms FROM events WHERE id = ?", (self._mark,)).fetchone()
        if row is None or tuple(row) != self._mark_key:   # deleted, perhaps reused: rows above what is left are new
            below = conn.execute("SELECT id, camera, kind, subkind, start_ms FROM events WHERE id < ?"
                                 " ORDER BY id DESC LIMIT 1", (self._mark,)).fetchone()
            self._mark, self._mark_key = (0, None) if below is None else (below[0], tuple(below[1:]))

    def _closed(self, conn: sqlite3.Connection, just_seen: set[int]) -> list[EventNews]:
        """END news for the events known open whose end is now written (not those first seen in this look: their
        row was read just now); rows gone (deleted) are forgotten."""
        waiting = [event_id for event_id in self._open if event_id not in just_seen]
        found: dict[int, sqlite3.Row | tuple] = {}
        for start in range(0, len(waiting), 500):   # SQLite's limit on bound values is far above this
            chunk = waiting[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id IN ({marks})", chunk):
                found[row[0]] = row
        news = []
        for event_id in waiting:
            row = found.get(event_id)
            if row is None:
                del self._open[event_id]
            elif row[5] is not None:
                del self._open[event_id]
                news.append(_news(EventPhase.END, row))
        return sorted(news, key=lambda item: (item.end_ms or 0, item.id))

    def _cameras(self, rows: dict[str, sqlite3.Row | tuple]) -> dict[str, CameraView]:
        views = {}
        for camera in self.camera_ids:
            row = rows.get(camera)
            open_here = [event for event in self._open.values() if event.camera == camera]
            views[camera] = CameraView(
                camera, row[1] if row else RecorderState.UNKNOWN, row[2] if row else None,
                row[3] if row else "never recorded",
                motion=any(event.kind == EventKind.MOTION for event in open_here),
                tamper=tuple(sorted({event.subkind for event in open_here if event.kind == EventKind.TAMPER})))
        return views


def _news(phase: EventPhase, row: sqlite3.Row | tuple) -> EventNews:
    event_id, camera, kind, subkind, start_ms, end_ms, zones, peak_score, snapshot, detail = tuple(row)
    return EventNews(phase, event_id, camera, kind, subkind, start_ms, end_ms if phase is EventPhase.END else None,
                     tuple(json.loads(zones)), peak_score, snapshot, detail)
