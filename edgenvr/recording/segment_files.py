"""Segment files on disk: writing one crash-safely, reading one back, and finalising a partial one.

A segment is a fragmented MP4 (moof per keyframe and at least every second) written under a
`.partial` name, every byte through SHA-256 on its way to the file (so closing never reads it back).
Closing it runs: muxer trailer -> the segment's own index row into an extended attribute -> fsync file ->
rename to the final name -> fsync directory. Only then is it announced to the index. A process killed
mid-segment leaves a `.partial` that still demuxes up to its last complete fragment; `finalise_partial`
remuxes that readable prefix (stream copy, no decode) into a normal segment, or quarantines the file.

The segment's own index row and clock record ride on the file as an extended attribute
(storage.segment_attributes), which the index reads without opening the video.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from edgenvr.core.clock import SYSTEM_CLOCK, Clock
from edgenvr.core.records import SegmentOrigin, SegmentRecord
from edgenvr.core.units import SECOND_MS
from edgenvr.recording.live_feed import LiveFeed
from edgenvr.storage.durable_writes import fsync_dir, write_durably
from edgenvr.storage.file_digest import sha256_of
from edgenvr.storage.layout import (
    StorageLayout,
    final_path_of_partial,
    parse_segment_name,
    partial_path,
    remux_path_of_partial,
)
from edgenvr.storage.permissions import FILE_MODE, make_data_dirs
from edgenvr.storage.segment_attributes import (
    ClockRecord,
    read_segment_attribute,
    read_start_attribute,
    write_segment_attribute,
    write_start_attribute,
)

log = logging.getLogger(__name__)

MP4_OPTIONS = {
    # empty_moov + fragments: a killed writer leaves a file readable up to the last fragment.
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    # bound what a crash can lose to about one second even for long-GOP cameras
    "frag_duration": "1000000",
    # hand each finished fragment to the kernel at once: libav's 32 KB write buffer would otherwise hold
    # several seconds of a low-bitrate stream, lost if the process is killed
    "flush_packets": "1",
}


_DISK_TROUBLE = {errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT}

class PartialNotFinalised(Exception):
    """A partial segment could not be finalised because of the disk (full, I/O error); it is left in place."""


class SegmentWriteError(Exception):
    """Writing or closing a segment failed (disk full, I/O error). The partial file is left for finalising."""


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HashingFile:
    """The file libav's muxer writes through (a segment, or an exported clip): each byte is hashed and counted
    as it goes to the disk, so no read-back is needed. It has no seek or tell, so the muxer treats it as a
    stream, which fragmented MP4 needs anyway (nothing is rewritten): what is hashed is what is on disk.
    `exclusive`: never open an existing file. `tap` gets each write once it is in the file (the live view's
    feed, recording.live_feed, which never raises)."""

    def __init__(self, path: Path, *, exclusive: bool = False, tap: Callable[[bytes], None] | None = None) -> None:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        self.fd = os.open(path, flags, FILE_MODE)  # storage.permissions
        self.digest = hashlib.sha256()
        self.size = 0
        self._tap = tap

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += len(view)
        while view:  # an OSError (disk full, I/O error) reaches the muxer's caller
            view = view[os.write(self.fd, view):]
        if self._tap is not None:
            self._tap(data)
        return len(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SegmentWriter:
    """Stream-copies packets of one video stream into one segment file."""

    def __init__(self, layout: StorageLayout, camera: str, template: av.video.stream.VideoStream,
                 start_ms: int, first_dts: int, time_base: Fraction, *, clock: Clock = SYSTEM_CLOCK,
                 live: LiveFeed | None = None) -> None:
        self.camera = camera
        self.start_ms = start_ms
        self.final_path = layout.segment_path(camera, start_ms)
        self.partial_path = partial_path(self.final_path)
        self._layout = layout
        self._first_dts = first_dts
        self._time_base = time_base
        self.packets = 0
        self.codec = template.codec_context.name
        self.width = template.codec_context.width
        self.height = template.codec_context.height
        # The clock record (core.clock: what vouches for start_ms), read once per segment, never per packet.
        # start_ms is on the wall clock; the boot-time clock at start_ms is start_ms - (wall - boot) now,
        # which also holds for a start corrected or bumped at close.
        self._synchronised = clock.synchronised()
        self._boot_id = clock.boot_id()
        self._wall_minus_boot_ms = clock.now_ms() - clock.boot_ms()
        try:
            make_data_dirs(self.partial_path.parent)
            if live is not None:
                live.new_segment()
            self._file = HashingFile(self.partial_path, tap=live.write if live is not None else None)
        except OSError as exc:
            raise SegmentWriteError(f"cannot create {self.partial_path}: {exc}") from exc
        start_clock = self._clock_record()
        if start_clock is not None:
            write_start_attribute(self._file.fd, start_clock)
        try:
            # 256 KB: a fragment (a second of video) reaches the file in a few writes
            self._container = av.open(self._file, "w", format="mp4", options=dict(MP4_OPTIONS), buffer_size=1 << 18)
            self._stream = self._container.add_stream_from_template(template)
        except (OSError, av.error.FFmpegError) as exc:
            os.close(self._file.fd)
            raise SegmentWriteError(f"cannot create {self.partial_path}: {exc}") from exc

    def write(self, packet: av.Packet) -> None:
        # Rebase so every file starts at t=0: players and the MP4 edit list stay simple.
        packet.dts -= self._first_dts
        packet.pts = packet.pts - self._first_dts if packet.pts is not None else packet.dts
        packet.stream = self._stream
        try:
            self._container.mux(packet)
        except OSError as exc:  # ENOSPC, EIO: the segment cannot continue
            raise SegmentWriteError(f"writing {self.partial_path.name}: {exc}") from exc
        self.packets += 1

    def close(self, end_ms: int, wall_end_ms: int, start_ms: int | None = None) -> SegmentRecord:
        """Finish the file durably and return its record. Raises SegmentWriteError (partial left on disk).
        `start_ms` corrects the start time the file was opened with (and so its name)."""
        try:
            self._container.close()
            sha256 = self._file.digest.hexdigest()
            size = os.fstat(self._file.fd).st_size
            if start_ms is not None and start_ms != self.start_ms:
                self.start_ms = start_ms
                self.final_path = self._layout.segment_path(self.camera, start_ms)
                make_data_dirs(self.final_path.parent)
            while self.final_path.exists():  # never replace a recording (rename would do so silently)
                self.start_ms += 1
                self.final_path = self._layout.segment_path(self.camera, self.start_ms)
                make_data_dirs(self.final_path.parent)
            clock = self._clock_record()
            record = SegmentRecord(
                camera=self.camera, start_ms=self.start_ms, end_ms=max(end_ms, self.start_ms + 1),
                path=self._layout.relative(self.final_path), bytes=size, sha256=sha256, codec=self.codec,
                width=self.width, height=self.height, packets=self.packets, wall_end_ms=wall_end_ms,
                clock_synchronised=self._synchronised, boot_id=clock.boot_id if clock else "",
                boot_ms=clock.boot_ms if clock else 0)
            write_segment_attribute(self.partial_path, record)
            os.fsync(self._file.fd)
            os.rename(self.partial_path, self.final_path)
            fsync_dir(self.final_path.parent)
            if self.final_path.parent != self.partial_path.parent:
                fsync_dir(self.partial_path.parent)
        except (OSError, av.error.FFmpegError) as exc:
            raise SegmentWriteError(f"closing {self.partial_path.name}: {exc}") from exc
        finally:
            self._close_file()
        return record

    def _clock_record(self) -> ClockRecord | None:
        """The clock record of the segment's current start; None if the clock gives no usable boot id."""
        return ClockRecord.checked(self._synchronised, self._boot_id, max(0, self.start_ms - self._wall_minus_boot_ms))

    def _close_file(self) -> None:
        self._file.close()

    def abort(self) -> None:
        """Best-effort close after a failure; whatever was written stays as .partial for finalise_partial."""
        try:
            self._container.close()
        except Exception as exc:  # noqa: BLE001 - the muxer may fail in many ways on a broken disk
            log.warning("%s: closing aborted segment failed: %s", self.camera, exc)
        finally:
            self._close_file()


