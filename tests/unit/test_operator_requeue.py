"""When the planner asks to run again (drift interval, canary analysis, retraining schedule),
and how the loop's per-resource memory turns that, failures and the full resync into a tick's
decision."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from optiloop.api.status import DriftStatus
from optiloop.operator.memory import ResourceMemory
from optiloop.operator.observed import CanaryMetrics
from optiloop.operator.policy import DriftDecision
from optiloop.operator.reconcile import reconcile
from tests.unit.test_operator_reconcile import (
    COMPRESSED,
    CONFIG,
    T0,
    TUNED,
    child_from,
    job,
    one,
    resource,
    seen,
    serve_revision_one,
)


def test_while_a_revision_is_built_only_its_running_jobs_pods_are_looked_at_every_30_seconds() -> None:
    plan = reconcile(resource(), seen(), CONFIG, T0)
    assert plan.requeue_at == T0 + timedelta(seconds=30), "a pod that cannot start changes no Job"
    running = seen(jobs={("tuning", 1): job("tuning", 1, "Running")})
    later = T0 + timedelta(seconds=40)
    assert reconcile(resource(status=plan.status), running, CONFIG, later).requeue_at == later + timedelta(seconds=30)
    failed = seen(jobs={("tuning", 1): job("tuning", 1, "Failed")})
    assert reconcile(resource(status=plan.status), failed, CONFIG, later).requeue_at is None, "nothing runs"


def test_the_first_drift_evaluation_is_due_at_once_then_an_interval_after_each() -> None:
    final, observed, plan = serve_revision_one()
    assert plan.requeue_at == T0 + timedelta(minutes=3), "serving without an evaluation: due now"
    later = T0 + timedelta(minutes=5)
    evaluated = DriftDecision(DriftStatus(last_evaluation_time=later, last_value=0.0), False, "WithinBounds")
    plan = reconcile(final, observed, CONFIG, later, evaluated)
    assert plan.requeue_at == later + timedelta(seconds=60)
    # A reconcile for another reason (a child's event) keeps the evaluation's time.
    again = reconcile(resource(status=plan.status), observed, CONFIG, later + timedelta(seconds=7))
    assert again.requeue_at == later + timedelta(seconds=60)


def test_monitoring_off_and_no_schedule_needs_no_time() -> None:
    final, observed, _ = serve_revision_one()
    off = resource(2, final.status, monitoring={"enabled": False})
    assert reconcile(off, observed, CONFIG, T0 + timedelta(minutes=5)).requeue_at is None


def test_a_canary_under_analysis_is_looked_at_on_every_tick() -> None:
    final, observed, _ = serve_revision_one()
    drifting = DriftDecision(DriftStatus(retrains_triggered=1, last_retrain_time=T0), True, "DriftSustained")
    plan = reconcile(final, observed, CONFIG, T0 + timedelta(minutes=5), drifting)
    jobs = {
        **observed.jobs,
        ("tuning", 2): job("tuning", 2, "Succeeded", TUNED),
        ("compression", 2): job("compression", 2, "Succeeded", COMPRESSED),
    }
    now = T0 + timedelta(minutes=6)
    plan = reconcile(resource(status=plan.status), replace(observed, jobs=jobs), CONFIG, now)
    assert plan.status.phase == "Canary"
    assert plan.requeue_at == now
    canary = replace(
        observed, jobs=jobs, services=one(child_from(plan, "InferenceService")), canary=CanaryMetrics(0.0, 1.0, 50.0)
    )
    waiting = reconcile(resource(status=plan.status), canary, CONFIG, now + timedelta(seconds=10))
    assert waiting.requeue_at == now + timedelta(seconds=10)


def test_a_schedule_is_due_at_its_next_fire_time_and_not_while_a_revision_is_built() -> None:
    final, observed, plan = serve_revision_one()
    off = {"enabled": False, "retraining": {"schedule": "30 * * * *"}}
    now = datetime(2026, 11, 27, 12, 20, 10, tzinfo=UTC)  # revision 1 started at 12:00
    plan = reconcile(resource(2, final.status, monitoring=off), observed, CONFIG, now)
    assert plan.status.revision == 1
    assert plan.requeue_at == datetime(2026, 11, 27, 12, 30, tzinfo=UTC)
    fired = reconcile(resource(2, plan.status, monitoring=off), observed, CONFIG, plan.requeue_at)
    assert fired.status.history[-1].trigger == "Schedule"
    # The schedule waits for revision 2; only its tuning Job's pods are looked at meanwhile.
    assert fired.requeue_at == plan.requeue_at + timedelta(seconds=30)


def test_a_memory_is_due_on_its_requeue_time_its_retry_and_the_full_resync() -> None:
    memory = ResourceMemory()
    assert memory.due(T0, 300), "never reconciled in this process"
    memory.last_full = T0
    memory.succeeded(T0 + timedelta(seconds=60))
    assert not memory.due(T0 + timedelta(seconds=59), 300)
    assert memory.due(T0 + timedelta(seconds=60), 300)
    memory.succeeded(None)
    assert not memory.due(T0 + timedelta(seconds=299), 300)
    assert memory.due(T0 + timedelta(seconds=300), 300), "the full resync"


def test_failures_back_off_doubling_up_to_the_cap_and_a_success_clears_them() -> None:
    memory = ResourceMemory(last_full=T0, requeue_at=T0)
    delays = []
    for _ in range(7):
        memory.failed(T0, 10, 300)
        assert memory.retry_at is not None
        delays.append((memory.retry_at - T0).total_seconds())
        assert not memory.due(memory.retry_at - timedelta(seconds=1), 300), "a requeue time waits for the retry"
        assert memory.due(memory.retry_at, 300)
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    memory.succeeded(None)
    assert (memory.failures, memory.retry_at) == (0, None)
    memory.failed(T0, 10, 300)
    assert memory.retry_at == T0 + timedelta(seconds=10)
