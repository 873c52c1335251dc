"""Serving: the InferenceServices of the serving revision and of a revision being tried next to
it, as the topology says (:mod:`optiloop.operator.topology`), and the TrafficSplit condition.

A revision whose stages succeeded is deployed: on its own when nothing serves, else as a canary
by the topology's method. Knative's traffic split keeps one InferenceService, named after the
resource, whose ``canaryTrafficPercent`` splits the traffic (this module); the other methods keep
one per revision, behind an HTTPRoute or tried blue/green (:mod:`.standard`). Changes that
only touch serving settings update the InferenceServices in place (their spec hash differs).
InferenceServices no longer wanted (a mode switch, a finished canary) are deleted once what
replaces them is Ready.
"""

from __future__ import annotations

from ...api.status import RevisionRecord
from ..builders.serving import inference_service
from ..topology import Topology, Unservable
from . import canary, standard
from .draft import Draft
from .plan import Apply


def deploy(draft: Draft, record: RevisionRecord) -> None:
    """Mark the revision deployed; as a canary when another revision serves. A canary waits while
    the spec asks for a traffic split the cluster cannot do (the TrafficSplit condition says so)."""
    topology = draft.topology
    if isinstance(topology, Unservable) or record.deployed_at is not None:
        return
    serving = draft.status.serving_revision
    if serving is None or serving == record.revision:
        record.deployed_at = draft.now
        draft.event("Deploying", f"revision {record.revision} deployed")
    elif topology.canary_method is not None:
        record.deployed_at = draft.now
        record.canary_method = topology.canary_method
        draft.event("CanaryStarted", canary.started_message(draft, topology, record.revision, serving))


def serve(draft: Draft) -> None:
    """Keep the InferenceServices (and route) as desired, and follow what they serve."""
    topology = draft.topology
    if isinstance(topology, Unservable):
        draft.condition("Deployed", "False", topology.reason, _unservable_message(draft, topology))
        return
    draft.condition("TrafficSplit", topology.split.status, topology.split.reason, topology.split.message)
    route = None
    if topology.canary_method == "KnativeTraffic":
        _serve_knative(draft, topology)
    else:
        route = standard.serve(draft, topology)
    draft.status.serving = topology.status(route)
    _waiting_canary(draft, topology)


def _unservable_message(draft: Draft, problem: Unservable) -> str:
    serving = draft.status.serving_revision
    kept = f"; revision {serving} keeps serving as it was" if serving is not None else ""
    return f"{problem.message}{kept}"


def _waiting_canary(draft: Draft, topology: Topology) -> None:
    """A built revision that no method can try: say so on Deployed."""
    current, serving = draft.current, draft.status.serving_revision
    if current is None or current.outcome != "InProgress" or current.deployed_at is not None:
        return
    if current.compressed_at is None or serving is None or topology.canary_method is not None:
        return
    message = f"revision {current.revision} is built and waits: {topology.split.message}"
    draft.condition("Deployed", "False", topology.split.reason, message)


def desired_service(draft: Draft) -> tuple[int, bool] | None:
    """Knative mode: the revision the InferenceService should serve and whether as a canary;
    None: none yet."""
    current = draft.current
    serving = draft.status.serving_revision
    if current is not None and current.outcome == "InProgress" and current.deployed_at is not None:
        if serving is None or serving == current.revision:
            return current.revision, False
        return current.revision, True
    return (serving, False) if serving is not None else None


def _serve_knative(draft: Draft, topology: Topology) -> None:
    """One InferenceService; a canary is ``canaryTrafficPercent`` on it."""
    desired = desired_service(draft)
    if desired is None:
        return
    revision, is_canary = desired
    body = inference_service(draft.resource, draft.config, revision, topology, canary=is_canary)
    name = str(body["metadata"]["name"])
    observed = draft.observed.services.get(name)
    current = draft.ensure(body, observed)
    ready = current and observed is not None and observed.ready
    if ready and observed is not None and observed.url:
        draft.status.url = observed.url
    record = draft.record(revision)
    if is_canary and record is not None:
        decision = canary.judge(draft, record, ready)
        if decision.action == "wait":
            canary.waiting(draft, record, decision, trouble=observed.trouble if observed and not ready else None)
        else:
            target = canary.conclude(draft, record, decision)
            # The canary's InferenceService was just planned; the final one replaces it.
            draft.actions = [a for a in draft.actions if not (isinstance(a, Apply) and a.kind == "InferenceService")]
            draft.ensure(inference_service(draft.resource, draft.config, target, topology), observed)
    else:
        canary.follow(draft, revision, record, ready, current, observed)
    canary.retire(draft, {name}, settled=bool(ready))
    if ready:
        # Switched from Standard mode: the route goes once Knative's InferenceService serves.
        standard.retire_route(draft, topology)
