"""How a resource is served on this cluster: KServe's deployment mode, the canary method and
the autoscaler, resolved from the spec, the resource's annotations and what the cluster offers;
or why it cannot be served as asked.

The mode: ``spec.deployment.mode`` when it names one; for ``auto``, what the cluster's KServe
would do with an InferenceService that does not choose (the resource's
``serving.kserve.io/deploymentMode`` annotation, else KServe's ConfigMap). The InferenceServices
then carry the mode explicitly, so KServe does exactly what was resolved.

The canary method, in order: Knative's traffic split (``canaryTrafficPercent``) in Knative mode;
in Standard mode an HTTPRoute with weights over one InferenceService per revision, when the
Gateway API is served and a Gateway is named (by the spec or the operator); otherwise blue/green.
``canaryMethod: trafficSplit`` never falls back (a retrained revision then waits), and
``blueGreen`` is used wherever it is asked for.

A topology whose InferenceService KServe would give a host it refuses (a name and namespace too
long for one DNS label under KServe's domain template, :mod:`.kserve_hosts`) is unservable too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..api import ModelOptimization
from ..api.spec import ScaleMetric, ServingMode, effective_scale_metric, effective_scale_target
from ..api.status import CanaryMethod, ServingStatus
from . import kserve_hosts, names
from .capabilities import DEPLOYMENT_MODE_ANNOTATION, KSERVE_MODE_NAMES, Capabilities, annotation_mode
from .conditions import ConditionStatus
from .config import OperatorConfig

Autoscaler = Literal["kpa", "knativeHpa", "hpa", "keda"]
UNSERVABLE_REASONS = (
    "KServeUnavailable",
    "DeploymentModeUnknown",
    "UnsupportedInMode",
    "KnativeUnavailable",
    "KedaUnavailable",
    "HostNameInvalid",
)
"""Reasons of ``Deployed=False`` that need a person (they make ``Ready=False``)."""


@dataclass(frozen=True)
class GatewayParent:
    """The Gateway (and listener) an HTTPRoute attaches to."""

    namespace: str
    name: str
    section: str | None = None


@dataclass(frozen=True)
class Split:
    """The TrafficSplit condition: whether a canary gets only its share, how, or why not."""

    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True)
class Topology:
    """How the resource is served."""

    mode: ServingMode
    source: Literal["spec", "annotation", "kserveConfig"]
    canary_method: CanaryMethod | None
    split: Split
    autoscaler: Autoscaler
    scale_metric: ScaleMetric
    scale_target: int
    gateway: GatewayParent | None = None

    def inference_service(self, resource: str, revision: int) -> str:
        """The InferenceService serving ``revision`` of ``resource``. With Knative's traffic split:
        one named after the resource (Knative keeps its revisions and splits traffic between
        them). Otherwise one per revision (Standard mode's Deployment can only roll; blue/green
        needs the new revision apart), and an HTTPRoute or the switch after a probe chooses
        which one answers."""
        if self.canary_method == "KnativeTraffic":
            return names.inference_service(resource)
        return names.revision_service(resource, revision)

    def status(self, route: str | None) -> ServingStatus:
        """What ``status.serving`` says about it."""
        return ServingStatus(
            mode=KSERVE_MODE_NAMES[self.mode],
            mode_source=self.source,
            canary_method=self.canary_method,
            autoscaler=self.autoscaler,
            scale_metric=self.scale_metric,
            scale_target=self.scale_target,
            route=route if self.canary_method == "GatewayAPI" else None,
        )


@dataclass(frozen=True)
class Unservable:
    """Why nothing can be deployed as the spec asks: a reason for the Deployed condition and a
    message that names the field or the missing part of the cluster."""

    reason: str
    message: str


def resolve(resource: ModelOptimization, capabilities: Capabilities, config: OperatorConfig) -> Topology | Unservable:
    """The topology of ``resource`` on a cluster with ``capabilities``, or why there is none."""
    deployment = resource.spec.deployment
    if not capabilities.kserve:
        return Unservable(
            "KServeUnavailable",
            "the cluster does not serve serving.kserve.io/v1beta1 InferenceServices: install KServe",
        )
    chosen = _mode(resource, capabilities)
    if isinstance(chosen, Unservable):
        return chosen
    mode, source = chosen
    origin = {
        "spec": "spec.deployment.mode",
        "annotation": f"the resource's {DEPLOYMENT_MODE_ANNOTATION} annotation",
        "kserveConfig": f"KServe's default in ConfigMap {capabilities.kserve_default.source}",
    }[source]
    conflicts = deployment.mode_conflicts(mode)
    if conflicts:
        problems = "; ".join(f"spec.deployment.{field}: {message}" for field, message in conflicts)
        return Unservable("UnsupportedInMode", f"{KSERVE_MODE_NAMES[mode]} mode (from {origin}): {problems}")
    if mode == "knative" and not capabilities.knative:
        return Unservable(
            "KnativeUnavailable",
            f"Knative mode (from {origin}) needs Knative Serving, and the cluster does not serve "
            "serving.knative.dev/v1 Services: install it, or set spec.deployment.mode to standard",
        )
    if deployment.autoscaler_class == "keda" and not capabilities.keda:
        return Unservable(
            "KedaUnavailable",
            "spec.deployment.autoscalerClass is keda, and the cluster does not serve keda.sh/v1alpha1 "
            "ScaledObjects: install KEDA, or use autoscalerClass hpa with cpu or memory",
        )
    method, split, gateway = _canary_method(resource, mode, capabilities, config)
    topology = Topology(
        mode=mode,
        source=source,
        canary_method=method,
        split=split,
        autoscaler=_autoscaler(resource, mode),
        scale_metric=effective_scale_metric(deployment, mode),
        scale_target=effective_scale_target(deployment, mode),
        gateway=gateway,
    )
    return _refused_hosts(resource, topology, capabilities) or topology


def _refused_hosts(resource: ModelOptimization, topology: Topology, capabilities: Capabilities) -> Unservable | None:
    """Hosts KServe would refuse for the latest revision's InferenceService (checked before it
    exists: KServe reports them only on the InferenceService, after it was created)."""
    name, namespace = resource.metadata.name, resource.metadata.namespace or "default"
    revision = (resource.status.revision if resource.status is not None else None) or 1
    service = topology.inference_service(name, revision)
    ingress = capabilities.kserve_ingress
    found = kserve_hosts.problems(service, namespace, topology.mode == "standard", ingress)
    if not found:
        return None
    first = found[0]
    template = f"ingress.domainTemplate {ingress.domain_template!r}" + (
        f" in ConfigMap {ingress.source}" if ingress.source else ""
    )
    return Unservable(
        "HostNameInvalid",
        f"KServe would name the {first.component} host of InferenceService {service} (revision {revision}) "
        f"{first.host!r}, which it refuses: {first.problem}. KServe builds it from {template}: shorten "
        f"metadata.name ({len(name)} characters) or the namespace ({len(namespace)}), or change the template",
    )


def _mode(
    resource: ModelOptimization, capabilities: Capabilities
) -> tuple[ServingMode, Literal["spec", "annotation", "kserveConfig"]] | Unservable:
    spec_mode = resource.spec.deployment.mode
    if spec_mode != "auto":
        return spec_mode, "spec"
    annotated = annotation_mode(resource.metadata.annotations)
    if annotated is not None:
        return annotated, "annotation"
    default = capabilities.kserve_default
    if default.mode is None:
        return Unservable(
            "DeploymentModeUnknown",
            f"spec.deployment.mode is auto, and KServe's default mode cannot be known: {default.problem}. "
            f"Set spec.deployment.mode (standard or knative), or the {DEPLOYMENT_MODE_ANNOTATION} annotation",
        )
    return default.mode, "kserveConfig"


def _canary_method(
    resource: ModelOptimization, mode: ServingMode, capabilities: Capabilities, config: OperatorConfig
) -> tuple[CanaryMethod | None, Split, GatewayParent | None]:
    deployment = resource.spec.deployment
    percent = deployment.canary_traffic_percent
    blue_green = (
        "retrained revisions are tried blue/green: each runs beside the serving one with no user traffic, is "
        "analysed on synthetic requests made from its training reference, and takes all traffic only if it passes"
    )
    if deployment.canary_method == "blueGreen":
        return (
            "BlueGreen",
            Split("False", "BlueGreenRequested", f"spec.deployment.canaryMethod is blueGreen: {blue_green}"),
            None,
        )
    if mode == "knative":
        message = f"a retrained revision gets {percent}% of the requests through Knative's traffic split"
        return "KnativeTraffic", Split("True", "KnativeTraffic", message), None
    gateway = _gateway(resource, config)
    if not capabilities.gateway_api:
        why = (
            "Standard mode splits traffic with a Gateway API HTTPRoute, and the cluster does not serve "
            "gateway.networking.k8s.io/v1 HTTPRoutes"
        )
        reason = "GatewayAPIUnavailable"
    elif gateway is None:
        why = (
            "Standard mode splits traffic with a Gateway API HTTPRoute, and no Gateway is named "
            "(spec.deployment.gateway, or the operator's OPTILOOP_GATEWAY)"
        )
        reason = "NoGateway"
    else:
        where = f"{gateway.namespace}/{gateway.name}" + (f" (listener {gateway.section})" if gateway.section else "")
        message = (
            f"a retrained revision gets {percent}% of the requests through an HTTPRoute with weights on Gateway {where}"
        )
        return "GatewayAPI", Split("True", "GatewayAPIRoute", message), gateway
    if deployment.canary_method == "trafficSplit":
        return None, Split("False", reason, f"{why}; spec.deployment.canaryMethod is trafficSplit, so a retrained "
                                            "revision waits until one is available"), None  # fmt: skip
    return "BlueGreen", Split("False", reason, f"{why}; so {blue_green}"), None


def _gateway(resource: ModelOptimization, config: OperatorConfig) -> GatewayParent | None:
    named = resource.spec.deployment.gateway
    if named is not None:
        return GatewayParent(
            named.namespace or resource.metadata.namespace or "default", named.name, named.section_name
        )
    if config.gateway is not None:
        return GatewayParent(*config.gateway)
    return None


def _autoscaler(resource: ModelOptimization, mode: ServingMode) -> Autoscaler:
    deployment = resource.spec.deployment
    if mode == "knative":
        return "knativeHpa" if effective_scale_metric(deployment, mode) in ("cpu", "memory") else "kpa"
    return deployment.autoscaler_class or "hpa"
