"""The hub's database: its tables and how a worker connects to it. SQLite (a file in the hub's data dir, one
process) by default; PostgreSQL (`database_url = "postgresql://..."`) when several workers share it.

Owns: the table definitions (one MetaData, created if missing) and the engine. Invariants:
- Every statement is written once for both databases (SQLAlchemy Core: portable types, bound parameters).
- Nothing here blocks an event loop: callers run database work in a thread (`asyncio.to_thread`).
- State that must survive a worker's death (an upload's committed offset, its lock lease) lives here, never
  only in a worker's memory, so any worker can answer for any upload.
- SQLite: WAL, synchronous=FULL (a committed offset is durable when the commit returns), a busy timeout so two
  threads of one process queue rather than fail.
- Several workers (PostgreSQL, in its default READ COMMITTED isolation): no check-then-write decides who wins,
  since two workers can both read "free" before either writes. A claim is a conditional UPDATE whose rowcount
  says whether this worker won (`... WHERE lock_token IS NULL OR lock_until_ms < now`, `... WHERE used_ms IS
  NULL`: PostgreSQL re-checks the WHERE of a row another transaction changed meanwhile, so only one matches),
  or an INSERT against a unique constraint whose IntegrityError means another worker won (uploads_owner_key,
  clips_box_key, the primary keys); a DELETE repeats its conditions rather than trusting an earlier SELECT.
  Under REPEATABLE READ or SERIALIZABLE those UPDATEs would fail with serialization errors instead: keep the
  default. The tables are created under a transaction-scoped advisory lock (workers start together), and
  connections are checked before use (pool_pre_ping), so a restarted database costs no failed request.
- The tables have a version (`hub_schema`, SCHEMA_VERSION). connect brings an older database up to it (the
  MIGRATIONS after its version, in order, in the transaction that reads it, under the advisory lock) and
  refuses one a newer edgenvr has changed, whose rows may mean what this code does not know. A database from
  before the version was kept is version 1. A new table needs no migration (create_all adds it).
Failure paths: the database unreachable or refusing -> SQLAlchemyError from connect (the hub does not start);
written by a newer edgenvr -> SchemaTooNew (a SQLAlchemyError saying so), nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

METADATA = sa.MetaData()
SCHEMA_LOCK = 0x65646E76   # "ednv": the advisory lock held while the tables are created on PostgreSQL
SCHEMA_VERSION = 1
# version -> the change from the tables of the version before it (an ALTER TABLE, a backfill); run by connect.
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {}

# The tables' version (one row).
SCHEMA = sa.Table("hub_schema", METADATA, sa.Column("version", sa.Integer, nullable=False))


class SchemaTooNew(sa.exc.SQLAlchemyError):
    """The hub's database was changed by a newer edgenvr: refused, untouched."""

# A box the hub knows: its device key (from its enrolment) authenticates every request it signs.
BOXES = sa.Table(
    "boxes", METADATA,
    sa.Column("id", sa.String(64), primary_key=True),        # the box's [box] id
    sa.Column("site", sa.String(200), nullable=False),
    sa.Column("public_key", sa.Text),                        # PEM; NULL until it enrols
    sa.Column("enrolled_ms", sa.BigInteger),
    sa.Column("revoked_ms", sa.BigInteger),                  # set: nothing it signs is accepted any more
)

