"""The drift monitor (a Deployment and a Service) of the serving revision, and the drift
condition until its first evaluation. Monitoring off, or nothing serving: no monitor."""

from __future__ import annotations

from ...api.status import DriftStatus
from .. import names
from ..builders.serving import drift_monitor
from ..conditions import find
from ..topology import Topology
from .draft import Draft
from .plan import Delete
from .standard import still_wanted

_NOT_MONITORING = ("NotServing", "MonitoringDisabled", "MonitorUnavailable")
API_VERSIONS = {"Deployment": "apps/v1", "Service": "v1", "NetworkPolicy": "networking.k8s.io/v1"}
"""The drift monitor's parts."""


def monitor(draft: Draft) -> None:
    """Keep the serving revision's drift monitor as desired (and remove parts no longer
    wanted, such as a NetworkPolicy the configuration turned off), or remove it."""
    monitoring = draft.resource.spec.monitoring
    serving = draft.status.serving_revision
    existing = draft.observed.monitor
    if not monitoring.enabled or serving is None:
        for child in existing.values():
            draft.actions.append(Delete(API_VERSIONS[child.kind], child.kind, child.name, child.uid))
        reason = "MonitoringDisabled" if not monitoring.enabled else "NotServing"
        if find(draft.status.conditions, "DriftWithinBounds") is None or not monitoring.enabled:
            draft.condition("DriftWithinBounds", "Unknown", reason, "no drift monitor runs")
        return
    try:
        bodies = drift_monitor(draft.resource, draft.config, serving, inference_services=monitored_services(draft))
    except ValueError as exc:
        draft.condition("DriftWithinBounds", "Unknown", "MonitorUnavailable", str(exc))
        return
    for body in bodies:
        draft.ensure(body, existing.get(body["kind"]))
    wanted = {body["kind"] for body in bodies}
    for child in existing.values():
        if child.kind not in wanted:
            draft.actions.append(Delete(API_VERSIONS[child.kind], child.kind, child.name, child.uid))
    if draft.status.drift is None:
        draft.status.drift = DriftStatus()
    drift = find(draft.status.conditions, "DriftWithinBounds")
    if drift is None or drift.reason in _NOT_MONITORING:
        monitor = names.drift_monitor(draft.resource.metadata.name)
        message = f"{monitor} watches the inputs; the first evaluation is pending"
        draft.condition("DriftWithinBounds", "Unknown", "NotEvaluated", message)


def monitored_services(draft: Draft) -> list[str]:
    """The InferenceServices whose payload events the monitor accepts: Knative's traffic split
    has one, ``<name>``; otherwise each kept revision has its own, ``<name>-r<N>`` (the serving
    one and one being tried). Named as the serving plan names them, so the two cannot drift
    apart. With no servable topology (nothing new can be deployed), the ones that exist."""
    topology = draft.topology
    if not isinstance(topology, Topology):
        return sorted(draft.observed.services)
    return sorted({topology.inference_service(draft.resource.metadata.name, r) for r in still_wanted(draft)})
