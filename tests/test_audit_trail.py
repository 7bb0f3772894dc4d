"""The audit trail (evidence.audit): every action on footage is on record, in order; nobody without the box's
key can edit, delete, insert, reorder or cut off records unseen, and the check names the first bad record;
pruning old records keeps the rest checkable; an action whose record cannot be written fails with it; two
processes appending at once lose nothing.

Real SQLite files in tmp_path, a SimulatedClock, the box's real Ed25519 key. Tampering is done as an
attacker with the file but not the key would: sqlite3 on the file, recomputing hashes from the documented
encoding where that helps the attacker.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import re
import resource
import shutil
import signal
import sqlite3
import time
from contextlib import contextmanager
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgenvr.core.clock import SimulatedClock
from edgenvr.core.units import DAY_MS, HOUR_MS, MINUTE_MS
from edgenvr.evidence.audit import (
    GENESIS_HASH,
    AuditAction,
    AuditError,
    AuditRecord,
    AuditTrail,
    SealKind,
    read_records,
    signed_statement,
    verify_trail,
)
from edgenvr.evidence.identity import DeviceIdentity, device_identity
from edgenvr.storage.layout import StorageLayout

START_MS = 1_764_547_200_000   # 2025-12-01 00:00 UTC
RANGE = {"from_ms": START_MS + 8 * HOUR_MS + 40 * MINUTE_MS, "to_ms": START_MS + 9 * HOUR_MS + 10 * MINUTE_MS}
# (hour, minute, actor, action, fields): a day at a small box
A_DAY: list[tuple[int, int, str, AuditAction, dict[str, Any]]] = [
    (6, 0, "edgenvr run", AuditAction.CONFIG_CHANGE,
     {"reason": "config file in force at start-up", "detail": '{"file":"/etc/edgenvr/edgenvr.toml","sha256":"ab12"}'}),
    (9, 15, "ani", AuditAction.HOLD_ADD, {"camera": "gate", **RANGE, "reason": "laporan polisi LP/123/XII/2025"}),
    (9, 20, "ani", AuditAction.EXPORT, {"camera": "gate", **RANGE, "reason": "laporan polisi LP/123/XII/2025",
                                        "detail": '{"files":{"0001.mp4":"9f86d0"},"folder":"lp-123"}'}),
    (11, 0, "budi", AuditAction.REFERENCE_APPROVE, {"camera": "yard", "reason": "kamera dipasang ulang"}),
    (12, 0, "budi", AuditAction.PLAYBACK, {"camera": "yard", **RANGE}),
    (14, 30, "ani", AuditAction.HOLD_RELEASE, {"reason": "kasus selesai", "detail": "hold 1"}),
    (16, 45, "budi", AuditAction.LOGIN, {"detail": "web, 10.0.0.7"}),
    (18, 0, "ani", AuditAction.EXPORT, {"camera": "yard", **RANGE, "reason": "permintaan asuransi",
                                        "detail": "Überwachung — «pencurian»\nline two"}),
]


@pytest.fixture
def layout(tmp_path: Path) -> StorageLayout:
    return StorageLayout(tmp_path / "data")


@pytest.fixture
def identity(layout: StorageLayout) -> DeviceIdentity:
    return device_identity(layout, "rt08", "Pos RT 08")


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(START_MS)


def advance_to(clock: SimulatedClock, time_ms: int) -> None:
    clock.advance((time_ms - clock.now_ms()) / 1000)


def record_a_day(layout: StorageLayout, identity: DeviceIdentity, clock: SimulatedClock) -> list[AuditRecord]:
    """A_DAY, appended through two trails open at once (the supervisor's and a CLI command's), closed after."""
    supervisor, command = AuditTrail(layout, identity, clock), AuditTrail(layout, identity, clock)
    written = []
    for number, (hour, minute, actor, action, fields) in enumerate(A_DAY):
        advance_to(clock, START_MS + hour * HOUR_MS + minute * MINUTE_MS)
        written.append((supervisor if number % 3 == 0 else command).append(actor, action, **fields))
    supervisor.close()
    command.close()
    return written


@pytest.fixture
def a_day(layout: StorageLayout, identity: DeviceIdentity, clock: SimulatedClock) -> list[AuditRecord]:
    return record_a_day(layout, identity, clock)


@contextmanager
def the_file(layout: StorageLayout) -> Iterator[sqlite3.Connection]:
    """The audit file opened directly, as someone with access to the disk but not the key; committed after."""
    conn = sqlite3.connect(layout.audit_path)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
        conn.commit()
    finally:
        conn.close()


def documented_hash(fields: dict[str, Any]) -> str:
    """The record hash recomputed from the module docstring alone (no edgenvr code)."""
    hashed = {name: value for name, value in fields.items() if name not in ("hash", "box_id", "signature")}
    return hashlib.sha256(json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                          .encode("utf-8")).hexdigest()


def rehash_from(conn: sqlite3.Connection, seq: int) -> None:
    """What a forger who knows the encoding does: recompute prev_hash and hash from `seq` to the end, and
    point the head at the new last record (its signature cannot be redone without the key)."""
    previous = conn.execute("SELECT hash FROM records WHERE seq = ?", (seq - 1,)).fetchone()
    prev_hash = previous["hash"] if previous else GENESIS_HASH
    for row in conn.execute("SELECT * FROM records WHERE seq >= ? ORDER BY seq", (seq,)).fetchall():
        fields = {**dict(row), "prev_hash": prev_hash}
        prev_hash = documented_hash(fields)
        conn.execute("UPDATE records SET prev_hash = ?, hash = ? WHERE seq = ?", (fields["prev_hash"], prev_hash,
                                                                                 row["seq"]))
    last = conn.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
    conn.execute("UPDATE seals SET seq = ?, hash = ? WHERE kind = 'head'", (last["seq"], last["hash"]))


def first_named(problem: str | None) -> int:
    """The first record a verification problem names."""
    assert problem is not None
    match = re.search(r"\brecords? (\d+)", problem)
    assert match, problem
    return int(match.group(1))


def test_a_days_actions_verify_and_list_in_order_with_time_filters(
        layout: StorageLayout, identity: DeviceIdentity, clock: SimulatedClock) -> None:
    assert read_records(layout) == []   # no trail yet: nothing to list
    written = record_a_day(layout, identity, clock)

    listed = read_records(layout)   # read-only, no key
    assert listed == written
    assert [r.seq for r in listed] == list(range(1, 9))
    assert [r.action for r in listed] == [action for _, _, _, action, _ in A_DAY]
    assert listed[1].camera == "gate" and (listed[1].from_ms, listed[1].to_ms) == (RANGE["from_ms"], RANGE["to_ms"])
    assert listed[7].detail == "Überwachung — «pencurian»\nline two"
    assert listed[0].prev_hash == GENESIS_HASH
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(listed, listed[1:]))
    assert verify_trail(layout, identity.public_key).ok
    assert verify_trail(layout, identity.public_key).records == 8

    # [since, until): 09:00 up to (not including) 12:00 is the hold, the export and the approval
    morning = read_records(layout, START_MS + 9 * HOUR_MS, START_MS + 12 * HOUR_MS)
    assert [r.seq for r in morning] == [2, 3, 4]
    assert [r.seq for r in read_records(layout, since_ms=START_MS + 14 * HOUR_MS)] == [6, 7, 8]
    assert [r.seq for r in read_records(layout, until_ms=START_MS + 9 * HOUR_MS + 15 * MINUTE_MS)] == [1]

    # the next day, a new command carries the chain on
    advance_to(clock, START_MS + DAY_MS + 8 * HOUR_MS)
    with AuditTrail(layout, identity, clock) as trail:
        record = trail.append("citra", AuditAction.EXPORT, camera="gate", reason="follow-up")
        assert trail.records(since_ms=START_MS + DAY_MS) == [record]
    assert (record.seq, record.prev_hash, record.time_ms) == (9, written[-1].hash, START_MS + DAY_MS + 8 * HOUR_MS)
    result = verify_trail(layout, identity.public_key)
    assert result.ok and result.records == 9


def test_anyone_can_recompute_the_hashes_and_check_the_head_from_the_documented_encoding(
        layout: StorageLayout, identity: DeviceIdentity, a_day: list[AuditRecord]) -> None:
    for record in read_records(layout):
        as_listed = {name: getattr(record, name) for name in record.__dataclass_fields__}   # `edgenvr audit --json`
        assert documented_hash(as_listed) == record.hash
    with the_file(layout) as conn:
        head = conn.execute("SELECT * FROM seals WHERE kind = 'head'").fetchone()
        own = conn.execute("SELECT box_id, signature FROM records WHERE seq = 8").fetchone()
    last = a_day[-1]
    statement = f'{{"box_id":"rt08","hash":"{last.hash}","seq":8,"type":"edgenvr-audit-head"}}'.encode()
    assert (head["seq"], head["hash"], head["box_id"]) == (8, last.hash, "rt08")
    identity.public_key.verify(bytes.fromhex(head["signature"]), statement)   # raises if not
    identity.public_key.verify(bytes.fromhex(own["signature"]), statement.replace(b"-head", b"-record"))


@pytest.mark.parametrize("column, value", [
    ("reason", "no reason"), ("actor", "someone else"), ("time_ms", START_MS + 12 * HOUR_MS + 1),
    ("camera", None), ("to_ms", RANGE["to_ms"] + HOUR_MS), ("action", "login"), ("detail", "x"),
])
def test_an_edited_field_is_named(layout: StorageLayout, identity: DeviceIdentity, a_day: list[AuditRecord],
                                  column: str, value: object) -> None:
    with the_file(layout) as conn:
        conn.execute(f"UPDATE records SET {column} = ? WHERE seq = 5", (value,))
    result = verify_trail(layout, identity.public_key)
    assert not result.ok and first_named(result.problem) == 5 and "edited" in str(result.problem), result
    assert result.records == 4


def test_an_edit_with_every_hash_recomputed_is_named_by_the_records_signatures(
        layout: StorageLayout, identity: DeviceIdentity, a_day: list[AuditRecord]) -> None:
    with the_file(layout) as conn:
        conn.execute("UPDATE records SET camera = 'yard' WHERE seq = 3")   # the export was of another camera...
        rehash_from(conn, 3)                                             # ...and the chain looks whole
    result = verify_trail(layout, identity.public_key)
    assert not result.ok and first_named(result.problem) == 3 and "without the box's key" in str(result.problem)


@pytest.mark.parametrize("deleted", [1, 4, 7])
def test_a_deleted_record_is_named(layout: StorageLayout, identity: DeviceIdentity, a_day: list[AuditRecord],
                                   deleted: int) -> None:
    with the_file(layout) as conn:
        conn.execute("DELETE FROM records WHERE seq = ?", (deleted,))
    result = verify_trail(layout, identity.public_key)
    assert not result.ok and first_named(result.problem) == deleted and "missing" in str(result.problem), result


def test_a_deleted_record_with_the_rest_renumbered_is_named(
        layout: StorageLayout, identity: DeviceIdentity, a_day: list[AuditRecord]) -> None:
    with the_file(layout) as conn:
        conn.execute("DELETE FROM records WHERE seq = 4")
        conn.execute("UPDATE records SET seq = seq - 1 WHERE seq > 4")   # in rowid order: no clash
    result = verify_trail(layout, identity.public_key)
    assert not result.ok and first_named(result.problem) == 4, result


@pytest.mark.parametrize("swapped", ["whole records", "times only"])
def test_two_swapped_records_are_named(layout: StorageLayout, identity: DeviceIdentity,
                                       a_day: list[AuditRecord], swapped: str) -> None:
    columns = ["time_ms", "actor", "action", "camera", "from_ms", "to_ms", "reason", "detail", "prev_hash", "hash",
               "box_id", "signature"] if swapped == "whole records" else ["time_ms"]
    with the_file(layout) as conn:
        third, fourth = (dict(conn.execute("SELECT * FROM records WHERE seq = ?", (seq,)).fetchone()) for seq in (3, 4))
        for seq, row in ((3, fourth), (4, third)):
            conn.execute(f"UPDATE records SET {', '.join(f'{c} = ?' for c in columns)} WHERE seq = ?",
                         (*(row[c] for c in columns), seq))
    result = verify_trail(layout, identity.public_key)
    assert not result.ok and first_named(result.problem) == 3, result


def forge(conn: sqlite3.Connection, seq: int, prev_hash: str) -> None:
    """A record written by hand with a correct hash and link, signed with a key that is not the box's."""
    fields = {"seq": seq, "time_ms": START_MS + 10 * HOUR_MS, "actor": "ani", "action": "hold_release",
              "camera": "gate", "from_ms": None, "to_ms": None, "reason": "mistake", "detail": "hold 1",
              "prev_hash": prev_hash}
    fields["hash"] = documented_hash(fields)
    fake = Ed25519PrivateKey.generate().sign(signed_statement(SealKind.RECORD, "rt08", seq, fields["hash"])).hex()
    conn.execute(f"INSERT INTO records ({', '.join(fields)}, box_id, signature)"
                 f" VALUES ({', '.join('?' * (len(fields) + 2))})", (*fields.values(), "rt08", fake))


