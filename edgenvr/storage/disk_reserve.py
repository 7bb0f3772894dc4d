"""An emergency reserve of disk space for the index.

When something else fills the disk to the last byte, SQLite cannot even commit the mark that lets the
ring delete old video (deletion is mark, commit, then unlink), and the box would stay stuck. A small
pre-allocated file in the data dir is given up at that moment so the commit goes through and the ring can
free space; it is re-created once there is room again.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

MAX_RESERVE_BYTES = 4 * 1024 * 1024
MIN_RESERVE_BYTES = 256 * 1024  # a few index commits (WAL frames of a handful of pages each)


class DiskReserve:
    def __init__(self, path: Path) -> None:
        self.path = path
        total = shutil.disk_usage(path.parent).total
        self.size = min(MAX_RESERVE_BYTES, max(MIN_RESERVE_BYTES, total // 50))

    def ensure(self) -> None:
        """Create the reserve if it is missing and the disk has clearly room for it."""
        if self.path.exists():
            return
        if shutil.disk_usage(self.path.parent).free < 2 * self.size:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # no room after all: try again at the next sweep
            self.path.unlink(missing_ok=True)
            log.warning("cannot create the disk reserve %s: %s", self.path, exc)

    def release(self) -> bool:
        """Give the reserve back to the filesystem. Returns whether there was one to give."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.error("ALERT: disk full; released the %d KB emergency reserve so the index can commit",
                  self.size // 1024)
        return True
