"""The outbox of clips for the city hub (edgenvr.sync.outbox) on a real index written by IndexWriter, on the
simulated clock: which events become clips and when, in what order they go, and that nothing leaves the outbox
without a receipt or a reason."""

from __future__ import annotations

from pathlib import Path

from edgenvr.core.clock import SimulatedClock
from edgenvr.core.records import EventKind, EventRecord
from edgenvr.index import schema as index_schema
from edgenvr.index.writer import IndexWriter
from edgenvr.storage.layout import StorageLayout
from edgenvr.sync import outbox
from edgenvr.sync.outbox import ClipKind

SETTLE = 7_000


def _writer(tmp_path: Path, clock: SimulatedClock) -> IndexWriter:
    return IndexWriter(index_schema.connect(StorageLayout(tmp_path / "data").index_path), clock=clock,
                       event_padding_ms=(1_000, 2_000))


def test_closed_motion_and_tamper_events_are_queued_once_settled_tamper_first_then_oldest(tmp_path: Path) -> None:
    clock = SimulatedClock()
    writer = _writer(tmp_path, clock)
    conn = writer.conn
    since = outbox.sync_since(conn, clock.now_ms())
    assert outbox.sync_since(conn, clock.now_ms() + 99_999) == since        # set once, the first time
    t0 = clock.now_ms()
    writer.add_event(EventRecord("gate", EventKind.MOTION, t0 + 1_000, t0 + 5_000))
    writer.add_event(EventRecord("yard", EventKind.MOTION, t0 + 2_000, t0 + 6_000))
    writer.add_event(EventRecord("gate", EventKind.TAMPER, t0 + 3_000, t0 + 8_000, subkind="covered"))
    writer.add_event(EventRecord("gate", EventKind.OFFLINE, t0 + 3_000, t0 + 9_000))   # keeps no video
    writer.add_event(EventRecord("yard", EventKind.MOTION, t0 + 9_000))                # still open
    writer.commit()

    assert outbox.enqueue_closed_events(conn, since, t0 + 5_000 + 2_000 + SETTLE - 1, SETTLE) == 0   # not settled
    assert outbox.enqueue_closed_events(conn, since, t0 + 60_000, SETTLE) == 3
    assert outbox.enqueue_closed_events(conn, since, t0 + 60_000, SETTLE) == 0   # idempotent
    order = []
    while (item := outbox.next_due(conn, t0 + 60_000)) is not None:
        order.append((item.kind, item.camera, item.start_ms, item.end_ms))
        outbox.mark_synced(conn, item.id, "{receipt}", t0 + 61_000)
    assert order == [(ClipKind.TAMPER, "gate", t0 + 2_000, t0 + 10_000),    # padded: 1 s before, 2 s after
                     (ClipKind.MOTION, "gate", t0, t0 + 7_000),
                     (ClipKind.MOTION, "yard", t0 + 1_000, t0 + 8_000)]
    assert outbox.backlog(conn).count == 0


def test_events_from_before_sync_began_are_not_sent(tmp_path: Path) -> None:
    clock = SimulatedClock()
    writer = _writer(tmp_path, clock)
    t0 = clock.now_ms()
    writer.add_event(EventRecord("gate", EventKind.MOTION, t0, t0 + 1_000))
    writer.commit()
    clock.advance(3600)
    since = outbox.sync_since(writer.conn, clock.now_ms())   # sync enabled an hour later
    assert outbox.enqueue_closed_events(writer.conn, since, clock.now_ms() + 60_000, SETTLE) == 0


def test_a_clip_leaves_the_backlog_only_with_a_receipt_or_a_reason_and_says_why_it_waits(tmp_path: Path) -> None:
    clock = SimulatedClock()
    writer = _writer(tmp_path, clock)
    conn = writer.conn
    t0 = clock.now_ms()
    for n in range(3):
        writer.add_event(EventRecord("gate", EventKind.MOTION, t0 + n * 10_000, t0 + n * 10_000 + 1_000))
    writer.commit()
    outbox.enqueue_closed_events(conn, outbox.sync_since(conn, t0), t0 + 120_000, SETTLE)
    first, = [outbox.next_due(conn, t0 + 120_000)]
    assert first is not None and first.upload is None
    outbox.note_problem(conn, "the hub is unreachable: connection refused")
    waiting = outbox.backlog(conn)
    assert (waiting.count, waiting.oldest_ms, waiting.last_error) == (3, t0 - 1_000,
                                                                      "the hub is unreachable: connection refused")
    outbox.note_upload(conn, first.id, "/api/v1/uploads/ab", 1234, "00" * 32)
    assert outbox.next_due(conn, t0 + 120_000).upload == "/api/v1/uploads/ab"   # a restart resumes there
    outbox.retry_later(conn, first.id, "the hub refused (422): ...", t0 + 200_000, forget_upload=True)
    later = outbox.next_due(conn, t0 + 120_000)
    assert later is not None and later.id != first.id                           # the others go on meanwhile
    outbox.mark_unavailable(conn, later.id, "no recording in the range", t0 + 121_000)
    outbox.mark_synced(conn, outbox.next_due(conn, t0 + 120_000).id, "{receipt}", t0 + 122_000)
    again = outbox.next_due(conn, t0 + 200_000)
    assert again is not None and again.id == first.id and again.upload is None and again.attempts == 1
    assert outbox.backlog(conn).count == 1
