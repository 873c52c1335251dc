"""The HTTPRoute that splits traffic between revisions in KServe's Standard mode.

KServe v0.20's Standard mode runs one Deployment per InferenceService, which can only roll from
one revision to the next (``canaryTrafficPercent`` is accepted and ignored; its ``spec.canary``
list scales a second Deployment but routes nothing by weight). So each revision has its own
InferenceService, and a Gateway API ``HTTPRoute`` owned by the resource sends each request to
one of their predictor Services with the spec's weights: ``100 - canaryTrafficPercent`` to the
serving revision, ``canaryTrafficPercent`` to the canary. Weights are part of the Gateway API's
core conformance for HTTPRoute, so every conformant gateway honours them. Promotion gives the
canary weight 100; rollback gives it back to the serving revision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...api import ModelOptimization
from .. import names
from ..topology import GatewayParent
from .common import metadata

GATEWAY_GROUP = "gateway.networking.k8s.io"
ROUTE_API_VERSION = f"{GATEWAY_GROUP}/v1"
PREDICTOR_PORT = 80
"""The port of the Service KServe puts in front of a predictor in Standard mode."""


def http_route(
    resource: ModelOptimization, parent: GatewayParent, backends: Sequence[tuple[str, int]]
) -> dict[str, Any]:
    """The resource's HTTPRoute on ``parent``, sending to each ``(InferenceService, weight)``."""
    parent_ref: dict[str, Any] = {
        "group": GATEWAY_GROUP,
        "kind": "Gateway",
        "namespace": parent.namespace,
        "name": parent.name,
    }
    if parent.section is not None:
        parent_ref["sectionName"] = parent.section
    spec: dict[str, Any] = {
        "parentRefs": [parent_ref],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {
                        "group": "",
                        "kind": "Service",
                        "name": names.predictor_service(service),
                        "port": PREDICTOR_PORT,
                        "weight": weight,
                    }
                    for service, weight in backends
                ],
            }
        ],
    }
    hostnames = resource.spec.deployment.hostnames
    if hostnames:
        spec["hostnames"] = list(hostnames)
    return {
        "apiVersion": ROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": metadata(resource, names.route(resource.metadata.name), "route"),
        "spec": spec,
    }
