"""The picture detection works on: a small grey image made from a decoded frame's luma plane, and its PNG
form for reference views. Motion, tamper, reference approval and the labelled scenes all use this one."""

from __future__ import annotations

import av
import cv2
import numpy as np

ANALYSIS_WIDTH = 320           # detectors see a 320-wide grey picture (320x180 for 16:9)
_EIGHT_BIT_Y_FORMATS = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"}


def analysis_image(frame: av.VideoFrame, width: int = ANALYSIS_WIDTH) -> np.ndarray:
    """The picture the detectors see: the luma plane, shrunk. A view of the Y plane plus cv2.resize costs
    about a tenth of a full pixel-format conversion (measured)."""
    if frame.format.name in _EIGHT_BIT_Y_FORMATS:
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:frame.height, :frame.width]
    else:  # 10-bit HEVC and the like: rare, so the slow conversion is acceptable
        luma = frame.to_ndarray(format="gray")
    height = max(2, round(frame.height * width / frame.width / 2) * 2)
    return cv2.resize(luma, (width, height), interpolation=cv2.INTER_AREA)


def encode_png(grey: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", grey)
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()
