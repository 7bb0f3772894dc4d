"""The durable outbox of clips for the city hub: the `outbox` table of the box's index (index migration 6).

Owns its rows, written by the sync process in short transactions of their own (as holds are), never by the
recording path. Invariants:
- Nothing is lost: a clip is queued from what the index already holds (closed motion and tamper events,
  found again after any crash by `enqueue_closed_events`, idempotent through the unique event id; a remote
  pull, through its unique pull id; pieces of continuous video, from where the last piece ended), and a row
  leaves `queued` only with the hub's verified receipt (`synced`) or when its video is no longer on the box
  (`unavailable`, with the reason). Nothing is ever deleted from it here.
- Order: priority (tamper 0 > requested 1 > motion 2 > continuous 3), then the oldest first.
- An event is queued only once its padded range is over and the segment holding its end is closed (`settle_ms`
  after keep_to_ms: a segment's length and SETTLE_MARGIN_MS; the export reads closed files not indexed yet),
  and only if it ended after the box started syncing (`since_ms`): enabling sync does not send years of past
  events at once.
- The video of a queued clip is retention class 3, awaiting upload (index.retention_classes): no age rule and
  no quota deletes it, only the free-space floor once all other unheld video is gone. Every change of a row's
  state here (queued on insert, synced, unavailable) re-classifies its camera and range in the same write
  transaction, so a crash never leaves the video's class out of step with the row. The one state change made
  elsewhere: the sweep (retention.policy, a lower layer that cannot import this module) marks the queued rows
  whose video the floor deletes `unavailable`, with the reason, in the transaction that marks that video.
Failure paths: sqlite3 errors propagate (the sync process logs them and tries again later); each function's
transaction is then rolled back whole, the row and the classes as they were.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from edgenvr.index import queries as index_queries
from edgenvr.index import schema as index_schema
from edgenvr.index.queries import Backlog, backlog  # noqa: F401 (the backlog is read where the web reads it too)
from edgenvr.index.retention_classes import LONGEST_SEGMENT_MS, classify
from edgenvr.sync.hub_protocol import MAX_PULL_REASON

SETTLE_MARGIN_MS = 5_000   # after an event's padded end and one segment: its last segment file is closed
CONTINUOUS_PIECE_MS = 5 * 60_000   # continuous video goes in pieces this long: one per camera queued at a time


class ClipKind(StrEnum):
    TAMPER = "tamper"
    REQUESTED = "requested"
    MOTION = "motion"
    CONTINUOUS = "continuous"


PRIORITY = {ClipKind.TAMPER: 0, ClipKind.REQUESTED: 1, ClipKind.MOTION: 2, ClipKind.CONTINUOUS: 3}


class OutboxState(StrEnum):
    QUEUED = "queued"
    SYNCED = "synced"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class OutboxItem:
    id: int
    kind: ClipKind
    camera: str
    start_ms: int
    end_ms: int
    event_id: int | None
    upload: str | None       # the hub's upload path, once made
    attempts: int
    pull_id: str | None = None   # the hub's request, for a clip it asked for (kind requested)
    pull_reason: str = ""        # and why it was asked for

    @property
    def idempotency_key(self) -> str:
        """The same clip is the same upload at the hub, whatever happens to this box's outbox row (two pulls of
        one range are two clips: each request gets its answer)."""
        return f"{self.kind}/{self.camera}/{self.start_ms}-{self.end_ms}/{self.pull_id or self.event_id or 0}"


def sync_since(conn: sqlite3.Connection, now_ms: int) -> int:
    """When this box started syncing (set to `now_ms` the first time)."""
    row = conn.execute("SELECT since_ms FROM sync_since WHERE id = 1").fetchone()
    if row is not None:   # read first: no write transaction (and no wait for the recorder's writer) each round
        return int(row[0])
    with index_schema.write_transaction(conn):
        conn.execute("INSERT OR IGNORE INTO sync_since (id, since_ms) VALUES (1, ?)", (now_ms,))
        return int(conn.execute("SELECT since_ms FROM sync_since WHERE id = 1").fetchone()[0])


def enqueue_closed_events(conn: sqlite3.Connection, since_ms: int, now_ms: int, settle_ms: int) -> int:
    """Queue every closed motion/tamper event that keeps video, ended at or after `since_ms` and settled;
    how many were new. Writes only when there is something to queue (the recorder's writer never waits on an
    idle round)."""
    waiting = (" FROM events e WHERE e.kind IN ('motion', 'tamper') AND e.end_ms IS NOT NULL AND e.end_ms >= :since"
               " AND e.keep_from_ms IS NOT NULL AND e.keep_to_ms + :settle <= :now"
               " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id)")
    values = {"tamper": PRIORITY[ClipKind.TAMPER], "motion": PRIORITY[ClipKind.MOTION], "now": now_ms,
              "since": since_ms, "settle": settle_ms}
    if conn.execute("SELECT EXISTS (SELECT 1" + waiting + ")", values).fetchone()[0] == 0:
        return 0
    with index_schema.write_transaction(conn):
        queued = conn.execute(
            "INSERT INTO outbox (kind, priority, camera, start_ms, end_ms, event_id, created_ms)"
            " SELECT e.kind, CASE e.kind WHEN 'tamper' THEN :tamper ELSE :motion END, e.camera, e.keep_from_ms,"
            " e.keep_to_ms, e.id, :now" + waiting + " RETURNING camera, start_ms, end_ms", values).fetchall()
        _reclassify(conn, queued)   # their video is awaiting upload from this commit on
        return len(queued)


def enqueue_pull(conn: sqlite3.Connection, pull_id: str, camera: str, start_ms: int, end_ms: int, now_ms: int,
                 due_ms: int, reason: str = "") -> bool:
    """Queue the clip the hub asked for (request `pull_id`, for `reason`), to go from `due_ms` (once its range
    is recorded and settled); whether it is new (the hub sends a request again until it is answered: queued
    once)."""
    with index_schema.write_transaction(conn):
        queued = conn.execute(
            "INSERT INTO outbox (kind, priority, camera, start_ms, end_ms, created_ms, next_attempt_ms, pull_id,"
            " pull_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING camera, start_ms,"
            " end_ms", (ClipKind.REQUESTED, PRIORITY[ClipKind.REQUESTED], camera, start_ms, end_ms, now_ms, due_ms,
                        pull_id, reason[:MAX_PULL_REASON])).fetchall()
        _reclassify(conn, queued)   # its video is kept for the hub from this commit on
        return bool(queued)


def pull_row(conn: sqlite3.Connection, pull_id: str) -> tuple[OutboxState, str, int | None, int] | None:
    """The state of the clip made for request `pull_id`: (state, last_error, bytes, attempts), None if none."""
    row = conn.execute("SELECT state, last_error, bytes, attempts FROM outbox WHERE pull_id = ?", (pull_id,)).fetchone()
    return None if row is None else (OutboxState(row[0]), row[1], row[2], row[3])


def queued_ahead(conn: sqlite3.Connection, pull_id: str) -> int:
    """How many queued clips go before the one made for `pull_id`."""
    return int(conn.execute(
        "SELECT COUNT(*) FROM outbox o, outbox p WHERE p.pull_id = ? AND o.state = 'queued' AND o.id != p.id"
        " AND (o.priority, o.start_ms, o.id) < (p.priority, p.start_ms, p.id)", (pull_id,)).fetchone()[0])


def enqueue_continuous(conn: sqlite3.Connection, cameras: list[str], since_ms: int, now_ms: int,
                       settle_ms: int) -> int:
    """Queue the next piece of continuous video of each camera that has none queued; how many were queued. A
    piece starts where the camera's last one ended (or at `since_ms`), or at its oldest video after that if the
    ring deleted what came first, and is CONTINUOUS_PIECE_MS long once that much is recorded and settled. One
    piece per camera at a time: continuous video awaiting upload (retention class 3) stays bounded, however
    far behind the link is, and the cursor moves on with the ring."""
    queued = []
    for camera in cameras:
        last = conn.execute("SELECT MAX(end_ms), SUM(state = 'queued') FROM outbox WHERE kind = 'continuous'"
                            " AND camera = ?", (camera,)).fetchone()
        if last[1]:
            continue
        cursor = max(since_ms, last[0] or since_ms)
        first = conn.execute("SELECT start_ms FROM segments WHERE start_ms >= ? AND camera = ? AND end_ms > ?"
                             " AND deleting = 0 ORDER BY start_ms LIMIT 1",
                             (cursor - LONGEST_SEGMENT_MS, camera, cursor)).fetchone()
        if first is None:
            continue
        start = max(cursor, first[0])
        if start + CONTINUOUS_PIECE_MS + settle_ms <= now_ms:
            queued.append((camera, start, start + CONTINUOUS_PIECE_MS))
    if not queued:
        return 0   # no write transaction on an idle round
    with index_schema.write_transaction(conn):
        conn.executemany("INSERT INTO outbox (kind, priority, camera, start_ms, end_ms, created_ms)"
                         " VALUES (?, ?, ?, ?, ?, ?)", [(ClipKind.CONTINUOUS, PRIORITY[ClipKind.CONTINUOUS], *piece,
                                                         now_ms) for piece in queued])
        _reclassify(conn, queued)
    return len(queued)


def next_due(conn: sqlite3.Connection, now_ms: int, *, continuous: bool = True) -> OutboxItem | None:
    """The clip to send now; `continuous`: whether continuous pieces may go now (a window is open)."""
    row = conn.execute("SELECT id, kind, camera, start_ms, end_ms, event_id, upload, attempts, pull_id, pull_reason"
                       " FROM outbox WHERE state = 'queued' AND next_attempt_ms <= ?" + ("" if continuous else
                                                                             " AND kind != 'continuous'") +
                       " ORDER BY priority, start_ms, id LIMIT 1", (now_ms,)).fetchone()
    if row is None:
        return None
    return OutboxItem(row[0], ClipKind(row[1]), *row[2:])


def note_upload(conn: sqlite3.Connection, item_id: int, upload: str, size: int, sha256: str) -> None:
    """The hub made an upload for it: a restart resumes there instead of sending it all again."""
    with index_schema.write_transaction(conn):
        conn.execute("UPDATE outbox SET upload = ?, bytes = ?, sha256 = ? WHERE id = ?", (upload, size, sha256, item_id))


def mark_synced(conn: sqlite3.Connection, item_id: int, receipt: str, now_ms: int) -> None:
    """The hub holds it (its verified receipt): the clip's video is ordinary ring video again, and it counts in
    the running totals of clips delivered (`counters`, index migration 9: what web.box_metrics reads)."""
    with index_schema.write_transaction(conn):
        newly = conn.execute("SELECT COALESCE(bytes, 0) FROM outbox WHERE id = ? AND state != 'synced'",
                             (item_id,)).fetchone()
        _reclassify(conn, conn.execute(
            "UPDATE outbox SET state = 'synced', receipt = ?, done_ms = ?, last_error = '' WHERE id = ?"
            " RETURNING camera, start_ms, end_ms", (receipt, now_ms, item_id)).fetchall())
        if newly is not None:   # a clip is delivered once, however often its receipt is recorded
            conn.executemany("UPDATE counters SET value = value + ? WHERE name = ?",
                             [(1, index_queries.DELIVERED_CLIPS), (newly[0], index_queries.DELIVERED_BYTES)])


def mark_unavailable(conn: sqlite3.Connection, item_id: int, reason: str, now_ms: int) -> None:
    """It cannot be sent (`reason`: its video is gone, ...): what is left of its video is ordinary again.
    Only a queued row changes: one the free-space floor gave up while its export was under way keeps the
    floor's reason (the export then fails for want of that video), which is what the hub must be told."""
    with index_schema.write_transaction(conn):
        _reclassify(conn, conn.execute(
            "UPDATE outbox SET state = 'unavailable', last_error = ?, done_ms = ? WHERE id = ? AND state = 'queued'"
            " RETURNING camera, start_ms, end_ms", (reason, now_ms, item_id)).fetchall())


