"""When a revision starts, and what the status says about the revisions in flight.

A revision starts when the resource is new, when a spec change alters what shapes the model
(its fingerprint), when a failed revision's spec changes, when drift is sustained (the timer
passes a :class:`~optiloop.operator.policy.DriftDecision`) or when the retraining schedule
fires. A revision still being built when another starts is superseded and its running Jobs go.
"""

from __future__ import annotations

from ...api.status import DriftStatus, ModelOptimizationStatus, RevisionRecord, Trigger
from ..conditions import ConditionStatus, find
from ..policy import DriftDecision, schedule_due
from .draft import Draft, find_record
from .plan import Delete, fingerprint

DRIFT_CONDITION: dict[str, ConditionStatus] = {"WithinBounds": "True", "PrometheusUnreachable": "Unknown"}


def retraining_in_flight(status: ModelOptimizationStatus | None) -> bool:
    """Whether the current revision is still being built or analysed."""
    record = find_record(status.history, status.revision) if status is not None else None
    return record is not None and record.outcome == "InProgress"


def canary_revision(status: ModelOptimizationStatus | None) -> int | None:
    """The revision being analysed as a canary, whose metrics the next reconcile needs."""
    if status is None or status.revision is None or status.serving_revision in (None, status.revision):
        return None
    record = find_record(status.history, status.revision)
    if record is None or record.outcome != "InProgress" or record.deployed_at is None:
        return None
    return record.revision


def apply_drift(draft: Draft, decision: DriftDecision) -> None:
    """Record one drift evaluation: the bookkeeping, the condition, an Event when drift begins."""
    draft.status.drift = decision.drift
    status = DRIFT_CONDITION.get(decision.reason, "False")
    if decision.reason == "PrometheusUnreachable":
        message = "the drift query could not be answered; no retraining while it cannot"
    else:
        drift: DriftStatus = decision.drift
        message = f"drift query returned {drift.last_value}; {drift.consecutive_drifting} drifting in a row"
    previous = find(draft.status.conditions, "DriftWithinBounds")
    if status == "False" and (previous is None or previous.status != "False"):
        draft.event("DriftDetected", message, warning=True)
    draft.condition("DriftWithinBounds", status, decision.reason, message)


def _trigger(draft: Draft, current: RevisionRecord | None, drift: DriftDecision | None, print_: str) -> Trigger | None:
    if current is None:
        return "Created"
    if (current.generation or 0) < draft.generation and (current.fingerprint != print_ or current.outcome == "Failed"):
        return "SpecChanged"
    if drift is not None and drift.retrain:
        return "Drift"
    if schedule_due(draft.resource.spec.monitoring.retraining, draft.status, draft.now):
        return "Schedule"
    return None


def start_revision(draft: Draft, drift: DriftDecision | None) -> None:
    """Start the next revision if something calls for one, superseding one still being built."""
    current = draft.current
    print_ = fingerprint(draft.resource.spec)
    trigger = _trigger(draft, current, drift, print_)
    if trigger is None:
        return
    number = max([r.revision for r in draft.history] + [draft.status.revision or 0]) + 1
    if current is not None and current.outcome == "InProgress":
        current.outcome, current.finished_at = "Superseded", draft.now
        current.message = f"superseded by revision {number} ({trigger})"
        for job in draft.observed.jobs.values():
            if job.revision == current.revision and job.state == "Running":
                draft.actions.append(Delete("batch/v1", "Job", job.name, job.uid))
    draft.history.append(
        RevisionRecord(
            revision=number,
            trigger=trigger,
            generation=draft.generation,
            triggered_at=draft.now,
            fingerprint=print_,
            parent_revision=draft.status.serving_revision,
        )
    )
    draft.status.revision = number
    draft.status.best_trial = None
    if trigger == "Drift":
        draft.event("RetrainStarted", f"drift sustained: retraining as revision {number}")
    else:
        draft.event("RevisionStarted", f"revision {number} started ({trigger})")
