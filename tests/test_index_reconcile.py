"""What start-up does with a disk that disagrees with the index: after a crash, a hand-deleted file, a
damaged card. Every case ends consistent, logged, and with nothing silently lost."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import RunningSupervisor, config_text, edgenvr, start_supervisor

from edgenvr.index import schema as index_schema
from edgenvr.index.queries import gaps, open_readonly, segments
from edgenvr.index.reconcile import check_consistency, reconcile
from edgenvr.index.writer import IndexWriter
from edgenvr.simulator import SimulatedCamera
from edgenvr.storage.layout import StorageLayout, partial_path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, h264_clip: Path, simulator_ready: None) -> StorageLayout:
    """A data dir with a few seconds of real recording, made once and copied by each test."""
    root = tmp_path_factory.mktemp("reconcile")
    with SimulatedCamera({"cam": (h264_clip, "h264")}, log_path=root / "cam.log") as camera:
        config = root / "edgenvr.toml"
        config.write_text(config_text(root / "data", {"door": camera.url("cam")}, segment_seconds=2))
        supervisor = start_supervisor(config, root / "edgenvr.log")
        try:
            supervisor.wait_for_log("door: recording")
            import time
            time.sleep(9)
        finally:
            assert supervisor.stop() == 0
    return StorageLayout(root / "data")


@pytest.fixture
def layout(recorded: StorageLayout, tmp_path: Path) -> StorageLayout:
    shutil.copytree(recorded.data_dir, tmp_path / "data")
    return StorageLayout(tmp_path / "data")


def _reconcile(layout: StorageLayout) -> None:
    conn = index_schema.connect(layout.index_path)
    try:
        reconcile(IndexWriter(conn), layout)
    finally:
        conn.close()


def _edit_index(layout: StorageLayout, sql: str, args: tuple = ()) -> None:
    """Change the index behind edgenvr's back, as a crash or a damaged card would."""
    conn = sqlite3.connect(layout.index_path)
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def _rows(layout: StorageLayout) -> list:
    with open_readonly(layout) as conn:
        return list(segments(conn, layout))


def _assert_consistent(layout: StorageLayout) -> None:
    with open_readonly(layout) as conn:
        report = check_consistency(conn, layout)
    assert report.consistent, report.summary()


def test_recording_is_consistent_after_a_clean_stop(layout: StorageLayout) -> None:
    _assert_consistent(layout)
    assert len(_rows(layout)) >= 3


def test_hand_deleted_file_becomes_a_gap_not_a_dangling_row(layout: StorageLayout) -> None:
    rows = _rows(layout)
    victim = rows[1]
    Path(victim.path).unlink()
    with open_readonly(layout) as conn:
        assert not check_consistency(conn, layout).consistent
    _reconcile(layout)
    _assert_consistent(layout)
    assert victim.start_ms not in {r.start_ms for r in _rows(layout)}
    with open_readonly(layout) as conn:
        found = [g for g in gaps(conn, layout, "door") if g.end_ms is not None]
    assert [(g.start_ms, g.end_ms, g.reason) for g in found] == [(victim.start_ms, victim.end_ms, "segment file missing")]