def _reclassify(conn: sqlite3.Connection, rows: list[sqlite3.Row]) -> None:
    """Inside the write transaction that changed these rows' state: the class of their video (camera, start_ms,
    end_ms) follows. An id that matched no row changes nothing."""
    for camera, start_ms, end_ms in rows:
        classify(conn, camera, start_ms, end_ms)


def retry_later(conn: sqlite3.Connection, item_id: int, error: str, at_ms: int, *, forget_upload: bool = False) -> None:
    """Try it again at `at_ms`; `forget_upload`: the hub no longer has the upload (start a new one)."""
    with index_schema.write_transaction(conn):
        conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_ms = ?,"
                     " upload = CASE WHEN ? THEN NULL ELSE upload END WHERE id = ?",
                     (error[:500], at_ms, forget_upload, item_id))


@dataclass(frozen=True)
class LostClip:
    id: int
    kind: ClipKind
    camera: str
    start_ms: int
    end_ms: int
    reason: str
    at_ms: int


def unreported_losses(conn: sqlite3.Connection, limit: int) -> list[LostClip]:
    """Clips that ended unavailable (their video gone before they were sent) and the hub was not told of yet;
    a remote pull's are told as that pull's answer instead."""
    return [LostClip(row[0], ClipKind(row[1]), *row[2:]) for row in conn.execute(
        "SELECT id, kind, camera, start_ms, end_ms, last_error, done_ms FROM outbox WHERE state = 'unavailable'"
        " AND reported_ms IS NULL AND pull_id IS NULL ORDER BY id LIMIT ?", (limit,))]


def note_reported(conn: sqlite3.Connection, ids: list[int], now_ms: int) -> None:
    """The hub has these losses on record."""
    with index_schema.write_transaction(conn):
        conn.executemany("UPDATE outbox SET reported_ms = ? WHERE id = ? AND state = 'unavailable'",
                         [(now_ms, item_id) for item_id in ids])


def note_problem(conn: sqlite3.Connection, problem: str) -> None:
    """Why nothing goes now (the link is down, the hub refuses to enrol us), on the clip that waits first, for
    `edgenvr status`. Written only when it changed (a link down for a week is not a write every round)."""
    row = conn.execute("SELECT id, last_error FROM outbox WHERE state = 'queued' ORDER BY priority, start_ms, id"
                       " LIMIT 1").fetchone()
    if row is not None and row[1] != problem[:500]:
        with index_schema.write_transaction(conn):
            conn.execute("UPDATE outbox SET last_error = ? WHERE id = ?", (problem[:500], row[0]))
