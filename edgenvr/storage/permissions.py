"""Who may read the data directory: the service user reads and writes, the data's group reads, nobody else
gets in (segments are video of people: never world-readable).

Invariants: every file edgenvr creates under the data dir is 0640 or stricter, every directory 0750 (plus
the set-group-ID bit it inherits). The group is the viewer group (`edgenvr-view`) when the data dir is
set-group-ID to it, as systemd/edgenvr.tmpfiles.conf makes /var/lib/edgenvr; otherwise the service's own
group. Nothing here ever sets group write bits, so viewers only read.

Two mechanisms, because files come from two kinds of code:
- `DATA_UMASK`, set by `edgenvr run` (and the unit's UMask=), covers what libraries create: SQLite's index
  and its -wal/-shm (SQLite gives those the index's mode), libav's remuxed segments, the lock files.
- `FILE_MODE` and `make_data_dirs` are used where this package creates files and directories itself, so
  the rule also holds for commands run from a shell with a looser umask (e.g. `reference approve`).
"""

from __future__ import annotations

from pathlib import Path

DATA_UMASK = 0o027
FILE_MODE = 0o640
DIR_MODE = 0o750
SECRET_MODE = 0o600   # private keys: only the service user reads them


def make_data_dirs(path: Path) -> None:
    """`mkdir -p` giving DIR_MODE to every directory it creates (Path.mkdir gives its mode only to the last
    one). An existing directory is left as it is; raises OSError like Path.mkdir, e.g. FileExistsError when
    `path` is a file, PermissionError, or ENOSPC on a full disk."""
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise
    except FileNotFoundError:
        if path.parent == path:
            raise
        make_data_dirs(path.parent)
        path.mkdir(mode=DIR_MODE, exist_ok=True)  # exist_ok: another thread may have made it meanwhile
