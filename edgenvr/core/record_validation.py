"""What a message from the bus must be before anything uses it: the one check that turns a bus message into a
record (`record_from_message`).

The bus is a Unix socket only the service user can reach (core.bus), and what arrives is still checked: a
worker with a bug, or anything else running as the service user, must not stop the supervisor, put a row in
the index that breaks a later commit, sweep or start-up, or make retention delete a file it names.

Invariants: a message becomes a `Record` only through `record_from_message`, which checks
- the shape: a JSON object with a known `record` type and exactly that type's fields (defaulted ones may be
  left out);
- each field's type, exactly: an int is an int (not a bool, a str or a float), a str is a str, a float is
  any finite number, a kind or a state is a value of its StrEnum in core.records;
- ranges: every int fits a signed 64-bit SQLite integer; times are epoch ms from 0 to the year 9999
  (units.LATEST_TIME_MS: the layout cannot name a file later than that); sizes and counts are >= 0; an end
  is not before its start; a segment is no longer than the index's time-range scans assume; texts are
  short; a sha256 is 64 hex digits; events on the bus are motion or tamper events with their subkinds
  (offline and alert events are made by the index writer and the sweep, never sent by a worker);
- what the caller passes in (`MessageRules`): the camera is one of the config's cameras, and every file a
  record names (a segment's path, an event's snapshot, a reference view's image) is exactly the path the
  storage layout builds for that camera and time. Paths from the bus are never trusted, only compared.
A message that fails raises `InvalidMessage`, whose text names the record type, the field and what is
wrong. It never repeats the message's texts (reasons, details); only a short repr of a refused camera id or
path, which are not secret and say what was attempted.
"""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import MISSING, dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable, Collection, Protocol

from edgenvr.core.clock import OWN_BOOT_PREFIX
from edgenvr.core.records import (
    RECORD_TYPES,
    CameraState,
    EventKind,
    EventRecord,
    MotionStatus,
    Record,
    ReferenceRecord,
    SegmentRecord,
    TamperKind,
)
from edgenvr.core.units import LATEST_TIME_MS

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
TIME_FIELDS = frozenset({"start_ms", "end_ms", "wall_end_ms", "since_ms", "approved_ms", "time_ms"})
COUNT_FIELDS = frozenset({"bytes", "width", "height", "packets", "analysed", "dropped"})
LONGEST_TEXT = 4096     # reasons, details: a libav error message is a line; anything longer is not one
LONGEST_NAME = 64       # zone names, drop-counter names, codec names
MOST_ITEMS = 64         # zones of an event, drop counters of a camera
_SHA256 = re.compile(r"[0-9a-f]{64}")
# The subkinds a worker may send with each event kind (offline and alert events never come over the bus).
BUS_EVENT_SUBKINDS: dict[str, frozenset[str]] = {
    EventKind.MOTION: frozenset({""}),
    EventKind.TAMPER: frozenset(TamperKind),
}


class InvalidMessage(ValueError):
    """A bus message that is not a record edgenvr could have sent; the text says why."""


class RecordPaths(Protocol):
    """The storage layout's path builders (storage.layout.StorageLayout), passed in: core cannot import it."""

    def segment_path(self, camera_id: str, start_ms: int) -> Path: ...

    def snapshot_path(self, camera_id: str, start_ms: int, kind: str, subkind: str = "") -> Path: ...

    def reference_path(self, camera_id: str, approved_ms: int) -> Path: ...

    def relative(self, path: Path) -> str: ...


@dataclass(frozen=True)
class MessageRules:
    """What a message is checked against besides its record type."""

    cameras: Collection[str]     # ids of the cameras in the config
    paths: RecordPaths           # the storage layout
    longest_segment_ms: int      # index.retention_classes.LONGEST_SEGMENT_MS: the index's scans assume it
    # The receiver's boot (Clock.boot_id, Clock.boot_ms): recorders run in the supervisor's boot, so a segment
    # claiming another boot, or a boot time ahead of now, is forged; believed, it would push the recording
    # timeline ahead and make older video look old enough to delete. None: not checked.
    boot: Callable[[], tuple[str, int]] | None = None
    boot_slack_ms: int = 2000    # a segment's boot time may be this far ahead of the receiver's clock read


