"""When a scheduled broadcast is due: the admin's words read as a moment, and shown back.

The admin types one of few forms, read in DEFAULT_TIMEZONE (a `ZoneInfo`):

* `in 2h`, `in 90m`, `in 1h30m`, `in 45s`, `in 1d` (also `in 2 hours`, `in 10 minutes`);
* `18:30` — today at that time, or tomorrow if it has passed;
* `2026-12-01 09:00` (or `2026-12-01T09:00`).

Anything else, a time that has passed and one more than a year ahead get one line saying
what is accepted. A wall-clock time that does not exist in the zone (the hour skipped when
clocks go forward) is refused; one that happens twice (when clocks go back) is the first.

Written here rather than with a date-parsing library: those accept every format in every
language and guess (is 01/12 January or December?), where a broadcast wants the few forms
above, each with exactly one meaning, and a refusal for anything else. The time-zone rules
are zoneinfo's.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MAX_AHEAD = timedelta(days=366)

_RELATIVE = re.compile(
    r"^in\s+(?=\d)"
    r"(?:(?P<d>\d+)\s*(?:d|days?)\s*)?"
    r"(?:(?P<h>\d+)\s*(?:h|hrs?|hours?)\s*)?"
    r"(?:(?P<m>\d+)\s*(?:m|mins?|minutes?)\s*)?"
    r"(?:(?P<s>\d+)\s*(?:s|secs?|seconds?)\s*)?$"
)
_CLOCK = re.compile(r"^(?P<hour>\d{1,2}):(?P<minute>\d{2})$")
_DATE_AND_CLOCK = re.compile(
    r"^(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[ t]+(?P<hour>\d{1,2}):(?P<minute>\d{2})$"
)


class InvalidTime(ValueError):
    """`str()` is the one line shown to the admin."""


def accepted_forms(zone: ZoneInfo) -> str:
    return f"“in 2h”, “in 90m”, “18:30” or “2026-12-01 09:00” ({zone.key})"


def parse_when(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """The moment (aware, UTC) `text` names, read in `zone`, seen at `now`; InvalidTime if
    it names none, or one not ahead of `now`."""
    words = " ".join(text.strip().lower().split())
    now = now.astimezone(UTC)
    if (relative := _RELATIVE.match(words)) is not None:
        moment = now + _duration(relative)
    elif (clock := _CLOCK.match(words)) is not None:
        moment = _next_at(_clock_time(clock), now, zone)
    elif (stamp := _DATE_AND_CLOCK.match(words)) is not None:
        moment = _local(_day(stamp), _clock_time(stamp), zone)
    else:
        raise InvalidTime(f"I can't read {text.strip()!r} as a time: send {accepted_forms(zone)}.")
    if moment <= now:
        raise InvalidTime(
            f"{describe_when(moment, zone, now)} has passed: send a time ahead, "
            f"such as {accepted_forms(zone)}."
        )
    if moment - now > MAX_AHEAD:
        raise InvalidTime("That is more than a year ahead: send a time within a year.")
    return moment


def describe_when(moment: datetime, zone: ZoneInfo, now: datetime | None = None) -> str:
    """`Tue 1 Dec 18:30 (Europe/Berlin)`; the year too when it is not `now`'s."""
    local = moment.astimezone(zone)
    reference = (now or datetime.now(UTC)).astimezone(zone)
    year = f" {local.year}" if local.year != reference.year else ""
    return f"{local:%a} {local.day} {local:%b}{year} {local:%H:%M} ({zone.key})"


def describe_delay(delay: timedelta) -> str:
    """`2 h 5 min`, `4 min`, `35 s`: how late a broadcast started."""
    seconds = max(round(delay.total_seconds()), 0)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days or hours:
        parts = [f"{days} d"] if days else []
        parts += [f"{hours} h"] if hours else []
        return " ".join(parts + ([f"{minutes} min"] if minutes else []))
    return f"{minutes} min" if minutes else f"{secs} s"


def _duration(match: re.Match[str]) -> timedelta:
    amounts = {unit: int(match.group(unit) or 0) for unit in "dhms"}
    try:
        return timedelta(
            days=amounts["d"], hours=amounts["h"], minutes=amounts["m"], seconds=amounts["s"]
        )
    except OverflowError:
        raise InvalidTime("That is more than a year ahead: send a time within a year.") from None


def _clock_time(match: re.Match[str]) -> time:
    hour, minute = int(match.group("hour")), int(match.group("minute"))
    if hour > 23 or minute > 59:
        raise InvalidTime(f"{hour}:{minute:02d} is not a time of day: hours 0–23, minutes 0–59.")
    return time(hour, minute)


def _day(match: re.Match[str]) -> date:
    try:
        return date(int(match.group("year")), int(match.group("month")), int(match.group("day")))
    except ValueError:
        raise InvalidTime(f"{match.group(0)[:10]} is not a date.") from None


def _next_at(clock: time, now: datetime, zone: ZoneInfo) -> datetime:
    """Today at `clock` in the zone, or tomorrow when that has passed."""
    today = now.astimezone(zone).date()
    moment = _local(today, clock, zone)
    if moment <= now:
        moment = _local(today + timedelta(days=1), clock, zone)
    return moment


def _local(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The wall-clock time in the zone as a UTC moment; fold=0 takes the first of a time
    that happens twice. A time the zone skips does not survive the round trip."""
    local = datetime.combine(day, clock, tzinfo=zone)
    moment = local.astimezone(UTC)
    back = moment.astimezone(zone)
    if (back.date(), back.time()) != (day, clock):
        raise InvalidTime(
            f"{day:%Y-%m-%d} {clock:%H:%M} does not exist in {zone.key} "
            "(the clocks skip it): send another time."
        )
    return moment