@pytest.mark.parametrize("how", ["at the end", "in the middle", "in the middle, later hashes recomputed"])
def test_an_inserted_forged_record_is_named(layout: StorageLayout, identity: DeviceIdentity,
                                            a_day: list[AuditRecord], how: str) -> None:
    with the_file(layout) as conn:
        if how == "at the end":
            forge(conn, 9, a_day[-1].hash)
            conn.execute("UPDATE seals SET seq = 9 WHERE kind = 'head'")
            expected = 9
        else:
            conn.execute("UPDATE records SET seq = seq + 100 WHERE seq >= 5")   # make room between 4 and 5
            conn.execute("UPDATE records SET seq = seq - 99 WHERE seq >= 100")
            forge(conn, 5, a_day[3].hash)
            if how.endswith("recomputed"):
                rehash_from(conn, 6)
            expected = 5
    result = verify_trail(layout, identity.public_key)
    assert not result.ok and first_named(result.problem) == expected, result
    assert "without the box's key" in str(result.problem)


@pytest.mark.parametrize("dropped, says", [(1, "record 8 is missing"), (3, "records 6 to 8 are missing"),
                                           (8, "records 1 to 8 are missing")])
def test_dropping_the_last_records_is_detected_and_never_signed_over(
        layout: StorageLayout, identity: DeviceIdentity, clock: SimulatedClock, a_day: list[AuditRecord],
        dropped: int, says: str) -> None:
    with the_file(layout) as conn:
        conn.execute("DELETE FROM records WHERE seq > ?", (8 - dropped,))
    result = verify_trail(layout, identity.public_key)
    assert not result.ok and "truncated" in str(result.problem) and says in str(result.problem), result
    assert result.records == 8 - dropped

    # the next action is refused rather than signing a new head over the cut (which would hide it)
    with AuditTrail(layout, identity, clock) as trail, pytest.raises(AuditError, match="signed head is record 8"):
        trail.append("ani", AuditAction.EXPORT, camera="gate", reason="after the cut")
    assert verify_trail(layout, identity.public_key) == result