class _Bad(Exception):
    """A field is wrong: the text says how (the record type is added by record_from_message)."""


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind_of(value: object) -> str:
    return "null" if value is None else type(value).__name__


# -- one checker per field type, built once from the records' type hints --------------------------------

_Check = Callable[[str, Any], Any]   # (field name, value) -> the value to build the record with; raises _Bad


def _int(name: str, value: Any) -> int:
    if type(value) is not int:  # bool is an int subclass: excluded
        raise _Bad(f"{name} must be an int, not {_kind_of(value)}")
    low, high = (0, LATEST_TIME_MS) if name in TIME_FIELDS else (0, INT64_MAX) if name in COUNT_FIELDS \
        else (INT64_MIN, INT64_MAX)
    if not low <= value <= high:
        raise _Bad(f"{name} {value} is out of range ({low}..{high})")
    return value


def _float(name: str, value: Any) -> float:
    if type(value) not in (int, float):
        raise _Bad(f"{name} must be a number, not {_kind_of(value)}")
    if abs(value) > 1e300 or not math.isfinite(value):  # a huge int would overflow in isfinite and float()
        raise _Bad(f"{name} must be a finite number")
    return float(value)


def _str(name: str, value: Any) -> str:
    if type(value) is not str:
        raise _Bad(f"{name} must be a string, not {_kind_of(value)}")
    if len(value) > LONGEST_TEXT:
        raise _Bad(f"{name} is longer than {LONGEST_TEXT} characters")
    return value


