"""The segment attribute: a segment file's own index row and clock record, stored on the file (`user.edgenvr`).

It lets a complete file whose index row was lost (rows are committed in batches minutes apart) be adopted
at start-up, and shown by readers before its row is committed, without reading the file again. Where the
filesystem has no user attributes, adoption falls back to probing and hashing the file. It is 64 bytes
at most, so it fits inside an ext4 inode and costs no extra block write.

It also carries the segment's clock record (docs/architecture.md, "Clock trust"): whether the wall clock
was synchronised when it started, the boot id and the boot-time clock at its start. The record is written
when the `.partial` is created (one setxattr per segment, none per packet) and kept by finalise_partial,
so a segment left by a power cut can still be re-anchored and ordered. Format versions: 1 (57 bytes, no
clock record) is still read, as a segment taken at its wall-clock times; 2 (64 bytes) is written.

Writing it is best effort everywhere (a filesystem without user attributes only makes adoption slower);
reading it never raises: an attribute that is missing, of an unknown version or garbage reads as None.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from edgenvr.core.records import SegmentRecord
from edgenvr.storage.layout import StorageLayout, parse_segment_name

log = logging.getLogger(__name__)

SEGMENT_XATTR = "user.edgenvr"
# Version 1 (57 bytes; still read): version, SHA-256, duration ms, packets, wall clock at close minus end (ms),
# width, height, codec name.
_XATTR_V1 = struct.Struct("<B32sIIiHH8s")
# Version 2 (64 bytes), the clock record added (docs/architecture.md, "Clock trust"): version, flags, SHA-256,
# duration ms, packets, wall clock at close minus end (ms), width, height, codec (a number: _CODECS), boot id
# (8 bytes: core.clock.Clock.boot_id), boot-time ms at the start (40 bits: low 32, high 8).
# 64 bytes is the most that stays inside a 256-byte ext4 inode (checked with debugfs, see
# tests/test_clock_trust.py): 96 bytes of in-inode room = 4 header + 24 entry ("edgenvr") + 4 end + 64 value.
# One byte more and every segment would cost an extra 4 KB block (written at every close).
_XATTR_V2 = struct.Struct("<BB32sIIiHHB8sIB")
assert _XATTR_V2.size == 64
_FLAG_SYNCHRONISED = 0x01   # the wall clock was synchronised when the segment started
_FLAG_OPEN = 0x02           # written when the .partial is created: only the clock record is valid yet
_FLAG_REANCHORED = 0x04     # renamed to its true start from the boot-time clock (index.reanchoring)
# Codec names by number (1 + position); a codec not listed is stored as version 1 (its name, no clock record).
_CODECS = ("h264", "hevc", "mjpeg", "av1", "mpeg4", "vp8", "vp9", "h263", "mpeg2video")
_BOOT_MS_LIMIT = 1 << 40   # 34 years of uptime


@dataclass(frozen=True)
class ClockRecord:
    """What vouched for a segment's start time when it started (core.records.SegmentRecord's clock fields)."""
    synchronised: bool
    boot_id: str     # 16 hex digits
    boot_ms: int

    @staticmethod
    def checked(synchronised: bool, boot_id: str, boot_ms: int) -> "ClockRecord | None":
        """The record, or None if the attribute cannot hold it (no boot id, or one that is not 16 hex digits)."""
        if len(boot_id) != 16 or not 0 <= boot_ms < _BOOT_MS_LIMIT:
            return None
        try:
            bytes.fromhex(boot_id)
        except ValueError:
            return None
        return ClockRecord(synchronised, boot_id, boot_ms)

    @staticmethod
    def of(record: SegmentRecord) -> "ClockRecord | None":
        return ClockRecord.checked(record.clock_synchronised, record.boot_id, record.boot_ms)


def _attribute_value(record: SegmentRecord, flags: int = 0) -> bytes:
    wall_delta = max(-(2**31), min(2**31 - 1, record.wall_end_ms - record.end_ms))
    clock = ClockRecord.of(record)
    if clock is None or record.codec not in _CODECS:
        return _XATTR_V1.pack(1, bytes.fromhex(record.sha256), record.duration_ms, record.packets, wall_delta,
                              record.width, record.height, record.codec.encode()[:8])
    flags |= _FLAG_SYNCHRONISED if clock.synchronised else 0
    return _XATTR_V2.pack(2, flags, bytes.fromhex(record.sha256), record.duration_ms, record.packets, wall_delta,
                          record.width, record.height, _CODECS.index(record.codec) + 1, bytes.fromhex(clock.boot_id),
                          clock.boot_ms & 0xFFFFFFFF, clock.boot_ms >> 32)


def write_segment_attribute(path: Path, record: SegmentRecord, *, reanchored: bool = False) -> None:
    """Store the segment's row on the file itself. Best effort: without it, adoption probes the file.
    `reanchored`: the file's name was corrected from the boot-time clock (index.reanchoring)."""
    try:
        os.setxattr(path, SEGMENT_XATTR, _attribute_value(record, _FLAG_REANCHORED if reanchored else 0))
    except OSError as exc:  # no user attributes here (e.g. exFAT): slower adoption, nothing lost
        log.debug("%s: cannot store the segment attribute: %s", path.name, exc)


