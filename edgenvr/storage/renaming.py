"""Giving a file a new name without ever replacing another file: `rename_no_replace`.

Owns: the one rename in edgenvr that must not overwrite (a segment moved to its corrected time when it is
re-anchored, index.reanchoring). os.rename replaces an existing target silently, which for two segments of
one camera at the same millisecond would lose a recording.

Invariants:
- If `target` exists, nothing changes and FileExistsError is raised.
- Otherwise `source` ends up under `target` only: renameat2(RENAME_NOREPLACE), one atomic step. Where the
  filesystem or kernel has no such rename (EINVAL, ENOSYS), a hard link (which also refuses an existing
  target) then the unlink of the old name: a crash in between leaves the one file under both names, never
  none. The unlink removes a name, not data: the file lives on under `target`.
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
    os.link(source, target)   # FileExistsError if the target exists: nothing changed
    os.unlink(source)         # a name, not the data (see the module docstring)