def test_a_head_signed_by_another_key_fails(layout: StorageLayout, identity: DeviceIdentity, clock: SimulatedClock,
                                            a_day: list[AuditRecord]) -> None:
    other = Ed25519PrivateKey.generate()
    with the_file(layout) as conn:   # the tail cut off, and a head for the new end signed with another key
        conn.execute("DELETE FROM records WHERE seq > 6")
        conn.execute("UPDATE seals SET seq = 6, hash = ?, signature = ? WHERE kind = 'head'", (a_day[5].hash, other.sign(
            signed_statement(SealKind.HEAD, "rt08", 6, a_day[5].hash)).hex()))
    result = verify_trail(layout, identity.public_key)
    assert not result.ok and "signed head (record 6) is not signed by this key" in str(result.problem), result
    with AuditTrail(layout, identity, clock) as trail, pytest.raises(AuditError, match="not signed by this box's key"):
        trail.append("ani", AuditAction.EXPORT, camera="gate", reason="on a forged head")


def test_a_rolled_back_head_and_the_wrong_public_key_fail(
        layout: StorageLayout, identity: DeviceIdentity, clock: SimulatedClock, a_day: list[AuditRecord]) -> None:
    wrong_key = Ed25519PrivateKey.generate().public_key()
    result = verify_trail(layout, wrong_key)
    assert not result.ok and "not the box's public key" in str(result.problem), result

    with the_file(layout) as conn:
        old_head = dict(conn.execute("SELECT * FROM seals WHERE kind = 'head'").fetchone())
    with AuditTrail(layout, identity, clock) as trail:
        trail.append("ani", AuditAction.EXPORT, camera="gate", reason="the one to hide")
    with the_file(layout) as conn:   # a copy of the head from before the append put back
        conn.execute("UPDATE seals SET seq = ?, hash = ?, signature = ? WHERE kind = 'head'",
                     (old_head["seq"], old_head["hash"], old_head["signature"]))
    result = verify_trail(layout, identity.public_key)
    assert not result.ok and first_named(result.problem) == 9 and "rolled back" in str(result.problem), result


