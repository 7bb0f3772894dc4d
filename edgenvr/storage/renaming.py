"""Giving a file a new name without ever replacing another file: `rename_no_replace`.

Owns: the one rename in edgenvr that must not overwrite (a segment moved to its corrected time when it is
re-anchored, index.reanchoring). os.rename replaces an existing target silently, which for two segments of
one camera at the same millisecond would lose a recording.

Invariants:
- If `target` exists, nothing changes and FileExistsError is raised.
- Otherwise `source` ends up under `target` only, in one atomic step whatever the moment of a crash:
  renameat2(RENAME_NOREPLACE). Where the filesystem or kernel has no such rename (EINVAL, ENOSYS: old
  kernels, some FUSE and network filesystems), the target is looked up, then os.rename. That check and the
  rename are two steps; it is enough here because the only names renamed to are re-anchored segments, times
  before the clock was synchronised, which no one else creates: recorders name a file by the current time.
  (A hard link then an unlink would close that window, but a crash between them leaves one file under two
  names, which the start-up reconcile would index twice; and exFAT has no hard links.)
- Durability is the caller's: fsync both directories afterwards (storage.durable_writes.fsync_dir).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

AT_FDCWD = -100
RENAME_NOREPLACE = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)   # glibc >= 2.28


def rename_no_replace(source: Path, target: Path) -> None:
    """Rename `source` to `target` unless `target` exists (FileExistsError, nothing changed). Other
    failures raise OSError with nothing changed."""
    if _renameat2 is not None:
        result = _renameat2(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE)
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):   # EEXIST becomes FileExistsError, as os.link raises it
            raise OSError(code, os.strerror(code), str(source), None, str(target))
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    os.rename(source, target)   # one step: the file is under one name, old or new, after any crash
