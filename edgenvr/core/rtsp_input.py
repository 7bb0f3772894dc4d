"""Opening a camera's RTSP stream with PyAV: the one place the input options are chosen (recorder, motion
worker, reference approval).

Invariants:
- RTSP over TCP.
- FFmpeg's socket `timeout` is half the read timeout: its RTSP demuxer gives up on a silent TCP socket after
  two such periods (measured: 5 s -> 10 s), so a frozen camera fails within the read timeout.
- By default reads are bounded by that socket timeout alone: PyAV's own read timeout would run a Python
  interrupt callback inside every libav read, a cost paid per packet for nothing.
- By default the stream-info probe is short (1 s): only codec parameters are needed, not decoded frames.
Reads wait on the camera, in real time: no `Clock` can shorten them.
"""

from __future__ import annotations

import av

PROBE_MICROSECONDS = 1_000_000


def open_rtsp(url: str, connect_timeout: float, read_timeout: float, *, short_probe: bool = True,
              pyav_read_timeout: bool = False) -> av.container.InputContainer:
    """Open `url` for demuxing. Raises what av.open raises (OSError / av.error.FFmpegError subclasses).

    `short_probe=False` keeps libav's default probe; `pyav_read_timeout=True` also bounds every read with
    PyAV's `read_timeout` (for one-off grabs, where its per-read cost does not matter)."""
    options = {"rtsp_transport": "tcp", "timeout": str(int(read_timeout * 1_000_000 / 2))}
    if short_probe:
        options["analyzeduration"] = str(PROBE_MICROSECONDS)
    return av.open(url, options=options, timeout=(connect_timeout, read_timeout if pyav_read_timeout else None))
