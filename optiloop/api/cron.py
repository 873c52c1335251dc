"""Retraining schedules, in the syntax of a Kubernetes CronJob's ``schedule`` (times in UTC).

Accepted exactly as the API server accepts a CronJob's schedule (it parses them with
robfig/cron's standard parser): five fields ``minute hour day-of-month month day-of-week``, each
``*``, ``?``, a number or a name (``JAN``-``DEC``, ``SUN``-``SAT``, any case), a range
``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n`` (from ``a`` to the field's end), or a comma list
of those; day of week runs 0-6 from Sunday. Or a descriptor: ``@yearly`` (``@annually``),
``@monthly``, ``@weekly``, ``@daily`` (``@midnight``), ``@hourly``, or ``@every <duration>``
(Go's syntax: ``90m``, ``1h30m``; an interval counted from the latest revision's start). As in
a CronJob, when both day fields are restricted a day matching either one fires. Time zones
(``TZ=``, ``CRON_TZ=``) are refused, as the API server refuses them in a CronJob's schedule.

croniter computes the fire times. Its own syntax differs from Kubernetes' (it takes ``7`` for
Sunday, ``L``, ``W``, ``#``, ``H`` and six fields; it refuses ``?`` in the minute, and it reads
``*/1`` and ``5-5`` differently), so this module checks Kubernetes' syntax itself and hands
croniter each field as the explicit values it stands for.

    >>> next_fire("@daily", datetime(2026, 11, 27, 12, 0, tzinfo=UTC))
    datetime.datetime(2026, 11, 28, 0, 0, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadDateError, croniter

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {m: n for n, m in enumerate(_MONTH_NAMES, start=1)}
_DAYS = {d: n for n, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EVERY = "@every "
SHAPE_PATTERN = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every \S+|\s*(\S+\s+){4}\S+\s*)$"
"""The shape the API server checks (RE2 and Python read it alike); :func:`parse` checks the rest."""
_NUMBER = re.compile(r"[+-]?[0-9]+")
_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 6, _DAYS),
)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: a croniter expression, an interval, or (a day that never comes) neither."""

    expression: str | None = None
    interval: timedelta | None = None


def parse(schedule: str) -> Schedule:
    """Parse ``schedule``; ``ValueError`` says what is wrong, naming the field."""
    if "TZ" in schedule:
        raise ValueError("time zones (TZ=, CRON_TZ=) are not supported: schedules are in UTC")
    if schedule.startswith("@"):
        return _descriptor(schedule)
    parts = schedule.split()
    if len(parts) != 5:
        raise ValueError(
            f"a cron schedule has 5 fields (minute hour day-of-month month day-of-week) or is a "
            f"descriptor such as @daily, not {len(parts)} fields"
        )
    (minutes, _), (hours, _), (days, days_star), (months, _), (weekdays, weekdays_star) = (
        _values(text, field) for text, field in zip(parts, _FIELDS, strict=True)
    )
    dom, dow = _day_fields(days, days_star, weekdays, weekdays_star)
    fields = (_list(minutes, 0, 59), _list(hours, 0, 23), dom, _list(months, 1, 12), dow)
    if "" in fields:
        return Schedule()  # accepted, as by Kubernetes, and never fires
    return Schedule(expression=" ".join(fields))


def _day_fields(
    days: frozenset[int], days_star: bool, weekdays: frozenset[int], weekdays_star: bool
) -> tuple[str, str]:
    """Day of month and day of week for croniter, which requires both when neither is ``*``
    and either one otherwise, as a CronJob does when neither field is starred (and both when
    one is)."""
    if days_star or weekdays_star:
        # A day must match both fields; a starred one matches every day.
        return ("*" if days_star else _list(days, 1, 31)), ("*" if weekdays_star else _list(weekdays, 0, 6))
    if len(days) == 31 or len(weekdays) == 7:
        return "*", "*"  # one field matches every day, so either does
    if not days or not weekdays:
        # An empty field never matches, so the other decides alone.
        return ("*", _list(weekdays, 0, 6)) if not days else (_list(days, 1, 31), "*")
    return _list(days, 1, 31), _list(weekdays, 0, 6)