def five_days(layout: StorageLayout, identity: DeviceIdentity, clock: SimulatedClock) -> AuditTrail:
    """20 records, one every 6 hours from START_MS (seq n at START_MS + (n - 1) * 6 h); the trail left open."""
    trail = AuditTrail(layout, identity, clock)
    for number in range(20):
        advance_to(clock, START_MS + number * 6 * HOUR_MS)
        trail.append("ani", AuditAction.PLAYBACK, camera="gate", detail=f"playback {number + 1}")
    return trail


def test_pruning_old_records_keeps_the_rest_verifiable(layout: StorageLayout, identity: DeviceIdentity,
                                                       clock: SimulatedClock) -> None:
    trail = five_days(layout, identity, clock)
    assert trail.prune(START_MS) == 0
    assert trail.prune(START_MS + 2 * DAY_MS) == 8   # seq 1-8 are the first two days
    assert [r.seq for r in trail.records()] == list(range(9, 21))
    assert verify_trail(layout, identity.public_key).ok and verify_trail(layout, identity.public_key).records == 12
    assert trail.prune(START_MS + 2 * DAY_MS) == 0

    record = trail.append("ani", AuditAction.EXPORT, camera="gate", reason="after pruning")
    assert record.seq == 21 and verify_trail(layout, identity.public_key).records == 13
    assert trail.prune(START_MS + 3 * DAY_MS) == 4   # a second checkpoint replaces the first
    assert verify_trail(layout, identity.public_key).records == 9

    advance_to(clock, START_MS + 10 * DAY_MS)
    assert trail.prune(clock.now_ms()) == 9          # everything: the checkpoint is the last record
    assert trail.records() == [] and verify_trail(layout, identity.public_key).ok
    latest = trail.append("ani", AuditAction.LOGIN, detail="web")
    assert (latest.seq, latest.prev_hash) == (22, record.hash)
    trail.close()
    result = verify_trail(layout, identity.public_key)
    assert result.ok and result.records == 1


