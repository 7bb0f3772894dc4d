"""Times as people read and write them: parsing command-line times into UTC epoch ms, and formatting them.

One rule for every time a person gives edgenvr (`--since`, `--from`, ...), chosen so that no input has two
meanings and a typo never silently lands in 1970:
- ISO 8601 dates and date-times, extended or basic: 2026-11-30, 20261130, 2026-11-30T01:00,
  20261130T0100Z, 2026-11-30 01:00:00.250+07:00 (T or a space before the time). No zone means UTC. A year
  (2026) or a year and month (2026-11) alone mean their first instant.
- Epoch times only with a unit the user can see: @1732924800 (seconds, as in `date -d @1732924800`),
  1732924800000ms or @1732924800000ms (milliseconds).
- Anything else is refused, a bare number (1732924800, 202611) first of all: the message says what it
  could mean and how to write that.
- Range: dates and date-times from 2000-01-01T00:00Z (`units.EARLIEST_DATE_MS`: no recording is older, so an
  earlier date is a mistake), epoch times from 1970; both up to the end of 9999 (`units.LATEST_TIME_MS`).
Every refusal is a ValueError with that explanation; nothing else is raised.

The clock itself is edgenvr.core.clock.
"""

from __future__ import annotations

import datetime as dt
import re

from edgenvr.core.units import EARLIEST_DATE_MS, LATEST_TIME_MS, SECOND_MS

#: How a time is written, in words, for --help texts and messages.
TIME_FORMS = ("an ISO 8601 date or time (2026-11-30, 2026-11-30T01:00Z, 20261130T0100+0700; UTC when no zone "
              "is given) or an epoch time with its unit (@1732924800 in seconds, 1732924800000ms)")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MS = dt.timedelta(milliseconds=1)
# More digits than any time up to year 9999 in ms has (15), with room: longer is refused before int() reads it.
_MAX_DIGITS = 19
# [0-9], not \d: \d (and str.isdigit) also match other scripts' digits, which int() would read.
_NUMBER = re.compile(r"(?P<at>@?)(?P<number>[+-]?[0-9]+)(?P<ms>ms)?", re.IGNORECASE)
_YEAR = re.compile(r"(?P<year>[0-9]{4})(?:-(?P<month>[0-9]{2}))?")
# The ISO 8601 shapes accepted; datetime.fromisoformat then checks the calendar. Its own grammar is wider (any
# separator, week dates), so it only ever sees what this lets through.
_ISO = re.compile(
    r"(?:[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8})"                                 # date: extended | basic
    r"(?:[T ](?:[0-9]{2}(?::[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?)?"        # time: extended
    r"|[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}(?:[.,][0-9]{1,9})?)?)?)"                  #     | basic
    r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?")                                     # zone, only after a time


def parse_time_ms(text: str) -> int:
    """``text`` as UTC epoch ms, by the rules in this module's docstring; ValueError says why not."""
    written = text.strip()
    if not written:
        raise ValueError(f"no time given: write {TIME_FORMS}")
    upper = written.upper()   # "t" and "z" are ISO 8601 too
    year = _YEAR.fullmatch(upper)
    if year is not None:
        return _checked_date(written, _year_start(written, int(year["year"]), year["month"]))
    if _ISO.fullmatch(upper):
        try:
            parsed = dt.datetime.fromisoformat(upper)
        except ValueError as error:   # a day or hour that does not exist: "2026-02-30", "T25:00"
            raise ValueError(f"{written!r} is not a valid date or time: {error}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return _checked_date(written, (parsed - _EPOCH) // _MS)
    number = _NUMBER.fullmatch(written)
    if number is None:
        raise ValueError(f"{written!r} is not a time: write {TIME_FORMS}")
    digits = number["number"].lstrip("+-")
    if len(digits) > _MAX_DIGITS:
        raise ValueError(f"{written!r} is too large to be a time (after year 9999)")
    value = int(number["number"])
    if not number["at"] and not number["ms"]:
        raise ValueError(_bare_number_message(written, value))
    epoch_ms = value if number["ms"] else value * 1000
    if epoch_ms < 0:
        raise ValueError(f"{written!r} is before 1970-01-01T00:00:00Z, where epoch time starts")
    if epoch_ms > LATEST_TIME_MS:
        raise ValueError(f"{written!r} is after {format_ms(LATEST_TIME_MS)}, the last time edgenvr can keep")
    return epoch_ms


def format_ms(epoch_ms: int | None) -> str:
    """Human-readable UTC time for CLI tables, "2026-11-30 01:00:00.000Z" (parse_time_ms reads it back).

    Never raises: a time no calendar date can show (a damaged or hand-made index row) is shown as its epoch
    ms ("253402300800000ms"), so a listing still shows every row.
    """
    if epoch_ms is None:
        return "-"
    try:
        moment = _EPOCH + dt.timedelta(milliseconds=epoch_ms)
    except (OverflowError, ValueError, TypeError):
        return f"{epoch_ms}ms"
    return moment.isoformat(sep=" ", timespec="milliseconds").replace("+00:00", "Z")


def basic_utc(epoch_ms: int) -> str:
    """UTC in basic ISO 8601 to the second (`20261130T101500Z`): for file names."""
    return dt.datetime.fromtimestamp(epoch_ms // SECOND_MS, dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _year_start(written: str, year: int, month: str | None) -> int:
    try:
        start = dt.datetime(year, int(month or 1), 1, tzinfo=dt.timezone.utc)
    except ValueError as error:   # year 0000 or month 13
        raise ValueError(f"{written!r} is not a valid date: {error}") from None
    return (start - _EPOCH) // _MS


def _checked_date(written: str, epoch_ms: int) -> int:
    if epoch_ms < EARLIEST_DATE_MS:
        raise ValueError(
            f"{written!r} is {format_ms(epoch_ms)}, before 2000: no recording is that old (a typo?); an epoch "
            f"time with its unit (@SECONDS, MILLISECONDSms) may be earlier")
    if epoch_ms > LATEST_TIME_MS:
        raise ValueError(f"{written!r} is after {format_ms(LATEST_TIME_MS)}, the last time edgenvr can keep")
    return epoch_ms


def _bare_number_message(written: str, value: int) -> str:
    """A bare number could be epoch seconds, epoch ms or a date: say what each would mean, choose none."""
    meanings = [f"{spelling} for epoch {unit} ({format_ms(epoch_ms)})"
                for spelling, unit, epoch_ms in ((f"@{value}", "seconds", value * 1000),
                                                 (f"{value}ms", "milliseconds", value))
                if 0 <= epoch_ms <= LATEST_TIME_MS]
    if not meanings:
        return f"{written!r} is a bare number, not a time: write {TIME_FORMS}"
    return (f"{written!r} is a bare number, which could be epoch seconds, milliseconds or a date: write "
            f"{', '.join(meanings)}, or a date like 2026-11-30 or 20261130")


def local_minute_of_day(epoch_ms: int) -> int:
    """The minute of the day (0-1439) at `epoch_ms` in the box's own time zone (/etc/localtime: the appliance
    is set to its site's zone at provisioning), for windows written in local time like "22:00-06:00"."""
    local = dt.datetime.fromtimestamp(epoch_ms / SECOND_MS).astimezone()
    return local.hour * 60 + local.minute
