"""The drift loop's decisions: retrain only on sustained drift, outside the cooldown, within the
budget and with nothing in flight; never on an unanswered query; canaries promoted or rolled back
on their analysis window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from optiloop.api.spec import CanaryAnalysis, RetrainingPolicy
from optiloop.api.status import DriftStatus
from optiloop.operator.policy import evaluate_drift, judge_canary

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = RetrainingPolicy(consecutive_evaluations=3, cooldown_seconds=600, max_retrains=2)


def run(values: list[float | None], status: DriftStatus | None = None, in_flight: bool = False) -> list[str]:
    """Feed evaluations one minute apart; return the reasons and apply retrains to the status."""
    status = status or DriftStatus()
    reasons = []
    for minute, value in enumerate(values):
        decision = evaluate_drift(value, 1.0, status, POLICY, NOW + timedelta(minutes=minute), in_flight)
        status = decision.drift
        reasons.append(decision.reason)
    return reasons


def test_drift_must_hold_for_the_configured_evaluations() -> None:
    assert run([1, 1, 1]) == ["DriftPending", "DriftPending", "DriftSustained"]


def test_flapping_drift_never_retrains() -> None:
    assert "DriftSustained" not in run([1, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0])


def test_an_unanswered_query_changes_nothing_and_never_retrains() -> None:
    status = DriftStatus(consecutive_drifting=2)
    decision = evaluate_drift(None, 1.0, status, POLICY, NOW, False)
    assert (decision.retrain, decision.reason) == (False, "PrometheusUnreachable")
    assert decision.drift.consecutive_drifting == 2
    assert decision.drift.last_evaluation_time == NOW
    assert run([1, 1, None, 1]) == ["DriftPending", "DriftPending", "PrometheusUnreachable", "DriftSustained"]


def test_cooldown_budget_and_in_flight_retrains_hold_retraining_back() -> None:
    recent = DriftStatus(consecutive_drifting=2, retrains_triggered=1, last_retrain_time=NOW - timedelta(seconds=60))
    assert evaluate_drift(1.0, 1.0, recent, POLICY, NOW, False).reason == "CooldownActive"
    cooled = recent.model_copy(update={"last_retrain_time": NOW - timedelta(seconds=601)})
    assert evaluate_drift(1.0, 1.0, cooled, POLICY, NOW, False).reason == "DriftSustained"
    spent = cooled.model_copy(update={"retrains_triggered": 2})
    assert evaluate_drift(1.0, 1.0, spent, POLICY, NOW, False).reason == "RetrainBudgetSpent"
    assert evaluate_drift(1.0, 1.0, cooled, POLICY, NOW, True).reason == "RetrainInFlight"
    disabled = POLICY.model_copy(update={"on_drift": False})
    assert evaluate_drift(1.0, 1.0, cooled, disabled, NOW, False).reason == "RetrainingDisabled"


def test_a_retrain_is_recorded_and_restarts_the_count() -> None:
    decision = evaluate_drift(1.0, 1.0, DriftStatus(consecutive_drifting=2), POLICY, NOW, False)
    assert decision.retrain
    assert decision.drift.retrains_triggered == 1
    assert decision.drift.last_retrain_time == NOW
    assert decision.drift.consecutive_drifting == 0
    assert decision.drift.last_value == 1.0


ANALYSIS = CanaryAnalysis(window_seconds=300, max_error_rate=0.01, max_latency_p95_ms=20.0)


@pytest.mark.parametrize(
    ("ready", "seconds", "error_rate", "p95", "expected"),
    [
        (False, 100, None, None, ("wait", "CanaryStarting")),
        (False, 600, None, None, ("rollback", "CanaryNotReady")),
        (True, 100, 0.0, 5.0, ("wait", "CanaryAnalysing")),
        (True, 300, 0.0, 5.0, ("promote", "CanaryHealthy")),
        (True, 100, 0.05, 5.0, ("rollback", "ErrorRateTooHigh")),
        (True, 400, 0.0, 25.0, ("rollback", "LatencyTooHigh")),
        (True, 400, None, 5.0, ("wait", "CanaryMetricsUnknown")),
        (True, 400, 0.0, None, ("promote", "CanaryHealthy")),
    ],
)
def test_canary_decisions(
    ready: bool, seconds: int, error_rate: float | None, p95: float | None, expected: tuple[str, str]
) -> None:
    decision = judge_canary(ready, NOW, NOW + timedelta(seconds=seconds), ANALYSIS, error_rate, p95)
    assert (decision.action, decision.reason) == expected


@pytest.mark.parametrize(
    ("seconds", "served", "needs_traffic", "expected"),
    [
        (300, 0.0, True, ("wait", "CanaryNoTraffic")),
        (599, 0.0, True, ("wait", "CanaryNoTraffic")),
        (600, 0.0, True, ("rollback", "CanaryNoTraffic")),
        (300, None, True, ("wait", "CanaryMetricsUnknown")),
        (300, 1.0, True, ("promote", "CanaryHealthy")),
        (300, 0.0, False, ("promote", "CanaryHealthy")),
        (300, None, False, ("promote", "CanaryHealthy")),
    ],
)
def test_a_split_canary_that_served_nothing_is_never_promoted_on_an_empty_error_rate(
    seconds: int, served: float | None, needs_traffic: bool, expected: tuple[str, str]
) -> None:
    """An error rate of zero out of zero requests is no evidence: a canary judged on user traffic
    waits for some and is rolled back after two windows without; blue/green (no user traffic by
    design, judged with its probe) is not held to it."""
    later = NOW + timedelta(seconds=seconds)
    decision = judge_canary(True, NOW, later, ANALYSIS, 0.0, None, needs_traffic=needs_traffic, requests_served=served)
    assert (decision.action, decision.reason) == expected


def test_without_a_latency_bound_only_the_error_rate_is_needed() -> None:
    analysis = CanaryAnalysis(window_seconds=60)
    decision = judge_canary(True, NOW, NOW + timedelta(seconds=61), analysis, 0.0, None)
    assert decision.action == "promote"
