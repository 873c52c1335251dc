"""Pure decisions of the drift loop: when to retrain, and what to do with a canary.

Nothing here reads a clock or calls anything; the caller passes ``now`` and what it
observed, and gets back a decision with a CamelCase reason for the status condition.

Retraining needs all of: drift in ``consecutiveEvaluations`` evaluations in a row, no
retraining in flight, the retrain budget not spent, and the cooldown passed since the last
retrain. An evaluation whose query could not be answered changes nothing (and never retrains).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from ..api.cron import next_fire
from ..api.spec import CanaryAnalysis, MonitoringSpec, RetrainingPolicy
from ..api.status import DriftStatus, ModelOptimizationStatus


@dataclass(frozen=True)
class DriftDecision:
    """The bookkeeping after one evaluation, and whether to start a new revision."""

    drift: DriftStatus
    retrain: bool
    reason: str


def evaluate_drift(
    value: float | None,
    threshold: float,
    previous: DriftStatus,
    policy: RetrainingPolicy,
    now: datetime,
    retraining_in_flight: bool,
) -> DriftDecision:
    """Fold one drift query result into the bookkeeping and decide on retraining.

    ``value`` is the query's result (``None``: Prometheus unreachable or no sample);
    drift means ``value >= threshold`` (1 for the default query).
    """
    if value is None:
        return DriftDecision(previous.model_copy(update={"last_evaluation_time": now}), False, "PrometheusUnreachable")
    drifting = value >= threshold
    consecutive = previous.consecutive_drifting + 1 if drifting else 0
    status = previous.model_copy(
        update={"last_evaluation_time": now, "last_value": value, "consecutive_drifting": consecutive}
    )
    if not drifting:
        return DriftDecision(status, False, "WithinBounds")
    if consecutive < policy.consecutive_evaluations:
        return DriftDecision(status, False, "DriftPending")
    if not policy.on_drift:
        return DriftDecision(status, False, "RetrainingDisabled")
    if retraining_in_flight:
        return DriftDecision(status, False, "RetrainInFlight")
    if previous.retrains_triggered >= policy.max_retrains:
        return DriftDecision(status, False, "RetrainBudgetSpent")
    last = previous.last_retrain_time
    if last is not None and now - last < timedelta(seconds=policy.cooldown_seconds):
        return DriftDecision(status, False, "CooldownActive")
    retrained = status.model_copy(
        update={
            "retrains_triggered": previous.retrains_triggered + 1,
            "last_retrain_time": now,
            "consecutive_drifting": 0,
        }
    )
    return DriftDecision(retrained, True, "DriftSustained")


def drift_due(monitoring: MonitoringSpec, status: ModelOptimizationStatus, now: datetime) -> bool:
    """Whether an evaluation is due: monitoring on, a revision serving, and the interval passed."""
    if not monitoring.enabled or status.serving_revision is None:
        return False
    last = status.drift.last_evaluation_time if status.drift is not None else None
    return last is None or now - last >= timedelta(seconds=monitoring.evaluation_interval_seconds)


def schedule_due(policy: RetrainingPolicy, status: ModelOptimizationStatus, now: datetime) -> bool:
    """Whether the retraining schedule fired since the latest revision started, with a revision
    serving and none being built (a revision started for any reason resets the schedule)."""
    if policy.schedule is None or status.serving_revision is None or not status.history:
        return False
    current = next((r for r in status.history if r.revision == status.revision), None)
    if current is not None and current.outcome == "InProgress":
        return False
    fired = next_fire(policy.schedule, max(r.triggered_at for r in status.history))
    return fired is not None and fired <= now


CanaryAction = Literal["wait", "promote", "rollback"]


@dataclass(frozen=True)
class CanaryDecision:
    """What to do with a canary now, and why."""

    action: CanaryAction
    reason: str


def judge_canary(
    ready: bool,
    started: datetime,
    now: datetime,
    analysis: CanaryAnalysis,
    error_rate: float | None,
    latency_p95_ms: float | None,
    *,
    needs_traffic: bool = False,
    requests_served: float | None = None,
) -> CanaryDecision:
    """Promote a canary that stayed Ready and within bounds for the analysis window; roll back one
    that broke a bound or never became Ready within two windows; otherwise wait.

    ``error_rate`` is None when Prometheus could not be asked: such a canary never promotes,
    it waits (and rolls back only if it cannot become Ready). ``latency_p95_ms`` is None when
    no request was timed; only a measured latency can break the latency bound.

    ``needs_traffic``: the canary is judged on user traffic (a traffic split, not blue/green,
    where the probe's synthetic requests are the evidence), so it must have served some:
    ``requests_served`` over the window (None: unknown). One that served none is never promoted
    on an error rate of nothing; it waits, and is rolled back after two windows without traffic
    (``CanaryNoTraffic``), so the serving revision stays and retraining is not blocked for ever.
    """
    elapsed = now - started
    window = timedelta(seconds=analysis.window_seconds)
    if not ready:
        if elapsed >= 2 * window:
            return CanaryDecision("rollback", "CanaryNotReady")
        return CanaryDecision("wait", "CanaryStarting")
    if error_rate is not None and error_rate > analysis.max_error_rate:
        return CanaryDecision("rollback", "ErrorRateTooHigh")
    if (
        latency_p95_ms is not None
        and analysis.max_latency_p95_ms is not None
        and latency_p95_ms > analysis.max_latency_p95_ms
    ):
        return CanaryDecision("rollback", "LatencyTooHigh")
    if error_rate is None or (needs_traffic and requests_served is None):
        return CanaryDecision("wait", "CanaryMetricsUnknown")
    if needs_traffic and requests_served is not None and requests_served <= 0:
        if elapsed >= 2 * window:
            return CanaryDecision("rollback", "CanaryNoTraffic")
        return CanaryDecision("wait", "CanaryNoTraffic")
    if elapsed >= window:
        return CanaryDecision("promote", "CanaryHealthy")
    return CanaryDecision("wait", "CanaryAnalysing")
