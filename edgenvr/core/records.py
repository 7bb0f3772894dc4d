"""Records that flow over the bus into the index and out of it: segments, gaps, camera states, events,
reference views and motion-worker status."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    MOTION = "motion"
    TAMPER = "tamper"
    OFFLINE = "offline"
    ALERT = "alert"


class TamperKind(StrEnum):
    """The subkind of a tamper event."""
    COVERED = "covered"
    DEFOCUSED = "defocused"
    MOVED = "moved"


class AlertKind(StrEnum):
    """The subkind of an alert event."""
    DELETED_EARLY = "deleted_early"   # event video deleted before its time for lack of space
    DISK_FULL = "disk_full"           # only held video is left and the free-space floor is still violated
    CLOCK_JUMP = "clock_jump"         # the wall clock was stepped (NTP, a wrong RTC): how far is in the detail
    UNSENT_VIDEO_DELETED = "unsent_video_deleted"  # the free-space floor deleted video queued for the hub


class RecorderState(StrEnum):
    """What a camera's recorder is doing (cameras.state in the index)."""
    UNKNOWN = "unknown"         # never reported (the index's default)
    CONNECTING = "connecting"
    RECORDING = "recording"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"         # reconnecting for longer than the offline threshold
    STOPPED = "stopped"


class DetectionState(StrEnum):
    """What a camera's motion worker is doing."""
    CONNECTING = "connecting"
    ANALYSING = "analysing"
    RECONNECTING = "reconnecting"


class SegmentOrigin(StrEnum):
    RECORDER = "recorder"       # announced by the recorder that wrote it
    ADOPTED = "adopted"         # found complete on disk at start-up without a row
    RECOVERED = "recovered"     # a torn .partial finalised at start-up


@dataclass(frozen=True)
class SegmentRecord:
    """One closed, fsynced segment file. Times are UTC epoch ms on the camera's stream clock,
    anchored to the wall clock when the connection started (see core.stream_anchor)."""

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
    origin: SegmentOrigin = SegmentOrigin.RECORDER
    # Clock trust (docs/architecture.md): what vouched for start_ms when the segment started. A record without
    # a boot id (older files, a file probed without its attribute) is taken at its wall-clock times, as before.
    clock_synchronised: bool = True   # the wall clock was synchronised (core.clock.Clock.synchronised)
    boot_id: str = ""    # the boot it was recorded in (Clock.boot_id: 16 hex digits); "" unknown
    boot_ms: int = 0     # the boot-time clock at start_ms (Clock.boot_ms); meaningful only with a boot id

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
    """What the recorder of one camera is doing."""

    camera: str
    state: RecorderState
    since_ms: int
    reason: str = ""
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EventRecord:
    """Something that happened on a camera. The same event is announced when it opens (end_ms None) and
    again when it closes; (camera, kind, subkind, start_ms) identifies it."""

    camera: str
    kind: EventKind
    start_ms: int
    end_ms: int | None = None   # None while the event is open
    subkind: str = ""           # tamper: a TamperKind; alert: an AlertKind
    zones: tuple[str, ...] = ()  # motion: zones hit
    peak_score: float = 0.0
    snapshot: str | None = None  # JPEG, path relative to the data dir
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "zones", tuple(self.zones))  # JSON gives a list

    @property
    def keeps_video(self) -> bool:
        """Whether retention keeps the video around this event (offline and alerts have none to keep)."""
        return self.kind in (EventKind.MOTION, EventKind.TAMPER)


# `approved_by` of a reference view taken automatically (first commissioning): used for detection at once, but
# not approved by anyone; `edgenvr status` says so until a person approves a view.
COMMISSIONING = "commissioning"


@dataclass(frozen=True)
class ReferenceRecord:
    """A reference view of a camera, for view-change (moved camera) detection."""

    camera: str
    approved_ms: int
    image: str          # grey PNG, path relative to the data dir
    approved_by: str    # COMMISSIONING, or the person who approved it


@dataclass(frozen=True)
class MotionStatus:
    """A motion worker's heartbeat for one camera, sent every few seconds; a worker that stops sending
    them is restarted by the supervisor."""

    camera: str
    time_ms: int
    state: DetectionState
    analysed: int = 0       # frames analysed since the worker started
    dropped: int = 0        # frames skipped because the detector fell behind
    reason: str = ""


Record = SegmentRecord | CameraState | EventRecord | ReferenceRecord | MotionStatus
# The bus's record types by the name a message carries. A message becomes a record only through
# core.record_validation.record_from_message, which checks every field first.
RECORD_TYPES: dict[str, type] = {"segment": SegmentRecord, "state": CameraState, "event": EventRecord,
                                 "reference": ReferenceRecord, "motion_status": MotionStatus}


def to_message(record: Record) -> dict[str, Any]:
    # "record", not "kind": events have a field of that name
    name = next(name for name, cls in RECORD_TYPES.items() if isinstance(record, cls))
    return {"record": name, **asdict(record)}
