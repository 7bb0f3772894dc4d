"""Re-approving a camera's reference view (an admin action, `edgenvr reference approve`).

The camera's current picture is grabbed from its stream, stored as the new reference image, and recorded in
the index. The camera's motion worker polls the index and loads it within REFERENCE_POLL_SECONDS; a "moved"
tamper event that was open closes then. Like holds, this is a rare admin write made directly to the index
(a short transaction; SQLite serialises it with the supervisor's writer).

Failure paths: camera unreachable or no picture within the timeout -> ReferenceError, nothing written;
disk full -> OSError from the image write, nothing recorded in the index.
"""

from __future__ import annotations

import getpass
import sqlite3

import av

from edgenvr.config.records import CameraConfig
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.rtsp_input import open_rtsp
from edgenvr.core.url_redaction import redact_text
from edgenvr.detection.analysis_picture import analysis_image, encode_png
from edgenvr.index import schema as index_schema
from edgenvr.storage.deletion import DataFile, delete_data_file
from edgenvr.storage.durable_writes import write_durably
from edgenvr.storage.layout import StorageLayout


class ReferenceError(Exception):
    """The camera's current view could not be grabbed."""


def grab_view(camera: CameraConfig, timeout_seconds: float = 15.0) -> av.VideoFrame:
    """The first decodable key frame of the camera's detect stream (or main stream)."""
    url = camera.detect_url or camera.url
    try:
        # A one-off grab: PyAV's read timeout bounds each read as well (its per-read cost does not matter
        # here), and libav's default probe is kept. Reads wait on the camera, in real time.
        with open_rtsp(url, timeout_seconds, timeout_seconds, short_probe=False, pyav_read_timeout=True) as container:
            if not container.streams.video:
                raise ReferenceError(f"camera {camera.id}: the stream has no video")
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            for frame in container.decode(stream):
                return frame
    except av.error.FFmpegError as exc:
        raise ReferenceError(f"camera {camera.id}: cannot read the stream: {redact_text(str(exc))}") from None
    except OSError as exc:
        raise ReferenceError(f"camera {camera.id}: cannot connect: {redact_text(str(exc))}") from None
    raise ReferenceError(f"camera {camera.id}: the stream ended before a picture arrived")


def approve_current_view(layout: StorageLayout, camera: CameraConfig, approved_by: str | None = None,
                         clock: Clock = SYSTEM_CLOCK) -> tuple[int, str]:
    """Grab, store and record the camera's current view as its reference. Returns (approved_ms, image path)."""
    frame = grab_view(camera)
    approved_ms = clock.now_ms()
    path = layout.reference_path(camera.id, approved_ms)
    write_durably(path, encode_png(analysis_image(frame)))
    who = approved_by or getpass.getuser()
    conn = index_schema.connect(layout.index_path)
    try:
        with index_schema.write_transaction(conn):
            conn.execute("INSERT INTO reference_views (camera, approved_ms, image, approved_by) VALUES (?,?,?,?)",
                         (camera.id, approved_ms, layout.relative(path), who))
    except sqlite3.Error:
        delete_data_file(layout, path, DataFile.REFERENCE)  # no row knows the image
        raise
    finally:
        conn.close()
    return approved_ms, str(path)
