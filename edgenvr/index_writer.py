"""The one writer of the index: batches segment rows, gaps and camera states into few small commits.

Crash safety never depends on a batch reaching the disk: segment files are durable before they are
announced, and the start-up reconcile adopts any file whose row was lost with an uncommitted batch.
Gaps are derived here, where the last indexed end of every camera is known even across restarts.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Callable

from edgenvr.records import CameraState, GapRecord, SegmentRecord

log = logging.getLogger(__name__)

# A hole between two segments shorter than this is timing jitter at a reconnect, not a gap.
GAP_THRESHOLD_MS = 500


@dataclass
class _Camera:
    state: str = "unknown"
    since_ms: int | None = None
    reason: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    last_end_ms: int | None = None
    last_problem: str = ""   # why the camera last stopped recording, used as the reason of the next gap


class IndexWriter:
    def __init__(self, conn: sqlite3.Connection, on_disk_full: Callable[[], bool] | None = None) -> None:
        self.conn = conn
        self.on_disk_full = on_disk_full  # frees emergency space; returns whether it could
        self._segments: list[SegmentRecord] = []
        self._gaps: list[GapRecord] = []
        self._dirty: set[str] = set()
        self._cameras: dict[str, _Camera] = {}
        self.last_commit = time.monotonic()
        self.indexed_bytes = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM segments WHERE deleting = 0").fetchone()[0]
        for row in conn.execute("SELECT id, state, state_since_ms, state_reason, dropped_json, last_end_ms FROM cameras"):
            self._cameras[row["id"]] = _Camera(row["state"], row["state_since_ms"], row["state_reason"],
                                               json.loads(row["dropped_json"]), row["last_end_ms"], row["state_reason"])

    def _camera(self, camera_id: str) -> _Camera:
        return self._cameras.setdefault(camera_id, _Camera())

    @property
    def pending_bytes(self) -> int:
        return sum(s.bytes for s in self._segments)

    def add_segment(self, segment: SegmentRecord) -> None:
        camera = self._camera(segment.camera)
        if camera.last_end_ms is not None and segment.start_ms - camera.last_end_ms > GAP_THRESHOLD_MS:
            reason = camera.last_problem or "recorder was not running"
            self._gaps.append(GapRecord(segment.camera, camera.last_end_ms, segment.start_ms, reason))
        camera.last_problem = ""
        if camera.last_end_ms is None or segment.end_ms > camera.last_end_ms:
            camera.last_end_ms = segment.end_ms
        self._segments.append(segment)
        self._dirty.add(segment.camera)

    def set_state(self, state: CameraState) -> None:
        camera = self._camera(state.camera)
        if state.state in ("reconnecting", "offline") and state.reason:
            camera.last_problem = state.reason
        elif state.state == "stopped" and not camera.last_problem:
            camera.last_problem = "recording stopped"
        before = (camera.state, camera.since_ms, camera.reason, camera.dropped)
        camera.state, camera.since_ms, camera.reason = state.state, state.since_ms, state.reason
        camera.dropped = dict(state.dropped)
        if (camera.state, camera.since_ms, camera.reason, camera.dropped) != before:
            self._dirty.add(state.camera)  # unchanged reports cost no index write

    def transaction(self, work: Callable[[sqlite3.Connection], None]) -> None:
        """Run `work` in one write transaction. If the disk is full, give up the emergency reserve and
        try once more; a failure is raised with nothing half-written (the transaction rolls back)."""
        for attempt in (1, 2):
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                work(self.conn)
                self.conn.execute("COMMIT")
                return
            except sqlite3.OperationalError as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                disk_full = "full" in str(exc)
                if not (attempt == 1 and disk_full and self.on_disk_full is not None and self.on_disk_full()):
                    raise

    def commit(self) -> int:
        """Write everything pending in one transaction. Returns the number of segments written.
        On failure the batch stays pending (nothing is lost: the files are on disk) and the error is raised."""
        segments, gaps, dirty = self._segments, self._gaps, self._dirty
        self.last_commit = time.monotonic()
        if not (segments or gaps or dirty):
            return 0

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO segments (camera, start_ms, end_ms, bytes, sha256, codec, width, height, packets,"
                " wall_end_ms, origin) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(s.camera, s.start_ms, s.end_ms, s.bytes, bytes.fromhex(s.sha256), s.codec, s.width, s.height,
                  s.packets, s.wall_end_ms, s.origin) for s in segments])
            conn.executemany("INSERT INTO gaps (camera, start_ms, end_ms, reason) VALUES (?,?,?,?)",
                             [(g.camera, g.start_ms, g.end_ms, g.reason) for g in gaps])
            conn.executemany(
                "INSERT INTO cameras (id, state, state_since_ms, state_reason, dropped_json, last_end_ms)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET state=excluded.state,"
                " state_since_ms=excluded.state_since_ms, state_reason=excluded.state_reason,"
                " dropped_json=excluded.dropped_json, last_end_ms=excluded.last_end_ms",
                [(cid, c.state, c.since_ms, c.reason, json.dumps(c.dropped, sort_keys=True), c.last_end_ms)
                 for cid in sorted(dirty) for c in [self._cameras[cid]]])

        self.transaction(write)
        self._segments, self._gaps, self._dirty = [], [], set()
        self.indexed_bytes += sum(s.bytes for s in segments)
        return len(segments)
