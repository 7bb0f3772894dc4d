"""The outbox of clips for the city hub (edgenvr.sync.outbox) on a real index written by IndexWriter, on the
simulated clock: which events become clips and when, in what order they go, and that nothing leaves the outbox
without a receipt or a reason."""

from __future__ import annotations

from pathlib import Path

from edgenvr.core.clock import SimulatedClock
from edgenvr.core.records import EventKind, EventRecord, SegmentRecord
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


def _segments(writer: IndexWriter, camera: str, start_ms: int, count: int, length_ms: int = 60_000) -> None:
    for i in range(count):
        begin = start_ms + i * length_ms
        writer.add_segment(SegmentRecord(camera, begin, begin + length_ms, f"segments/{camera}/{begin}.mp4", 1000,
                                         "00" * 32, "h264", 320, 240, 50, begin + length_ms))
    writer.commit()


def test_continuous_video_is_queued_a_piece_per_camera_at_a_time_from_where_the_last_piece_ended(
        tmp_path: Path) -> None:
    clock = SimulatedClock()
    writer = _writer(tmp_path, clock)
    conn = writer.conn
    t0 = clock.now_ms()
    since = outbox.sync_since(conn, t0)
    piece = outbox.CONTINUOUS_PIECE_MS
    _segments(writer, "gate", t0, 30)          # 30 min of gate
    _segments(writer, "yard", t0 + 10 * 60_000, 5)   # yard's video starts 10 min later

    # Not before a whole piece is recorded and settled.
    assert outbox.enqueue_continuous(conn, ["gate", "yard"], since, t0 + piece + SETTLE - 1, SETTLE) == 0
    now = t0 + 40 * 60_000
    assert outbox.enqueue_continuous(conn, ["gate", "yard"], since, now, SETTLE) == 2
    assert outbox.enqueue_continuous(conn, ["gate", "yard"], since, now, SETTLE) == 0   # one queued per camera
    ranges = {(r[0], r[1], r[2]) for r in conn.execute("SELECT camera, start_ms, end_ms FROM outbox")}
    assert ranges == {("gate", t0, t0 + piece), ("yard", t0 + 10 * 60_000, t0 + 10 * 60_000 + piece)}
    waiting = [tuple(r) for r in conn.execute("SELECT DISTINCT retention_class FROM segments"
                                              " WHERE camera = 'gate' AND start_ms < ?", (t0 + piece,))]
    assert waiting == [(3,)], "a queued piece's video is kept for the hub"

    # Events and pulls go at any time; continuous pieces only while a window is open.
    assert outbox.next_due(conn, now, continuous=False) is None
    item = outbox.next_due(conn, now)
    assert item is not None and item.kind == ClipKind.CONTINUOUS and (item.camera, item.start_ms) == ("gate", t0)
    outbox.mark_synced(conn, item.id, "{receipt}", now)
    assert outbox.enqueue_continuous(conn, ["gate", "yard"], since, now, SETTLE) == 1
    assert conn.execute("SELECT start_ms FROM outbox WHERE camera = 'gate' AND state = 'queued'").fetchone()[0] \
        == t0 + piece   # the next piece starts where the last one ended

    # The ring deleted what came next: the next piece starts at the oldest video left.
    nxt = outbox.next_due(conn, now)
    assert nxt is not None
    outbox.mark_synced(conn, nxt.id, "{receipt}", now)
    conn.execute("UPDATE segments SET deleting = 1 WHERE camera = 'gate' AND start_ms < ?", (t0 + 20 * 60_000,))
    assert outbox.enqueue_continuous(conn, ["gate"], since, now, SETTLE) == 1
    assert conn.execute("SELECT start_ms FROM outbox WHERE camera = 'gate' AND state = 'queued'").fetchone()[0] \
        == t0 + 20 * 60_000
