"""H.264/H.265 Annex-B byte streams (start-code framing): their NAL units, and the parameter sets
(SPS/PPS, and VPS for H.265) at the front of an access unit. Pure functions over bytes."""

from __future__ import annotations

from typing import Iterator

_PARAMETER_SET_TYPES = {"h264": {7, 8}, "hevc": {32, 33, 34}}


def annexb_nal_units(data: bytes) -> Iterator[memoryview]:
    """The NAL units of `data`, without their start codes (3- or 4-byte) and trailing zero bytes."""
    view = memoryview(data)
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for n, start in enumerate(starts):
        end = starts[n + 1] - 3 if n + 1 < len(starts) else len(data)
        while end > start and data[end - 1] == 0:  # zeros before a 4-byte start code belong to it
            end -= 1
        if end > start:
            yield view[start:end]


def parameter_sets(data: bytes, codec: str) -> bytes:
    """The SPS/PPS (and VPS) NAL units at the front of an Annex-B access unit, concatenated; b"" for a
    codec without them here, or an access unit that carries none.

    Only the first few hundred bytes are passed in: cameras put parameter sets before the slice data."""
    wanted = _PARAMETER_SET_TYPES.get(codec)
    if not wanted:
        return b""
    found: list[bytes] = []
    for nal in annexb_nal_units(data):
        nal_type = nal[0] & 0x1F if codec == "h264" else (nal[0] >> 1) & 0x3F
        if nal_type in wanted:
            found.append(bytes(nal))
        elif found:
            break  # past the parameter sets
    return b"".join(found)
