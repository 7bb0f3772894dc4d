"""Times a technician types (`--since`, `--from`, ...): each input has one meaning, a date is a date, an epoch
time needs its unit, and nothing lands in 1970 unless the user wrote an epoch time (core.time_format)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgenvr.core.time_format import format_ms, parse_time_ms
from edgenvr.core.units import EARLIEST_DATE_MS, LATEST_TIME_MS

PROPERTY = settings(max_examples=200, deadline=None)
UTC = dt.timezone.utc


def ms(text: str) -> int:
    """An ISO 8601 time as epoch ms, by the standard library alone (the expected values)."""
    moment = dt.datetime.fromisoformat(text)
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


@pytest.mark.parametrize(("text", "expected"), [
    ("20261130", ms("2026-11-30T00:00:00+00:00")),        # the hold: was read as epoch s, August 1970
    ("20261201", ms("2026-12-01T00:00:00+00:00")),
    ("2026-11-30", ms("2026-11-30T00:00:00+00:00")),
    ("20261130T0100Z", ms("2026-11-30T01:00:00+00:00")),
    ("20261130T010000+0700", ms("2026-11-30T01:00:00+07:00")),
    ("2026-11-30T01:00:00+07:00", ms("2026-11-30T01:00:00+07:00")),
    ("2026-11-30T01:00", ms("2026-11-30T01:00:00+00:00")),  # no zone: UTC
    ("2026-11-30 01:00:00.250Z", ms("2026-11-30T01:00:00.250+00:00")),
    ("2026-11-30t01:00z", ms("2026-11-30T01:00:00+00:00")),
    ("  2026-11-30T01  ", ms("2026-11-30T01:00:00+00:00")),
    ("2026", ms("2026-01-01T00:00:00+00:00")),              # `--since 2026` was 1970-01-01 00:33
    ("2026-11", ms("2026-11-01T00:00:00+00:00")),
    ("@1732924800", 1_732_924_800_000),
    ("1732924800000ms", 1_732_924_800_000),
    ("@1732924800123ms", 1_732_924_800_123),
    ("@0", 0),                                              # 1970, because the user wrote exactly that
    ("9999-12-31T23:59:59.999Z", LATEST_TIME_MS),
    ("2000-01-01", EARLIEST_DATE_MS),
])
def test_dates_mean_dates_and_epoch_times_need_their_unit(text: str, expected: int) -> None:
    assert parse_time_ms(text) == expected


@pytest.mark.parametrize(("text", "fragment"), [
    ("1732924800", "@1732924800 for epoch seconds (2024-11-30"),   # a bare number: shown how to write it
    ("1732924800000", "1732924800000ms for epoch milliseconds (2024-11-30"),
    ("0", "bare number"),
    ("202611", "bare number"),
    ("-5", "bare number"),
    ("1999-12-31", "before 2000"),
    ("1970-01-01T00:33Z", "before 2000"),
    ("0999", "before 2000"),
    ("2000-01-01T00:30+01:00", "before 2000"),
    ("2026-13", "month must be in 1..12"),
    ("2026-02-30", "day is out of range"),
    ("2026-11-30T24:00", "hour must be in 0..23"),
    ("9999-12-31T23:30-01:00", "after 9999-12-31"),                 # year 10000 in UTC
    ("@253402300800", "after 9999-12-31"),
    ("253402300800000ms", "after 9999-12-31"),
    ("@99999999999999999999999999", "too large"),                  # beyond 64 bits
    ("@-1", "before 1970"),
    ("10000-01-01", "ISO 8601"),
    ("2026-W48-1", "ISO 8601"),                                     # week dates: not one of the forms
    ("2026-11-30x01:00", "ISO 8601"),
    ("2026-11-30T01:00Z junk", "ISO 8601"),
    ("yesterday", "ISO 8601"),
    ("\u0661\u0667\u0663\u0662ms", "ISO 8601"),                    # other scripts' digits
    ("", "no time given"),
])
def test_ambiguous_and_impossible_times_are_refused_with_a_reason(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_time_ms(text)
    assert fragment in str(refused.value)


def test_times_no_calendar_can_show_are_listed_not_raised() -> None:
    """A row saved before times were bounded (a hold to year 10000) must not break every listing."""
    assert format_ms(LATEST_TIME_MS + 1) == "253402300800000ms"
    assert format_ms(1 << 62) == f"{1 << 62}ms"
    assert format_ms(None) == "-"
    assert format_ms(0) == "1970-01-01 00:00:00.000Z"


# --- properties ---------------------------------------------------------------------------------------

ALLOWED_MS = st.integers(min_value=EARLIEST_DATE_MS, max_value=LATEST_TIME_MS)
EPOCH_MS = st.integers(min_value=0, max_value=LATEST_TIME_MS)
ZONES = st.sampled_from([None, UTC, dt.timezone(dt.timedelta(hours=7)),
                         dt.timezone(-dt.timedelta(hours=3, minutes=30))])
MOMENTS = st.datetimes(min_value=dt.datetime(2000, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=ZONES)
# Inputs that look like times: digits, signs, units, separators and the letters ISO 8601 uses, mixed.
TIME_LIKE = st.text(alphabet=st.sampled_from("0123456789@-+:.,TZtz msW "), max_size=30)


@PROPERTY
@given(ALLOWED_MS)
def test_what_tables_show_reads_back_as_the_same_time(epoch_ms: int) -> None:
    assert parse_time_ms(format_ms(epoch_ms)) == epoch_ms


@PROPERTY
@given(EPOCH_MS)
def test_epoch_times_with_their_unit_read_back_exactly(epoch_ms: int) -> None:
    assert parse_time_ms(f"{epoch_ms}ms") == epoch_ms
    assert parse_time_ms(f"@{epoch_ms // 1000}") == epoch_ms // 1000 * 1000


@PROPERTY
@given(MOMENTS, st.sampled_from(["T", " "]), st.sampled_from(["seconds", "milliseconds", "microseconds"]))
def test_iso_times_in_extended_and_basic_form_mean_the_same_instant(moment: dt.datetime, separator: str,
                                                                    precision: str) -> None:
    expected = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    expected_ms = (expected - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(milliseconds=1)
    extended = moment.isoformat(sep=separator, timespec=precision)
    basic = moment.strftime("%Y%m%d") + separator + moment.strftime("%H%M%S") + (
        moment.strftime("%z") if moment.tzinfo else "")
    written_ms = 1000 if precision == "seconds" else 1   # what the text keeps of the time
    assert parse_time_ms(extended) == expected_ms // written_ms * written_ms
    assert parse_time_ms(basic) == expected_ms // 1000 * 1000


@PROPERTY
@given(st.one_of(TIME_LIKE, st.text(max_size=30)))
def test_every_accepted_time_is_in_range_and_1970_only_when_asked_for(text: str) -> None:
    try:
        epoch_ms = parse_time_ms(text)
    except ValueError as refused:
        assert str(refused), "a refusal says why"
        return
    assert 0 <= epoch_ms <= LATEST_TIME_MS
    written = text.strip().lower()
    if epoch_ms < EARLIEST_DATE_MS:
        assert written.startswith("@") or written.endswith("ms"), f"{text!r} read as {format_ms(epoch_ms)}"


@PROPERTY
@given(st.from_regex(r"[0-9]{1,19}", fullmatch=True))
def test_a_bare_number_is_a_year_a_date_or_refused_never_an_epoch(digits: str) -> None:
    try:
        epoch_ms = parse_time_ms(digits)
    except ValueError:
        return
    assert len(digits) in (4, 8), f"{digits!r} was guessed to be {format_ms(epoch_ms)}"
    year, month, day = int(digits[:4]), int(digits[4:6] or 1), int(digits[6:8] or 1)
    assert format_ms(epoch_ms) == f"{year:04d}-{month:02d}-{day:02d} 00:00:00.000Z"


@PROPERTY
@given(st.integers(min_value=-(2**80), max_value=2**80))
def test_any_epoch_number_is_either_a_time_in_range_or_refused(number: int) -> None:
    for text in (f"@{number}", f"{number}ms", f"@{number}ms"):
        try:
            epoch_ms = parse_time_ms(text)
        except ValueError:
            continue
        assert 0 <= epoch_ms <= LATEST_TIME_MS and format_ms(epoch_ms).endswith("Z")
