"""Durable writes: the one place that fsyncs files and directories, so that after a power cut a file is
either absent or whole and a rename or unlink is on the disk.

Segment files are written by their own writer (recording.segment_files) but make their renames durable
through `fsync_dir` here; small files (snapshots, reference views) go through `write_durably`.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgenvr.storage.permissions import FILE_MODE, make_data_dirs


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in this directory durable (ext4/f2fs need the directory fsynced too)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write a small file so that after a power cut it is either absent or whole: temp name, fsync, rename,
    fsync the directory. Raises OSError (disk full, I/O error) with no file left under `path`. The file is
    `mode` (FILE_MODE, or 0600 for a secret) and new directories DIR_MODE whatever the umask
    (storage.permissions)."""
    make_data_dirs(path.parent)
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)   # a leftover of a crash: open() would keep its mode
    try:
        with open(temporary, "wb", opener=lambda name, flags: os.open(name, flags, mode)) as handle:
            os.fchmod(handle.fileno(), mode)   # whatever the umask
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