def test_truncated_indexed_file_is_quarantined_and_reported(layout: StorageLayout) -> None:
    victim = _rows(layout)[0]
    with open(victim.path, "r+b") as f:
        f.truncate(Path(victim.path).stat().st_size // 2)
    _reconcile(layout)
    _assert_consistent(layout)
    quarantined = list(layout.quarantine_dir.glob("door-*.mp4"))
    assert len(quarantined) == 1
    assert "differs from indexed" in quarantined[0].with_name(quarantined[0].name + ".reason.txt").read_text()


def test_file_whose_row_was_lost_in_a_crash_is_adopted_with_the_same_hash(layout: StorageLayout) -> None:
    victim = _rows(layout)[-1]
    _edit_index(layout, "DELETE FROM segments WHERE start_ms = ?", (victim.start_ms,))
    _reconcile(layout)
    _assert_consistent(layout)
    adopted = [r for r in _rows(layout) if r.start_ms == victim.start_ms]
    assert len(adopted) == 1 and adopted[0].sha256 == victim.sha256 and adopted[0].origin == "adopted"
    assert abs(adopted[0].end_ms - victim.end_ms) <= 80


def test_adopted_file_keeps_the_hash_taken_when_it_was_recorded(layout: StorageLayout) -> None:
    """A file altered after recording (same size) and then adopted keeps its original hash, so the
    alteration shows when the evidence is verified; adoption does not read the video again."""
    victim = _rows(layout)[-1]
    _edit_index(layout, "DELETE FROM segments WHERE start_ms = ?", (victim.start_ms,))
    with open(victim.path, "r+b") as f:
        f.seek(-100, os.SEEK_END)
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    _reconcile(layout)
    _assert_consistent(layout)
    adopted = [r for r in _rows(layout) if r.start_ms == victim.start_ms]
    assert len(adopted) == 1 and adopted[0].origin == "adopted" and adopted[0].indexed
    assert adopted[0].sha256 == victim.sha256
    assert hashlib.sha256(Path(victim.path).read_bytes()).hexdigest() != victim.sha256
    assert adopted[0].end_ms == victim.end_ms and adopted[0].codec == victim.codec == "h264"
    assert (adopted[0].width, adopted[0].height) == (victim.width, victim.height)


def test_file_without_its_stored_row_is_probed_and_hashed(layout: StorageLayout) -> None:
    """A filesystem without user attributes (or a file copied without them) still gets adopted."""
    victim = _rows(layout)[-1]
    _edit_index(layout, "DELETE FROM segments WHERE start_ms = ?", (victim.start_ms,))
    os.removexattr(victim.path, "user.edgenvr")
    with open_readonly(layout) as conn:  # nothing to show it by until it is adopted
        assert victim.start_ms not in {r.start_ms for r in segments(conn, layout)}
    _reconcile(layout)
    _assert_consistent(layout)
    adopted = [r for r in _rows(layout) if r.start_ms == victim.start_ms]
    assert len(adopted) == 1 and adopted[0].sha256 == victim.sha256 and adopted[0].origin == "adopted"
    assert abs(adopted[0].end_ms - victim.end_ms) <= 80
    assert os.getxattr(victim.path, "user.edgenvr")  # stored now: the next adoption will not read it again


def test_a_camera_name_that_cannot_exist_finds_nothing(layout: StorageLayout) -> None:
    """`--camera` is whatever the user typed: a path-like name finds nothing, and looks nowhere."""
    with open_readonly(layout) as conn:
        assert list(segments(conn, layout, "../../etc")) == []
        assert gaps(conn, layout, "../../etc") == []


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_segments_waiting_for_their_batch_are_listed_and_survive_a_crash(
        tmp_path: Path, h264_clip: Path, simulator_ready: None, supervisors: list[RunningSupervisor]) -> None:
    """Rows are committed minutes apart to spare the SD card; meanwhile `segments`, `gaps` and `status`
    see the new segments from the files, and a supervisor killed before the commit loses none of them."""
    config = tmp_path / "edgenvr.toml"
    with SimulatedCamera({"cam": (h264_clip, "h264")}, log_path=tmp_path / "cam.log") as camera:
        config.write_text(config_text(tmp_path / "data", {"door": camera.url("cam")}, segment_seconds=2,
                                      commit_seconds=600))
        supervisors.append(start_supervisor(config, tmp_path / "edgenvr.log"))
        supervisors[0].wait_for_log("door: recording")
        time.sleep(14)
        listed = _json_lines(edgenvr("segments", "--config", str(config), "--json").stdout)
        assert len(listed) >= 4 and not any(row["indexed"] for row in listed)
        starts = [row["start_ms"] for row in listed]
        assert starts == sorted(starts)
        assert all(abs(b["start_ms"] - a["end_ms"]) <= 200 for a, b in zip(listed, listed[1:]))
        assert all(hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest() == row["sha256"] for row in listed)
        assert edgenvr("gaps", "--config", str(config), "--json").stdout.strip() == ""  # recording: no open gap
        # status shows the newest segment's end at the time it looked: a 2 s segment may close between two
        # commands (and on a loaded machine between every two), so it must be the end of a segment listed
        # right after it, no older than the newest one listed right before it
        newest = _json_lines(edgenvr("segments", "--config", str(config), "--json").stdout)[-1]["end_ms"]
        status = _json_lines(edgenvr("status", "--config", str(config), "--json").stdout)[0]
        after = _json_lines(edgenvr("segments", "--config", str(config), "--json").stdout)
        assert status["state"] == "recording" and status["last_end_ms"] in {row["end_ms"] for row in after}
        assert newest <= status["last_end_ms"] <= after[-1]["end_ms"]
        layout = StorageLayout(tmp_path / "data")
        with open_readonly(layout) as conn:
            assert conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == 0  # nothing committed yet
        supervisors[0].kill()  # kill -9: the batch in memory is lost
        supervisors.append(start_supervisor(config, tmp_path / "edgenvr-2.log"))
        supervisors[1].wait_for_log("door: recording")
        assert supervisors[1].stop() == 0
    rows = {row["start_ms"]: row for row in _json_lines(edgenvr("segments", "--config", str(config), "--json").stdout)}
    for before in listed:
        after = rows[before["start_ms"]]
        assert after["indexed"] and after["origin"] == "adopted"
        assert (after["end_ms"], after["sha256"], after["bytes"]) == (before["end_ms"], before["sha256"], before["bytes"])
    assert "adopted" in supervisors[1].log()
    _assert_consistent(layout)


def test_partial_segment_from_a_crash_keeps_its_complete_fragments(layout: StorageLayout) -> None:
    source = _rows(layout)[0]
    start_ms = _rows(layout)[-1].end_ms + 60_000
    partial = partial_path(layout.segment_path("door", start_ms))
    partial.parent.mkdir(parents=True, exist_ok=True)
    data = Path(source.path).read_bytes()
    partial.write_bytes(data[: int(len(data) * 0.8)])  # torn in the middle of its last fragment
    _reconcile(layout)
    _assert_consistent(layout)
    recovered = [r for r in _rows(layout) if r.start_ms == start_ms]
    assert len(recovered) == 1 and recovered[0].origin == "recovered"
    assert 500 <= recovered[0].end_ms - recovered[0].start_ms < source.end_ms - source.start_ms
    import av
    with av.open(recovered[0].path) as container:
        frames = sum(len(p.decode()) for p in container.demux(container.streams.video[0]) if p.size)
    assert frames >= 12


def test_garbage_partial_is_quarantined_not_deleted(layout: StorageLayout) -> None:
    partial = partial_path(layout.segment_path("door", _rows(layout)[-1].end_ms + 5000))
    partial.write_bytes(b"\x00\x01 not a video" * 100)
    _reconcile(layout)
    _assert_consistent(layout)
    kept = list(layout.quarantine_dir.glob("door-*.partial"))
    assert len(kept) == 1 and kept[0].read_bytes().startswith(b"\x00\x01 not a video")


def test_interrupted_deletion_is_finished(layout: StorageLayout) -> None:
    victim = _rows(layout)[0]
    _edit_index(layout, "UPDATE segments SET deleting = 1 WHERE start_ms = ?", (victim.start_ms,))
    _reconcile(layout)
    _assert_consistent(layout)
    assert not Path(victim.path).exists()
    assert victim.start_ms not in {r.start_ms for r in _rows(layout)}


def test_index_from_a_newer_version_is_refused(layout: StorageLayout) -> None:
    _edit_index(layout, "PRAGMA user_version = 99")
    with pytest.raises(index_schema.IndexVersionError):
        index_schema.connect(layout.index_path)
