"""Keeps the index and the disk telling the same story. Run at every start-up, before recording.

`check_consistency` only reports; `reconcile` repairs:
- a row marked `deleting` (a sweep was cut off): unlink its file if still there, drop the row;
- a row whose file is missing or has the wrong size: drop the row, record a gap saying why;
- a complete file with no row (its batch was lost in a crash): probe it and adopt it;
- a `.partial` left by a crash: remux its readable prefix into a segment and adopt it, or quarantine it.
Nothing is deleted silently: every repair is logged, unreadable files go to quarantine/.

Work is done one hour-bucket at a time (rows by start_ms, directory listings), so memory stays bounded
and the cost is one pass over the index and one listing of the segment tree.

Repairs are committed in batches (BATCH_ROWS rows or BATCH_SECONDS, whichever comes first), in time order:
rebuilding a lost index of a million segments holds one batch in memory, not the million rows, and a
reconcile killed half-way keeps every batch it committed; the next one finds those files indexed and
adopts only the rest. A batch is a few thousand rows, so its commit costs little next to its rows.
`progress` is told after each batch and every few seconds (the supervisor passes it on to systemd).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections import defaultdict, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

from edgenvr.core.records import SegmentOrigin, SegmentRecord
from edgenvr.core.time_format import format_ms
from edgenvr.core.units import HOUR_MS
from edgenvr.index.writer import GAP_FILE_DAMAGED, GAP_FILE_MISSING, IndexWriter
from edgenvr.recording.segment_files import (
    PartialNotFinalised,
    finalise_partial,
    quarantine,
    record_from_file,
)
from edgenvr.storage.deletion import DataFile, delete_data_file
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
    # The lists above name at most `names_kept` entries each (None: all), so that rebuilding a lost index of a
    # million files does not hold a million paths; the counts below are always exact.
    names_kept: int | None = None
    missing_files: int = 0
    wrong_size_files: int = 0
    unindexed_files: int = 0
    partials: int = 0

    @property
    def consistent(self) -> bool:
        return not (self.missing_files or self.wrong_size_files or self.unindexed_files or self.partials)

    def summary(self) -> str:
        return (f"{self.rows} rows, {self.files} files; missing files {self.missing_files}, "
                f"wrong size {self.wrong_size_files}, unindexed files {self.unindexed_files}, "
                f"partial files {self.partials}, rows marked deleting {self.rows_marked_deleting}")

    def _name(self, names: list[str], name: str) -> None:
        if self.names_kept is None or len(names) < self.names_kept:
            names.append(name)


@dataclass
class _Bucket:
    """What one camera has in one hour: index rows and files, each keyed by start_ms."""
    camera: str
    rows: dict[int, tuple[int, int]] = field(default_factory=dict)    # start_ms -> (row id, bytes)
    files: dict[int, Path] = field(default_factory=dict)              # start_ms -> complete file
    partials: list[Path] = field(default_factory=list)


# A batch: about 500 bytes of memory per waiting row (~2.5 MB), and a commit per few thousand rows.
BATCH_ROWS = 5000
BATCH_SECONDS = 5.0   # also the longest time between two progress reports, but for one camera-hour's work
NAMES_KEPT = 1000     # paths a reconcile's report names per kind of disagreement (the counts are exact)


@dataclass(frozen=True)
class ReconcileProgress:
    """How far a reconcile has gone; what is committed survives a kill."""
    hours: int             # hours of the segment tree (hours with rows only are not known ahead)
    hours_walked: int = 0
    files: int = 0         # complete segment files seen
    added: int = 0         # rows committed for files that had none (adopted, or recovered partials)
    dropped: int = 0       # rows committed as dropped (file missing or damaged, deletion finished)
    commits: int = 0       # batches committed
    done: bool = False

    def describe(self) -> str:
        return (f"hour {self.hours_walked} of {self.hours}, {self.files} segment files seen, {self.added} rows added,"
                f" {self.dropped} dropped, {self.commits} batches committed{' (done)' if self.done else ''}")


class _RepairBatch:
    """A reconcile's repairs waiting for their commit: rows added (pending in the writer, with the gaps it
    derives), rows to drop (with the gap that says why). Committed once `batch_rows` wait or `batch_seconds`
    passed, checked after each camera-hour, so memory holds at most a batch, a camera-hour of rows and the
    listing of one hour of every camera."""

    def __init__(self, writer: IndexWriter, progress: Callable[[ReconcileProgress], None] | None, batch_rows: int,
                 batch_seconds: float, state: ReconcileProgress) -> None:
        self.writer = writer
        self.tell = progress
        self.batch_rows = batch_rows
        self.batch_seconds = batch_seconds
        self.state = state
        self.drops: list[tuple[int, str]] = []   # (row id, gap reason; "" for no gap)
        self.dropped_bytes = 0
        self.added: dict[str, tuple[int, int, int]] = {}   # camera -> (rows, first start_ms, last start_ms)
        self.last_told = writer.clock.monotonic()

    @property
    def waiting(self) -> int:
        return len(self.drops) + sum(rows for rows, _first, _last in self.added.values())

    def add(self, record: SegmentRecord) -> None:
        self.writer.add_segment(record)
        rows, first, _last = self.added.get(record.camera, (0, record.start_ms, record.start_ms))
        self.added[record.camera] = (rows + 1, first, record.start_ms)

    def drop(self, row_id: int, size: int, gap_reason: str) -> None:
        self.drops.append((row_id, gap_reason))
        self.dropped_bytes += size

    def checkpoint(self, files: int, hours_walked: int) -> None:
        """After a camera-hour: commit if a batch is due, tell the progress if it is time."""
        self.state = replace(self.state, files=files, hours_walked=hours_walked)
        late = self.writer.clock.monotonic() - self.last_told >= self.batch_seconds
        if self.waiting >= self.batch_rows or (late and self.waiting):
            self._commit()
        elif late:
            self._tell()

    def finish(self, files: int, hours_walked: int) -> None:
        self.state = replace(self.state, files=files, hours_walked=hours_walked)
        if self.waiting:
            self._commit()
        self.state = replace(self.state, done=True)
        self._tell()

    def _commit(self) -> None:
        """Raises what the writer's commit raises; the batch then stays pending in the writer, and the
        caller gives up (the next start-up redoes this batch, not the ones before it)."""
        drops, added = self.drops, self.added

        def repair_rows(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO gaps (camera, start_ms, end_ms, reason)"
                             " SELECT camera, start_ms, end_ms, ? FROM segments WHERE id = ?",
                             [(reason, row_id) for row_id, reason in drops if reason])
            conn.executemany("DELETE FROM segments WHERE id = ?", [(row_id,) for row_id, _reason in drops])

        self.writer.commit(also=repair_rows if drops else None)
        self.writer.note_deleted(self.dropped_bytes)
        rows_added = sum(rows for rows, _first, _last in added.values())
        if added:
            log.info("reconcile: adopted %d segment files that had no row: %s", rows_added, "; ".join(
                f"{rows} of {camera} from {format_ms(first)} to {format_ms(last)}"
                for camera, (rows, first, last) in sorted(added.items())))
        self.state = replace(self.state, added=self.state.added + rows_added, dropped=self.state.dropped + len(drops),
                             commits=self.state.commits + 1)
        self.drops, self.dropped_bytes, self.added = [], 0, {}
        self._tell()

    def _tell(self) -> None:
        self.last_told = self.writer.clock.monotonic()
        if self.tell is not None:
            self.tell(self.state)


def _hour_dirs(layout: StorageLayout) -> dict[int, list[tuple[str, Path]]]:
    """hour bucket -> [(camera, hour directory)] for every directory in the segment tree."""
    result: dict[int, list[tuple[str, Path]]] = defaultdict(list)
    for camera in layout.cameras_on_disk():
        for hour_ms, directory in layout.hour_dirs(camera):
            result[hour_ms // HOUR_MS].append((camera, directory))
    return result


_FIRST_ROW_FROM = "SELECT start_ms FROM segments WHERE deleting = 0 AND start_ms >= ? ORDER BY start_ms LIMIT 1"
_ROWS_OF_HOUR = ("SELECT id, camera, start_ms, bytes FROM segments WHERE deleting = 0 AND start_ms >= ? AND start_ms < ?"
                 " ORDER BY start_ms")


def _buckets(conn: sqlite3.Connection, dirs: dict[int, list[tuple[str, Path]]]) -> Iterator[tuple[int, list[_Bucket]]]:
    """(hour, a bucket per camera) for every hour that has rows or directories, oldest first.

    A merge-join of the hours with directories and the hours with rows, in time order. Each hour's rows are
    read by a query run to its end when its turn comes (index seeks on start_ms): no statement stays open
    while the caller commits its batch, and rows it adopted into a past hour are never read again."""
    hours = deque(sorted(dirs))
    from_ms = -(2 ** 63)   # the smallest start_ms SQLite can hold
    while True:
        first = conn.execute(_FIRST_ROW_FROM, (from_ms,)).fetchone()
        row_hour = first[0] // HOUR_MS if first is not None else None
        candidates = [h for h in (hours[0] if hours else None, row_hour) if h is not None]
        if not candidates:
            return
        hour = min(candidates)
        if hours and hours[0] == hour:
            hours.popleft()
        from_ms = (hour + 1) * HOUR_MS
        per_camera: dict[str, _Bucket] = {}
        if row_hour == hour:
            for row_id, camera, start_ms, size in conn.execute(_ROWS_OF_HOUR, (hour * HOUR_MS, from_ms)).fetchall():
                per_camera.setdefault(camera, _Bucket(camera)).rows[start_ms] = (row_id, size)
        for camera, directory in dirs.get(hour, []):
            bucket = per_camera.setdefault(camera, _Bucket(camera))
            for entry in os.scandir(directory):
                parsed = parse_segment_name(entry.name)
                if parsed is None:
                    continue
                start_ms, is_partial = parsed
                (bucket.partials.append(Path(entry.path)) if is_partial
                 else bucket.files.__setitem__(start_ms, Path(entry.path)))
        yield hour, list(per_camera.values())


def _compare(bucket: _Bucket, report: ConsistencyReport) -> tuple[list[tuple[int, int, int, Path | None]], list[Path]]:
    """Add one bucket's disagreements to `report`. Returns the bad rows as (start_ms, row id, bytes,
    damaged file or None when the file is missing) and the files without a row, oldest first."""
    report.rows += len(bucket.rows)
    report.files += len(bucket.files)
    report.partials += len(bucket.partials)
    for partial in sorted(bucket.partials):
        report._name(report.partial_files, str(partial))
    bad_rows: list[tuple[int, int, int, Path | None]] = []
    for start_ms, (row_id, size) in bucket.rows.items():
        path = bucket.files.get(start_ms)
        if path is None:
            report.missing_files += 1
            report._name(report.rows_without_file, f"{bucket.camera}/{start_ms}")
            bad_rows.append((start_ms, row_id, size, None))
        elif path.stat().st_size != size:
            report.wrong_size_files += 1
            report._name(report.rows_with_wrong_size, str(path))
            bad_rows.append((start_ms, row_id, size, path))
    unindexed = [p for s, p in sorted(bucket.files.items()) if s not in bucket.rows]
    report.unindexed_files += len(unindexed)
    for path in unindexed:
        report._name(report.files_without_row, str(path))
    return bad_rows, unindexed


def check_consistency(conn: sqlite3.Connection, layout: StorageLayout) -> ConsistencyReport:
    """Compare index and disk without changing either (`edgenvr check-index`, tests)."""
    report = ConsistencyReport()
    report.rows_marked_deleting = conn.execute("SELECT COUNT(*) FROM segments WHERE deleting = 1").fetchone()[0]
    for _hour, buckets in _buckets(conn, _hour_dirs(layout)):
        for bucket in buckets:
            _compare(bucket, report)
    return report


def reconcile(writer: IndexWriter, layout: StorageLayout, *, progress: Callable[[ReconcileProgress], None] | None = None,
              batch_rows: int = BATCH_ROWS, batch_seconds: float = BATCH_SECONDS) -> ConsistencyReport:
    """Repair index and disk so that `check_consistency` finds nothing. Returns what was found (naming at
    most NAMES_KEPT paths of each kind; the counts are exact).

    Repairs are committed in batches (see _RepairBatch), and `progress` is called after each and at least
    every `batch_seconds` while the walk goes on. Raises what a commit raises (e.g. the disk is full);
    what was committed before stays, and the next start-up goes on from there."""
    conn = writer.conn
    found = ConsistencyReport(names_kept=NAMES_KEPT)
    # Interrupted deletions: the file goes now, the row with the first batch.
    finished = conn.execute("SELECT id, camera, start_ms FROM segments WHERE deleting = 1").fetchall()
    for _row_id, camera, start_ms in finished:
        try:
            delete_data_file(layout, layout.segment_path(camera, start_ms), DataFile.SEGMENT)
        except ValueError as exc:  # refused, or no layout path has this camera or time: no file is touched
            log.error("reconcile: file of deleted segment %r at %r left alone: %s", camera, start_ms, exc)
    found.rows_marked_deleting = len(finished)
    if finished:
        log.info("reconcile: finishing %d interrupted deletions", len(finished))

    dirs = _hour_dirs(layout)
    batch = _RepairBatch(writer, progress, batch_rows, batch_seconds, ReconcileProgress(hours=len(dirs)))
    for row_id, _camera, _start_ms in finished:
        batch.drop(row_id, 0, "")   # its file is gone: no gap, and indexed_bytes never counted a marked row
    hours_walked = 0
    for hour, buckets in _buckets(conn, dirs):
        hours_walked += hour in dirs
        for bucket in buckets:
            bad_rows, unindexed = _compare(bucket, found)
            for start_ms, row_id, size, damaged in bad_rows:
                if damaged is None:
                    reason = GAP_FILE_MISSING
                else:
                    quarantine(layout, damaged, f"size {damaged.stat().st_size} differs from indexed {size}")
                    reason = GAP_FILE_DAMAGED
                log.error("reconcile: %s for %s at %d; row removed and recorded as a gap", reason, bucket.camera, start_ms)
                batch.drop(row_id, size, reason)
            for path in unindexed:
                try:
                    batch.add(record_from_file(layout, bucket.camera, path, origin=SegmentOrigin.ADOPTED))
                    log.debug("reconcile: adopted %s", path)
                except Exception as exc:  # noqa: BLE001 - any unreadable file goes to quarantine
                    quarantine(layout, path, f"unindexed file not readable: {exc}")
            for partial in sorted(bucket.partials):
                try:
                    record = finalise_partial(layout, bucket.camera, partial)
                except PartialNotFinalised as exc:
                    log.error("reconcile: %s; left for the next start-up", exc)
                    continue
                if record is not None:
                    batch.add(record)
                    log.info("reconcile: recovered %s (%d ms)", record.path, record.duration_ms)
            batch.checkpoint(found.files, hours_walked)
    batch.finish(found.files, hours_walked)
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