def _bool(name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise _Bad(f"{name} must be true or false, not {_kind_of(value)}")
    return value


def _enum(enum: type[StrEnum]) -> _Check:
    def check(name: str, value: Any) -> StrEnum:
        if type(value) is not str or value not in enum._value2member_map_:
            raise _Bad(f"{name} must be one of {', '.join(enum)}, not {_short(value)}")
        return enum(value)
    return check


def _optional(inner: _Check) -> _Check:
    return lambda name, value: None if value is None else inner(name, value)


def _names(name: str, value: Any) -> tuple[str, ...]:
    if type(value) not in (list, tuple) or len(value) > MOST_ITEMS:
        raise _Bad(f"{name} must be a list of at most {MOST_ITEMS} names")
    return tuple(_name(name, item) for item in value)


def _name(name: str, value: Any) -> str:
    if type(value) is not str or len(value) > LONGEST_NAME:
        raise _Bad(f"{name} must hold names of at most {LONGEST_NAME} characters")
    return value


def _counters(name: str, value: Any) -> dict[str, int]:
    if type(value) is not dict or len(value) > MOST_ITEMS:
        raise _Bad(f"{name} must be an object of at most {MOST_ITEMS} counters")
    return {_name(name, key): _int(name, count) for key, count in value.items()}


def _checker_for(hint: Any) -> _Check:
    """The checker of one type hint; a hint this module does not know fails at import, not at the first message."""
    simple: dict[Any, _Check] = {int: _int, float: _float, str: _str, bool: _bool}
    if hint in simple:
        return simple[hint]
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return _enum(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
        return _optional(_checker_for(next(a for a in args if a is not type(None))))
    if origin is tuple and args == (str, ...):
        return _names
    if origin is dict and args == (str, int):
        return _counters
    raise TypeError(f"record_validation has no check for a field of type {hint!r}: add one")


@dataclass(frozen=True)
class _FieldCheck:
    name: str
    check: _Check
    required: bool


_FIELDS: dict[str, tuple[_FieldCheck, ...]] = {
    name: tuple(_FieldCheck(f.name, _checker_for(typing.get_type_hints(cls)[f.name]),
                            f.default is MISSING and f.default_factory is MISSING) for f in fields(cls))
    for name, cls in RECORD_TYPES.items()
}


# -- the check ---------------------------------------------------------------------------------------------

def record_from_message(message: object, rules: MessageRules) -> Record:
    """The record a decoded bus message describes, checked as the module docstring says; raises InvalidMessage."""
    if type(message) is not dict:
        raise InvalidMessage(f"not a JSON object but {_kind_of(message)}")
    name = message.get("record")
    cls = RECORD_TYPES.get(name) if type(name) is str else None
    if cls is None:
        raise InvalidMessage(f"unknown record type {_short(name)}")
    try:
        record = _build(cls, _FIELDS[name], message)
        _check_record(record, rules)
    except _Bad as exc:
        raise InvalidMessage(f"{name}: {exc}") from None
    return record


def _build(cls: type, checks: tuple[_FieldCheck, ...], message: dict[str, Any]) -> Any:
    known = {check.name for check in checks}
    unknown = sorted(str(key) for key in message if key != "record" and key not in known)
    if unknown:
        raise _Bad(f"unknown fields {_short(unknown)}")
    values: dict[str, Any] = {}
    for check in checks:
        if check.name in message:
            values[check.name] = check.check(check.name, message[check.name])
        elif check.required:
            raise _Bad(f"{check.name} is missing")
    return cls(**values)


def _check_record(record: Record, rules: MessageRules) -> None:
    """Ranges across fields, and the camera and paths against the caller's rules."""
    if record.camera not in rules.cameras:
        raise _Bad(f"camera {_short(record.camera)} is not a camera of the config")
    if isinstance(record, SegmentRecord):
        if record.end_ms < record.start_ms:
            raise _Bad(f"end_ms {record.end_ms} is before start_ms {record.start_ms}")
        if record.duration_ms > rules.longest_segment_ms:
            raise _Bad(f"{record.duration_ms} ms long; no segment is longer than {rules.longest_segment_ms} ms")
        if not _SHA256.fullmatch(record.sha256):
            raise _Bad("sha256 must be 64 lowercase hex digits")
        if rules.boot is not None and record.boot_id:
            boot_id, boot_ms = rules.boot()
            # A receiver that could not read the kernel's boot id cannot vouch for anyone's (core.clock).
            if not boot_id.startswith(OWN_BOOT_PREFIX):
                if record.boot_id != boot_id:
                    raise _Bad(f"boot_id {_short(record.boot_id)} is not this boot's")
                if not 0 <= record.boot_ms <= boot_ms + rules.boot_slack_ms:
                    raise _Bad(f"boot_ms {record.boot_ms} is ahead of this boot's clock ({boot_ms})")
        if not 0 < len(record.codec) <= LONGEST_NAME:
            raise _Bad(f"codec must be a name of 1 to {LONGEST_NAME} characters")
        _same_path("path", record.path, lambda: rules.paths.segment_path(record.camera, record.start_ms), rules)
    elif isinstance(record, EventRecord):
        subkinds = BUS_EVENT_SUBKINDS.get(record.kind)
        if subkinds is None:
            raise _Bad(f"kind {record.kind} is made by the supervisor, never sent on the bus")
        if record.subkind not in subkinds:
            raise _Bad(f"subkind {_short(record.subkind)} is not one of a {record.kind} event's"
                       f" ({', '.join(sorted(subkinds)) or 'none'})")
        if record.end_ms is not None and record.end_ms < record.start_ms:
            raise _Bad(f"end_ms {record.end_ms} is before start_ms {record.start_ms}")
        if record.snapshot is not None:
            _same_path("snapshot", record.snapshot, lambda: rules.paths.snapshot_path(
                record.camera, record.start_ms, record.kind, record.subkind), rules)
    elif isinstance(record, ReferenceRecord):
        _same_path("image", record.image, lambda: rules.paths.reference_path(record.camera, record.approved_ms), rules)
    elif isinstance(record, (CameraState, MotionStatus)):
        pass  # their fields' types and ranges are all there is to check


def _same_path(name: str, given: str, build: Callable[[], Path], rules: MessageRules) -> None:
    try:
        expected = rules.paths.relative(build())
    except ValueError as exc:  # the layout cannot name this camera or time
        raise _Bad(f"{name}: the storage layout has no path for it ({exc})") from None
    if given != expected:
        raise _Bad(f"{name} {_short(given)} is not the storage layout's {_short(expected)}")