@dataclass(frozen=True)
class SegmentProbe:
    packets: int
    duration_ms: int
    codec: str
    width: int
    height: int
    starts_with_keyframe: bool


def probe_segment(path: Path) -> SegmentProbe:
    """Demux (no decode) a segment file. Raises av.error.FFmpegError / OSError if it is unreadable."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        first_key: bool | None = None
        first_pts: int | None = None
        last_pts: int | None = None
        step = 0
        count = 0
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            if first_key is None:
                first_key = packet.is_keyframe
                first_pts = packet.pts
            elif last_pts is not None and packet.pts > last_pts:
                step = packet.pts - last_pts
            last_pts = packet.pts if last_pts is None else max(last_pts, packet.pts)
            count += 1
        if count == 0 or first_pts is None or last_pts is None:
            raise ValueError("no complete packets")
        ticks = last_pts - first_pts + (packet.duration or step or 0)
        duration_ms = int(ticks * stream.time_base * SECOND_MS)
        return SegmentProbe(packets=count, duration_ms=duration_ms, codec=stream.codec_context.name,
                            width=stream.codec_context.width, height=stream.codec_context.height,
                            starts_with_keyframe=bool(first_key))


def record_from_file(layout: StorageLayout, camera: str, path: Path, origin: str) -> SegmentRecord:
    """Index record for a complete segment found on disk (its start time is in its name): the row stored on
    the file when it was closed, or else probed and hashed now (and then stored on it)."""
    parsed = parse_segment_name(path.name)
    if parsed is None:
        raise ValueError(f"{path.name} is not a segment file name")
    stored = read_segment_attribute(layout, camera, path, origin)
    if stored is not None:
        return stored
    start_ms, _ = parsed
    probe = probe_segment(path)
    # A finalised partial still carries the clock record written when it was created (or none: an older file)
    clock = read_start_attribute(path)
    clock_fields = {} if clock is None else {"clock_synchronised": clock.synchronised, "boot_id": clock.boot_id,
                                             "boot_ms": clock.boot_ms}
    record = SegmentRecord(camera=camera, start_ms=start_ms, end_ms=start_ms + max(probe.duration_ms, 1),
                           path=layout.relative(path), bytes=path.stat().st_size, sha256=sha256_of(path),
                           codec=probe.codec, width=probe.width, height=probe.height, packets=probe.packets,
                           wall_end_ms=int(path.stat().st_mtime * SECOND_MS), origin=origin, **clock_fields)
    write_segment_attribute(path, record)
    fsync_path(path)
    return record


def quarantine(layout: StorageLayout, path: Path, reason: str) -> Path:
    """Move a file we cannot index out of the ring, keeping it for a human; never delete it silently."""
    target, reason_file = layout.quarantine_paths(path)
    make_data_dirs(target.parent)
    shutil.move(str(path), target)  # a rename: the file keeps the mode it was recorded with
    fsync_dir(target.parent)
    write_durably(reason_file, (reason + "\n").encode())
    log.warning("quarantined %s -> %s: %s", path, target, reason)
    return target


def finalise_partial(layout: StorageLayout, camera: str, partial: Path) -> SegmentRecord | None:
    """Turn a `.partial` left by a crash into a complete segment (remuxing its readable prefix), or
    quarantine it with a logged reason. Returns the record to index, or None if nothing was recoverable.
    Raises PartialNotFinalised (file left untouched) when the disk itself fails, e.g. is full."""
    final = final_path_of_partial(partial)
    repaired = remux_path_of_partial(partial)
    start_clock = read_start_attribute(partial)   # kept on the remuxed file, so a crash below cannot lose it
    try:
        with av.open(str(partial)) as source:
            if not source.streams.video:
                raise ValueError("no video stream")
            in_stream = source.streams.video[0]
            written = 0
            last_dts: int | None = None
            with av.open(str(repaired), "w", format="mp4", options=dict(MP4_OPTIONS)) as target:
                out_stream = target.add_stream_from_template(in_stream)
                try:
                    for packet in source.demux(in_stream):
                        if packet.size == 0 or packet.dts is None:
                            continue
                        if packet.is_corrupt:  # the sample the crash tore: libav reads it short and flags it
                            break
                        if last_dts is not None and packet.dts <= last_dts:
                            continue
                        if written == 0 and not packet.is_keyframe:
                            continue
                        last_dts = packet.dts
                        packet.stream = out_stream
                        target.mux(packet)
                        written += 1
                except av.error.FFmpegError as exc:  # the torn tail of the last fragment
                    log.info("%s: readable prefix of %s ends: %s", camera, partial.name, exc)
        if written == 0:
            # Killed before the first fragment: the file is a header without video. Nothing to keep.
            repaired.unlink(missing_ok=True)
            partial.unlink()
            log.info("%s: removed %s: killed before its first fragment, it held no video", camera, partial.name)
            return None
        if start_clock is not None:
            write_start_attribute(repaired, start_clock)
        fsync_path(repaired)
        os.replace(repaired, final)
        partial.unlink()
        fsync_dir(final.parent)
        return record_from_file(layout, camera, final, origin=SegmentOrigin.RECOVERED)
    except (OSError, ValueError, av.error.FFmpegError) as exc:
        try:
            repaired.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in _DISK_TROUBLE:
                # The disk, not the file, is the problem: keep the file where it is and try again later.
                raise PartialNotFinalised(f"cannot finalise {partial.name} now: {exc}") from exc
            if partial.exists():
                if partial.stat().st_size == 0:
                    partial.unlink()  # nothing was ever written: there is nothing to keep
                    log.info("%s: removed empty %s", camera, partial.name)
                else:
                    quarantine(layout, partial, f"partial segment not recoverable: {exc}")
        except OSError as trouble:
            raise PartialNotFinalised(f"cannot finalise or quarantine {partial.name} now: {trouble}") from trouble
        return None
