"""The disk ring: keeps recordings under the quota, above the free-space floor, and younger than max age.

A sweep picks victims oldest-first through the (retention_class, start_ms) index, so it costs what it
deletes, not what is stored. Lower retention classes go first (0 = continuous ring; later tiers such as
event video and holds get higher classes or are excluded). Deletion is crash-safe: the rows are marked
`deleting` and committed, then the files are unlinked, then the rows are removed; a crash in between is
finished by the start-up reconcile.

The free-space floor (`min_free`) wins over everything: if the disk is short, video is deleted early and
an alert is logged saying so.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass

from edgenvr.config import StorageConfig
from edgenvr.index_writer import IndexWriter
from edgenvr.storage_layout import StorageLayout, fsync_dir
from edgenvr.timebase import now_ms

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
BATCH = 200


@dataclass(frozen=True)
class SweepResult:
    deleted: int
    freed_bytes: int
    reason: str   # "" when nothing was due


class RetentionPolicy:
    def __init__(self, storage: StorageConfig, layout: StorageLayout, writer: IndexWriter,
                 segment_seconds: float) -> None:
        self.storage = storage
        self.layout = layout
        self.writer = writer
        self.segment_seconds = segment_seconds
        self._written: deque[tuple[float, int]] = deque()  # (monotonic time, bytes) of recent segments
        self._starved = False  # the floor cannot be met by deleting video; alerted once until it recovers

    def note_written(self, size: int) -> None:
        now = time.monotonic()
        self._written.append((now, size))
        while self._written and self._written[0][0] < now - 60:
            self._written.popleft()

    def write_rate(self) -> float:
        """Bytes per second written over the last minute."""
        if not self._written:
            return 0.0
        span = max(time.monotonic() - self._written[0][0], self.segment_seconds)
        return sum(size for _, size in self._written) / span

    def headroom_bytes(self) -> int:
        """Room for what recorders write before the next sweep, plus the segments they have open now."""
        return int(self.write_rate() * (2 * self.storage.sweep_seconds + 2 * self.segment_seconds))

    def _usage(self) -> tuple[int, int, int]:
        """(bytes used by the ring, quota limit in bytes, free bytes on the filesystem)."""
        disk = shutil.disk_usage(self.layout.data_dir)
        index_bytes = sum(p.stat().st_size for p in self.layout.data_dir.glob("index.sqlite3*"))
        used = self.writer.indexed_bytes + self.writer.pending_bytes + index_bytes
        return used, self.storage.quota.limit_bytes(disk.total), disk.free

    def bytes_to_free(self) -> tuple[int, str]:
        used, limit, free = self._usage()
        headroom = self.headroom_bytes()
        over_quota = used + headroom - limit
        under_floor = self.storage.min_free_bytes + headroom - free
        need = max(over_quota, under_floor, 0)
        if need == 0:
            return 0, ""
        return need, ("free space below min_free" if under_floor >= over_quota else "quota reached")

    def sweep(self) -> SweepResult:
        """Delete what is due. Commits the index (pending inserts included) before unlinking anything."""
        deleted = freed = 0
        reasons: list[str] = []
        if self.storage.max_age_days:
            cutoff = now_ms() - int(self.storage.max_age_days * DAY_MS)
            while True:
                victims = self.writer.conn.execute(
                    "SELECT id, camera, start_ms, bytes FROM segments WHERE retention_class = 0 AND deleting = 0"
                    " AND start_ms < ? ORDER BY start_ms LIMIT ?", (cutoff, BATCH)).fetchall()
                if not victims:
                    break
                d, f = self._delete(victims)
                deleted, freed = deleted + d, freed + f
                reasons.append("max_age_days")
        need, why = self.bytes_to_free()
        if need == 0:
            self._starved = False
        while need > 0:
            victims = self.writer.conn.execute(
                "SELECT id, camera, start_ms, bytes FROM segments WHERE deleting = 0"
                " ORDER BY retention_class, start_ms LIMIT ?", (BATCH,)).fetchall()
            chosen, total = [], 0
            for victim in victims:
                chosen.append(victim)
                total += victim["bytes"]
                if total >= need:
                    break
            if not chosen:
                if why == "free space below min_free" and not self._starved:
                    log.error("ALERT: free space below min_free and no recording left to delete: "
                              "something else is filling the disk")
                self._starved = True
                break
            d, f = self._delete(chosen)
            deleted, freed = deleted + d, freed + f
            reasons.append(why)
            need, why = self.bytes_to_free()
        reason = ", ".join(dict.fromkeys(reasons))
        if deleted:
            log_fn = log.warning if "free space below min_free" in reasons else log.info
            log_fn("retention: deleted %d segments (%.1f MB): %s", deleted, freed / 1e6, reason)
        return SweepResult(deleted, freed, reason)

    def _delete(self, victims: list) -> tuple[int, int]:
        ids = [(v["id"],) for v in victims]
        writer = self.writer
        writer.transaction(lambda conn: conn.executemany("UPDATE segments SET deleting = 1 WHERE id = ?", ids))
        directories = set()
        for victim in victims:
            path = self.layout.segment_path(victim["camera"], victim["start_ms"])
            try:
                path.unlink()
            except FileNotFoundError:
                log.warning("retention: %s was already gone", path)
            directories.add(path.parent)
        for directory in directories:
            fsync_dir(directory)
            _remove_empty_dirs(directory, stop=directory.parent.parent)  # keep camera dirs
        writer.transaction(lambda conn: conn.executemany("DELETE FROM segments WHERE id = ?", ids))
        freed = sum(v["bytes"] for v in victims)
        writer.indexed_bytes -= freed
        return len(victims), freed


def _remove_empty_dirs(directory: "os.PathLike[str]", stop: "os.PathLike[str]") -> None:
    """Hour and day directories left empty by the ring are removed (a Pi lists them at every start-up)."""
    current = os.fspath(directory)
    stop_path = os.fspath(stop)
    while current.startswith(stop_path) and current != stop_path:
        try:
            os.rmdir(current)
        except OSError:
            return  # not empty (the recorder may be writing there) or already gone
        current = os.path.dirname(current)
