"""One reconcile, as a pure function: the resource, its observed children and the time in; the
new status, the child writes, the Events and when to run next out.

The loop per revision: tuning Job, then compression Job, then the InferenceService (a canary
when another revision serves), then promotion or rollback; the drift monitor watches the
serving revision. Each concern is a module of :mod:`optiloop.operator.planning`; this runs
them in order on one :class:`~optiloop.operator.planning.draft.Draft`.

    plan = reconcile(resource, observed, config, now)
    for action in plan.actions: ...          # k8s.apply
    if plan.status != resource.status: ...   # one status write, only when something changed
    # and run again at plan.requeue_at, or on the next event
"""

from __future__ import annotations

from datetime import datetime

from ..api import ModelOptimization
from ..api.status import HISTORY_LIMIT
from .config import OperatorConfig
from .observed import Observed
from .planning import monitor, revisions, rollup, serving, stages
from .planning.draft import Draft
from .planning.plan import Plan
from .planning.requeue import requeue_at
from .policy import DriftDecision


def reconcile(
    resource: ModelOptimization,
    observed: Observed,
    config: OperatorConfig,
    now: datetime,
    drift: DriftDecision | None = None,
) -> Plan:
    """Plan one reconcile of ``resource``; ``drift`` is the evaluation the timer just made, if any."""
    draft = Draft(resource, observed, config, now)
    if drift is not None:
        revisions.apply_drift(draft, drift)
    revisions.start_revision(draft, drift)
    current = draft.current
    if current is not None and current.outcome == "InProgress" and stages.build(draft, current):
        serving.deploy(draft, current)
    serving.serve(draft)
    monitor.monitor(draft)
    rollup.roll_up(draft)
    draft.status.history = draft.history[-HISTORY_LIMIT:]
    draft.status.observed_generation = draft.generation
    due = requeue_at(resource.spec, draft.status, now)
    if draft.settling:
        due = now
    return Plan(draft.status, draft.actions, draft.events, due)
