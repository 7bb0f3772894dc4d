"""Reading the test camera's burned-in frame counter (camera.draw_counter) off what a browser shows: the
picture a `<video>` element presents, grabbed in the page, and the counter decoded from it here. Used by the
web UI tests and the live-latency benchmark (the counter plus the camera's push log is the camera's clock
in the picture).

`VIDEO_FRAME_JS` runs in the page (Playwright `evaluate` with `[video, rows]`): it reads `Date.now()` first,
then draws the video into a canvas and returns its top `rows` rows as RGBA (base64), the picture's size, the
video's currentTime, its paused state and the end of what Media Source holds. `counter_on_screen` turns that
back into the counter: the browser draws full-range RGB; the camera encoded studio-range luma.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from edgenvr.simulator.camera import decode_frame_counter

VIDEO_FRAME_JS = """([video, rows]) => {
  const now = Date.now();
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(video, 0, 0);
  const kept = Math.min(rows, canvas.height);
  const bytes = context.getImageData(0, 0, canvas.width, kept).data;
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  const ranges = video.buffered;
  return { now, width: canvas.width, height: canvas.height, rows: kept, rgba: btoa(text),
           current: video.currentTime, paused: video.paused,
           end: ranges.length ? ranges.end(ranges.length - 1) : null };
}"""


def luma_on_screen(shot: dict[str, Any]) -> np.ndarray:
    """The grabbed picture as the camera's studio-range luma (16 black, 235 white); rows not grabbed are black."""
    rgba = np.frombuffer(base64.b64decode(shot["rgba"]), np.uint8).reshape(shot["rows"], shot["width"], 4)
    full = rgba[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    luma = np.full((shot["height"], shot["width"]), 16, np.uint8)
    luma[:shot["rows"]] = np.clip(16 + full * 219 / 255, 0, 255).astype(np.uint8)
    return luma


def counter_on_screen(shot: dict[str, Any]) -> int | None:
    """The frame counter in a grabbed picture; None if it cannot be read."""
    return decode_frame_counter(luma_on_screen(shot))
