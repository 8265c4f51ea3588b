"""Reading the admin's time for a scheduled push (pure: a given `now`, no clock, no sleep)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pushbot.broadcast.schedule import InvalidTime, describe_delay, describe_when, parse_when

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
# Tuesday 1 December 2026, 16:00 UTC = 17:00 in Berlin (CET, UTC+1).
NOW = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "ahead"),
    [
        ("in 2h", timedelta(hours=2)),
        ("in 90m", timedelta(minutes=90)),
        ("in 1h30m", timedelta(hours=1, minutes=30)),
        ("In 2 Hours", timedelta(hours=2)),
        ("in 10 minutes", timedelta(minutes=10)),
        ("in 45s", timedelta(seconds=45)),
        ("in 1d", timedelta(days=1)),
        ("  in   3 h  ", timedelta(hours=3)),
    ],
)
def test_relative_times_count_from_now(text: str, ahead: timedelta) -> None:
    assert parse_when(text, NOW, BERLIN) == NOW + ahead


def test_a_clock_time_is_today_in_the_zone_or_tomorrow_once_past() -> None:
    # 18:30 in Berlin is 17:30 UTC, still ahead today.
    assert parse_when("18:30", NOW, BERLIN) == datetime(2026, 12, 1, 17, 30, tzinfo=UTC)
    # 16:30 in Berlin passed at 15:30 UTC: tomorrow.
    assert parse_when("16:30", NOW, BERLIN) == datetime(2026, 12, 2, 15, 30, tzinfo=UTC)
    # The same words in UTC mean another moment.
    assert parse_when("16:30", NOW, UTC_ZONE) == datetime(2026, 12, 1, 16, 30, tzinfo=UTC)


def test_a_date_and_time_is_read_in_the_zone() -> None:
    expected = datetime(2026, 12, 1, 17, 45, tzinfo=UTC)
    assert parse_when("2026-12-01 18:45", NOW, BERLIN) == expected
    assert parse_when("2026-12-01T18:45", NOW, BERLIN) == expected
    # Summer time: Berlin is UTC+2 in July.
    summer = parse_when("2027-07-01 09:00", NOW, BERLIN)
    assert summer == datetime(2027, 7, 1, 7, 0, tzinfo=UTC)


def test_a_time_the_clocks_skip_is_refused_and_a_repeated_one_is_the_first() -> None:
    before_spring = datetime(2027, 3, 27, 12, 0, tzinfo=UTC)
    with pytest.raises(InvalidTime, match="does not exist in Europe/Berlin"):
        parse_when("2027-03-28 02:30", before_spring, BERLIN)
    # 28 March 2027: 01:59 CET is followed by 03:00 CEST; "02:30" tomorrow does not exist.
    with pytest.raises(InvalidTime, match="does not exist"):
        parse_when("02:30", datetime(2027, 3, 27, 23, 0, tzinfo=UTC), BERLIN)
    # 31 October 2027: 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET).
    autumn = parse_when("2027-10-31 02:30", before_spring, BERLIN)
    assert autumn == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)


def test_a_clock_time_across_the_switch_lands_on_the_right_day_and_offset() -> None:
    # Saturday 27 March 2027 22:00 UTC = 23:00 CET. "09:00" is tomorrow, in summer time.
    saturday_night = datetime(2027, 3, 27, 22, 0, tzinfo=UTC)
    assert parse_when("09:00", saturday_night, BERLIN) == datetime(2027, 3, 28, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text", ["2026-12-01 16:59", "2025-01-01 09:00", "in 0m", "2026-12-01 17:00"]
)
def test_times_that_have_passed_are_refused(text: str) -> None:
    with pytest.raises(InvalidTime, match="has passed"):
        parse_when(text, NOW, BERLIN)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tomorrow", "can't read 'tomorrow' as a time"),
        ("in 2", "can't read"),
        ("in 1 month", "can't read"),
        ("18.30", "can't read"),
        ("", "can't read"),
        ("25:00", "not a time of day"),
        ("12:61", "not a time of day"),
        ("2026-02-30 10:00", "2026-02-30 is not a date"),
        ("in 2000d", "more than a year ahead"),
        ("in 99999999999999999999h", "more than a year ahead"),
        ("2028-12-01 09:00", "more than a year ahead"),
    ],
)
def test_anything_else_gets_one_clear_line(text: str, problem: str) -> None:
    with pytest.raises(InvalidTime) as refused:
        parse_when(text, NOW, BERLIN)
    message = str(refused.value)
    assert problem in message and "\n" not in message


def test_the_answer_names_the_accepted_forms_and_the_zone() -> None:
    with pytest.raises(InvalidTime) as refused:
        parse_when("soon", NOW, BERLIN)
    assert "“in 2h”, “in 90m”, “18:30” or “2026-12-01 09:00” (Europe/Berlin)" in str(refused.value)


def test_times_are_shown_in_the_zone_with_the_year_only_when_another() -> None:
    moment = datetime(2026, 12, 1, 17, 30, tzinfo=UTC)
    assert describe_when(moment, BERLIN, NOW) == "Tue 1 Dec 18:30 (Europe/Berlin)"
    assert describe_when(moment, UTC_ZONE, NOW) == "Tue 1 Dec 17:30 (UTC)"
    next_year = datetime(2027, 1, 5, 8, 0, tzinfo=UTC)
    assert describe_when(next_year, BERLIN, NOW) == "Tue 5 Jan 2027 09:00 (Europe/Berlin)"


def test_delays_read_naturally() -> None:
    assert describe_delay(timedelta(seconds=35)) == "35 s"
    assert describe_delay(timedelta(minutes=4, seconds=10)) == "4 min"
    assert describe_delay(timedelta(hours=2, minutes=5)) == "2 h 5 min"
    assert describe_delay(timedelta(days=1, hours=3)) == "1 d 3 h"
