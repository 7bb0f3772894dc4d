"""The audit trail: an append-only, hash-chained, signed log of every action that touches footage or its
protection (export, hold add/release, reference-view approval, config change seen at start-up, logins,
playback), kept in its own SQLite file (`layout.audit_path`) so that it outlives a rebuilt index and the video
it describes (`audit_days`, pruned by `AuditTrail.prune`).

Owns that file: its tables, the record hash, the signed statements and their check (`verify_trail`).

The chain, in encodings anyone can recompute with a SHA-256, a JSON library and an Ed25519 check:
- Record hash: SHA-256 (lower-case hex) of the record's canonical JSON: the object of its fields `action`,
  `actor`, `camera`, `detail`, `from_ms`, `prev_hash`, `reason`, `seq`, `time_ms`, `to_ms` (absent values
  are `null`), keys sorted, no whitespace (`,` and `:` alone), strings as UTF-8 with only `"`, `\\` and the
  control characters escaped (`\\b \\f \\n \\r \\t`, others `\\u00xx`), integers in decimal: Python's
  `json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()`, which for these
  values (integers within 2^53) is also RFC 8785 (JCS). `prev_hash` is the previous record's hash; the first
  record's is 64 zeros (GENESIS_HASH), or the checkpoint's hash once records have been pruned.
- Signed statements (Ed25519 with the box's key, signature stored as hex): the canonical JSON of
  `{"box_id": <the signing box's id>, "hash": <a record hash>, "seq": <its seq>, "type": <type>}`, where
  type is `edgenvr-audit-head` (the chain's last record; re-signed by every append), `edgenvr-audit-record`
  (each record's own, made when it was appended: it lets a check find where a re-hashed chain stops being
  the box's) or `edgenvr-audit-anchor` (the last pruned record: the chain's start after pruning). The types
  differ so that no signature can stand in for another: a record's signature is never a head's, so the
  tail cannot be cut off and the head re-pointed at an earlier record without the key.

Invariants:
- seq runs 1, 2, 3, ... without gaps; appends are serialised by SQLite (BEGIN IMMEDIATE; several processes
  append: CLI commands and the supervisor), each durable when `append` returns (WAL, synchronous=FULL).
- An append reads only the chain's end (the last record, else the checkpoint) and the head, never the whole
  table. It refuses (AuditError) to extend a trail whose last record is not its validly signed head: signing
  a new head over a cut-off tail would make the cut undetectable.
- Pruning removes only a prefix of the chain (records are pruned in seq order, so a record stamped in the
  future by a wrong clock holds back those after it: kept longer, never shorter) and only after checking
  that prefix: hashes, links, and the signature of its last record, which becomes the signed checkpoint. It
  never destroys evidence of tampering: a prefix with a problem is not pruned (AuditError).
- Nothing here logs, prints or stores the private key; only signatures and the public key's owner's id.

Verification (`verify_trail`, read-only, needs only the public key, one snapshot) walks the chain once in seq
order from the checkpoint (whose signature it checks first) and finds the first broken link: a missing seq
(deleted), a hash that does not match its fields (edited, or moved from elsewhere), a prev_hash that does not
match the previous record's hash (deleted, inserted or reordered). An intact chain ending at the validly
signed head is authenticated by that one signature, so the records' own signatures are read only when
something is wrong: bisected over the intact part (a re-hashed chain is the box's up to the first forged
record and never after it), they name a record made without the key before the broken link, as a forger who
recomputes the hashes after an insertion leaves. Failing that the report is the broken link, else the end:
the head missing, forged, naming a later record than the last one left (the tail truncated, also when every
record was deleted), or an earlier one (a rolled-back head). A wrong public key fails on the first record.
Not detectable within the file: the whole file deleted, or replaced by an older copy of itself; exports'
manifests carry their record's seq and hash for that.

Failure paths: any append, prune or open that cannot be done (file unreadable or not a database, disk full,
directory gone, file deleted or replaced under an open trail, a record refused as invalid, a trail that
fails the checks above) raises AuditError and writes nothing, so the caller's action fails with it (no export
without its audit record). Readers raise AuditError for a file they cannot read; `verify_trail` never raises
for a file's content: it reports it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import urllib.parse
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.evidence.identity import DeviceIdentity, signature_valid
from edgenvr.index.schema import write_transaction
from edgenvr.storage.durable_writes import fsync_dir
from edgenvr.storage.layout import StorageLayout
from edgenvr.storage.permissions import FILE_MODE

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64          # prev_hash of record 1 of a trail never pruned
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10              # how long an append waits for another process's append (each takes ms)
SQLITE_INT_MIN, SQLITE_INT_MAX = -(1 << 63), (1 << 63) - 1

# Never edit a shipped schema: add a version.
SCHEMA = [
    """CREATE TABLE records (
        seq INTEGER PRIMARY KEY,     -- 1, 2, 3, ... in append order; a pruned seq is never reused
        time_ms INTEGER NOT NULL,    -- UTC epoch ms of the append (the box's wall clock)
        actor TEXT NOT NULL,
        action TEXT NOT NULL,        -- AuditAction
        camera TEXT,
        from_ms INTEGER,
        to_ms INTEGER,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,     -- hex
        hash TEXT NOT NULL,          -- hex, over every column above (see the module docstring)
        box_id TEXT NOT NULL,        -- the box that signed the record (not hashed: it is in the signed statement)
        signature TEXT NOT NULL      -- hex Ed25519 over the record's `edgenvr-audit-record` statement
    )""",
    "CREATE INDEX records_time ON records(time_ms)",
    """CREATE TABLE seals (
        kind TEXT PRIMARY KEY,       -- 'head' (the last record) | 'anchor' (the last pruned record)
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        box_id TEXT NOT NULL,
        signature TEXT NOT NULL      -- hex Ed25519 over the `edgenvr-audit-<kind>` statement
    )""",
]


class AuditAction(StrEnum):
    EXPORT = "export"
    HOLD_ADD = "hold_add"
    HOLD_RELEASE = "hold_release"
    REFERENCE_APPROVE = "reference_approve"
    CONFIG_CHANGE = "config_change"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOCKOUT = "lockout"
    LOGOUT = "logout"
    PLAYBACK = "playback"
    LIVE_VIEW = "live_view"
    USER_ADD = "user_add"
    USER_REMOVE = "user_remove"
    USER_PASSWORD = "user_password"
    USER_ROLE = "user_role"
    TOKEN_CREATE = "token_create"
    TOKEN_REVOKE = "token_revoke"
    PULL_REQUEST = "pull_request"   # at the city hub: someone asked a box for a range (hub.hub_web)
    REPORT = "report"               # a signed continuity report (evidence.continuity_report)


class SealKind(StrEnum):
    """What a signed statement vouches for (its `type` is `edgenvr-audit-<kind>`)."""
    RECORD = "record"
    HEAD = "head"
    ANCHOR = "anchor"


class AuditError(Exception):
    """The audit trail cannot be opened, read or written as asked; nothing was written."""


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    time_ms: int
    actor: str
    action: str
    camera: str | None
    from_ms: int | None
    to_ms: int | None
    reason: str
    detail: str
    prev_hash: str   # hex
    hash: str        # hex


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    records: int            # records found intact before the problem (all of them when ok)
    problem: str | None     # the first bad record (its seq) and what is wrong; None when ok


@dataclass(frozen=True)
class _Seal:
    kind: SealKind
    seq: int
    hash: str
    box_id: str
    signature: str


RECORD_FIELDS = tuple(field.name for field in fields(AuditRecord))
HASHED_FIELDS = tuple(name for name in RECORD_FIELDS if name != "hash")
_RECORD_COLUMNS = ", ".join(RECORD_FIELDS)


def canonical_json(value: dict[str, Any]) -> bytes:
    """The bytes that are hashed or signed (see the module docstring)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_hash(record: AuditRecord) -> str:
    """The hash a record must carry: SHA-256 hex of the canonical JSON of every field but `hash`."""
    return hashlib.sha256(canonical_json({name: getattr(record, name) for name in HASHED_FIELDS})).hexdigest()


def signed_statement(kind: SealKind, box_id: str, seq: int, hash_hex: str) -> bytes:
    """The bytes the box signs for a record, the head or the checkpoint."""
    return canonical_json({"box_id": box_id, "hash": hash_hex, "seq": seq, "type": f"edgenvr-audit-{kind}"})


class AuditTrail:
    """The trail for appending and pruning (needs the box's key). One connection, usable from any thread."""

    def __init__(self, layout: StorageLayout, identity: DeviceIdentity, clock: Clock = SYSTEM_CLOCK) -> None:
        self._path = layout.audit_path
        self._identity = identity
        self._clock = clock
        self._lock = threading.Lock()
        # the head this trail last checked or signed: an append by this process alone need not check it again
        self._trusted_head: _Seal | None = None
        try:
            self._conn: sqlite3.Connection | None = _open_for_writing(self._path)
        except (sqlite3.Error, OSError) as exc:
            raise AuditError(f"cannot open the audit trail {self._path}: {exc}") from exc
        try:
            self._file_id = _file_id(self._path)
        except OSError as exc:
            self.close()
            raise AuditError(f"cannot open the audit trail {self._path}: {exc}") from exc

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def append(self, actor: str, action: AuditAction, *, camera: str | None = None, from_ms: int | None = None,
               to_ms: int | None = None, reason: str = "", detail: str = "") -> AuditRecord:
        """Append one record; durable when this returns. AuditError (nothing written) if it cannot be."""
        checked_action = _checked_record_fields(actor, action, camera, from_ms, to_ms, reason, detail)
        with self._lock:
            conn = self._open_connection()
            try:
                with write_transaction(conn):
                    self._check_same_file()
                    last_seq, last_hash = self._chain_end(conn)
                    unsigned = AuditRecord(seq=last_seq + 1, time_ms=self._clock.now_ms(), actor=actor,
                                           action=str(checked_action), camera=camera, from_ms=from_ms, to_ms=to_ms,
                                           reason=reason, detail=detail, prev_hash=last_hash, hash="")
                    record = replace(unsigned, hash=record_hash(unsigned))
                    box_id = self._identity.box_id
                    conn.execute(f"INSERT INTO records ({_RECORD_COLUMNS}, box_id, signature)"
                                 f" VALUES ({', '.join('?' * (len(RECORD_FIELDS) + 2))})",
                                 (*(getattr(record, name) for name in RECORD_FIELDS), box_id,
                                  self._sign(SealKind.RECORD, record.seq, record.hash)))
                    head = self._seal(SealKind.HEAD, record.seq, record.hash)
                    _write_seal(conn, head)
            except AuditError:
                raise
            except (sqlite3.Error, OSError, ValueError, OverflowError) as exc:
                raise AuditError(f"cannot write the audit record to {self._path}: {exc}") from exc
            self._trusted_head = head
            return record

    def records(self, since_ms: int | None = None, until_ms: int | None = None) -> list[AuditRecord]:
        """Records stamped in [since_ms, until_ms) (either bound optional), in seq order."""
        with self._lock:
            conn = self._open_connection()
            try:
                return _select_records(conn, since_ms, until_ms)
            except sqlite3.Error as exc:
                raise AuditError(f"cannot read the audit trail {self._path}: {exc}") from exc

    def prune(self, before_ms: int) -> int:
        """Remove the records stamped before `before_ms` (the longest such prefix of the chain) and sign the
        last one removed as the chain's checkpoint. Returns how many were removed. AuditError, with nothing
        removed, if that prefix does not check out (see the module docstring)."""
        with self._lock:
            conn = self._open_connection()
            try:
                with write_transaction(conn):
                    self._check_same_file()
                    last_pruned, count = self._checked_prefix(conn, before_ms)
                    if last_pruned is None:
                        return 0
                    conn.execute("DELETE FROM records WHERE seq <= ?", (last_pruned.seq,))
                    _write_seal(conn, self._seal(SealKind.ANCHOR, last_pruned.seq, last_pruned.hash))
            except AuditError:
                raise
            except (sqlite3.Error, OSError, ValueError, OverflowError) as exc:
                raise AuditError(f"cannot prune the audit trail {self._path}: {exc}") from exc
        log.info("audit trail: %d records stamped before %d ms pruned; the chain now starts after record %d",
                 count, before_ms, last_pruned.seq)
        return count

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- inside a transaction ------------------------------------------------------------------------------

    def _open_connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise AuditError(f"the audit trail {self._path} is closed")
        return self._conn

    def _check_same_file(self) -> None:
        """SQLite writes on into a file deleted or replaced under an open connection, where nobody would
        ever read the record: refuse instead."""
        try:
            same = _file_id(self._path) == self._file_id
        except FileNotFoundError:
            same = False
        if not same:
            raise AuditError(f"the audit trail {self._path} was deleted or replaced while open (or its directory "
                             "is gone): nothing appended")

    def _chain_end(self, conn: sqlite3.Connection) -> tuple[int, str]:
        """(seq, hash) the next record follows: the last record, else the checkpoint, else the genesis. Refuses
        a trail whose end is not the head the box signed."""
        head = _read_seal(conn, SealKind.HEAD)
        row = conn.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        if row is not None:
            end = (row["seq"], row["hash"])
        else:
            anchor = _read_seal(conn, SealKind.ANCHOR)
            end = (anchor.seq, anchor.hash) if anchor is not None else (0, GENESIS_HASH)
        if head is None:
            if end == (0, GENESIS_HASH):
                return end   # a new trail
            raise AuditError(f"the audit trail {self._path} has lost its signed head (it ends at record {end[0]}): "
                             "nothing appended; check it with `edgenvr audit verify`")
        if (head.seq, head.hash) != end:
            raise AuditError(f"the audit trail {self._path} ends at record {end[0]} but its signed head is record "
                             f"{head.seq} (records removed or changed): nothing appended; check it with "
                             "`edgenvr audit verify`")
        if head != self._trusted_head:
            if not _seal_valid(self._identity.public_key, head):
                raise AuditError(f"the audit trail {self._path}'s head is not signed by this box's key (forged, or "
                                 "device.key was replaced): nothing appended")
            self._trusted_head = head
        return end

    def _checked_prefix(self, conn: sqlite3.Connection, before_ms: int) -> tuple[AuditRecord | None, int]:
        """The last record of the prefix stamped before `before_ms` and its length, once the prefix (and the
        first record kept) is found intact and its last record signed by this box's key."""
        anchor = _read_seal(conn, SealKind.ANCHOR)
        expected_seq, expected_prev = (anchor.seq + 1, anchor.hash) if anchor is not None else (1, GENESIS_HASH)
        last: AuditRecord | None = None
        last_signer = last_signature = ""
        count = 0
        cursor = conn.execute(f"SELECT {_RECORD_COLUMNS}, box_id, signature FROM records ORDER BY seq")
        try:
            for row in cursor:
                record = _record(row)
                problem = _link_problem(record, expected_seq, expected_prev)
                if problem is not None:
                    raise AuditError(f"not pruning the audit trail {self._path}: {problem}; check it with "
                                     "`edgenvr audit verify`")
                if record.time_ms >= before_ms:
                    break
                last, last_signer, last_signature = record, row["box_id"], row["signature"]
                count += 1
                expected_seq, expected_prev = record.seq + 1, record.hash
        finally:
            cursor.close()
        if last is not None and not _seal_valid(self._identity.public_key, _Seal(
                SealKind.RECORD, last.seq, last.hash, last_signer, last_signature)):
            raise AuditError(f"not pruning the audit trail {self._path}: record {last.seq} is not signed by this "
                             "box's key, so it cannot become the checkpoint")
        return last, count

    def _sign(self, kind: SealKind, seq: int, hash_hex: str) -> str:
        return self._identity.sign(signed_statement(kind, self._identity.box_id, seq, hash_hex)).hex()

    def _seal(self, kind: SealKind, seq: int, hash_hex: str) -> _Seal:
        return _Seal(kind, seq, hash_hex, self._identity.box_id, self._sign(kind, seq, hash_hex))


def read_records(layout: StorageLayout, since_ms: int | None = None, until_ms: int | None = None) -> list[AuditRecord]:
    """Records stamped in [since_ms, until_ms), in seq order, read-only and without the key (for `edgenvr
    audit`). None yet (no file): empty. AuditError if the file cannot be read."""
    try:
        conn = _open_readonly(layout.audit_path)
        if conn is None:
            return []
        try:
            return _select_records(conn, since_ms, until_ms)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read the audit trail {layout.audit_path}: {exc}") from exc


def upstream_batch(layout: StorageLayout, after_seq: int, max_records: int) -> tuple[list[dict[str, Any]],
                                                                                     dict[str, Any] | None]:
    """For a copy kept elsewhere (the city hub): up to `max_records` records after `after_seq`, each with its own
    signature, and the head's signed statement ({seq, hash, signature}), read in one snapshot; ([], None)
    while there is no trail. AuditError if the file cannot be read."""
    try:
        conn = _open_readonly(layout.audit_path)
        if conn is None:
            return [], None
        try:
            conn.execute("BEGIN")   # one snapshot: the head read belongs to the records read
            rows = conn.execute(f"SELECT {_RECORD_COLUMNS}, signature FROM records WHERE seq > ? ORDER BY seq"
                                " LIMIT ?", (after_seq, max_records)).fetchall()
            head = _read_seal(conn, SealKind.HEAD)
            conn.execute("COMMIT")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read the audit trail {layout.audit_path}: {exc}") from exc
    records = [{**{name: row[name] for name in RECORD_FIELDS}, "signature": row["signature"]} for row in rows]
    return records, None if head is None else {"seq": head.seq, "hash": head.hash, "signature": head.signature}


def checked_upstream_record(sent: dict[str, Any], box_id: str, public_key: Ed25519PublicKey) -> AuditRecord:
    """A record as `upstream_batch` gives it, once its hash is its fields' and its own signature is by `box_id`'s
    key; AuditError naming what is wrong otherwise (a copy never keeps a record the box's key did not make)."""
    try:
        record = AuditRecord(**{name: sent[name] for name in RECORD_FIELDS})
        _checked_record_fields(record.actor, AuditAction(record.action), record.camera, record.from_ms,
                               record.to_ms, record.reason, record.detail)
        if not (isinstance(record.seq, int) and isinstance(record.time_ms, int)):
            raise TypeError("seq and time_ms are integers")
        same_hash = record_hash(record) == record.hash
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditError(f"not an audit record: {exc}") from None
    if not same_hash:
        raise AuditError(f"record {record.seq}: its hash is not that of its fields")
    if not _seal_valid(public_key, _Seal(SealKind.RECORD, record.seq, record.hash, box_id, str(sent.get("signature")))):
        raise AuditError(f"record {record.seq}: its signature is not by {box_id}'s key")
    return record


def upstream_head_valid(head: dict[str, Any], box_id: str, public_key: Ed25519PublicKey) -> bool:
    """Whether `head` ({seq, hash, signature}) is the box's signed statement of its trail's last record."""
    seq, hash_hex, signature = head.get("seq"), head.get("hash"), head.get("signature")
    return isinstance(seq, int) and isinstance(hash_hex, str) and isinstance(signature, str) and \
        _seal_valid(public_key, _Seal(SealKind.HEAD, seq, hash_hex, box_id, signature))


def verify_trail(layout: StorageLayout, public_key: Ed25519PublicKey) -> AuditVerification:
    """Check the whole trail (see the module docstring), read-only, with the box's public key only."""
    path = layout.audit_path
    try:
        conn = _open_readonly(path)
    except (sqlite3.Error, AuditError) as exc:
        return AuditVerification(False, 0, f"the audit trail {path} cannot be read: {exc}")
    if conn is None:
        return AuditVerification(False, 0, f"there is no audit trail at {path}")
    try:
        conn.execute("BEGIN")   # one snapshot: an append meanwhile changes records and head together
        try:
            return _verify(conn, public_key)
        finally:
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        return AuditVerification(False, 0, f"the audit trail {path} cannot be read: {exc}")
    finally:
        conn.close()


# -- the checks ------------------------------------------------------------------------------------------------

def _verify(conn: sqlite3.Connection, public_key: Ed25519PublicKey) -> AuditVerification:
    anchor = _read_seal(conn, SealKind.ANCHOR)
    head = _read_seal(conn, SealKind.HEAD)
    expected_seq, expected_prev = 1, GENESIS_HASH
    if anchor is not None:
        if not _seal_valid(public_key, anchor):
            return AuditVerification(False, 0, f"the checkpoint of pruned records (record {anchor.seq}) is not signed "
                                               "by this key: forged, or this is not the box's public key")
        expected_seq, expected_prev = anchor.seq + 1, anchor.hash
    first_seq = expected_seq
    intact = 0
    link_problem: str | None = None
    for row in conn.execute(f"SELECT {_RECORD_COLUMNS} FROM records ORDER BY seq"):
        record = _record(row)
        link_problem = _link_problem(record, expected_seq, expected_prev)
        if link_problem is not None:
            break
        intact += 1
        expected_seq, expected_prev = record.seq + 1, record.hash
    last_seq, last_hash = expected_seq - 1, expected_prev   # the end of the intact part of the chain
    if link_problem is None and head is None and intact == 0 and anchor is None:
        return AuditVerification(True, 0, None)   # nothing appended yet
    head_valid = head is not None and _seal_valid(public_key, head)
    if link_problem is None and head is not None and head_valid and (head.seq, head.hash) == (last_seq, last_hash):
        return AuditVerification(True, intact, None)
    # Something is wrong. A record made without the key before the first broken link comes first: a forger who
    # recomputed hashes from there on (for an insertion, say) leaves a chain that only the signatures break.
    unsigned = _first_unsigned_record(conn, public_key, first_seq, last_seq)
    if unsigned is not None:
        if unsigned == first_seq and anchor is None and not head_valid:
            return AuditVerification(False, 0, f"record {unsigned} and the head are not signed by this key: this is "
                                               "not the box's public key, or the whole trail was forged")
        return AuditVerification(False, unsigned - first_seq, f"record {unsigned} was made or changed without the "
                                 "box's key (its hash was recomputed, but its signature does not verify)")
    if link_problem is not None:
        return AuditVerification(False, intact, link_problem)
    if head is None:
        return AuditVerification(False, intact, f"the signed head is missing: records up to {last_seq} are not "
                                                "vouched for by the box's signature (the tail may have been cut)")
    if not head_valid:
        return AuditVerification(False, intact, f"the signed head (record {head.seq}) is not signed by this key: "
                                                "it was forged")
    if head.seq > last_seq:
        missing = (f"record {head.seq} is" if head.seq == last_seq + 1
                   else f"records {last_seq + 1} to {head.seq} are")
        left = f"the last record left is {last_seq}" if intact else "no record is left"
        return AuditVerification(False, intact, f"the trail was truncated: {missing} missing (the signed head is "
                                                f"record {head.seq}, {left})")
    if head.seq < last_seq:
        return AuditVerification(False, head.seq - first_seq + 1, f"record {head.seq + 1} comes after the signed head"
                                 f" (record {head.seq}): the head was rolled back")
    return AuditVerification(False, intact, f"record {last_seq} is not the one the signed head names")


def _link_problem(record: AuditRecord, expected_seq: int, expected_prev: str) -> str | None:
    """What is wrong with this record as the next one of the chain, or None."""
    if record.seq != expected_seq:
        missing = (f"record {expected_seq} is missing" if record.seq == expected_seq + 1
                   else f"records {expected_seq} to {record.seq - 1} are missing")
        return f"{missing} (deleted): the next record left is {record.seq}"
    try:
        hash_matches = record_hash(record) == record.hash
    except (TypeError, ValueError):   # a value no append writes (a blob, an unpaired surrogate)
        hash_matches = False
    if not hash_matches:
        return f"record {record.seq} was edited (or moved from elsewhere in the trail): its fields do not match its hash"
    if record.prev_hash != expected_prev:
        before = f"record {expected_seq - 1}" if expected_seq > 1 else "the start of the trail"
        return (f"record {record.seq} does not follow {before}: a record before it was deleted, inserted or moved")
    return None


def _first_unsigned_record(conn: sqlite3.Connection, public_key: Ed25519PublicKey, first: int, last: int) -> int | None:
    """The first record in seq first..last (an intact chain) whose own signature does not verify, or None.
    Bisected: a chain re-hashed from a forged record on is the box's before it and never from it on."""
    def signed(seq: int) -> bool:
        row = conn.execute("SELECT seq, hash, box_id, signature FROM records WHERE seq = ?", (seq,)).fetchone()
        return row is not None and _seal_valid(public_key, _Seal(SealKind.RECORD, row["seq"], row["hash"],
                                                                   row["box_id"], row["signature"]))

    if last < first or signed(last):
        return None
    low, high = first, last   # invariant: `high` is unsigned, everything before `low` is signed
    while low < high:
        middle = (low + high) // 2
        if signed(middle):
            low = middle + 1
        else:
            high = middle
    return high


def _seal_valid(public_key: Ed25519PublicKey, seal: _Seal) -> bool:
    try:
        return signature_valid(public_key, bytes.fromhex(seal.signature),
                               signed_statement(seal.kind, seal.box_id, seal.seq, seal.hash))
    except (TypeError, ValueError):   # not hex, not text, not encodable: not a signature
        return False


def _checked_record_fields(actor: str, action: AuditAction, camera: str | None, from_ms: int | None,
                           to_ms: int | None, reason: str, detail: str) -> AuditAction:
    """The action, once every field is one a record can carry and hash canonically; AuditError otherwise."""
    try:
        checked_action = AuditAction(action)
    except ValueError:
        raise AuditError(f"{action!r} is not an audit action") from None
    if not isinstance(actor, str) or not actor.strip():
        raise AuditError("an audit record needs an actor: who did it")
    texts = {"actor": actor, "reason": reason, "detail": detail, **({"camera": camera} if camera is not None else {})}
    for name, text in texts.items():
        if not isinstance(text, str):
            raise AuditError(f"the audit record's {name} must be text, not {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:   # argv keeps undecodable bytes as surrogates; they have no UTF-8 form
            raise AuditError(f"the audit record's {name} is not valid text") from None
    for name, value in (("from_ms", from_ms), ("to_ms", to_ms)):
        if value is not None and (type(value) is not int or not SQLITE_INT_MIN <= value <= SQLITE_INT_MAX):
            raise AuditError(f"the audit record's {name} must be an integer time in ms, not {value!r}")
    if from_ms is not None and to_ms is not None and from_ms > to_ms:
        raise AuditError(f"the audit record's range ends ({to_ms}) before it starts ({from_ms})")
    return checked_action


# -- the file --------------------------------------------------------------------------------------------------

def _open_for_writing(path: Path) -> sqlite3.Connection:
    """The trail for appending, created (0640 whatever the umask, schema and all) if it does not exist yet. The
    data directory must exist: a missing one is a wrong data_dir or a removed disk, not a place to start over."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the data directory {path.parent} does not exist")
    try:
        # SQLite gives the -wal and -shm files the database's mode, so make the file ourselves first
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        os.chmod(path, FILE_MODE)
        created = True
    except FileExistsError:
        created = False
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        _prepare(conn)
        conn.execute("PRAGMA page_size=1024")   # a record's commit dirties a few small pages (SD-card wear)
        if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise sqlite3.OperationalError("cannot switch the audit trail to WAL")
        conn.execute("PRAGMA synchronous=FULL")
        with write_transaction(conn):
            version = _check_version(conn, path)
            if version == 0:
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    if created:
        fsync_dir(path.parent)   # the new file's name is on the disk before any record is said to be
    return conn


def _open_readonly(path: Path) -> sqlite3.Connection | None:
    """The trail, read-only; None if there is none yet (no file, or a file no writer has set up yet)."""
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                           isolation_level=None)
    try:
        _prepare(conn)
        if _check_version(conn, path) == 0:
            conn.close()
            return None
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection) -> None:
    conn.row_factory = sqlite3.Row
    # bytes that are not UTF-8 (only a hand edit writes them) must not stop a reader: decoded with U+FFFD, the
    # record no longer matches its hash, so the check names it
    conn.text_factory = lambda raw: raw.decode("utf-8", "replace")


def _check_version(conn: sqlite3.Connection, path: Path) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise AuditError(f"the audit trail {path} was written by a newer edgenvr (audit schema version {version}; "
                         f"this edgenvr knows up to {SCHEMA_VERSION})")
    return version


def _file_id(path: Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def _select_records(conn: sqlite3.Connection, since_ms: int | None, until_ms: int | None) -> list[AuditRecord]:
    conditions: list[str] = []
    arguments: list[int] = []
    if since_ms is not None:
        conditions.append("time_ms >= ?")
        arguments.append(since_ms)
    if until_ms is not None:
        conditions.append("time_ms < ?")
        arguments.append(until_ms)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = conn.execute(f"SELECT {_RECORD_COLUMNS} FROM records{where} ORDER BY seq", arguments)
    return [_record(row) for row in rows]


def _record(row: sqlite3.Row) -> AuditRecord:
    return AuditRecord(**{name: row[name] for name in RECORD_FIELDS})


def _read_seal(conn: sqlite3.Connection, kind: SealKind) -> _Seal | None:
    row = conn.execute("SELECT seq, hash, box_id, signature FROM seals WHERE kind = ?", (str(kind),)).fetchone()
    return None if row is None else _Seal(kind, row["seq"], row["hash"], row["box_id"], row["signature"])


def _write_seal(conn: sqlite3.Connection, seal: _Seal) -> None:
    conn.execute("INSERT OR REPLACE INTO seals (kind, seq, hash, box_id, signature) VALUES (?, ?, ?, ?, ?)",
                 (str(seal.kind), seal.seq, seal.hash, seal.box_id, seal.signature))
