"""The recorder's timestamp filter: which demuxed packets of one connection may go into a segment.

Invariants of what it passes on: every packet has a DTS, DTS strictly increases, and the first packet is a key
frame (a segment must start at one). Everything else is dropped and counted in `dropped` under `no_dts`,
`non_increasing_dts` or `before_keyframe` (`status --json` shows the counts); flush packets (size 0, at the
end of a stream) are skipped silently. It reads and sets packet attributes only: no I/O, no decoding, and
plain objects with `size`, `dts`, `pts`, `is_keyframe` stand in for av.Packet in tests.

Per-packet path: called for every packet of every camera, so it keeps its state in locals.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Protocol, TypeVar


class DemuxedPacket(Protocol):
    size: int
    dts: int | None
    pts: int | None
    is_keyframe: bool


PacketT = TypeVar("PacketT", bound=DemuxedPacket)


def filter_timestamps(packets: Iterable[PacketT], frame_ticks: int, dropped: dict[str, int]) -> Iterator[PacketT]:
    """The packets of `packets` that may be recorded, in order; see the module's invariants.

    FFmpeg's RTSP demuxer hands over the first packet of a session without timestamps, before it has
    synchronised to RTCP; that packet is usually the keyframe the whole first GOP depends on. It is held and
    stamped one frame (`frame_ticks`) before the next packet instead of dropped, so recording starts a GOP
    earlier."""
    held: PacketT | None = None
    first = True
    keyed = False   # a key frame has been passed on: what follows can be recorded
    last_dts: int | None = None
    for packet in packets:
        if packet.size == 0:
            continue  # flush packet at end of stream
        dts = packet.dts
        if dts is None:
            if first and packet.is_keyframe:
                held = packet
            else:
                # Frames after the held keyframe are lost, so it would start the file with a hole and
                # frames that decode wrongly: drop it too and start at the next keyframe.
                dropped["no_dts"] += 1 + (held is not None)
                held = None
            first = False
            continue
        first = False
        if held is not None:
            held.dts = held.pts = last_dts = dts - frame_ticks
            keyed = True
            yield held
            held = None
        if last_dts is not None and dts <= last_dts:
            dropped["non_increasing_dts"] += 1
            continue
        if not keyed:
            if not packet.is_keyframe:
                dropped["before_keyframe"] += 1
                continue
            keyed = True
        last_dts = dts
        yield packet
