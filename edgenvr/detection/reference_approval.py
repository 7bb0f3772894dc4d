"""Approving a camera's reference view (an admin action, `edgenvr reference approve`), and which view is in use.

The camera's current view is watched for a few seconds (VIEW_SAMPLES pictures a second or a key frame apart)
and its background view (detection.background_view: the median, so people passing are not in it) is stored as
the new reference image and recorded in the index under the name of who approved it. The camera's motion worker polls the index and loads it within REFERENCE_POLL_SECONDS; a "moved"
tamper event that was open closes then. Like holds, this is a rare admin write made directly to the index
(a short transaction; SQLite serialises it with the supervisor's writer).

Failure paths: camera unreachable, no picture within the timeout, or the stream ends before enough pictures
-> ReferenceError, nothing written; a covered (uniform) picture is not sampled, so a camera covered all along
ends in the timeout; disk full -> OSError from the image write, nothing recorded in the index.
"""

from __future__ import annotations

import getpass
import sqlite3

import av
import cv2
import numpy as np

from edgenvr.config.records import CameraConfig
from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.records import COMMISSIONING
from edgenvr.core.rtsp_input import open_rtsp
from edgenvr.core.units import SECOND_MS
from edgenvr.core.url_redaction import redact_text
from edgenvr.detection.analysis_picture import analysis_image, encode_png
from edgenvr.detection.background_view import VIEW_SAMPLES, BackgroundView
from edgenvr.index import schema as index_schema
from edgenvr.storage.deletion import DataFile, delete_data_file
from edgenvr.storage.durable_writes import write_durably
from edgenvr.storage.layout import StorageLayout


class ReferenceError(Exception):
    """The camera's current view could not be grabbed."""


COVERED_CONTRAST = 8.0   # luma std-dev of a picture too uniform to be a view (lens cap, cloth): not sampled
MAX_KEY_INTERVAL_SECONDS = 4   # the watch lasts at most the timeout plus this per picture needed


def grab_view(camera: CameraConfig, timeout_seconds: float = 15.0, samples: int = VIEW_SAMPLES) -> np.ndarray:
    """The camera's background view (the analysis picture) over `samples` pictures a second apart, from the
    detect stream's frames, or the main stream's key frames (one per key frame if they come less often)."""
    url = camera.detect_url or camera.url
    view = None
    try:
        # A one-off grab: PyAV's read timeout bounds each read as well (its per-read cost does not matter
        # here), and libav's default probe is kept. Reads wait on the camera, in real time.
        with open_rtsp(url, timeout_seconds, timeout_seconds, short_probe=False, pyav_read_timeout=True) as container:
            if not container.streams.video:
                raise ReferenceError(f"camera {camera.id}: the stream has no video")
            stream = container.streams.video[0]
            if camera.detect_url is None:
                stream.codec_context.skip_frame = "NONKEY"   # a main stream: decoding every frame costs a core
            first_ms = None
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                stream_ms = int(frame.pts * stream.time_base * SECOND_MS)
                first_ms = stream_ms if first_ms is None else first_ms
                if stream_ms - first_ms > (timeout_seconds + samples * MAX_KEY_INTERVAL_SECONDS) * SECOND_MS:
                    break   # watched long enough: the camera is covered, or its stream barely moves
                grey = analysis_image(frame)
                if float(cv2.meanStdDev(grey)[1][0, 0]) < COVERED_CONTRAST:
                    continue
                view = view or BackgroundView(grey.shape[1], grey.shape[0], SECOND_MS, keep=samples)
                view.offer(stream_ms, grey)
                picture = view.view(samples)
                if picture is not None:
                    return picture
    except av.error.FFmpegError as exc:
        raise ReferenceError(f"camera {camera.id}: cannot read the stream: {redact_text(str(exc))}") from None
    except OSError as exc:
        raise ReferenceError(f"camera {camera.id}: cannot connect: {redact_text(str(exc))}") from None
    got = view.samples if view is not None else 0
    raise ReferenceError(f"camera {camera.id}: got {got} of the {samples} pictures needed before the stream"
                         " ended or the time ran out (a covered camera gives none)")


def approve_current_view(layout: StorageLayout, camera: CameraConfig, approved_by: str | None = None,
                         clock: Clock = SYSTEM_CLOCK) -> tuple[int, str]:
    """Grab, store and record the camera's current view as its reference. Returns (approved_ms, image path)."""
    who = approved_by or getpass.getuser()
    if who == COMMISSIONING:
        raise ReferenceError(f"{COMMISSIONING!r} names views nobody approved; give your own name with --by")
    view = grab_view(camera)
    approved_ms = clock.now_ms()
    path = layout.reference_path(camera.id, approved_ms)
    write_durably(path, encode_png(view))
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