def next_fire(schedule: str, after: datetime) -> datetime | None:
    """The first time strictly after ``after`` when ``schedule`` fires (UTC, to the minute; an
    interval counts from ``after`` itself); None when it never does."""
    parsed = parse(schedule)
    after = after.astimezone(UTC)
    if parsed.interval is not None:
        return after + parsed.interval
    if parsed.expression is None:
        return None
    try:
        fired: datetime = croniter(parsed.expression, after).get_next(datetime)
    except CroniterBadDateError:
        return None  # a date that never comes (the 30th of February)
    return fired.astimezone(UTC)


def _descriptor(schedule: str) -> Schedule:
    if schedule in _DESCRIPTORS:
        return parse(_DESCRIPTORS[schedule])
    if schedule.startswith(_EVERY):
        return Schedule(interval=_go_duration(schedule.removeprefix(_EVERY)))
    raise ValueError(
        f"unknown descriptor {schedule!r}: use @yearly, @annually, @monthly, @weekly, @daily, @midnight, "
        "@hourly or @every <duration>"
    )


def _go_duration(text: str) -> timedelta:
    """A Go duration (``1h30m``, ``90s``, ``1.5h``), as CronJob's ``@every`` reads it: whole
    seconds, and at least one."""
    body = text[1:] if text[:1] in "+-" else text
    seconds = 0.0
    position = 0
    if body == "0":
        position = len(body)
    while position < len(body):
        match = _DURATION.match(body, position)
        if match is None or match.group(1) in ("", "."):
            raise ValueError(f"@every {text!r}: not a duration like 90m, 1h30m or 45s")
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not body:
        raise ValueError(f"@every {text!r}: not a duration like 90m, 1h30m or 45s")
    whole = int(-seconds if text.startswith("-") else seconds)
    return timedelta(seconds=max(whole, 1))


def _values(text: str, field: _Field) -> tuple[frozenset[int], bool]:
    """The values a field stands for, and whether it is starred (``*`` or ``?``, with no step
    above 1), which decides how the two day fields combine."""
    values: set[int] = set()
    starred = False
    for part in (p for p in text.split(",") if p):
        part_values, part_starred = _range(part, field)
        values |= part_values
        starred = starred or part_starred
    return frozenset(values), starred


def _range(part: str, field: _Field) -> tuple[set[int], bool]:
    where = f"cron {field.name} field {part!r}"
    range_text, *steps = part.split("/")
    if len(steps) > 1:
        raise ValueError(f"{where}: more than one '/'")
    bounds = range_text.split("-")
    if len(bounds) > 2:
        raise ValueError(f"{where}: more than one '-'")
    starred = bounds[0] in ("*", "?")
    if starred:
        start, end = field.low, field.high
    else:
        start = _number(bounds[0], field, where)
        end = _number(bounds[1], field, where) if len(bounds) == 2 else start
    step = 1
    if steps:
        step = _number(steps[0], None, where)
        if len(bounds) == 1:
            end = field.high  # "a/n" runs from a to the end
        starred = starred and step <= 1
    if start < field.low or end > field.high or start > end:
        raise ValueError(f"{where}: values must lie within {field.low}-{field.high}, the start not after the end")
    if step == 0:
        raise ValueError(f"{where}: the step must be a positive number")
    return set(range(start, end + 1, step)), starred


def _number(token: str, field: _Field | None, where: str) -> int:
    if field is not None and field.names is not None and token.lower() in field.names:
        return field.names[token.lower()]
    if not _NUMBER.fullmatch(token):
        names = f", or a name such as {next(iter(field.names)).upper()}" if field and field.names else ""
        raise ValueError(f"{where}: {token!r} is not a number{names}")
    value = int(token)
    if value < 0:
        raise ValueError(f"{where}: {token!r} is negative")
    return value


def _list(values: frozenset[int], low: int, high: int) -> str:
    """The field for croniter: ``*`` when it holds every value, else the values listed."""
    if not values:
        return ""
    if len(values) == high - low + 1:
        return "*"
    return ",".join(str(v) for v in sorted(values))
