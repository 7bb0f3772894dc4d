"""Times as people read and write them: parsing command-line times into UTC epoch ms, and formatting them.

The clock itself is edgenvr.core.clock."""

from __future__ import annotations

import datetime as dt


def parse_time_ms(text: str) -> int:
    """Accepts epoch ms (13+ digits), epoch seconds, or ISO 8601 (naive means UTC); returns epoch ms."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        value = int(text)
        return value if abs(value) >= 10**11 else value * 1000
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use epoch ms, epoch seconds or ISO 8601 like 2026-11-22T10:00:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp() * 1000)


def format_ms(epoch_ms: int | None) -> str:
    """Human-readable UTC time for CLI tables."""
    if epoch_ms is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
