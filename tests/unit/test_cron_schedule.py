"""Retraining on a cron schedule: five-field parsing with errors that name the field, the latest
fire time, and the reconcile starting a Schedule revision only when one serves and none is built."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from optiloop.api.cron import parse, previous_fire
from optiloop.api.spec import RetrainingPolicy
from optiloop.operator.observed import Observed
from optiloop.operator.policy import schedule_due
from tests.unit.test_operator_reconcile import CONFIG, kinds, resource, serve_revision_one

FRIDAY_NOON = datetime(2026, 11, 27, 12, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("0 3 * * 0", datetime(2026, 11, 22, 3, 0, tzinfo=UTC)),  # Sundays 03:00
        ("0 3 * * 7", datetime(2026, 11, 22, 3, 0, tzinfo=UTC)),  # 7 is Sunday too
        ("*/15 * * * *", datetime(2026, 11, 27, 12, 0, tzinfo=UTC)),
        ("30 11 * * *", datetime(2026, 11, 27, 11, 30, tzinfo=UTC)),
        ("30 13 * * *", datetime(2026, 11, 26, 13, 30, tzinfo=UTC)),
        ("0 0 1 * *", datetime(2026, 11, 1, 0, 0, tzinfo=UTC)),
        ("0 0 1 1-3 *", datetime(2026, 3, 1, 0, 0, tzinfo=UTC)),
        ("0 9 13 * 5", datetime(2026, 11, 27, 9, 0, tzinfo=UTC)),  # the 13th OR a Friday
        ("0 0 29 2 *", datetime(2024, 2, 29, 0, 0, tzinfo=UTC)),
        ("5,10 12 * * 1-5", datetime(2026, 11, 26, 12, 10, tzinfo=UTC)),
    ],
)
def test_previous_fire_time(schedule: str, expected: datetime) -> None:
    assert previous_fire(schedule, FRIDAY_NOON) == expected


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("0 3 * *", "has 5 fields"),
        ("60 3 * * *", "minute field"),
        ("0 24 * * *", "hour field"),
        ("0 0 0 * *", "day of month field"),
        ("0 0 * 13 *", "month field"),
        ("0 0 * * 8", "day of week field"),
        ("*/0 * * * *", "positive step"),
        ("0 mon * * *", "hour field 'mon'"),
        ("5-1 * * * *", "minute field"),
    ],
)
def test_a_bad_schedule_names_its_field(schedule: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(schedule)
    with pytest.raises(ValidationError, match="schedule"):
        RetrainingPolicy(schedule=schedule)


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
