"""One real ~24 s recording by `edgenvr run` of RTSP test cameras that do what site cameras do (2 s segments,
a key frame every second): a steady H.264 camera at 2 Mbit/s (`gate`), one whose server is stopped for 5 s
(`outage`), one that switches resolution every 3 s (`reconfigured`), one switched from H.264 to H.265
(`switching`), plus any cameras a test adds. Shared by the clip builder's and the playback video's tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from conftest import CLIP_CACHE, config_text, start_supervisor

from edgenvr.core.records import GapRecord
from edgenvr.index.queries import SegmentRow, gaps, open_readonly, segments
from edgenvr.simulator import SimulatedCamera, make_clip
from edgenvr.storage.layout import StorageLayout

RUN_SECONDS = 24
OUTAGE_AT, OUTAGE_FOR = 8, 5
SWITCH_AT = 10


@dataclass
class Recording:
    layout: StorageLayout

    def rows(self, camera: str) -> list[SegmentRow]:
        with open_readonly(self.layout) as conn:
            return list(segments(conn, self.layout, camera))

    def gap_rows(self, camera: str) -> list[GapRecord]:
        with open_readonly(self.layout) as conn:
            return [g for g in gaps(conn, self.layout, camera) if g.end_ms is not None]


def _resolution_change_clip() -> Path:
    """A camera reconfigured between two resolutions: two clips back to back in one elementary stream."""
    small = make_clip(CLIP_CACHE / "res-a.h264", width=320, height=240, fps=25, seconds=3)
    large = make_clip(CLIP_CACHE / "res-b.h264", width=352, height=288, fps=25, seconds=3)
    target = CLIP_CACHE / "res-change.h264"
    target.write_bytes(small.read_bytes() + large.read_bytes())
    return target


def record_mixed_cameras(root: Path, h264_clip: Path, h265_clip: Path,
                         extra: dict[str, Path] | None = None) -> StorageLayout:
    """Record the cameras above (and `extra`: name -> H.264 clip) for RUN_SECONDS; the data dir's layout."""
    # 2 Mbit/s (noise added to the synthetic picture): a memory leak of copied packets would show in RSS
    busy = make_clip(CLIP_CACHE / "qvga-25fps-gop25-2mbit.h264", width=320, height=240, fps=25, seconds=4,
                     bitrate=2_000_000)
    servers = {
        "gate": SimulatedCamera({"main": (busy, "h264")}, log_path=root / "gate.log"),
        "outage": SimulatedCamera({"main": (h264_clip, "h264")}, log_path=root / "outage.log"),
        "reconfigured": SimulatedCamera({"main": (_resolution_change_clip(), "h264")},
                                        log_path=root / "reconfigured.log"),
        "switching": SimulatedCamera({"main": (h264_clip, "h264")}, log_path=root / "switching.log"),
        **{name: SimulatedCamera({"main": (clip, "h264")}, log_path=root / f"{name}.log")
           for name, clip in (extra or {}).items()},
    }
    for server in servers.values():
        server.start()
    data_dir = root / "data"
    config_path = root / "edgenvr.toml"
    config_path.write_text(config_text(data_dir, {name: server.url("main") for name, server in servers.items()},
                                       segment_seconds=2))
    supervisor = start_supervisor(config_path, root / "edgenvr.log")
    try:
        supervisor.wait_for_log(f"recording {len(servers)} cameras")
        t0 = time.monotonic()

        def at(seconds: float) -> None:
            time.sleep(max(0.0, t0 + seconds - time.monotonic()))

        at(OUTAGE_AT)
        servers["outage"].stop()
        at(SWITCH_AT)
        # the same camera (address, port) now sends H.265: a new server on the old one's port
        servers["switching"].stop()
        servers["switching"] = SimulatedCamera({"main": (h265_clip, "h265")}, port=servers["switching"].port,
                                                log_path=root / "switching-h265.log")
        servers["switching"].start()
        at(OUTAGE_AT + OUTAGE_FOR)
        servers["outage"].restart()
        at(RUN_SECONDS)
        assert supervisor.stop() == 0
    finally:
        if supervisor.process.poll() is None:
            supervisor.kill()
        for server in servers.values():
            server.stop()
    return StorageLayout(data_dir)
