"""The one rule for times: a time without a zone is local time; durations count back from now."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from rxjobs.durations import parse_duration, parse_size, to_timedelta
from rxjobs.times import as_time, parse_age, parse_time, parse_timestamp, time_ago, to_utc

UTC = timezone.utc
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
# America/New_York in November: UTC-5.
NY_OFFSET = timedelta(hours=5)


def test_the_new_york_fixture_moves_local_time(new_york):
    assert time.strftime("%Z", time.localtime(NOW.timestamp())) == "EST"
    assert datetime(2026, 11, 28, 7, 0).astimezone(UTC) == NOW


@pytest.mark.parametrize(("text", "expected"), [
    ("2h", NOW - timedelta(hours=2)),
    ("1h30m", NOW - timedelta(minutes=90)),
    ("0s", NOW),
    ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("2026-01-02T03:04:05z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("2026-01-02T03:04:05+01:00", datetime(2026, 1, 2, 2, 4, 5, tzinfo=UTC)),
    # No zone: local time, New York's here.
    ("2026-01-02", datetime(2026, 1, 2, tzinfo=UTC) + NY_OFFSET),
    ("2026-01-02T03:04", datetime(2026, 1, 2, 3, 4, tzinfo=UTC) + NY_OFFSET),
    ("2026-01-02 03:04:05", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) + NY_OFFSET),
    ("  2026-07-01T00:00  ", datetime(2026, 7, 1, 4, 0, tzinfo=UTC)),  # summer: UTC-4
])
def test_parse_time_reads_a_time_without_zone_as_local_time(new_york, text, expected):
    parsed = parse_time(text, now=NOW)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(("text", "message"), [
    ("yesterday", "not a date/time or duration"),
    ("", "not a date/time or duration"),
    ("2026-13-01", "not a date/time or duration"),
    ("99999999d", "before year 1"),
    ("999999999999d", "out of range"),
    ("9" * 400 + "s", "out of range"),
    ("9999-12-31T23:00", "out of the range of dates"),  # 04:00 UTC on 1 Jan 10000
    ("0001-01-01T00:00+01:00", "out of the range of dates"),
])
def test_parse_time_refuses_with_a_value_error(new_york, text, message):
    with pytest.raises(ValueError, match=message):
        parse_time(text, now=NOW)


def test_a_naive_datetime_is_local_time_everywhere(new_york):
    naive = datetime(2026, 11, 28, 7, 0)
    assert to_utc(naive) == NOW
    assert as_time(naive) == NOW
    assert as_time("2026-11-28T07:00") == NOW
    assert parse_timestamp("2026-11-28T07:00:00") == NOW
    assert parse_timestamp("2026-11-28T12:00:00Z") == NOW
    assert parse_timestamp("2026-11-28T12:00:00+00:00") == NOW


@pytest.mark.parametrize("value", [None, 3, 1.5, b"2h"])
def test_as_time_takes_a_datetime_or_text_only(value):
    with pytest.raises(TypeError, match="must be a datetime or a string"):
        as_time(value, "start_time")


def test_parse_timestamp_is_none_for_what_is_no_time():
    for text in (None, 3, "", "soon", "9999-12-31T23:59:59-05:00"):
        assert parse_timestamp(text) is None


def test_time_ago_and_parse_age_refuse_a_duration_before_year_one():
    assert time_ago(timedelta(days=7), NOW) == NOW - timedelta(days=7)
    assert parse_age("7d", NOW) == timedelta(days=7)
    for call in (lambda: time_ago(timedelta(days=99999999), NOW),
                 lambda: parse_age("99999999d", NOW)):
        with pytest.raises(ValueError, match="99999999d ago is before year 1"):
            call()


@pytest.mark.parametrize(("call", "message"), [
    (lambda: parse_duration("1000000000d"), "out of range"),
    (lambda: parse_duration("9" * 400 + "d"), "out of range"),
    (lambda: to_timedelta("1e300"), "not a duration"),
    (lambda: to_timedelta("99999999999d"), "out of range"),
    (lambda: parse_size("9" * 400 + "B"), "out of range"),
])
def test_durations_and_sizes_out_of_range_are_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
