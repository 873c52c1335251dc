"""What every serving topology shares: a revision taking over when nothing served, a canary's
analysis on its own metrics, and its promotion or rollback in the status, history and Events.

The analysis is :func:`~optiloop.operator.policy.judge_canary` on the canary's error rate and
p95 latency (queried by its revision label, so they are the canary's own). A blue/green
revision gets no user traffic, so its probe Job's verdict on the synthetic requests counts too:
it is promoted only after the probe passed, and rolled back as soon as the probe failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from ...api.status import RevisionRecord
from .. import names
from ..builders.serving import ISVC_API_VERSION
from ..conditions import find
from ..observed import ObservedChild, ObservedJob, PodTrouble
from ..policy import CanaryDecision, judge_canary
from ..topology import Topology
from .draft import Draft
from .plan import Delete

NO_TRAFFIC = (
    "none of its requests is in Prometheus over the analysis window: no traffic reached it, or Prometheus "
    "does not scrape its predictors (a PodMonitor on optiloop.dev/component: serving, port http1); a "
    "service with little traffic is better tried blue/green (canaryMethod: blueGreen)"
)
"""Why a canary that served nothing is not promoted (the Deployed condition, and the rollback)."""
METHOD_WORDS = {
    "KnativeTraffic": "Knative's traffic split",
    "GatewayAPI": "the HTTPRoute's weights",
    "BlueGreen": "blue/green",
}


def started_message(draft: Draft, topology: Topology, revision: int, serving: int) -> str:
    """The CanaryStarted Event: which revision, beside which, by which method."""
    if topology.canary_method == "BlueGreen":
        return (
            f"revision {revision} deployed blue/green beside revision {serving}: no user traffic; it is analysed on "
            "synthetic requests from its training reference before it takes all traffic"
        )
    percent = draft.resource.spec.deployment.canary_traffic_percent
    method = METHOD_WORDS[topology.canary_method or "KnativeTraffic"]
    return f"revision {revision} deployed as a canary with {percent}% of traffic ({method})"


def judge(draft: Draft, record: RevisionRecord, ready: bool, probe: ObservedJob | None = None) -> CanaryDecision:
    """Wait, promote or roll back the canary ``record``; ``probe`` is the blue/green probe Job."""
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
        needs_traffic=record.canary_method != "BlueGreen",
        requests_served=metrics.requests_served if metrics is not None else None,
    )
    if record.canary_method != "BlueGreen" or decision.action == "rollback":
        return decision
    if probe is not None and probe.state == "Failed":
        return CanaryDecision("rollback", "ProbeFailed")
    if decision.action == "promote" and (probe is None or probe.state != "Succeeded"):
        return CanaryDecision("wait", "ProbeRunning")
    return decision


def conclude(draft: Draft, record: RevisionRecord, decision: CanaryDecision, detail: str = "") -> int:
    """Record a promotion or rollback of the canary ``record``; returns the revision that now
    takes all traffic. ``detail`` adds to the reason (a failed probe's message)."""
    previous = draft.status.serving_revision
    n = record.revision
    method = f", {METHOD_WORDS[record.canary_method]}" if record.canary_method else ""
    if not detail and decision.reason == "CanaryNoTraffic":
        detail = NO_TRAFFIC
    more = f": {detail}" if detail else ""
    cause, why = f"{decision.reason}{more}", f"{decision.reason}{method}{more}"
    if decision.action == "promote":
        old = draft.record(previous)
        if old is not None:
            old.outcome, old.finished_at = "Superseded", draft.now
            old.message = f"replaced by revision {n}"
        record.outcome, record.promoted_at = "Promoted", draft.now
        draft.status.serving_revision = n
        draft.status.model = record.model
        target, reason = n, "CanaryPromoted"
        message = f"canary revision {n} promoted to all traffic ({why})"
    else:
        record.outcome, record.finished_at = "RolledBack", draft.now
        record.message = f"rolled back: {cause}"[:32768]
        target, reason = (previous if previous is not None else n), "CanaryRolledBack"
        message = f"canary revision {n} rolled back to revision {target} ({why})"
    draft.event(reason, message, warning=reason == "CanaryRolledBack")
    draft.condition("Deployed", "True", reason, message)
    return target


def waiting(
    draft: Draft,
    record: RevisionRecord,
    decision: CanaryDecision,
    probe: ObservedJob | None = None,
    trouble: PodTrouble | None = None,
) -> None:
    """The Deployed condition while the canary ``record`` is analysed. What holds it back is named,
    with one Warning: its predictor's ``trouble`` (killed for memory, crash-looping), or a blue/green
    ``probe`` Job whose pod cannot start (no room on any node, no image), since the revision then
    waits until someone acts or its deadline fails it. ``Unknown``: the serving revision still serves."""
    previous = draft.status.serving_revision
    n = record.revision
    method = METHOD_WORDS.get(record.canary_method or "", "a canary")
    message = f"revision {n} is tried next to {previous} ({method})"
    if trouble is not None:
        message = f"{message}; its predictor does not serve: {trouble.message}"
        _warn_once(draft, trouble.reason, message)
        draft.condition("Deployed", "Unknown", trouble.reason, message)
    elif probe is not None and probe.stuck:
        message = f"{message}; its probe Job {probe.name}'s pod cannot start: {probe.stuck}"
        _warn_once(draft, "ProbePodNotStarting", message)
        draft.condition("Deployed", "Unknown", "ProbePodNotStarting", message)
    else:
        if decision.reason == "CanaryNoTraffic":
            message = f"{message}; {NO_TRAFFIC}"
        draft.condition("Deployed", "Unknown", decision.reason, message)


def _warn_once(draft: Draft, reason: str, message: str) -> None:
    """A Warning Event, unless the stored ``Deployed`` condition already gives ``reason`` (the stored
    status, not the draft's: this pass may already have reported on the serving revision)."""
    stored = draft.resource.status
    earlier = find(stored.conditions, "Deployed") if stored is not None else None
    if earlier is None or earlier.reason != reason:
        draft.event(reason, message, warning=True)


def not_serving(draft: Draft, revision: int, trouble: PodTrouble) -> None:
    """``Deployed=False`` naming why the revision that serves alone has no ready predictor."""
    message = f"revision {revision}'s predictor does not serve: {trouble.message}"
    _warn_once(draft, trouble.reason, message)
    draft.condition("Deployed", "False", trouble.reason, message)


def follow(
    draft: Draft,
    revision: int,
    record: RevisionRecord | None,
    ready: bool,
    current: bool,
    observed: ObservedChild | None,
) -> None:
    """The revision that serves alone: take over when it first becomes Ready, then report on it.
    A predictor that is not Ready and whose pods say why (killed for memory, crash-looping, not
    starting) makes ``Deployed`` False with that reason, once KServe has acted on the latest spec."""
    url = draft.status.url
    trouble = observed.trouble if observed is not None and not ready and not observed.updating else None
    if record is not None and record.outcome == "InProgress":
        if ready:
            draft.status.serving_revision = revision
            record.outcome = "Serving"
            draft.status.model = record.model
            draft.event("Serving", f"revision {revision} serves at {url}")
            draft.condition("Deployed", "True", "Serving", f"revision {revision} serves at {url}")
        elif trouble is not None and current:
            not_serving(draft, revision, trouble)
        else:
            draft.condition("Deployed", "Unknown", "Deploying", f"waiting for revision {revision} to be Ready")
    elif ready:
        draft.condition("Deployed", "True", "Serving", f"revision {revision} serves at {url}")
    elif not current or (observed is not None and observed.updating):
        draft.condition("Deployed", "Unknown", "Updating", f"applying serving settings to revision {revision}")
    elif trouble is not None:
        not_serving(draft, revision, trouble)
    else:
        draft.condition("Deployed", "Unknown", "PredictorNotReady", "the InferenceService is not Ready")


def retire(draft: Draft, wanted: Iterable[str], settled: bool) -> None:
    """Delete the resource's InferenceServices that are no longer wanted, once ``settled`` (what
    replaces them serves) and ``retire_delay_seconds`` after the history says their revision lost
    its traffic: a mode switch or a finished canary never leaves a gap, and a gateway still
    applying the new route does not send requests to a predictor that is gone."""
    keep = set(wanted)
    retired = [name for name in sorted(draft.observed.services) if name not in keep]
    if retired and not (settled and _traffic_gone(draft, retired)):
        # Nothing else may prompt the next look (a gateway's report on a route comes as no event).
        draft.settling = True
        return
    for name in retired:
        draft.actions.append(Delete(ISVC_API_VERSION, "InferenceService", name, draft.observed.services[name].uid))


def _traffic_gone(draft: Draft, retired: list[str]) -> bool:
    """Whether ``retire_delay_seconds`` have passed since the last of the ``retired``
    InferenceServices' revisions was superseded or rolled back (one no record names: at once)."""
    resource = draft.resource.metadata.name
    left = [
        r.finished_at
        for r in draft.history
        if r.finished_at is not None and names.revision_service(resource, r.revision) in retired
    ]
    delay = timedelta(seconds=draft.config.retire_delay_seconds)
    return not left or draft.now >= max(left) + delay
