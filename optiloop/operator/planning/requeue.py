"""When the planner next needs to run with no event to prompt it (kubebuilder's
``RequeueAfter``): the next drift evaluation, the canary's next look at its metrics, the next
scheduled retrain, the next look at a running stage Job's pods or at the pods of a predictor that
is not Ready. Spec changes and children's changes come as events and need no time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from ...api.cron import next_fire
from ...api.spec import ModelOptimizationSpec, MonitoringSpec, RetrainingPolicy
from ...api.status import ModelOptimizationStatus
from ..conditions import find
from ..observed import POD_TROUBLE_REASONS
from .revisions import canary_revision, retraining_in_flight

STAGE_POD_LOOK_SECONDS: Final = 30.0
"""How often a running stage Job's pods, or a predictor's that is not Ready, are read for why."""

_JOB_UNDER_WAY = ("JobCreated", "JobRunning", "JobPodNotStarting")
_PREDICTOR_UNDER_WAY = frozenset({"Deploying", "PredictorNotReady", *POD_TROUBLE_REASONS})


def requeue_at(spec: ModelOptimizationSpec, status: ModelOptimizationStatus, now: datetime) -> datetime | None:
    """The earliest of the times below; None when only an event can bring work."""
    times = [
        t
        for t in (canary_look(status, now), drift_evaluation(spec.monitoring, status, now),
                  scheduled_retrain(spec.monitoring.retraining, status), stage_pod_look(status, now),
                  predictor_pod_look(status, now))
        if t is not None
    ]  # fmt: skip
    return min(times, default=None)


def canary_look(status: ModelOptimizationStatus, now: datetime) -> datetime | None:
    """A canary under analysis is looked at on every tick: its metrics can break a bound at any
    time, and its window ends between two ticks."""
    return now if canary_revision(status) is not None else None


def stage_pod_look(status: ModelOptimizationStatus, now: datetime) -> datetime | None:
    """The next look at a running stage Job's pods: a pod that cannot start (no image, no node)
    changes no Job, so no event would bring it to the resource."""
    running = any(
        c.type in ("Tuned", "Compressed") and c.status == "Unknown" and c.reason in _JOB_UNDER_WAY
        for c in status.conditions
    )
    return now + timedelta(seconds=STAGE_POD_LOOK_SECONDS) if running else None


def predictor_pod_look(status: ModelOptimizationStatus, now: datetime) -> datetime | None:
    """The next look at the pods of a revision deployed alone and not Ready: a predictor killed for
    memory, crash-looping, or recovering changes no InferenceService that KServe would tell us of."""
    deployed = find(status.conditions, "Deployed")
    waiting = deployed is not None and deployed.status != "True" and deployed.reason in _PREDICTOR_UNDER_WAY
    return now + timedelta(seconds=STAGE_POD_LOOK_SECONDS) if waiting else None


def drift_evaluation(monitoring: MonitoringSpec, status: ModelOptimizationStatus, now: datetime) -> datetime | None:
    """The next drift evaluation: an interval after the last one (now, before the first), while
    monitoring is on and a revision serves."""
    if not monitoring.enabled or status.serving_revision is None:
        return None
    last = status.drift.last_evaluation_time if status.drift is not None else None
    return now if last is None else last + timedelta(seconds=monitoring.evaluation_interval_seconds)


def scheduled_retrain(policy: RetrainingPolicy, status: ModelOptimizationStatus) -> datetime | None:
    """The schedule's first fire time after the latest revision started, while a revision serves
    and none is being built (finishing one is an event of its own)."""
    if policy.schedule is None or status.serving_revision is None or not status.history:
        return None
    if retraining_in_flight(status):
        return None
    return next_fire(policy.schedule, max(r.triggered_at for r in status.history))
