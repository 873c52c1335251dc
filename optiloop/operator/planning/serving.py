"""Serving: the InferenceService of the serving revision or of a canary next to it, and the
canary's promotion or rollback.

A revision whose stages succeeded is deployed: on its own when nothing serves, else as a canary
with ``canaryTrafficPercent``. Changes that only touch serving settings update the
InferenceService in place (its spec hash differs).
"""

from __future__ import annotations

from ...api.status import RevisionRecord
from ..builders.serving import inference_service
from ..policy import judge_canary
from .draft import Draft
from .plan import Apply


def deploy(draft: Draft, record: RevisionRecord) -> None:
    """Mark the revision deployed; as a canary when another revision serves."""
    serving = draft.status.serving_revision
    canary = serving is not None and serving != record.revision
    if record.deployed_at is None:
        record.deployed_at = draft.now
        if canary:
            percent = draft.resource.spec.deployment.canary_traffic_percent
            draft.event("CanaryStarted", f"revision {record.revision} deployed as a canary with {percent}% of traffic")
        else:
            draft.event("Deploying", f"revision {record.revision} deployed")


def desired_service(draft: Draft) -> tuple[int, bool] | None:
    """The revision the InferenceService should serve and whether as a canary; None: none yet."""
    current = draft.current
    serving = draft.status.serving_revision
    if current is not None and current.outcome == "InProgress" and current.deployed_at is not None:
        if serving is None or serving == current.revision:
            return current.revision, False
        return current.revision, True
    return (serving, False) if serving is not None else None


def serve(draft: Draft) -> None:
    """Keep the InferenceService as desired, and follow the revision it serves to Ready."""
    desired = desired_service(draft)
    if desired is None:
        return
    revision, canary = desired
    body = inference_service(draft.resource, draft.config, revision, canary=canary)
    observed = draft.observed.service
    current = draft.ensure(body, observed)
    ready = current and observed is not None and observed.ready
    if ready and observed is not None and observed.url:
        draft.status.url = observed.url
    record = draft.record(revision)
    if canary and record is not None:
        analyse_canary(draft, record, ready)
    elif record is not None and record.outcome == "InProgress":
        if ready:
            draft.status.serving_revision = revision
            record.outcome = "Serving"
            draft.status.model = record.model
            draft.event("Serving", f"revision {revision} serves at {draft.status.url}")
            draft.condition("Deployed", "True", "Serving", f"revision {revision} serves at {draft.status.url}")
        else:
            draft.condition("Deployed", "Unknown", "Deploying", f"waiting for revision {revision} to be Ready")
    elif ready:
        draft.condition("Deployed", "True", "Serving", f"revision {revision} serves at {draft.status.url}")
    elif not current or (observed is not None and observed.updating):
        draft.condition("Deployed", "Unknown", "Updating", f"applying serving settings to revision {revision}")
    else:
        draft.condition("Deployed", "Unknown", "PredictorNotReady", "the InferenceService is not Ready")


def analyse_canary(draft: Draft, record: RevisionRecord, ready: bool) -> None:
    """Judge the canary on its metrics: wait, promote it to all traffic, or roll it back."""
    spec = draft.resource.spec
    analysis = spec.deployment.canary_analysis
    if analysis.max_latency_p95_ms is None and spec.compression.gates.max_latency_p95_ms:
        analysis = analysis.model_copy(update={"max_latency_p95_ms": spec.compression.gates.max_latency_p95_ms})
    metrics = draft.observed.canary
    decision = judge_canary(
        ready,
        record.deployed_at or draft.now,
        draft.now,
        analysis,
        metrics.error_rate if metrics is not None else None,
        metrics.latency_p95_ms if metrics is not None else None,
    )
    previous = draft.status.serving_revision
    n = record.revision
    if decision.action == "wait":
        draft.condition("Deployed", "Unknown", decision.reason, f"revision {n} is a canary next to {previous}")
        return
    # The canary's InferenceService was just planned; the final one replaces it.
    draft.actions = [a for a in draft.actions if not (isinstance(a, Apply) and a.kind == "InferenceService")]
    if decision.action == "promote":
        old = draft.record(previous)
        if old is not None:
            old.outcome, old.finished_at = "Superseded", draft.now
            old.message = f"replaced by revision {n}"
        record.outcome, record.promoted_at = "Promoted", draft.now
        draft.status.serving_revision = n
        draft.status.model = record.model
        target, reason = n, "CanaryPromoted"
        message = f"canary revision {n} promoted to all traffic ({decision.reason})"
    else:
        record.outcome, record.finished_at = "RolledBack", draft.now
        record.message = f"rolled back: {decision.reason}"
        target, reason = (previous if previous is not None else n), "CanaryRolledBack"
        message = f"canary revision {n} rolled back to revision {target} ({decision.reason})"
    draft.event(reason, message, warning=reason == "CanaryRolledBack")
    draft.ensure(inference_service(draft.resource, draft.config, target, canary=False), draft.observed.service)
    draft.condition("Deployed", "True", reason, message)