@pytest.mark.parametrize("tampering, first_bad", [
    ("UPDATE records SET reason = 'nothing' WHERE seq = 12", 12),
    ("DELETE FROM records WHERE seq = 9", 9),     # the oldest record kept, passed off as pruned
    ("UPDATE records SET prev_hash = hash WHERE seq = 9", 9),
    ("DELETE FROM records WHERE seq <= 10; UPDATE seals SET seq = 10,"
     " hash = (SELECT prev_hash FROM records WHERE seq = 11) WHERE kind = 'anchor'", 10),   # a checkpoint moved on
])
def test_a_pruned_then_tampered_trail_still_fails(layout: StorageLayout, identity: DeviceIdentity,
                                                  clock: SimulatedClock, tampering: str, first_bad: int) -> None:
    with five_days(layout, identity, clock) as trail:
        trail.prune(START_MS + 2 * DAY_MS)
    with the_file(layout) as conn:
        for statement in tampering.split("; "):
            conn.execute(statement)
    result = verify_trail(layout, identity.public_key)
    assert not result.ok and first_named(result.problem) == first_bad, result


def test_pruning_never_destroys_evidence_of_tampering(layout: StorageLayout, identity: DeviceIdentity,
                                                      clock: SimulatedClock) -> None:
    five_days(layout, identity, clock).close()
    with the_file(layout) as conn:
        conn.execute("UPDATE records SET detail = 'nothing to see' WHERE seq = 3")
    with AuditTrail(layout, identity, clock) as trail, pytest.raises(AuditError, match="not pruning.*record 3"):
        trail.prune(START_MS + 2 * DAY_MS)
    result = verify_trail(layout, identity.public_key)
    assert len(read_records(layout)) == 20 and first_named(result.problem) == 3


