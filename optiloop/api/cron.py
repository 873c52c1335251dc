"""Five-field cron schedules (UTC), as ``spec.monitoring.retraining.schedule`` takes them.

``minute hour day-of-month month day-of-week``; each field is ``*``, a number, a range
``a-b``, a step ``*/n`` or ``a-b/n``, or a comma list of those. Day of week runs 0-6 from
Sunday (7 is Sunday too). As in cron, when both day fields are restricted, a day matching
either one fires.

    >>> previous_fire("0 3 * * 0", datetime(2026, 11, 27, 12, 0, tzinfo=UTC))  # Friday
    datetime.datetime(2026, 11, 22, 3, 0, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_SEARCH_DAYS = 366 * 5


@dataclass(frozen=True)
class Cron:
    """A parsed schedule: the allowed values of each field."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool

    def day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        weekday = (day.weekday() + 1) % 7  # Python: Monday 0; cron: Sunday 0
        by_day, by_weekday = day.day in self.days, weekday in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return by_day or by_weekday
        return by_day and by_weekday


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = low, high
            elif "-" in body:
                start, end = (int(v) for v in body.split("-", 1))
            else:
                start = end = int(body)
        except ValueError:
            raise ValueError(f"cron {name} field {text!r}: {part!r} is not a number, range or step") from None
        if step < 1 or not (low <= start <= end <= high):
            raise ValueError(f"cron {name} field {text!r}: values must lie within {low}-{high} with a positive step")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse(schedule: str) -> Cron:
    """Parse a five-field schedule; ``ValueError`` names the field that is wrong."""
    parts = schedule.split()
    if len(parts) != 5:
        raise ValueError(f"a cron schedule has 5 fields (minute hour day month weekday), not {len(parts)}")
    minutes, hours, days, months, weekdays = (
        _field(text, name, low, high) for text, (name, low, high) in zip(parts, _FIELDS, strict=True)
    )
    return Cron(
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=frozenset(d % 7 for d in weekdays),
        days_restricted=parts[2] != "*",
        weekdays_restricted=parts[4] != "*",
    )


def previous_fire(schedule: str, now: datetime) -> datetime | None:
    """The latest time at or before ``now`` (UTC, to the minute) when ``schedule`` fires."""
    cron = parse(schedule)
    now = now.astimezone(UTC).replace(second=0, microsecond=0)
    for offset in range(_SEARCH_DAYS):
        day = now - timedelta(days=offset)
        if not cron.day_matches(day):
            continue
        for hour in sorted(cron.hours, reverse=True):
            if offset == 0 and hour > now.hour:
                continue
            for minute in sorted(cron.minutes, reverse=True):
                if offset == 0 and hour == now.hour and minute > now.minute:
                    continue
                return day.replace(hour=hour, minute=minute)
    return None


def next_fire(schedule: str, after: datetime) -> datetime | None:
    """The earliest time strictly after ``after`` (UTC, to the minute) when ``schedule`` fires."""
    cron = parse(schedule)
    start = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    for offset in range(_SEARCH_DAYS):
        day = start + timedelta(days=offset)
        if not cron.day_matches(day):
            continue
        for hour in sorted(cron.hours):
            if offset == 0 and hour < start.hour:
                continue
            for minute in sorted(cron.minutes):
                if offset == 0 and hour == start.hour and minute < start.minute:
                    continue
                return day.replace(hour=hour, minute=minute)
    return None