def write_start_attribute(file: int | Path, clock: ClockRecord) -> None:
    """When a .partial is created (`file`: its descriptor): its clock record, so that a partial left by a crash
    keeps it when it is finalised (finalise_partial copies it onto the remuxed file). Best effort, like the
    full attribute that replaces it at close."""
    value = _XATTR_V2.pack(2, _FLAG_OPEN | (_FLAG_SYNCHRONISED if clock.synchronised else 0), bytes(32), 0, 0, 0, 0,
                           0, 0, bytes.fromhex(clock.boot_id), clock.boot_ms & 0xFFFFFFFF, clock.boot_ms >> 32)
    try:
        os.setxattr(file, SEGMENT_XATTR, value)
    except OSError as exc:
        log.debug("cannot store the clock record of a new segment: %s", exc)


def _unpack(value: bytes) -> tuple[int, tuple] | None:
    """(flags, fields) of an attribute of either version, or None for anything else. Fields: sha256,
    duration, packets, wall delta, width, height, codec name, clock record or None."""
    if len(value) == _XATTR_V1.size and value[0] == 1:
        _, sha256, duration, packets, wall_delta, width, height, codec = _XATTR_V1.unpack(value)
        return 0, (sha256, duration, packets, wall_delta, width, height, codec.rstrip(b"\0").decode(), None)
    if len(value) == _XATTR_V2.size and value[0] == 2:
        _, flags, sha256, duration, packets, wall_delta, width, height, codec, boot, low, high = _XATTR_V2.unpack(value)
        name = _CODECS[codec - 1] if 1 <= codec <= len(_CODECS) else ""
        clock = ClockRecord(bool(flags & _FLAG_SYNCHRONISED) or bool(flags & _FLAG_REANCHORED), boot.hex(),
                            low | high << 32)
        return flags, (sha256, duration, packets, wall_delta, width, height, name, clock)
    return None  # a newer version or garbage: the file is probed instead


def mark_reanchored(path: Path) -> None:
    """A segment renamed to its true start (index.reanchoring): its attribute says so from now on, so that
    adopting it again takes its name as true. Best effort: without it the file reads as unsynchronised and
    is re-anchored again to the same name (the shift is then 0)."""
    try:
        value = bytearray(os.getxattr(path, SEGMENT_XATTR))
        if len(value) == _XATTR_V2.size and value[0] == 2:
            value[1] |= _FLAG_REANCHORED
            os.setxattr(path, SEGMENT_XATTR, bytes(value))
    except OSError as exc:
        log.debug("%s: cannot mark the segment attribute re-anchored: %s", path.name, exc)


def read_start_attribute(path: Path) -> ClockRecord | None:
    """The clock record a segment file (or a .partial) carries, None if none."""
    try:
        unpacked = _unpack(os.getxattr(path, SEGMENT_XATTR))
    except OSError:
        return None
    return unpacked[1][7] if unpacked is not None else None


def read_segment_attribute(layout: StorageLayout, camera: str, path: Path, origin: str) -> SegmentRecord | None:
    """The row stored on a complete segment file, or None if it has none (or an unknown version).
    Trusted only on complete files: the attribute is written before the fsync and rename that make one.
    A re-anchored file's name is its true start: it reads as recorded on a synchronised clock."""
    parsed = parse_segment_name(path.name)
    if parsed is None or parsed[1]:
        return None
    try:
        unpacked = _unpack(os.getxattr(path, SEGMENT_XATTR))
        size = path.stat().st_size
    except OSError:
        return None
    if unpacked is None or unpacked[0] & _FLAG_OPEN or not unpacked[1][6]:
        return None   # only the clock record (a crash before close left it) or an unknown codec: probe instead
    sha256, duration_ms, packets, wall_delta, width, height, codec, clock = unpacked[1]
    start_ms = parsed[0]
    clock_fields = {} if clock is None else {"clock_synchronised": clock.synchronised, "boot_id": clock.boot_id,
                                             "boot_ms": clock.boot_ms}
    return SegmentRecord(camera=camera, start_ms=start_ms, end_ms=start_ms + duration_ms, path=layout.relative(path),
                         bytes=size, sha256=sha256.hex(), codec=codec, width=width, height=height, packets=packets,
                         wall_end_ms=start_ms + duration_ms + wall_delta, origin=origin, **clock_fields)
