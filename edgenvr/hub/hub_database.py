"""The hub's database: its tables and how a worker connects to it. SQLite (a file in the hub's data dir, one
process) by default; PostgreSQL (`database_url = "postgresql://..."`) when several workers share it.

Owns: the table definitions (one MetaData, created if missing) and the engine. Invariants:
- Every statement is written once for both databases (SQLAlchemy Core: portable types, bound parameters).
- Nothing here blocks an event loop: callers run database work in a thread (`asyncio.to_thread`).
- State that must survive a worker's death (an upload's committed offset, its lock lease) lives here, never
  only in a worker's memory, so any worker can answer for any upload.
- SQLite: WAL, synchronous=FULL (a committed offset is durable when the commit returns), a busy timeout so two
  threads of one process queue rather than fail.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

METADATA = sa.MetaData()

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


def database_url(data_dir: Path, configured: str | None) -> str:
    """The SQLAlchemy URL: the configured one (postgresql://... is driven by psycopg 3), else SQLite in data_dir."""
    if configured:
        return configured.replace("postgresql://", "postgresql+psycopg://", 1) \
            if configured.startswith("postgresql://") else configured
    return f"sqlite:///{data_dir / 'hub.sqlite3'}"


def connect(url: str) -> sa.Engine:
    """An engine for `url` with the tables created if missing."""
    engine = sa.create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    if engine.dialect.name == "sqlite":
        if engine.url.database:
            Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_settings(dbapi_connection: object, _record: object) -> None:
            cursor = dbapi_connection.cursor()   # type: ignore[attr-defined]
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()
    METADATA.create_all(engine)
    return engine
