"""The clips the hub has filed (hub.clip_intake), as people find and watch them: a search of the clips table,
a clip's evidence manifest, and where each of its video files lies inside its stored zip, so that a player
gets the file's bytes exactly as the box signed them, straight from the zip (clips are zips of STORED entries:
no unpacking, no copy).

Owns reading <clips_dir>/<id>.zip for people (intake owns writing it). Invariants:
- A clip's path is built only from an id that matches tus_uploads.UPLOAD_ID (32 hex digits), checked here
  (`clip_path`) whoever calls; nothing else from a request is ever joined into a path.
- A zip is read only through clip_intake.checked_entries (plain names, stored, bounded), checked again at every
  open: it was checked at intake, and is never trusted for that.
- A video span is a file the manifest names, whose entry's local header (APPNOTE 4.3.7, read with zipfile's own
  struct) says stored and unencrypted, with the sizes the central directory gives, lying inside the zip.
Failure paths: an id that is not one -> ClipNotFound (the API says 404: there is no such clip); a clip without
its row or its file -> ClipNotFound; a zip, manifest or entry that is not what intake kept -> ClipUnreadable
naming what is wrong (the API says 500 and logs it: the hub's own store is damaged).
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from edgenvr.evidence.export_folder import MANIFEST
from edgenvr.hub.clip_intake import checked_entries
from edgenvr.hub.hub_database import CLIPS
from edgenvr.hub.tus_uploads import UPLOAD_ID, UploadRejected

MAX_CLIPS = 2000                 # the most one search answers (newest first)
MAX_MANIFEST_BYTES = 1 << 20     # a manifest lists a few files: far under this
_LOCAL_NAME_LENGTH, _LOCAL_EXTRA_LENGTH = 10, 11   # fields of zipfile.structFileHeader (file name, extra field)
_LOCAL_FLAGS, _LOCAL_METHOD = 3, 4
_ENCRYPTED = 0x1


class ClipNotFound(Exception):
    """No such clip (or its file is gone)."""


class ClipUnreadable(Exception):
    """The stored clip is not what intake kept; the message says what."""


@dataclass(frozen=True)
class ClipQuery:
    box: str | None = None
    camera: str | None = None
    kind: str | None = None
    from_ms: int | None = None       # clips ending after this
    to_ms: int | None = None         # and starting before this
    limit: int = MAX_CLIPS


@dataclass(frozen=True)
class ClipVideo:
    """One video file of a clip, where it lies in the stored zip."""
    part: int                        # 1, 2, ... in time order (a new file at a change of codec or parameters)
    name: str
    offset: int                      # of its first byte in the zip
    size: int
    start_ms: int
    end_ms: int
    codec: str
    width: int
    height: int
    sha256: str


def clip_json(row: sa.Row[Any]) -> dict[str, Any]:
    return {"id": row.id, "box": row.box, "camera": row.camera, "start_ms": row.start_ms, "end_ms": row.end_ms,
            "kind": row.kind, "sha256": row.sha256, "bytes": row.bytes, "received_ms": row.received_ms}


def find_clips(engine: sa.Engine, query: ClipQuery) -> list[dict[str, Any]]:
    """The clips matching every given filter, newest first, at most `query.limit`."""
    select = sa.select(CLIPS).order_by(CLIPS.c.start_ms.desc(), CLIPS.c.id).limit(min(query.limit, MAX_CLIPS))
    for column, value in ((CLIPS.c.box, query.box), (CLIPS.c.camera, query.camera), (CLIPS.c.kind, query.kind)):
        if value is not None:
            select = select.where(column == value)
    if query.from_ms is not None:
        select = select.where(CLIPS.c.end_ms > query.from_ms)
    if query.to_ms is not None:
        select = select.where(CLIPS.c.start_ms < query.to_ms)
    with engine.connect() as conn:
        return [clip_json(row) for row in conn.execute(select)]


def clip_row(engine: sa.Engine, clip_id: str) -> sa.Row[Any]:
    if not UPLOAD_ID.fullmatch(clip_id):
        raise ClipNotFound(f"{clip_id[:40]!r} is not a clip id")
    with engine.connect() as conn:
        row = conn.execute(sa.select(CLIPS).where(CLIPS.c.id == clip_id)).first()
    if row is None:
        raise ClipNotFound(f"no clip {clip_id}")
    return row


def clip_path(clips_dir: Path, clip_id: str) -> Path:
    if not UPLOAD_ID.fullmatch(clip_id):
        raise ClipNotFound(f"{clip_id[:40]!r} is not a clip id")
    return clips_dir / f"{clip_id}.zip"


def read_clip(clips_dir: Path, clip_id: str) -> tuple[dict[str, Any], list[ClipVideo]]:
    """The clip's manifest and its video files' spans in the zip."""
    path = clip_path(clips_dir, clip_id)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise ClipNotFound(f"clip {clip_id}'s file is gone") from None
    with handle:
        size = path.stat().st_size
        try:
            with zipfile.ZipFile(handle) as archive:
                entries = {entry.filename: entry for entry in checked_entries(archive, size)}
                manifest_entry = entries.get(MANIFEST)
                if manifest_entry is None or manifest_entry.file_size > MAX_MANIFEST_BYTES:
                    raise ClipUnreadable(f"clip {clip_id} has no readable {MANIFEST}")
                manifest = json.loads(archive.read(manifest_entry))
        except (zipfile.BadZipFile, UploadRejected, ValueError) as exc:
            raise ClipUnreadable(f"clip {clip_id}: {exc}") from None
        try:
            files = manifest["files"]
            videos = [_video(handle, size, entries, number, described)
                      for number, described in enumerate(files, start=1)]
        except (KeyError, TypeError, struct.error) as exc:
            raise ClipUnreadable(f"clip {clip_id}: its manifest or zip is not what intake kept ({exc!r})") from None
    return manifest, videos


def _video(handle: Any, size: int, entries: dict[str, zipfile.ZipInfo], part: int,
           described: dict[str, Any]) -> ClipVideo:
    name = described["name"]
    entry = entries.get(name)
    if entry is None or entry.file_size != described["bytes"]:
        raise ClipUnreadable(f"the manifest's file {str(name)[:80]!r} is not in the zip as described")
    handle.seek(entry.header_offset)
    header = struct.unpack(zipfile.structFileHeader, handle.read(zipfile.sizeFileHeader))
    if header[0] != zipfile.stringFileHeader or header[_LOCAL_METHOD] != zipfile.ZIP_STORED \
            or header[_LOCAL_FLAGS] & _ENCRYPTED:
        raise ClipUnreadable(f"the entry {name!r} is not a plain stored file")
    offset = entry.header_offset + zipfile.sizeFileHeader + header[_LOCAL_NAME_LENGTH] + header[_LOCAL_EXTRA_LENGTH]
    if offset + entry.file_size > size:
        raise ClipUnreadable(f"the entry {name!r} runs past the end of the zip")
    return ClipVideo(part, name, offset, entry.file_size, int(described["start_ms"]), int(described["end_ms"]),
                     str(described.get("codec", "")), int(described.get("width") or 0),
                     int(described.get("height") or 0), str(described.get("sha256", "")))
