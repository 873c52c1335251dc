"""Retraining schedules in a CronJob's syntax: descriptors, names, steps and the two day fields
read as Kubernetes reads them, errors that name the field, and the reconcile starting a
Schedule revision only when one serves and none is built. tests/cluster/ checks the same table
against the API server's own validation and Kubernetes' own cron parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from optiloop.api.cron import next_fire, parse
from optiloop.api.spec import RetrainingPolicy
from optiloop.operator.observed import Observed
from optiloop.operator.policy import schedule_due
from tests.unit.test_operator_reconcile import CONFIG, kinds, resource, serve_revision_one

FRIDAY_NOON = datetime(2026, 11, 27, 12, 0, 30, tzinfo=UTC)


def at(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


ACCEPTED: list[tuple[str, datetime | None]] = [
    # (schedule, first fire after Friday 2026-11-27 12:00:30 UTC)
    ("0 3 * * 0", at(11, 29, 3)),  # Sundays 03:00
    ("*/15 * * * *", at(11, 27, 12, 15)),
    ("30 11 * * *", at(11, 28, 11, 30)),
    ("0 0 1 * *", at(12, 1)),
    ("0 0 1 1-3 *", at(1, 1, year=2027)),
    ("0 9 13 * 5", at(12, 4, 9)),  # the 13th OR a Friday
    ("0 0 29 2 *", at(2, 29, year=2028)),
    ("5,10 12 * * 1-5", at(11, 27, 12, 5)),
    ("@yearly", at(1, 1, year=2027)),
    ("@annually", at(1, 1, year=2027)),
    ("@monthly", at(12, 1)),
    ("@weekly", at(11, 29)),
    ("@daily", at(11, 28)),
    ("@midnight", at(11, 28)),
    ("@hourly", at(11, 27, 13)),
    ("@every 90m", FRIDAY_NOON + timedelta(minutes=90)),
    ("@every 1h30m", FRIDAY_NOON + timedelta(minutes=90)),
    ("0 9 * * MON", at(11, 30, 9)),
    ("0 9 * * mon-fri", at(11, 30, 9)),
    ("0 9 * JAN *", at(1, 1, 9, year=2027)),
    ("0 9 1 jan,Jul *", at(1, 1, 9, year=2027)),
    ("0 0 ? * *", at(11, 28)),
    ("? 13 * * *", at(11, 27, 13)),  # `?` is `*` in any field
    ("5/20 * * * *", at(11, 27, 12, 5)),  # from 5 to the end of the field
    ("0 0 */1 * 1", at(11, 30)),  # `*/1` is starred: Mondays only
    ("0 0 */2 * 1", at(11, 29)),  # a step is restricted: odd days OR Mondays
    ("0 0 * * 5-5", at(12, 4)),
    ("0 0 13 * 0-6", at(11, 28)),  # both restricted, one covers every day: every day
    ("0 0 1,,15 * *", at(12, 1)),  # empty list items are skipped
    ("  0 3 * * *  ", at(11, 28, 3)),
    ("0 0 30 2 *", None),  # accepted, never fires
]
REFUSED: list[tuple[str, str]] = [
    ("0 3 * *", "has 5 fields"),
    ("0 3 * * * 2026", "has 5 fields"),
    ("0 0 0 * * *", "has 5 fields"),
    ("", "has 5 fields"),
    ("60 3 * * *", "minute field"),
    ("0 24 * * *", "hour field"),
    ("0 0 0 * *", "day of month field"),
    ("0 0 * 13 *", "month field"),
    ("0 0 * * 7", "day of week field"),  # Kubernetes' parser takes 0-6 only
    ("*/0 * * * *", "positive"),
    ("0 mon * * *", "hour field 'mon'"),
    ("5-1 * * * *", "minute field"),
    ("0 0 L * *", "day of month field"),
    ("0 0 * * 5#2", "day of week field"),
    ("H 0 * * *", "minute field"),
    ("1-2-3 * * * *", "more than one '-'"),
    ("*/2/3 * * * *", "more than one '/'"),
    ("-1 * * * *", "minute field"),
    ("@daily ", "unknown descriptor"),
    ("@reboot", "unknown descriptor"),
    ("@every", "unknown descriptor"),
    ("@every forever", "not a duration"),
    ("@every 5", "not a duration"),
    ("CRON_TZ=UTC 0 3 * * *", "time zones"),
    ("TZ=Europe/Paris 0 3 * * *", "time zones"),
]


@pytest.mark.parametrize(("schedule", "expected"), ACCEPTED)
def test_the_first_fire_time_after_friday_noon(schedule: str, expected: datetime | None) -> None:
    assert next_fire(schedule, FRIDAY_NOON) == expected


@pytest.mark.parametrize(("schedule", "message"), REFUSED)
def test_a_bad_schedule_names_its_field(schedule: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(schedule)
    with pytest.raises(ValidationError, match="schedule"):
        RetrainingPolicy(schedule=schedule)


def test_a_refused_schedule_in_a_manifest_is_reported_at_its_path() -> None:
    from optiloop.api.validation import manifest_errors

    document = resource().model_dump(mode="json", by_alias=True, exclude_none=True)
    document["spec"]["monitoring"] = {"retraining": {"schedule": "0 0 * * 7"}}
    errors = [str(e) for e in manifest_errors(document)]
    assert len(errors) == 1
    assert errors[0].startswith("spec.monitoring.retraining.schedule: ")
    assert "day of week field" in errors[0]


def test_a_scheduled_time_starts_a_revision_once_and_not_while_one_is_built() -> None:
    final, observed, plan = serve_revision_one()
    started = plan.status.history[0].triggered_at
    hourly = {"retraining": {"schedule": "0 * * * *"}}
    # Before the next full hour: nothing.
    same_hour = started.replace(minute=59)
    assert schedule_due(RetrainingPolicy(schedule="0 * * * *"), plan.status, same_hour) is False
    next_hour = started.replace(minute=0) + timedelta(hours=1, minutes=1)
    scheduled = reconcile_at(final, observed, next_hour, monitoring=hourly)
    assert scheduled.status.revision == 2
    assert scheduled.status.history[-1].trigger == "Schedule"
    assert kinds(scheduled)[0] == ("Apply", "Job")
    # Revision 2 is being built: the schedule waits, even an hour later.
    later = reconcile_at(resource(status=scheduled.status, monitoring=hourly), observed, next_hour + timedelta(hours=1),
                         monitoring=hourly)  # fmt: skip
    assert later.status.revision == 2


def reconcile_at(final: object, observed: Observed, now: datetime, monitoring: dict[str, object]) -> object:
    from optiloop.operator.reconcile import reconcile

    status = final.status  # type: ignore[attr-defined]
    return reconcile(resource(status=status, monitoring=monitoring), observed, CONFIG, now)
