"""Records that flow from recorders to the index and out of the index: segments, gaps, camera states."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SegmentRecord:
    """One closed, fsynced segment file. Times are UTC epoch ms on the camera's stream clock,
    anchored to the wall clock when the connection started (see docs/architecture.md, Time)."""

    camera: str
    start_ms: int
    end_ms: int
    path: str            # relative to the data dir
    bytes: int
    sha256: str
    codec: str           # "h264", "hevc", ...
    width: int
    height: int
    packets: int
    wall_end_ms: int     # wall clock when the file was closed, to see camera clock drift
    origin: str = "recorder"   # "recorder", "adopted" (found on disk at start-up), "recovered" (partial finalised)

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass(frozen=True)
class GapRecord:
    camera: str
    start_ms: int
    end_ms: int | None   # None while the gap is still open (camera not recording now)
    reason: str


@dataclass(frozen=True)
class CameraState:
    """What the recorder of one camera is doing. state: starting|connecting|recording|reconnecting|offline|stopped."""

    camera: str
    state: str
    since_ms: int
    reason: str = ""
    dropped: dict[str, int] = field(default_factory=dict)


def to_message(record: SegmentRecord | CameraState) -> dict[str, Any]:
    kind = "segment" if isinstance(record, SegmentRecord) else "state"
    return {"kind": kind, **asdict(record)}


def from_message(message: dict[str, Any]) -> SegmentRecord | CameraState:
    body = {k: v for k, v in message.items() if k != "kind"}
    if message.get("kind") == "segment":
        return SegmentRecord(**body)
    if message.get("kind") == "state":
        return CameraState(**body)
    raise ValueError(f"unknown message kind {message.get('kind')!r}")