# A one-time enrolment token (`edgenvr hub enrol`): only its SHA-256 is kept; used once, then spent.
ENROLMENTS = sa.Table(
    "enrolments", METADATA,
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("box", sa.String(64), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("expires_ms", sa.BigInteger, nullable=False),
    sa.Column("used_ms", sa.BigInteger),
)

# A clip received whole and verified: the evidence folder as a zip in <blobs>/clips/<id>.zip.
CLIPS = sa.Table(
    "clips", METADATA,
    sa.Column("id", sa.String(32), primary_key=True),        # the upload's id
    sa.Column("box", sa.String(64), nullable=False),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("start_ms", sa.BigInteger, nullable=False),
    sa.Column("end_ms", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),        # tamper | requested | motion | continuous
    sa.Column("sha256", sa.String(64), nullable=False),      # of the zip as stored (re-hashed from disk)
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("received_ms", sa.BigInteger, nullable=False),
    sa.Column("idempotency_key", sa.String(128)),
    sa.UniqueConstraint("box", "idempotency_key", name="clips_box_key"),
)
sa.Index("clips_search", CLIPS.c.box, CLIPS.c.camera, CLIPS.c.start_ms)

# One tus upload (edgenvr.hub.tus_uploads): its bytes are <blob dir>/uploads/<id>.part until complete.
UPLOADS = sa.Table(
    "uploads", METADATA,
    sa.Column("id", sa.String(32), primary_key=True),        # 128 random bits, hex
    sa.Column("owner", sa.String(128), nullable=False),      # who created it (a box id): nobody else may touch it
    sa.Column("idempotency_key", sa.String(128)),            # the client's key: creating it again returns it
    sa.Column("length", sa.BigInteger, nullable=False),      # Upload-Length
    sa.Column("offset", sa.BigInteger, nullable=False, server_default="0"),  # bytes committed (fsynced)
    sa.Column("metadata", sa.Text, nullable=False, server_default=""),       # Upload-Metadata as received
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("expires_ms", sa.BigInteger, nullable=False),  # an unfinished upload is deleted after this
    sa.Column("state", sa.String(16), nullable=False, server_default="receiving"),  # receiving|complete|rejected
    sa.Column("outcome", sa.Text, nullable=False, server_default=""),  # the receipt, or why it was rejected
    # The lock of a PATCH in progress, as a lease any worker can see: its token, when it lapses, and whether
    # another request asked for it (a new HEAD or PATCH of a client that gave up on that connection).
    sa.Column("lock_token", sa.String(32)),
    sa.Column("lock_until_ms", sa.BigInteger),
    sa.Column("release_wanted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("owner", "idempotency_key", name="uploads_owner_key"),
)
sa.Index("uploads_expiry", UPLOADS.c.state, UPLOADS.c.expires_ms)

# A remote pull (hub.remote_pulls): a range of one camera the city asked a box for. The box gets it over its
# channel (hub.box_channel) and answers; the clip it uploads for it makes the request `ready`.
PULLS = sa.Table(
    "pulls", METADATA,
    sa.Column("id", sa.String(32), primary_key=True),        # 128 random bits, hex
    sa.Column("box", sa.String(64), nullable=False),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("start_ms", sa.BigInteger, nullable=False),
    sa.Column("end_ms", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),            # why it was asked for (the audit's "why")
    sa.Column("requested_by", sa.String(128), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),       # remote_pulls.PullState
    sa.Column("progress", sa.Integer, nullable=False, server_default="0"),   # percent uploaded
    sa.Column("detail", sa.Text, nullable=False, server_default=""),         # the box's word on it
    sa.Column("delivered_ms", sa.BigInteger),                # when the box last acknowledged it
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("clip_id", sa.String(32)),                     # once ready
)
sa.Index("pulls_box_state", PULLS.c.box, PULLS.c.state)

# The last health report of each box (hub.fleet), as it sent it over its channel.
BOX_REPORTS = sa.Table(
    "box_reports", METADATA,
    sa.Column("box", sa.String(64), primary_key=True),
    sa.Column("received_ms", sa.BigInteger, nullable=False),
    sa.Column("report", sa.Text, nullable=False),            # JSON (sync.box_report)
)


# Each box's audit trail, copied up record by record (hub.audit_copies): what the box's own file said when the
# record arrived, each checked against its hash, its link to the one before and the box's signature.
AUDIT_COPIES = sa.Table(
    "audit_copies", METADATA,
    sa.Column("box", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("time_ms", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("camera", sa.String(64)),
    sa.Column("from_ms", sa.BigInteger),
    sa.Column("to_ms", sa.BigInteger),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
    sa.Column("received_ms", sa.BigInteger, nullable=False),
)

# Where each box's copy ends, and the first thing found wrong with the box's trail (kept until looked into).
AUDIT_STATE = sa.Table(
    "audit_state", METADATA,
    sa.Column("box", sa.String(64), primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
    sa.Column("problem", sa.Text, nullable=False, server_default=""),
    sa.Column("problem_ms", sa.BigInteger),
)

# Clips a box had queued and could not send because their video was deleted first (the free-space floor), as
# the box reported them (hub.lost_clips): what the city will never receive, and why.
LOST_CLIPS = sa.Table(
    "lost_clips", METADATA,
    sa.Column("box", sa.String(64), primary_key=True),
    sa.Column("box_clip", sa.BigInteger, primary_key=True, autoincrement=False),   # the box's outbox id
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("start_ms", sa.BigInteger, nullable=False),
    sa.Column("end_ms", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("lost_ms", sa.BigInteger),
    sa.Column("received_ms", sa.BigInteger, nullable=False),
)


def database_url(data_dir: Path, configured: str | None) -> str:
    """The SQLAlchemy URL: the configured one (postgresql://... is driven by psycopg 3), else SQLite in data_dir."""
    if configured:
        return configured.replace("postgresql://", "postgresql+psycopg://", 1) \
            if configured.startswith("postgresql://") else configured
    return f"sqlite:///{data_dir / 'hub.sqlite3'}"


def connect(url: str) -> sa.Engine:
    """An engine for `url`, its tables created if missing and brought to SCHEMA_VERSION; SchemaTooNew."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        if engine.url.database:
            Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_settings(dbapi_connection: object, _record: object) -> None:
            cursor = dbapi_connection.cursor()   # type: ignore[attr-defined]
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":   # two workers that both find a table missing must not both
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SCHEMA_LOCK)))   # create it: one waits
        else:   # Python's sqlite3 opens a transaction only before INSERT/UPDATE/DELETE: without this, each
            conn.exec_driver_sql("BEGIN IMMEDIATE")   # CREATE and ALTER would commit alone
        _bring_up_to_date(conn)
    return engine


def _bring_up_to_date(conn: sa.Connection) -> None:
    """Create what is missing, then migrate to SCHEMA_VERSION (see the module docstring); SchemaTooNew."""
    existing = set(sa.inspect(conn).get_table_names())
    found = conn.execute(sa.select(SCHEMA.c.version)).scalar() if SCHEMA.name in existing else None
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaTooNew(f"the hub's database is at version {found}, written by a newer edgenvr (this one knows up "
                           f"to {SCHEMA_VERSION}): run that edgenvr, or restore a backup made for this one")
    METADATA.create_all(conn)
    if found is None:   # new (made as this version just now), or from before the version was kept (version 1)
        found = 1 if BOXES.name in existing else SCHEMA_VERSION
        conn.execute(sa.insert(SCHEMA).values(version=found))
    for version in range(found + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version](conn)
    if found < SCHEMA_VERSION:
        conn.execute(sa.update(SCHEMA).values(version=SCHEMA_VERSION))
