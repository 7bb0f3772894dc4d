"""Records that flow over the bus into the index and out of it: segments, gaps, camera states, events,
reference views and motion-worker status."""

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


EVENT_KINDS = ("motion", "tamper", "offline", "alert")


@dataclass(frozen=True)
class EventRecord:
    """Something that happened on a camera. The same event is announced when it opens (end_ms None) and
    again when it closes; (camera, kind, subkind, start_ms) identifies it."""

    camera: str
    kind: str                   # one of EVENT_KINDS
    start_ms: int
    end_ms: int | None = None   # None while the event is open
    subkind: str = ""           # tamper: covered | defocused | moved; alert: what happened
    zones: tuple[str, ...] = ()  # motion: zones hit
    peak_score: float = 0.0
    snapshot: str | None = None  # JPEG, path relative to the data dir
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "zones", tuple(self.zones))  # JSON gives a list

    @property
    def keeps_video(self) -> bool:
        """Whether retention keeps the video around this event (offline and alerts have none to keep)."""
        return self.kind in ("motion", "tamper")


@dataclass(frozen=True)
class ReferenceRecord:
    """An approved reference view of a camera, for view-change (moved camera) detection."""

    camera: str
    approved_ms: int
    image: str          # grey PNG, path relative to the data dir
    approved_by: str    # "commissioning" or who re-approved it


@dataclass(frozen=True)
class MotionStatus:
    """A motion worker's heartbeat for one camera, sent every few seconds; a worker that stops sending
    them is restarted by the supervisor."""

    camera: str
    time_ms: int
    state: str              # connecting | analysing | reconnecting
    analysed: int = 0       # frames analysed since the worker started
    dropped: int = 0        # frames skipped because the detector fell behind
    reason: str = ""


Record = SegmentRecord | CameraState | EventRecord | ReferenceRecord | MotionStatus
_KINDS: dict[str, type] = {"segment": SegmentRecord, "state": CameraState, "event": EventRecord,
                           "reference": ReferenceRecord, "motion_status": MotionStatus}


def to_message(record: Record) -> dict[str, Any]:
    # "record", not "kind": events have a field of that name
    name = next(name for name, cls in _KINDS.items() if isinstance(record, cls))
    return {"record": name, **asdict(record)}


def from_message(message: dict[str, Any]) -> Record:
    body = {k: v for k, v in message.items() if k != "record"}
    cls = _KINDS.get(message.get("record", ""))
    if cls is None:
        raise ValueError(f"unknown record type {message.get('record')!r}")
    return cls(**body)
