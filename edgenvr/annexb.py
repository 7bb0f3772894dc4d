"""Splitting H.264/H.265 Annex-B byte streams (start-code framing) into NAL units."""

from __future__ import annotations

from typing import Iterator


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