def test_an_append_whose_data_directory_is_gone_raises(layout: StorageLayout, identity: DeviceIdentity,
                                                       clock: SimulatedClock) -> None:
    trail = AuditTrail(layout, identity, clock)
    trail.append("ani", AuditAction.EXPORT, camera="gate", reason="before")
    shutil.rmtree(layout.data_dir)   # SQLite itself would write on into the deleted file
    with pytest.raises(AuditError, match="deleted or replaced"):
        trail.append("ani", AuditAction.EXPORT, camera="gate", reason="after")
    trail.close()
    with pytest.raises(AuditError, match="does not exist"):
        AuditTrail(layout, identity, clock)
    assert not layout.data_dir.exists()   # never made again in passing


def test_an_audit_file_that_is_not_a_database_refuses_every_action(
        layout: StorageLayout, identity: DeviceIdentity, clock: SimulatedClock) -> None:
    layout.audit_path.write_bytes(b"not a database: a damaged card, or a hand edit gone wrong" * 20)
    with pytest.raises(AuditError, match="cannot open"):
        AuditTrail(layout, identity, clock)
    with pytest.raises(AuditError, match="cannot read"):
        read_records(layout)
    result = verify_trail(layout, identity.public_key)
    assert not result.ok and "cannot be read" in str(result.problem)


def _append_with_no_room_to_write(data_dir: str, results: "Queue[str]") -> None:
    """In a child process: the OS refuses to grow any file (as on a full disk) while a record is appended."""
    layout = StorageLayout(Path(data_dir))
    trail = AuditTrail(layout, device_identity(layout, "rt08", "Pos RT 08"), SimulatedClock(START_MS + DAY_MS))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # write() fails with EFBIG instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        record = trail.append("ani", AuditAction.EXPORT, camera="gate", reason="no room")
        results.put(f"written as record {record.seq}")
    except AuditError as exc:
        results.put(f"AuditError: {exc}")
    finally:
        trail.close()


@pytest.mark.slow
def test_an_append_the_disk_refuses_raises_and_leaves_the_trail_intact(
        layout: StorageLayout, identity: DeviceIdentity, clock: SimulatedClock, a_day: list[AuditRecord]) -> None:
    context = multiprocessing.get_context("spawn")
    results: Queue[str] = context.Queue()
    child = context.Process(target=_append_with_no_room_to_write, args=(str(layout.data_dir), results))
    child.start()
    outcome = results.get(timeout=60)
    child.join(30)
    print(outcome)
    assert outcome.startswith("AuditError: cannot write the audit record"), outcome
    result = verify_trail(layout, identity.public_key)
    assert result.ok and result.records == 8
    with AuditTrail(layout, identity, clock) as trail:   # and once there is room again, the chain goes on
        assert trail.append("ani", AuditAction.EXPORT, camera="gate", reason="room again").seq == 9


