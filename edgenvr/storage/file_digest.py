"""The SHA-256 of a whole file, the one way edgenvr hashes a file it did not just write (a segment adopted at
start-up, an export's files, a clip before upload, a folder being verified).

Reads 1 MB chunks through hashlib (OpenSSL's SHA-256): memory stays flat whatever the file's size. An
unreadable file raises OSError to the caller, which knows what the file is for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
