"""One InferenceService per revision (``{name}-r{N}``): KServe's Standard mode, and blue/green in
either mode. Either an HTTPRoute with weights is in front of them (canary method ``GatewayAPI``),
or a new revision is tried blue/green.

GatewayAPI: the route sends ``100 - canaryTrafficPercent`` to the serving revision and the rest
to the canary. The canary counts as Ready only when its InferenceService is Ready and the
gateway accepted the route with these weights (status for the route's current generation), so
a route nobody implements never leads to a promotion. Promotion sets the canary's weight to 100,
rollback the serving revision's; the InferenceService left without traffic is deleted once the
gateway has taken the new route.

BlueGreen: the new revision's InferenceService runs with no route to it. Once it is Ready, a
probe Job sends it synthetic requests made from its training reference for the analysis window;
it takes over (the status URL moves to it) only when the probe and its metrics pass.
"""

from __future__ import annotations

from ...api.status import RevisionRecord
from .. import names
from ..builders.jobs import probe_job
from ..builders.routing import ROUTE_API_VERSION, http_route
from ..builders.serving import inference_service
from ..observed import ObservedChild, PodTrouble
from ..topology import GatewayParent, Topology
from . import canary
from .draft import Draft
from .plan import Apply, Delete, spec_hash


def serve(draft: Draft, topology: Topology) -> str | None:
    """Plan the revisions' InferenceServices and the route; returns the route's name (None: no
    route)."""
    stable = draft.status.serving_revision
    current = draft.current
    trying = current if current is not None and current.outcome == "InProgress" and current.deployed_at else None
    first = trying.revision if trying is not None and stable in (None, trying.revision) else None
    candidate = trying if trying is not None and first is None else None

    state = {r: _ensure_revision(draft, topology, r) for r in sorted(still_wanted(draft))}
    if first is not None or stable is not None:
        alone = first if first is not None else stable
        assert alone is not None
        up_to_date, ready = state[alone]
        if ready:
            draft.status.url = _url(draft, topology, alone) or draft.status.url
        observed = draft.observed.services.get(_name(draft, alone))
        canary.follow(draft, alone, draft.record(alone), ready, up_to_date, observed)
    backends = [(first, 100)] if first is not None else [(stable, 100)] if stable is not None else []
    if candidate is not None and stable is not None:
        backends = _try(draft, topology, candidate, stable, state[candidate.revision][1])
    wanted = {_name(draft, r) for r in still_wanted(draft)}
    # A tried revision that was just rolled back needs no update any more.
    draft.actions = [
        a for a in draft.actions
        if not (isinstance(a, Apply) and a.kind == "InferenceService" and a.name not in wanted)
    ]  # fmt: skip
    route = _route(draft, topology, backends)
    serving = draft.status.serving_revision
    serving_ready = serving is not None and state.get(serving, (False, False))[1]
    canary.retire(draft, wanted, settled=serving_ready and route is not False)
    retire_route(draft, topology)
    return names.route(draft.resource.metadata.name) if route is not None else None


def _name(draft: Draft, revision: int) -> str:
    return names.revision_service(draft.resource.metadata.name, revision)


def still_wanted(draft: Draft) -> set[int]:
    """Revisions whose InferenceService is kept: the serving one, and one being tried or taking
    over (read again after a promotion or rollback). The drift monitor accepts events from these."""
    wanted = {draft.status.serving_revision} if draft.status.serving_revision is not None else set()
    current = draft.current
    if current is not None and current.outcome == "InProgress" and current.deployed_at is not None:
        wanted.add(current.revision)
    return wanted


def _ensure_revision(draft: Draft, topology: Topology, revision: int) -> tuple[bool, bool]:
    """Keep ``revision``'s InferenceService as desired; (up to date, Ready)."""
    body = inference_service(draft.resource, draft.config, revision, topology)
    observed = draft.observed.services.get(str(body["metadata"]["name"]))
    current = draft.ensure(body, observed)
    return current, bool(current and observed is not None and observed.ready)


def _url(draft: Draft, topology: Topology, revision: int) -> str | None:
    hostnames = draft.resource.spec.deployment.hostnames
    if topology.canary_method == "GatewayAPI" and topology.gateway is not None and hostnames:
        return f"http://{hostnames[0].removeprefix('*.')}"
    observed = draft.observed.services.get(_name(draft, revision))
    return observed.url if observed is not None else None


