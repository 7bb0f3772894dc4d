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

# The last millisecond of the year 9999, the latest time `datetime` (and so a file name or date directory of
# the storage layout) can express: a time beyond it in a record is not a time.
LATEST_TIME_MS = 253_402_300_799_999

# The earliest time a person may write as a date or date-time (core.time_format): no edgenvr recording is older,
# so an earlier one is a mistake (a number taken for a date, a clock at its reset value). Explicit epoch times
# (`@SECONDS`, `MILLISms`) may go back to 1970, because the user asked for exactly that instant.
EARLIEST_DATE_MS = 946_684_800_000   # 2000-01-01T00:00:00Z

