"""Moving a segment to its re-anchored name never replaces another recording, and after any crash the file
is under exactly one name (the start-up reconcile would index a second name as a second segment). Both with
the kernel's renameat2(RENAME_NOREPLACE) and where the filesystem has none."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from edgenvr.storage import renaming
from edgenvr.storage.renaming import rename_no_replace


def _without_renameat2(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "missing":
        monkeypatch.setattr(renaming, "_renameat2", None)
    elif how == "refused":   # the filesystem answers EINVAL, as FUSE and some network filesystems do
        def refuse(*_args: object) -> int:
            renaming.ctypes.set_errno(errno.EINVAL)
            return -1
        monkeypatch.setattr(renaming, "_renameat2", refuse)


@pytest.mark.parametrize("how", ["kernel", "missing", "refused"])
def test_a_segment_moves_to_its_new_name_and_is_under_that_name_only(tmp_path: Path, how: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _without_renameat2(monkeypatch, how)
    source, target = tmp_path / "95000.mp4", tmp_path / "1780000000000.mp4"
    source.write_bytes(b"recording")
    rename_no_replace(source, target)
    assert not source.exists() and target.read_bytes() == b"recording"
    assert target.stat().st_nlink == 1, "no second name left behind"


@pytest.mark.parametrize("how", ["kernel", "missing", "refused"])
def test_a_taken_name_is_never_replaced(tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _without_renameat2(monkeypatch, how)
    source, target = tmp_path / "95000.mp4", tmp_path / "1780000000000.mp4"
    source.write_bytes(b"recorded before the sync")
    target.write_bytes(b"another recording")
    with pytest.raises(FileExistsError):
        rename_no_replace(source, target)
    assert source.read_bytes() == b"recorded before the sync" and target.read_bytes() == b"another recording"


def test_another_failure_changes_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        rename_no_replace(tmp_path / "gone.mp4", tmp_path / "new.mp4")
    assert not (tmp_path / "new.mp4").exists()