def _try(draft: Draft, topology: Topology, record: RevisionRecord, stable: int, ready: bool) -> list[tuple[int, int]]:
    """Analyse the revision being tried; returns the route's weights after the decision."""
    n = record.revision
    if record.canary_method != "GatewayAPI" or topology.gateway is None:
        return _blue_green(draft, topology, record, stable, ready)
    percent = draft.resource.spec.deployment.canary_traffic_percent
    split = [(stable, 100 - percent), (n, percent)]
    taken = _route_taken(draft, topology.gateway, split)
    decision = canary.judge(draft, record, ready and taken)
    if decision.action == "wait":
        canary.waiting(draft, record, decision, trouble=_trouble(draft, n, ready))
        if ready and not taken:
            route = names.route(draft.resource.metadata.name)
            message = f"revision {n} is Ready; waiting for the gateway to accept HTTPRoute {route} with its weights"
            draft.condition("Deployed", "Unknown", "RouteNotAccepted", message)
        # The canary gets its share only once its InferenceService is Ready: a route naming a
        # predictor Service that does not exist yet, or has no ready pod, makes a gateway fail
        # requests (Traefik on the real node failed the canary's share, in one run every request).
        return split if ready else [(stable, 100)]
    target = canary.conclude(draft, record, decision)
    if target == n:
        draft.status.url = _url(draft, topology, n) or draft.status.url
    return [(target, 100)]


def _blue_green(
    draft: Draft, topology: Topology, record: RevisionRecord, stable: int, ready: bool
) -> list[tuple[int, int]]:
    n = record.revision
    probe = draft.observed.jobs.get(("probe", n))
    if ready and probe is None:
        url = f"http://{names.predictor_service(_name(draft, n))}.{draft.resource.metadata.namespace}.svc.cluster.local"
        draft.actions.append(Apply(probe_job(draft.resource, draft.config, n, url)))
    decision = canary.judge(draft, record, ready, probe)
    if decision.action == "wait":
        canary.waiting(draft, record, decision, probe, _trouble(draft, n, ready))
        return [(stable, 100)]
    detail = ""
    if decision.reason == "ProbeFailed" and probe is not None:
        detail = (probe.outcome.message if probe.outcome is not None else "") or probe.message or probe.reason
    target = canary.conclude(draft, record, decision, detail)
    if target == n:
        draft.status.url = _url(draft, topology, n) or draft.status.url
    return [(target, 100)]


def _trouble(draft: Draft, revision: int, ready: bool) -> PodTrouble | None:
    """What the pods of a revision being tried say is wrong, while it is not Ready."""
    observed = draft.observed.services.get(_name(draft, revision))
    return observed.trouble if observed is not None and not ready else None


def _route_taken(draft: Draft, gateway: GatewayParent, backends: list[tuple[int, int]]) -> bool:
    """Whether the stored route has these weights and the gateway accepted it."""
    observed = draft.observed.route
    body = _route_body(draft, gateway, backends)
    return observed is not None and observed.spec_hash == spec_hash(body) and observed.ready


def _route_body(draft: Draft, gateway: GatewayParent, backends: list[tuple[int, int]]) -> dict[str, object]:
    return http_route(draft.resource, gateway, [(_name(draft, r), w) for r, w in backends])


def _route(draft: Draft, topology: Topology, backends: list[tuple[int, int]]) -> bool | None:
    """Keep the route as desired; whether the gateway has settled on it (None: no route)."""
    if topology.canary_method != "GatewayAPI" or topology.gateway is None or not backends:
        return None
    observed: ObservedChild | None = draft.observed.route
    current = draft.ensure(_route_body(draft, topology.gateway, backends), observed)
    return current and observed is not None and not observed.updating


def retire_route(draft: Draft, topology: Topology) -> None:
    """A route the topology no longer uses (blue/green now, or Knative mode) is deleted."""
    route = draft.observed.route
    if topology.canary_method != "GatewayAPI" and route is not None:
        draft.actions.append(Delete(ROUTE_API_VERSION, "HTTPRoute", route.name, route.uid))
