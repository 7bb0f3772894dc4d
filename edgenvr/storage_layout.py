"""Where files live under the data directory. Paths are built only from validated camera ids and integers.

Layout: <data>/segments/<camera>/<YYYY-MM-DD>/<HH>/<start-epoch-ms>.mp4 (UTC date and hour);
an open segment is written as <start-epoch-ms>.mp4.partial beside it.
Event snapshots: <data>/snapshots/<camera>/<YYYY-MM-DD>/<start-epoch-ms>-<kind>[-<subkind>].jpg;
reference views: <data>/references/<camera>/<approved-epoch-ms>.png.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

CAMERA_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
SEGMENT_SUFFIX = ".mp4"
PARTIAL_SUFFIX = ".mp4.partial"
_SEGMENT_NAME = re.compile(r"^(\d{10,14})\.mp4(\.partial)?$")


@dataclass(frozen=True)
class StorageLayout:
    data_dir: Path

    @property
    def segments_dir(self) -> Path:
        return self.data_dir / "segments"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index.sqlite3"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def supervisor_lock(self) -> Path:
        return self.data_dir / ".supervisor.lock"

    @property
    def recorders_lock(self) -> Path:
        return self.data_dir / ".recorders.lock"

    def camera_dir(self, camera_id: str) -> Path:
        if not CAMERA_ID_PATTERN.match(camera_id):
            raise ValueError(f"invalid camera id {camera_id!r}")
        return self.segments_dir / camera_id

    def segment_path(self, camera_id: str, start_ms: int) -> Path:
        when = dt.datetime.fromtimestamp(start_ms / 1000, dt.timezone.utc)
        return self.camera_dir(camera_id) / when.strftime("%Y-%m-%d") / when.strftime("%H") / f"{int(start_ms)}{SEGMENT_SUFFIX}"

    def snapshot_path(self, camera_id: str, start_ms: int, kind: str, subkind: str = "") -> Path:
        self.camera_dir(camera_id)  # validates the id
        day = dt.datetime.fromtimestamp(start_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d")
        name = "-".join(part for part in (str(int(start_ms)), kind, subkind) if part)
        return self.data_dir / "snapshots" / camera_id / day / f"{name}.jpg"

    def reference_path(self, camera_id: str, approved_ms: int) -> Path:
        self.camera_dir(camera_id)
        return self.data_dir / "references" / camera_id / f"{int(approved_ms)}.png"

    def relative(self, path: Path) -> str:
        """Index rows store paths relative to the data dir, so a moved data dir keeps working."""
        return path.relative_to(self.data_dir).as_posix()

    def absolute(self, relative_path: str) -> Path:
        return self.data_dir / relative_path


def partial_path(final_path: Path) -> Path:
    return final_path.with_name(final_path.name + ".partial")


def final_path_of_partial(partial: Path) -> Path:
    return partial.with_name(partial.name[: -len(".partial")])


def parse_segment_name(name: str) -> tuple[int, bool] | None:
    """(start_ms, is_partial) for a segment file name, None for anything else."""
    match = _SEGMENT_NAME.match(name)
    if not match:
        return None
    return int(match.group(1)), match.group(2) is not None


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in this directory durable (ext4/f2fs need the directory fsynced too)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """Write a small file so that after a power cut it is either absent or whole: temp name, fsync, rename,
    fsync the directory. Raises OSError (disk full, I/O error) with no file left under `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
