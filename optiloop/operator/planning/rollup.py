"""``Ready`` and ``phase`` from the revisions and the other conditions.

A revision the user asked for (creation or a spec change) that failed makes the resource not
Ready, even while an older revision still serves; a failed drift-triggered or scheduled
retrain does not (the serving revision is still fine). Transient progress never sets
``Ready=False``.
"""

from __future__ import annotations

from ...api.status import ConditionType, ModelOptimizationStatus, Phase, RevisionRecord
from ..conditions import find
from ..observed import POD_TROUBLE_REASONS
from ..topology import UNSERVABLE_REASONS
from .draft import Draft

USER_TRIGGERS = ("Created", "SpecChanged")
STAGE_CONDITIONS: tuple[ConditionType, ...] = ("DataValidated", "Tuned", "Compressed")


def roll_up(draft: Draft) -> None:
    """Set ``Ready`` and ``phase``."""
    current = draft.current
    serving = draft.status.serving_revision
    user_failed = current is not None and current.outcome == "Failed" and current.trigger in USER_TRIGGERS
    deployed = find(draft.status.conditions, "Deployed")
    phase: Phase
    built = current is not None and current.compressed_at is not None
    unservable = deployed is not None and deployed.status == "False" and deployed.reason in UNSERVABLE_REASONS
    predictor_down = deployed is not None and deployed.status == "False" and deployed.reason in POD_TROUBLE_REASONS
    if user_failed and current is not None:
        reason = failure_reason(draft.status)
        draft.condition("Ready", "False", reason, f"revision {current.revision}: {current.message}")
        phase = "Failed"
    elif unservable and deployed is not None and (serving is not None or built):
        # The spec asks for serving this cluster cannot do: a person must change one of them.
        draft.condition("Ready", "False", deployed.reason, deployed.message)
        phase = "Failed" if serving is None else "Serving"
    elif serving is not None:
        if deployed is not None and deployed.reason == "PredictorNotReady":
            draft.condition("Ready", "Unknown", "PredictorNotReady", deployed.message)
        elif predictor_down and deployed is not None:
            draft.condition("Ready", "False", deployed.reason, deployed.message)
        else:
            draft.condition("Ready", "True", "Serving", f"revision {serving} serves at {draft.status.url}")
        building = current is not None and current.outcome == "InProgress"
        phase = ("Canary" if current is not None and current.deployed_at else "Retraining") if building else "Serving"
    elif predictor_down and deployed is not None and built:
        # Built and deployed, but its pods keep failing: waiting would not end it.
        phase = building_phase(current)
        draft.condition("Ready", "False", deployed.reason, deployed.message)
    else:
        phase = building_phase(current)
        draft.condition("Ready", "Unknown", phase, f"revision {draft.status.revision}: {phase.lower()}")
    draft.status.phase = phase


def failure_reason(status: ModelOptimizationStatus) -> str:
    """The reason of the first stage condition that is False."""
    for type_ in STAGE_CONDITIONS:
        condition = find(status.conditions, type_)
        if condition is not None and condition.status == "False":
            return condition.reason
    return "JobFailed"


def building_phase(record: RevisionRecord | None) -> Phase:
    """The phase of a revision being built while nothing serves."""
    if record is None or record.tuned_at is None:
        return "Tuning"
    if record.compressed_at is None:
        return "Compressing"
    return "Deploying"
