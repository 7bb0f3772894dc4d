"""The day timeline's "recorded" bars (index.queries.recorded_stretches, served by GET /api/cameras/{c}/timeline):
what a site operator sees when looking for last night's video, from a real index written by IndexWriter.

- consecutive segments make one bar; a hole longer than the join distance or a codec change starts another;
- bars are clipped to the asked range; a segment the ring is deleting is no longer shown;
- another camera's video never shows; the bars of a whole day come from the index alone (a covering index,
  so a 32-camera month answers in ~14 ms: benchmarks/playback.py).
"""

from __future__ import annotations

from pathlib import Path

from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.core.records import SegmentRecord
from edgenvr.core.units import DAY_MS
from edgenvr.index import schema as index_schema
from edgenvr.index.queries import Stretch, recorded_stretches
from edgenvr.index.writer import GAP_THRESHOLD_MS, IndexWriter
from edgenvr.storage.layout import StorageLayout

DAY = (SYSTEM_CLOCK.now_ms() // DAY_MS - 3) * DAY_MS   # a whole UTC day three days ago


def _write(layout: StorageLayout, rows: list[tuple[str, int, int, str]]) -> None:
    writer = IndexWriter(index_schema.connect(layout.index_path))
    for camera, start, end, codec in rows:
        writer.add_segment(SegmentRecord(camera, start, end, layout.relative(layout.segment_path(camera, start)),
                                         1000, "00" * 32, codec, 320, 240, 25, end))
    writer.commit()
    writer.conn.close()


def _bars(layout: StorageLayout, camera: str, since: int, until: int) -> list[Stretch]:
    conn = index_schema.connect(layout.index_path, readonly=True)
    try:
        return recorded_stretches(conn, layout, camera, since, until, GAP_THRESHOLD_MS)
    finally:
        conn.close()


def test_the_day_shows_one_bar_per_stretch_split_by_holes_and_codec_changes(tmp_path: Path) -> None:
    layout = StorageLayout(tmp_path / "data")
    night = DAY + 2 * 3600_000
    rows = [("gate", night + i * 10_000, night + (i + 1) * 10_000, "h264") for i in range(6)]   # one minute
    small_hole = night + 60_000 + GAP_THRESHOLD_MS // 2          # a reconnect shorter than the join distance
    rows += [("gate", small_hole, small_hole + 10_000, "h264")]
    after_cut = small_hole + 10_000 + 5 * 60_000                # a five-minute cut
    rows += [("gate", after_cut + i * 10_000, after_cut + (i + 1) * 10_000, "h264") for i in range(3)]
    hevc = after_cut + 30_000                                   # the camera switched to H.265, no hole
    rows += [("gate", hevc, hevc + 10_000, "hevc")]
    rows += [("yard", night - 60_000, night + 600_000, "h264")]   # another camera, overlapping everything
    _write(layout, rows)

    assert _bars(layout, "gate", DAY, DAY + DAY_MS) == [
        Stretch(night, small_hole + 10_000, "h264"),
        Stretch(after_cut, after_cut + 30_000, "h264"),
        Stretch(hevc, hevc + 10_000, "hevc"),
    ]
    # Clipped to the asked range, also inside a segment.
    assert _bars(layout, "gate", night + 15_000, night + 25_000) == [Stretch(night + 15_000, night + 25_000, "h264")]
    assert _bars(layout, "gate", DAY + DAY_MS, DAY + 2 * DAY_MS) == []


def test_a_segment_being_deleted_is_no_longer_shown(tmp_path: Path) -> None:
    layout = StorageLayout(tmp_path / "data")
    _write(layout, [("gate", DAY + i * 10_000, DAY + (i + 1) * 10_000, "h264") for i in range(3)])
    conn = index_schema.connect(layout.index_path)
    conn.execute("UPDATE segments SET deleting = 1 WHERE start_ms = ?", (DAY + 10_000,))   # as the ring marks it
    conn.close()
    assert _bars(layout, "gate", DAY, DAY + DAY_MS) == [Stretch(DAY, DAY + 10_000, "h264"),
                                                         Stretch(DAY + 20_000, DAY + 30_000, "h264")]


def test_the_bars_of_a_day_are_read_from_the_index_alone(tmp_path: Path) -> None:
    """No table lookup per segment: a day of 2 s segments is 43,200 rows (they were 10 ms of a 45 ms timeline)."""
    layout = StorageLayout(tmp_path / "data")
    _write(layout, [("gate", DAY, DAY + 10_000, "h264")])
    conn = index_schema.connect(layout.index_path, readonly=True)
    traced: list[str] = []
    conn.set_trace_callback(traced.append)
    recorded_stretches(conn, layout, "gate", DAY, DAY + DAY_MS, GAP_THRESHOLD_MS)
    conn.set_trace_callback(None)
    query = next(q for q in traced if q.lstrip().startswith("SELECT start_ms, end_ms, codec FROM segments"))
    plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query))
    conn.close()
    assert "USING COVERING INDEX segments_camera_class" in plan, plan
