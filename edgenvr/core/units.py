"""Time constants and the open-end sentinel: defined once, used everywhere.

Times are UTC epoch milliseconds (int) throughout edgenvr; these convert durations into them."""

from __future__ import annotations

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

# The end of something still open (an event's kept video, a query without an upper bound). Far beyond any
# real time, and still a 64-bit SQLite integer with room to add to it.
OPEN_END_MS = 1 << 62

