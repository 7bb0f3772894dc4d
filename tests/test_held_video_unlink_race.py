"""Held video stays held when the ring failed to delete it: a segment whose unlink failed is made deletable
again by the next commit, and a hold added in between (from the CLI, in another process) must cover it.

Real SQLite index files and real segment files; the failed unlink is a directory where the file was (unlink()
of a directory fails like an unlink on a failing disk).
"""

from __future__ import annotations

import json
from pathlib import Path

from edgenvr.config.checking import load_config
from edgenvr.config.records import Config
from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.core.records import SegmentRecord
from edgenvr.core.units import DAY_MS, MINUTE_MS
from edgenvr.index import schema as index_schema
from edgenvr.index.retention_classes import HOLD
from edgenvr.index.writer import IndexWriter
from edgenvr.retention.holds import add_hold
from edgenvr.retention.policy import RetentionPolicy
from edgenvr.storage.layout import StorageLayout

SIZE = 4096


def write_config(tmp_path: Path, name: str, storage: dict[str, object]) -> Config:
    lines = ["[storage]", f"data_dir = {json.dumps(str(tmp_path / 'data'))}", 'min_free = "0"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in storage.items()]
    lines += ["[[cameras]]", 'id = "gate"', 'url = "rtsp://192.0.2.1/gate"']
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


def test_a_hold_added_while_an_unlink_failed_keeps_that_segment(tmp_path: Path) -> None:
    layout = StorageLayout(tmp_path / "data")
    writer = IndexWriter(index_schema.connect(layout.index_path))
    now = SYSTEM_CLOCK.now_ms()
    starts = [now - 40 * DAY_MS + i * 10_000 for i in range(3)]
    for start in starts:
        path = layout.segment_path("gate", start)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * SIZE)
        writer.add_segment(SegmentRecord("gate", start, start + 10_000, layout.relative(path), SIZE, "00" * 32,
                                         "h264", 320, 240, 250, start + 10_000))
    writer.commit()
    stuck = layout.segment_path("gate", starts[1])
    stuck.unlink()
    stuck.mkdir()
    (stuck / "x").write_bytes(b"x")

    by_age = write_config(tmp_path, "age.toml", {"quota": "100%", "max_age_days": 30})
    policy = RetentionPolicy(by_age, layout, writer)
    assert policy.sweep().deleted == 2   # all three marked; the stuck one is unmarked with the next commit
    # Meanwhile an operator holds that morning's video, as `edgenvr hold add` does, from another connection.
    admin = index_schema.connect(layout.index_path)
    add_hold(admin, by_age, "gate", starts[0] - MINUTE_MS, starts[-1] + MINUTE_MS, "incident 7")
    admin.close()
    writer.commit()   # the supervisor's next batch: the stuck segment is no longer marked `deleting`

    row = writer.conn.execute("SELECT retention_class, deleting FROM segments WHERE start_ms = ?", (starts[1],)).fetchone()
    assert tuple(row) == (HOLD, 0), "the hold covers the segment whose deletion failed"

    # The disk works again: neither the age rules nor a full quota delete it.
    (stuck / "x").unlink()
    stuck.rmdir()
    stuck.write_bytes(b"\0" * SIZE)
    full = write_config(tmp_path, "full.toml", {"quota": "1KiB", "max_age_days": 30})
    for config in (by_age, full):
        RetentionPolicy(config, layout, writer).sweep()
        writer.commit()
    assert [tuple(r) for r in writer.conn.execute("SELECT start_ms, retention_class FROM segments")] == [(starts[1], HOLD)]
    assert stuck.is_file() and stuck.stat().st_size == SIZE
    writer.conn.close()
