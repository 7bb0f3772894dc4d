"""The SQLite index file: connection settings and numbered schema migrations.

Design notes (SD-card wear, power loss):
- WAL mode, synchronous=FULL: a commit is durable when it returns. Commits are batched (index.writer),
  so the fsync cost is per batch, not per row. 1 KB pages keep a batch small.
- Segment rows are found by time through indexes that grow at their tail (start_ms; retention_class,
  start_ms), so a batch of inserts dirties a few tail pages however many cameras there are.
- A segment's path is derived from (camera, start_ms) by storage.layout, so it is not stored.
- Never edit a migration that has shipped: add a new one.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

MIGRATIONS: list[str] = [
    # 1: recording core
    """
    CREATE TABLE cameras (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL DEFAULT 'unknown',
        state_since_ms INTEGER,
        state_reason TEXT NOT NULL DEFAULT '',
        dropped_json TEXT NOT NULL DEFAULT '{}',
        last_end_ms INTEGER            -- end of the newest indexed segment, to find gaps after a restart
    );
    CREATE TABLE segments (
        id INTEGER PRIMARY KEY,
        camera TEXT NOT NULL,
        start_ms INTEGER NOT NULL,     -- UTC epoch ms, stream clock anchored to wall clock at connect
        end_ms INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        sha256 BLOB NOT NULL,          -- 32 raw bytes
        codec TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        packets INTEGER NOT NULL,
        wall_end_ms INTEGER NOT NULL,  -- wall clock at close, to see camera clock drift
        origin TEXT NOT NULL,          -- recorder | adopted | recovered
        retention_class INTEGER NOT NULL DEFAULT 0,  -- 0 = continuous ring; higher tiers are kept longer
        deleting INTEGER NOT NULL DEFAULT 0          -- committed before the file is unlinked
    );
    CREATE INDEX segments_start ON segments(start_ms);
    CREATE INDEX segments_retention ON segments(retention_class, start_ms);
    CREATE TABLE gaps (
        id INTEGER PRIMARY KEY,
        camera TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX gaps_camera_start ON gaps(camera, start_ms);
    """,
    # 2: events, holds, reference views; retention tiers (retention_class 0 continuous, 1 event, 2 hold)
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        camera TEXT NOT NULL,
        kind TEXT NOT NULL,            -- motion | tamper | offline | alert
        subkind TEXT NOT NULL DEFAULT '',  -- tamper: covered | defocused | moved; alert: what happened
        start_ms INTEGER NOT NULL,
        end_ms INTEGER,                -- NULL while the event is open
        keep_from_ms INTEGER,          -- video kept for the event: start - pre padding (NULL: keeps no video)
        keep_to_ms INTEGER,            -- end + post padding; OPEN_END (2^62) while the event is open
        zones TEXT NOT NULL DEFAULT '[]',  -- JSON list of zone names
        peak_score REAL NOT NULL DEFAULT 0,
        snapshot TEXT,                 -- JPEG path relative to the data dir
        detail TEXT NOT NULL DEFAULT '',
        UNIQUE (camera, kind, subkind, start_ms)
    );
    CREATE INDEX events_start ON events(start_ms);
    CREATE INDEX events_keep ON events(camera, keep_to_ms);
    CREATE TABLE holds (
        id INTEGER PRIMARY KEY,
        camera TEXT NOT NULL,
        from_ms INTEGER NOT NULL,
        to_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        released_ms INTEGER,           -- NULL while the hold is in force
        release_reason TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE reference_views (
        id INTEGER PRIMARY KEY,
        camera TEXT NOT NULL,
        approved_ms INTEGER NOT NULL,
        image TEXT NOT NULL,           -- grey PNG, path relative to the data dir
        approved_by TEXT NOT NULL      -- "commissioning" or who re-approved the view
    );
    CREATE INDEX reference_views_camera ON reference_views(camera, approved_ms);
    -- the motion worker's last reported state and counters (analysed, dropped, ...), for `edgenvr status`
    ALTER TABLE cameras ADD COLUMN motion_json TEXT NOT NULL DEFAULT '{}';
    CREATE INDEX segments_camera_class ON segments(camera, retention_class, start_ms);
    """,
    # 3: clock trust (docs/architecture.md, "Clock trust"; index.recording_timeline, index.reanchoring).
    # Rows from before it keep NULL timelines and are aged and ordered by start_ms as before (no table rewrite).
    """
    CREATE TABLE boots (
        id INTEGER PRIMARY KEY,
        boot_id TEXT NOT NULL UNIQUE,  -- core.clock.Clock.boot_id (16 hex digits)
        base_ms INTEGER NOT NULL,      -- a segment's timeline_ms = base_ms + the boot-time clock at its start
        first_ms INTEGER NOT NULL,     -- the timeline where the boot was first seen: later boots start after it
        offset_ms INTEGER              -- wall minus boot-time clock, first seen synchronised; NULL: never was
    );
    -- the recording timeline (boot-time clocks of successive boots end to end): the ring's order, and a lower
    -- bound of real elapsed time for the age rules; NULL: indexed before migration 3 (start_ms stands in)
    ALTER TABLE segments ADD COLUMN timeline_ms INTEGER;
    ALTER TABLE segments ADD COLUMN boot INTEGER;       -- boots.id; NULL: not known
    -- 0 recorded on an unsynchronised clock (start/end as that clock said), 1 synchronised (or not known:
    -- taken at its wall times, as before), 2 re-anchored to its true time, 3 could not be (the name was taken)
    ALTER TABLE segments ADD COLUMN clock_state INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX segments_ring ON segments(retention_class, timeline_ms, start_ms);
    CREATE INDEX segments_camera_age ON segments(camera, retention_class, timeline_ms, start_ms);
    DROP INDEX segments_retention;     -- the ring's order is segments_ring's now
    CREATE INDEX segments_unsynchronised ON segments(boot, timeline_ms) WHERE clock_state = 0;
    -- an event's keep_to_ms (its end_ms if it keeps no video) on the timeline; NULL while open or from before
    ALTER TABLE events ADD COLUMN timeline_keep_to_ms INTEGER;
    CREATE INDEX events_expiry ON events(camera, timeline_keep_to_ms, keep_to_ms);
    """,
    # 4: rows from before 3 go on the timeline, so that no age or order anywhere is read from the wall clock (a
    # jump would make them look a year old). Their recorded times stand in, never after the first boot the
    # timeline saw (they came before it): ages stay lower bounds and the ring deletes them first.
    """
    UPDATE segments SET timeline_ms = MIN(start_ms, COALESCE((SELECT MIN(first_ms) FROM boots), start_ms))
        WHERE timeline_ms IS NULL;
    UPDATE events SET timeline_keep_to_ms = MIN(COALESCE(keep_to_ms, end_ms),
                                                COALESCE((SELECT MIN(first_ms) FROM boots), end_ms))
        WHERE timeline_keep_to_ms IS NULL AND end_ms IS NOT NULL;
    """,
    # 5: a camera's segments by time carry every column the web timeline reads (index.queries.
    # recorded_stretches), so a day's bars come from the index alone: 8,640 table lookups were 10 ms of a 45 ms
    # timeline (issue 11 benchmark). ~5% more file; rebuilding it takes ~2 s per million segments.
    """
    DROP INDEX segments_camera_class;
    CREATE INDEX segments_camera_class ON segments(camera, retention_class, start_ms, end_ms, deleting, codec);
    """,
    # 6: the outbox of clips for the city hub (issue 12; sync.outbox owns its rows, written by the sync process
    # in short transactions like holds). One row per clip: an event's padded range, a pull's range, ...
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,            -- tamper | requested | motion | continuous
        priority INTEGER NOT NULL,     -- 0 tamper, 1 requested, 2 motion, 3 continuous: lowest goes first
        camera TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        event_id INTEGER UNIQUE,       -- the event it was made for (NULL: not an event's)
        created_ms INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',  -- queued | synced | unavailable
        upload TEXT,                   -- the hub's upload path once made: a restart resumes there
        bytes INTEGER,                 -- of the clip file being sent
        sha256 TEXT,
        receipt TEXT,                  -- the hub's signed receipt (evidence.hub_receipts), once synced
        done_ms INTEGER,               -- when it was synced or found unavailable
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        next_attempt_ms INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_due ON outbox(state, priority, start_ms);
    -- when this box started syncing: events that ended before are not sent (enabling sync on a box with years
    -- of events does not flood the link)
    CREATE TABLE sync_since (id INTEGER PRIMARY KEY CHECK (id = 1), since_ms INTEGER NOT NULL);
    """,
    # 7: video of clips queued for the hub is retention class 3, awaiting upload (index.retention_classes):
    # kept by the age rules and the quota, deleted only by the free-space floor. classify finds a camera's
    # queued clips overlapping a range through outbox_waiting (end_ms: classifying new video reads only the
    # clips that reach it, not a week's backlog). Video of clips queued before this migration is put in its
    # class here (1200000: retention_classes.LONGEST_SEGMENT_MS when this was written); held video stays held.
    """
    CREATE INDEX outbox_waiting ON outbox(camera, state, end_ms, start_ms);
    UPDATE segments SET retention_class = 3 WHERE id IN (
        SELECT s.id FROM outbox o JOIN segments s
          ON s.camera = o.camera AND s.retention_class IN (0, 1)
         AND s.start_ms >= o.start_ms - 1200000 AND s.start_ms < o.end_ms AND s.end_ms > o.start_ms
        WHERE o.state = 'queued') AND deleting = 0;
    """,
    # 8: a clip the city hub asked for (a remote pull, sync.outbox.enqueue_pull) names its pull: the hub's
    # request id, once per box (the hub sends a pull again after every reconnect until it is answered).
    # reported_ms: when the hub acknowledged that a clip ended unavailable (its video lost before it was sent).
    """
    ALTER TABLE outbox ADD COLUMN pull_id TEXT;
    CREATE UNIQUE INDEX outbox_pull ON outbox(pull_id) WHERE pull_id IS NOT NULL;
    ALTER TABLE outbox ADD COLUMN reported_ms INTEGER;
    CREATE INDEX outbox_unreported ON outbox(state, reported_ms);
    """,
    # 9: running totals the metrics route reads (web.box_metrics: a scrape reads a few rows, never sums the
    # segments or the outbox), each kept by the write that already carries its state: a camera's bytes of video
    # indexed (index.writer, in the camera's row, which a new segment rewrites anyway), the writer's commit
    # timing and the ring's size (index.writer, in each commit), clips delivered to the hub (sync.outbox, in the
    # transaction that marks one synced). They start from what the index holds now.
    """
    ALTER TABLE cameras ADD COLUMN written_bytes INTEGER NOT NULL DEFAULT 0;
    UPDATE cameras SET written_bytes = (SELECT COALESCE(SUM(bytes), 0) FROM segments WHERE camera = cameras.id);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO counters (name, value) SELECT 'sync_delivered_clips', COUNT(*) FROM outbox WHERE state = 'synced';
    INSERT INTO counters (name, value)
        SELECT 'sync_delivered_bytes', COALESCE(SUM(bytes), 0) FROM outbox WHERE state = 'synced';
    INSERT INTO counters (name, value)
        SELECT 'index_segment_bytes', COALESCE(SUM(bytes), 0) FROM segments WHERE deleting = 0;
    """,
    # 10: why the city hub asked for a clip (a remote pull's reason, e.g. a police report number): the box's
    # export of it, its manifest and its audit record say so.
    """
    ALTER TABLE outbox ADD COLUMN pull_reason TEXT NOT NULL DEFAULT '';
    """,
]


class IndexVersionError(sqlite3.DatabaseError):
    """The index was written by a newer edgenvr; refusing to touch it protects the recordings it describes.

    A DatabaseError, so whoever already handles an unusable index (sqlite3.Error) handles this one too."""


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """The index at ``path``: read-only, or for writing (created and migrated). Either way IndexVersionError
    if a newer edgenvr wrote it: this version could misread it (readers) or damage it (writers). Readers also
    refuse an older one: they query today's columns, and only the writer (`edgenvr run`) migrates."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, isolation_level=None)
        try:
            version = check_version(conn, path)
            if 0 < version < len(MIGRATIONS):  # readers query today's columns; only the writer migrates
                raise IndexVersionError(f"{path} is from an older edgenvr (index schema version {version}; this "
                                        f"edgenvr needs {len(MIGRATIONS)}): start `edgenvr run` once to upgrade it")
        except BaseException:
            conn.close()
            raise
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        # 1 KB pages: a batch of a few rows dirties a few KB, not a few 4 KB pages (SD-card writes).
        # Only takes effect when the file is created; an existing index keeps its page size.
        conn.execute("PRAGMA page_size=1024")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        migrate(conn, path)
    conn.row_factory = sqlite3.Row
    return conn


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (BEGIN IMMEDIATE ... COMMIT); anything raised inside rolls it back and is raised."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def check_version(conn: sqlite3.Connection, path: Path | str = "the index") -> int:
    """The index's schema version; IndexVersionError if it is newer than this edgenvr knows."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise IndexVersionError(f"{path} was written by a newer edgenvr (index schema version {version}; this "
                                f"edgenvr knows up to {len(MIGRATIONS)}): use that edgenvr or a newer one")
    return version


def migrate(conn: sqlite3.Connection, path: Path | str = "the index") -> int:
    """Apply pending migrations, each in its own transaction. Returns the resulting schema version."""
    version = check_version(conn, path)
    for number in range(version + 1, len(MIGRATIONS) + 1):
        with write_transaction(conn):
            for statement in _statements(MIGRATIONS[number - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
    if version < len(MIGRATIONS):
        # a migration that rewrote rows (4: ~190 MB of WAL for 1M segments) gives that space back at once
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit implicitly, breaking atomicity)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    return [s for s in statements if s]
