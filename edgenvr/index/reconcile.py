"""Keeps the index and the disk telling the same story. Run at every start-up, before recording.

`check_consistency` only reports; `reconcile` repairs:
- a row marked `deleting` (a sweep was cut off): unlink its file if still there, drop the row;
- a row whose file is missing or has the wrong size: drop the row, record a gap saying why;
- a complete file with no row (its batch was lost in a crash): probe it and adopt it;
- a `.partial` left by a crash: remux its readable prefix into a segment and adopt it, or quarantine it.
Nothing is deleted silently: every repair is logged, unreadable files go to quarantine/.

Work is done one hour-bucket at a time (rows by start_ms, directory listings), so memory stays bounded
and the cost is one pass over the index and one listing of the segment tree.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from edgenvr.core.records import SegmentOrigin
from edgenvr.core.units import HOUR_MS
from edgenvr.index.writer import IndexWriter
from edgenvr.recording.segment_files import (
    PartialNotFinalised,
    finalise_partial,
    quarantine,
    record_from_file,
)
from edgenvr.storage.layout import StorageLayout, parse_segment_name

log = logging.getLogger(__name__)


@dataclass
class ConsistencyReport:
    rows: int = 0
    files: int = 0
    rows_without_file: list[str] = field(default_factory=list)
    rows_with_wrong_size: list[str] = field(default_factory=list)
    files_without_row: list[str] = field(default_factory=list)
    partial_files: list[str] = field(default_factory=list)
    # Rows of deleted segments waiting to be dropped with the next commit (retention.policy): invisible to
    # readers, finished by reconcile after a crash, so not a disagreement between index and disk.
    rows_marked_deleting: int = 0

    @property
    def consistent(self) -> bool:
        return not (self.rows_without_file or self.rows_with_wrong_size or self.files_without_row
                    or self.partial_files)

    def summary(self) -> str:
        return (f"{self.rows} rows, {self.files} files; missing files {len(self.rows_without_file)}, "
                f"wrong size {len(self.rows_with_wrong_size)}, unindexed files {len(self.files_without_row)}, "
                f"partial files {len(self.partial_files)}, rows marked deleting {self.rows_marked_deleting}")


@dataclass
class _Bucket:
    """What one camera has in one hour: index rows and files, each keyed by start_ms."""
    camera: str
    rows: dict[int, tuple[int, int]] = field(default_factory=dict)    # start_ms -> (row id, bytes)
    files: dict[int, Path] = field(default_factory=dict)              # start_ms -> complete file
    partials: list[Path] = field(default_factory=list)


def _hour_dirs(layout: StorageLayout) -> dict[int, list[tuple[str, Path]]]:
    """hour bucket -> [(camera, hour directory)] for every directory in the segment tree."""
    result: dict[int, list[tuple[str, Path]]] = defaultdict(list)
    for camera in layout.cameras_on_disk():
        for hour_ms, directory in layout.hour_dirs(camera):
            result[hour_ms // HOUR_MS].append((camera, directory))
    return result


def _buckets(conn: sqlite3.Connection, layout: StorageLayout) -> Iterator[list[_Bucket]]:
    dirs = _hour_dirs(layout)
    rows_by_hour: dict[int, list[sqlite3.Row]] = defaultdict(list)
    row_iter = conn.execute("SELECT id, camera, start_ms, bytes FROM segments WHERE deleting = 0 ORDER BY start_ms")
    pending_row = next(row_iter, None)
    hours = sorted(dirs)
    # Merge-join hours that have directories with hours that have rows, in time order.
    while hours or pending_row is not None:
        row_hour = pending_row["start_ms"] // HOUR_MS if pending_row is not None else None
        hour = min(h for h in (hours[0] if hours else None, row_hour) if h is not None)
        if hours and hours[0] == hour:
            hours.pop(0)
        while pending_row is not None and pending_row["start_ms"] // HOUR_MS == hour:
            rows_by_hour[hour].append(pending_row)
            pending_row = next(row_iter, None)
        per_camera: dict[str, _Bucket] = {}
        for row in rows_by_hour.pop(hour, []):
            per_camera.setdefault(row["camera"], _Bucket(row["camera"])).rows[row["start_ms"]] = (row["id"], row["bytes"])
        for camera, directory in dirs.get(hour, []):
            bucket = per_camera.setdefault(camera, _Bucket(camera))
            for entry in os.scandir(directory):
                parsed = parse_segment_name(entry.name)
                if parsed is None:
                    continue
                start_ms, is_partial = parsed
                (bucket.partials.append(Path(entry.path)) if is_partial
                 else bucket.files.__setitem__(start_ms, Path(entry.path)))
        yield list(per_camera.values())


def _compare(bucket: _Bucket, report: ConsistencyReport) -> tuple[list[tuple[int, int, int, Path | None]], list[Path]]:
    """Add one bucket's disagreements to `report`. Returns the bad rows as (start_ms, row id, bytes,
    damaged file or None when the file is missing) and the files without a row, oldest first."""
    report.rows += len(bucket.rows)
    report.files += len(bucket.files)
    report.partial_files += [str(p) for p in sorted(bucket.partials)]
    bad_rows: list[tuple[int, int, int, Path | None]] = []
    for start_ms, (row_id, size) in bucket.rows.items():
        path = bucket.files.get(start_ms)
        if path is None:
            report.rows_without_file.append(f"{bucket.camera}/{start_ms}")
            bad_rows.append((start_ms, row_id, size, None))
        elif path.stat().st_size != size:
            report.rows_with_wrong_size.append(str(path))
            bad_rows.append((start_ms, row_id, size, path))
    unindexed = [p for s, p in sorted(bucket.files.items()) if s not in bucket.rows]
    report.files_without_row += [str(p) for p in unindexed]
    return bad_rows, unindexed


def check_consistency(conn: sqlite3.Connection, layout: StorageLayout) -> ConsistencyReport:
    """Compare index and disk without changing either (`edgenvr check-index`, tests)."""
    report = ConsistencyReport()
    report.rows_marked_deleting = conn.execute("SELECT COUNT(*) FROM segments WHERE deleting = 1").fetchone()[0]
    for buckets in _buckets(conn, layout):
        for bucket in buckets:
            _compare(bucket, report)
    return report


def reconcile(writer: IndexWriter, layout: StorageLayout) -> ConsistencyReport:
    """Repair index and disk so that `check_consistency` finds nothing. Returns what was found."""
    conn = writer.conn
    found = ConsistencyReport()
    # Interrupted deletions: the file goes now, the row with the one commit at the end.
    finished = conn.execute("SELECT id, camera, start_ms FROM segments WHERE deleting = 1").fetchall()
    for _row_id, camera, start_ms in finished:
        layout.segment_path(camera, start_ms).unlink(missing_ok=True)
    found.rows_marked_deleting = len(finished)
    if finished:
        log.info("reconcile: finishing %d interrupted deletions", len(finished))

    dropped_rows: list[tuple[int, str, int, int, str]] = []
    for buckets in _buckets(conn, layout):
        for bucket in buckets:
            bad_rows, unindexed = _compare(bucket, found)
            for start_ms, row_id, size, damaged in bad_rows:
                if damaged is None:
                    dropped_rows.append((row_id, bucket.camera, start_ms, size, "segment file missing"))
                else:
                    quarantine(layout, damaged, f"size {damaged.stat().st_size} differs from indexed {size}")
                    dropped_rows.append((row_id, bucket.camera, start_ms, size, "segment file damaged"))
            for path in unindexed:
                try:
                    writer.add_segment(record_from_file(layout, bucket.camera, path, origin=SegmentOrigin.ADOPTED))
                    log.info("reconcile: adopted %s", path)
                except Exception as exc:  # noqa: BLE001 - any unreadable file goes to quarantine
                    quarantine(layout, path, f"unindexed file not readable: {exc}")
            for partial in sorted(bucket.partials):
                try:
                    record = finalise_partial(layout, bucket.camera, partial)
                except PartialNotFinalised as exc:
                    log.error("reconcile: %s; left for the next start-up", exc)
                    continue
                if record is not None:
                    writer.add_segment(record)
                    log.info("reconcile: recovered %s (%d ms)", record.path, record.duration_ms)
    for _row_id, camera, start_ms, _size, reason in dropped_rows:
        log.error("reconcile: %s for %s at %d; row removed and recorded as a gap", reason, camera, start_ms)

    def repair_rows(conn: sqlite3.Connection) -> None:
        """Every row change of the reconcile, in the same transaction as the adopted rows."""
        conn.executemany("DELETE FROM segments WHERE id = ?", [(row[0],) for row in finished])
        conn.executemany("INSERT INTO gaps (camera, start_ms, end_ms, reason)"
                         " SELECT camera, start_ms, end_ms, ? FROM segments WHERE id = ?",
                         [(reason, row_id) for row_id, _c, _s, _b, reason in dropped_rows])
        conn.executemany("DELETE FROM segments WHERE id = ?", [(row[0],) for row in dropped_rows])

    writer.commit(also=repair_rows)
    writer.note_deleted(sum(size for _r, _c, _s, size, _reason in dropped_rows))
    if not found.consistent:
        log.warning("reconcile: %s", found.summary())
    else:
        log.info("reconcile: index and disk agree (%d segments)", found.rows)
    return found


def finalise_leftover_partials(writer: IndexWriter, layout: StorageLayout, camera_ids: list[str]) -> int:
    """After a recorder process died: finalise the `.partial` files it left, before it is restarted.

    A partial can only be in one of a camera's two newest hour directories (the hour may have turned
    while it was open), so this looks nowhere else."""
    recovered = 0
    for camera in camera_ids:
        hours = [directory for _hour_ms, directory in layout.hour_dirs(camera)[-2:]]
        partials = sorted(Path(e.path) for hour in hours for e in os.scandir(hour)
                          if (parsed := parse_segment_name(e.name)) is not None and parsed[1])
        for partial in partials:
            try:
                record = finalise_partial(layout, camera, partial)
            except PartialNotFinalised as exc:
                log.error("%s; left for the next start-up", exc)
                continue
            if record is not None:
                writer.add_segment(record)
                recovered += 1
                log.info("recovered %s (%d ms) left by a dead recorder", record.path, record.duration_ms)
    return recovered
