"""The one function that deletes recorded data: `delete_data_file` unlinks a file of the data directory, and
only a file the storage layout itself names.

Invariants:
- A path is deleted only if, with `..` and symlinks resolved, it is in the (resolved) data dir at the place
  it names (no symlink below the data dir on the way, nor as the file itself), and it is exactly the path the
  layout builds (storage.layout) for the kind of file the caller says it deletes (`DataFile`): a segment file
  (or its .partial), an event snapshot, a reference view, a quarantine entry or its reason file.
- Everything else is refused with `DeletionRefused` (a ValueError; callers log it) and nothing is touched:
  the index (index.sqlite3 and its -wal, -shm, -journal), the locks, the disk reserve, keys, a file of
  another kind than the caller said (a segment named as an event's snapshot would skip the ring's
  mark-then-unlink and holds), anything outside the data dir.
- A file that is already gone is not an error: False is returned. Any other failure of the unlink
  (read-only filesystem, I/O error) raises OSError for the caller to handle.

Outside it, on purpose, each made and removed by its own module and none of them recorded data: the
recorder's .partial/.remux temporary files while it writes or finalises them (recording.segment_files), the
temporary file of write_durably (storage.durable_writes), the emergency reserve file (storage.disk_reserve),
and the bus socket in its runtime directory (core.bus).

The check and the unlink are two steps, and directories are resolved once per process: whoever could swap a
directory for a symlink in between can write to the data dir anyway (the service user, root).
"""

from __future__ import annotations

import functools
import logging
import os
import re
from enum import StrEnum
from pathlib import Path

from edgenvr.core.records import AlertKind, EventKind, TamperKind
from edgenvr.storage.layout import StorageLayout, parse_segment_name, partial_path

log = logging.getLogger(__name__)


class DataFile(StrEnum):
    """The kinds of file `delete_data_file` deletes; the caller says which it means."""
    SEGMENT = "segment"
    SNAPSHOT = "snapshot"
    REFERENCE = "reference view"
    QUARANTINE = "quarantine entry"


class DeletionRefused(ValueError):
    """A path that is not a file of the kind the storage layout names: nothing was deleted."""


# Only pick the numbers and names out of a file name; the check is that the layout builds the same path.
_SNAPSHOT_NAME = re.compile(r"(\d+)-([a-z]+)(?:-([a-z_]+))?\.jpg")
_REFERENCE_NAME = re.compile(r"(\d+)\.png")
_REASON_SUFFIX = ".reason.txt"
_SUBKINDS = frozenset({"", *TamperKind, *AlertKind})


def delete_data_file(layout: StorageLayout, path: Path | str, kind: DataFile) -> bool:
    """Unlink `path` if it is a `kind` file the storage layout names in its data dir (see the module
    docstring). Returns False if it was already gone; raises DeletionRefused (nothing touched) or OSError."""
    target = _checked(layout, Path(path), kind)
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    return True


def _checked(layout: StorageLayout, path: Path, kind: DataFile) -> Path:
    """The absolute path to unlink, once `path` is shown to be a layout-named `kind` file."""
    if not path.is_absolute():
        raise DeletionRefused(f"not deleting {path}: not an absolute path")
    data_dir = os.path.abspath(layout.data_dir)
    given = os.path.normpath(path)  # `..` resolved by name
    if not given.startswith(data_dir + os.sep):
        raise DeletionRefused(f"not deleting {path}: not in the data dir {data_dir}")
    relative = given[len(data_dir) + 1:]
    # With symlinks resolved it must be the same place: a symlink below the data dir (a directory or the
    # file itself) could point anywhere. The data dir itself may be reached through one. Directories are
    # resolved once (a sweep deletes thousands of files from a few hour directories; realpath costs an
    # lstat per path component), the file itself every time.
    where = os.path.normpath(os.path.join(_resolved(data_dir), os.path.dirname(relative)))
    if _resolved(os.path.dirname(given)) != where or os.path.islink(given):
        raise DeletionRefused(f"not deleting {path}: a symlink in the data dir leads elsewhere")
    if relative.startswith((layout.index_path.name, ".")):  # index.sqlite3*, .supervisor.lock, .reserve, ...
        raise DeletionRefused(f"not deleting {path}: the index, a lock or the disk reserve is never deleted here")
    expected = _layout_path(layout, relative.split(os.sep), kind)
    if expected is None or os.path.normpath(expected) != given:
        raise DeletionRefused(f"not deleting {path}: not a {kind} file the storage layout names")
    return Path(given)


@functools.lru_cache(maxsize=1024)
def _resolved(directory: str) -> str:
    return os.path.realpath(directory)


def _layout_path(layout: StorageLayout, parts: list[str], kind: DataFile) -> Path | None:
    """The path the layout builds for what `parts` (relative to the data dir) name as a `kind` file, or
    None if they name none; the caller compares the two."""
    try:
        if kind == DataFile.SEGMENT and len(parts) == 5 and parts[0] == layout.segments_dir.name:
            return _segment_path(layout, parts[1], parts[4])
        if kind == DataFile.SNAPSHOT and len(parts) == 4 and parts[0] == "snapshots":
            match = _SNAPSHOT_NAME.fullmatch(parts[3])
            if match is None or match.group(2) not in EventKind._value2member_map_ \
                    or (match.group(3) or "") not in _SUBKINDS:
                return None
            return layout.snapshot_path(parts[1], int(match.group(1)), match.group(2), match.group(3) or "")
        if kind == DataFile.REFERENCE and len(parts) == 3 and parts[0] == "references":
            match = _REFERENCE_NAME.fullmatch(parts[2])
            return None if match is None else layout.reference_path(parts[1], int(match.group(1)))
        if kind == DataFile.QUARANTINE and len(parts) == 2 and parts[0] == layout.quarantine_dir.name:
            name = parts[1].removesuffix(_REASON_SUFFIX)
            camera, _, segment_name = name.rpartition("-")  # segment names have no "-"; camera ids may
            segment = _segment_path(layout, camera, segment_name)
            if segment is None:
                return None
            target, reason = layout.quarantine_paths(segment)
            return reason if parts[1].endswith(_REASON_SUFFIX) else target
    except ValueError:  # an invalid camera id or a time without a date: the layout names no such file
        return None
    return None


def _segment_path(layout: StorageLayout, camera: str, name: str) -> Path | None:
    parsed = parse_segment_name(name)
    if parsed is None:
        return None
    start_ms, is_partial = parsed
    final = layout.segment_path(camera, start_ms)
    return partial_path(final) if is_partial else final
