"""Deleting files, as an operator relies on it: edgenvr deletes only the recordings, snapshots and reference
views the storage layout made, never its index, its locks or anything outside the data dir, whatever a row
of the index or a path handed to it says (storage.deletion and its callers in retention and reconcile).

Real files in a real data dir, a real SQLite index written through IndexWriter and swept by RetentionPolicy.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edgenvr.config.checking import load_config
from edgenvr.config.records import Config
from edgenvr.core.clock import SYSTEM_CLOCK
from edgenvr.core.records import EventKind, TamperKind
from edgenvr.index import schema as index_schema
from edgenvr.index.reconcile import check_consistency, reconcile
from edgenvr.index.writer import IndexWriter
from edgenvr.retention.policy import RetentionPolicy
from edgenvr.storage.deletion import DataFile, DeletionRefused, delete_data_file
from edgenvr.storage.layout import StorageLayout, partial_path

DAY = 86_400_000
T = 1_764_547_200_000


@pytest.fixture
def layout(tmp_path: Path) -> StorageLayout:
    layout = StorageLayout(tmp_path / "data")
    layout.data_dir.mkdir()
    index_schema.connect(layout.index_path).close()
    for name in ("index.sqlite3-wal", "index.sqlite3-shm", ".supervisor.lock", ".recorders.lock", ".reserve"):
        (layout.data_dir / name).write_bytes(b"keep")
    return layout


def _file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"video")
    return path


# -- the function ---------------------------------------------------------------------------------

def test_deletes_the_files_the_layout_names(layout: StorageLayout) -> None:
    segment = _file(layout.segment_path("gate", T))
    partial = _file(partial_path(layout.segment_path("gate", T + 5000)))
    snapshot = _file(layout.snapshot_path("gate", T, EventKind.TAMPER, TamperKind.COVERED))
    reference = _file(layout.reference_path("gate-2", T))
    quarantined, reason = layout.quarantine_paths(layout.segment_path("gate-2", T))
    _file(quarantined), _file(reason)

    assert delete_data_file(layout, segment, DataFile.SEGMENT) is True
    assert delete_data_file(layout, partial, DataFile.SEGMENT) is True
    assert delete_data_file(layout, snapshot, DataFile.SNAPSHOT) is True
    assert delete_data_file(layout, reference, DataFile.REFERENCE) is True
    assert delete_data_file(layout, quarantined, DataFile.QUARANTINE) is True
    assert delete_data_file(layout, reason, DataFile.QUARANTINE) is True
    assert not any(p.exists() for p in (segment, partial, snapshot, reference, quarantined, reason))
    assert delete_data_file(layout, segment, DataFile.SEGMENT) is False, "already gone is not an error"


@pytest.mark.parametrize("name", ["index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm", ".supervisor.lock",
                                  ".recorders.lock", ".reserve"])
@pytest.mark.parametrize("kind", list(DataFile))
def test_never_deletes_the_index_the_locks_or_the_reserve(layout: StorageLayout, name: str, kind: DataFile) -> None:
    with pytest.raises(DeletionRefused, match="never deleted"):
        delete_data_file(layout, layout.data_dir / name, kind)
    assert (layout.data_dir / name).exists()


def test_refuses_paths_outside_the_data_dir_however_they_are_spelt(layout: StorageLayout, tmp_path: Path) -> None:
    outside = _file(tmp_path / "elsewhere" / "1764547200000.mp4")
    elsewhere_segment = _file(tmp_path / "segments" / "gate" / "2025-12-01" / "00" / "1764547200000.mp4")
    tricks = [
        (outside, DataFile.SEGMENT),
        (layout.data_dir / ".." / "elsewhere" / "1764547200000.mp4", DataFile.SEGMENT),
        (layout.data_dir / "segments" / "gate" / ".." / ".." / ".." / "segments" / "gate" / "2025-12-01" / "00"
         / "1764547200000.mp4", DataFile.SEGMENT),
        (layout.data_dir / "segments" / ".." / "index.sqlite3", DataFile.SEGMENT),
        (layout.data_dir, DataFile.SEGMENT),
        (Path("index.sqlite3"), DataFile.SNAPSHOT),   # relative: never guessed
    ]
    for path, kind in tricks:
        with pytest.raises(DeletionRefused):
            delete_data_file(layout, path, kind)
    assert outside.exists() and elsewhere_segment.exists() and layout.index_path.exists()


def test_refuses_a_symlink_that_leads_out_of_the_data_dir(layout: StorageLayout, tmp_path: Path) -> None:
    # a camera directory that is a symlink to somewhere else, holding a file with a segment's name
    victim = _file(tmp_path / "victim" / "2025-12-01" / "00" / "1764547200000.mp4")
    layout.segments_dir.mkdir()
    (layout.segments_dir / "gate").symlink_to(tmp_path / "victim")
    with pytest.raises(DeletionRefused, match="symlink"):
        delete_data_file(layout, layout.segment_path("gate", T), DataFile.SEGMENT)
    # a segment name that is itself a symlink to the index
    link = layout.segment_path("yard", T)
    link.parent.mkdir(parents=True)
    link.symlink_to(layout.index_path)
    with pytest.raises(DeletionRefused, match="symlink"):
        delete_data_file(layout, link, DataFile.SEGMENT)
    assert victim.exists() and link.is_symlink() and layout.index_path.exists()


def test_refuses_a_file_of_another_kind_or_a_name_the_layout_does_not_build(layout: StorageLayout) -> None:
    segment = _file(layout.segment_path("gate", T))
    wrong_hour = _file(layout.segment_path("gate", T).parent.parent / "07" / f"{T}.mp4")   # T is 00:00 UTC
    stray = _file(layout.data_dir / "snapshots" / "gate" / "notes.txt")
    bad_camera = _file(layout.data_dir / "references" / "Gate!" / f"{T}.png")
    for path, kind in [(segment, DataFile.SNAPSHOT), (segment, DataFile.REFERENCE), (segment, DataFile.QUARANTINE),
                       (wrong_hour, DataFile.SEGMENT), (stray, DataFile.SNAPSHOT), (bad_camera, DataFile.REFERENCE)]:
        with pytest.raises(DeletionRefused, match="storage layout names"):
            delete_data_file(layout, path, kind)
    assert all(p.exists() for p in (segment, wrong_hour, stray, bad_camera))


# -- its callers: retention and the start-up reconcile ----------------------------------------------

def _config(tmp_path: Path, layout: StorageLayout) -> Config:
    path = tmp_path / "edgenvr.toml"
    path.write_text("\n".join([
        "[storage]", f"data_dir = {json.dumps(str(layout.data_dir))}", 'quota = "100%"', 'min_free = "0"',
        "retention_max_days = 1", "event_days = 1",
        "[[cameras]]", 'id = "gate"', 'url = "rtsp://192.0.2.1/gate"']) + "\n")
    return load_config(path)


def test_retention_deletes_only_layout_files_whatever_old_index_rows_name(layout: StorageLayout, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """An index written before the bus was checked may hold forged rows: their expiry deletes nothing of
    edgenvr's or anyone's, the sweep goes on, and the real expired files go."""
    victim = _file(tmp_path / "someone-elses-file")
    writer = IndexWriter(index_schema.connect(layout.index_path))
    old = SYSTEM_CLOCK.now_ms() - 10 * DAY
    on_timeline = writer.timeline.now_ms() - SYSTEM_CLOCK.now_ms()   # the rows' ages on the recording timeline
    writer.commit()   # with this boot
    kept_segment = _file(layout.segment_path("gate", old))
    real_old = _file(layout.segment_path("gate", old + 60_000))
    real_snapshot = _file(layout.snapshot_path("gate", old, EventKind.MOTION))
    real_reference = _file(layout.reference_path("gate", old + 3))
    current_reference = _file(layout.reference_path("gate", old + 9))
    with writer.conn:
        writer.conn.executemany(
            "INSERT INTO reference_views (camera, approved_ms, image, approved_by) VALUES (?, ?, ?, 'forged')",
            [("gate", old, str(victim)), ("gate", old + 1, "index.sqlite3"), ("gate", old + 2, "../someone-elses-file"),
             ("gate", old + 3, layout.relative(real_reference)), ("gate", old + 9, layout.relative(current_reference))])
        writer.conn.executemany(
            "INSERT INTO events (camera, kind, subkind, start_ms, end_ms, snapshot, timeline_keep_to_ms)"
            " VALUES ('gate', 'motion', '', ?, ?, ?, ?)",
            [(old + n, old + 1000, snapshot, old + 1000 + on_timeline) for n, snapshot in enumerate(
                [".supervisor.lock", layout.relative(kept_segment), str(victim), layout.relative(real_snapshot)])])
        # a segment row of a camera id no path can have, and a real one
        writer.conn.executemany(
            "INSERT INTO segments (camera, start_ms, end_ms, bytes, sha256, codec, width, height, packets, wall_end_ms,"
            " origin, timeline_ms) VALUES (?, ?, ?, 5, zeroblob(32), 'h264', 320, 240, 1, ?, 'recorder', ?)",
            [("../../x", old, old + 1000, old + 1000, old + on_timeline),
             ("gate", old + 60_000, old + 61_000, old + 61_000, old + 60_000 + on_timeline)])
    writer = IndexWriter(writer.conn)  # picks up the rows' bytes
    with caplog.at_level(logging.ERROR):
        RetentionPolicy(_config(tmp_path, layout), layout, writer).sweep()
    writer.commit()

    assert victim.exists() and layout.index_path.exists() and layout.supervisor_lock.exists()
    assert current_reference.exists(), "the current reference view stays: detection needs it"
    assert kept_segment.exists(), "a segment named as an event's snapshot skips no hold: not deleted that way"
    assert not real_old.exists() and not real_snapshot.exists() and not real_reference.exists()
    refused = [r.getMessage() for r in caplog.records if "left alone" in r.getMessage() or "not deleted" in r.getMessage()]
    assert len(refused) == 7, refused
    assert [r[0] for r in writer.conn.execute("SELECT camera FROM segments")] == ["../../x"], \
        "the forged row stays (unmarked): nothing was deleted for it"
    assert writer.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_start_up_reconcile_finishes_deletions_of_forged_rows_without_touching_anything(
        layout: StorageLayout, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A sweep cut off after marking rows `deleting`: reconcile unlinks their files at the next start-up,
    through the same function, and a row no layout path fits no longer stops every start-up."""
    writer = IndexWriter(index_schema.connect(layout.index_path))
    real = _file(layout.segment_path("gate", T))
    with writer.conn:
        writer.conn.executemany(
            "INSERT INTO segments (camera, start_ms, end_ms, bytes, sha256, codec, width, height, packets, wall_end_ms,"
            " origin, deleting) VALUES (?, ?, ?, 5, zeroblob(32), 'h264', 320, 240, 1, ?, 'recorder', 1)",
            [("../../x", T, T + 1000, T + 1000), ("gate", T, T + 1000, T + 1000), ("gate", 10**17, 10**17, 10**17)])
    with caplog.at_level(logging.ERROR):
        reconcile(writer, layout)
    assert not real.exists() and layout.index_path.exists()
    assert writer.conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == 0
    assert check_consistency(writer.conn, layout).consistent
    assert sum("left alone" in r.getMessage() for r in caplog.records) == 2