@pytest.mark.parametrize("arguments, says", [
    (("ani", "delete_everything"), "not an audit action"),
    (("  ", AuditAction.EXPORT), "needs an actor"),
    (("ani", AuditAction.HOLD_ADD, {"from_ms": START_MS, "to_ms": START_MS - 1}), "ends"),
    (("ani", AuditAction.HOLD_ADD, {"from_ms": 1.5}), "integer"),
    (("ani", AuditAction.HOLD_ADD, {"to_ms": True}), "integer"),
    (("ani", AuditAction.EXPORT, {"reason": "bytes the terminal could not decode: \udcff"}), "not valid text"),
])
def test_a_record_that_cannot_be_kept_faithfully_is_refused(
        layout: StorageLayout, identity: DeviceIdentity, clock: SimulatedClock, arguments: tuple[Any, ...],
        says: str) -> None:
    actor, action, *fields = arguments
    with AuditTrail(layout, identity, clock) as trail, pytest.raises(AuditError, match=says):
        trail.append(actor, action, **(fields[0] if fields else {}))
    assert read_records(layout) == [] and verify_trail(layout, identity.public_key).ok


def _append_from_another_process(data_dir: str, writer: str, count: int, ready: "Queue[str]", start: Event) -> None:
    layout = StorageLayout(Path(data_dir))
    clock = SimulatedClock(START_MS)
    with AuditTrail(layout, device_identity(layout, "rt08", "Pos RT 08"), clock) as trail:
        ready.put(writer)
        start.wait(60)
        for number in range(count):
            trail.append(writer, AuditAction.PLAYBACK, camera="gate", detail=f"{writer} {number}")
            clock.advance(1)
            time.sleep(0.002)   # as real writers do, pause between actions (a tight loop hogs the lock)


@pytest.mark.slow
def test_two_processes_appending_at_once_lose_nothing(layout: StorageLayout, identity: DeviceIdentity,
                                                      clock: SimulatedClock) -> None:
    AuditTrail(layout, identity, clock).close()
    count = 400
    context = multiprocessing.get_context("spawn")
    ready: Queue[str] = context.Queue()
    start = context.Event()
    writers = [context.Process(target=_append_from_another_process,
                               args=(str(layout.data_dir), name, count, ready, start)) for name in ("cli", "supervisor")]
    for writer in writers:
        writer.start()
    for _ in writers:
        ready.get(timeout=60)
    start.set()
    for writer in writers:
        writer.join(60)
    assert [writer.exitcode for writer in writers] == [0, 0]

    records = read_records(layout)
    assert [r.seq for r in records] == list(range(1, 2 * count + 1))
    for name in ("cli", "supervisor"):   # each writer's records all there, in its order
        assert [r.detail for r in records if r.actor == name] == [f"{name} {n}" for n in range(count)]
    turns = 1 + sum(1 for earlier, later in zip(records, records[1:]) if earlier.actor != later.actor)
    print(f"{2 * count} records from two processes, in {turns} turns")
    assert turns >= 3, "the two writers did not overlap: the test proved nothing"
    result = verify_trail(layout, identity.public_key)
    assert result.ok and result.records == 2 * count


def test_ten_thousand_appends_stay_cheap(layout: StorageLayout, identity: DeviceIdentity,
                                         clock: SimulatedClock) -> None:
    total, batch = 10_000, 1000
    batch_seconds = []
    with AuditTrail(layout, identity, clock) as trail:
        started = time.perf_counter()
        for number in range(total):
            if number % batch == 0:
                batch_started = time.perf_counter()
            trail.append("ani", AuditAction.PLAYBACK, camera="gate", from_ms=START_MS, to_ms=START_MS + HOUR_MS,
                         reason="review", detail=f"playback {number}")
            clock.advance(60)
            if number % batch == batch - 1:
                batch_seconds.append(time.perf_counter() - batch_started)
        elapsed = time.perf_counter() - started
        checked = time.perf_counter()
        result = verify_trail(layout, identity.public_key)
        verify_seconds = time.perf_counter() - checked
        an_hour = trail.records(START_MS + 5000 * 60_000, START_MS + 5060 * 60_000)
    print(f"{total} appends in {elapsed:.1f} s ({elapsed / total * 1e3:.2f} ms each); first {batch}:"
          f" {batch_seconds[0]:.2f} s, last {batch}: {batch_seconds[-1]:.2f} s; verified in {verify_seconds:.2f} s")
    assert result.ok and result.records == total
    assert [r.seq for r in an_hour] == list(range(5001, 5061))
