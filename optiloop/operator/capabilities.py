"""What the cluster can serve with, as discovered through its API (pure: the facts in, the
answers out; :mod:`optiloop.operator.discovery` fetches them).

KServe's own rules are followed to the letter (v0.20: ``pkg/constants``, ``GetDeploymentMode``,
``NewDeployConfig``): the deployment mode of an InferenceService is its
``serving.kserve.io/deploymentMode`` annotation when that holds a known mode, else the
``defaultDeploymentMode`` in the ``deploy`` key of the ``inferenceservice-config`` ConfigMap.
``RawDeployment`` is the old name of ``Standard`` and ``Serverless`` the old name of
``Knative``. A ConfigMap without a ``deploy`` key leaves the mode empty, which KServe's
controller reconciles on its Knative path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..api.spec import ServingMode

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
AUTOSCALER_CLASS_ANNOTATION = "serving.kserve.io/autoscalerClass"
KNATIVE_CLASS_ANNOTATION = "autoscaling.knative.dev/class"
KNATIVE_HPA_CLASS = "hpa.autoscaling.knative.dev"

KSERVE_MODE_NAMES: dict[ServingMode, str] = {"standard": "Standard", "knative": "Knative"}
"""The spelling KServe v0.20 writes in annotations and status."""

# KServe's names for its modes (old and new) and what they mean here; ModelMesh serves
# many models per pod through its own controller and is not a mode optiloop deploys to.
_KSERVE_MODES: dict[str, ServingMode | None] = {
    "Standard": "standard",
    "RawDeployment": "standard",
    "Knative": "knative",
    "Serverless": "knative",
    "ModelMesh": None,
}

# The API groups probed, with the kind that must be served in each.
KSERVE_API = ("serving.kserve.io/v1beta1", "InferenceService")
KNATIVE_API = ("serving.knative.dev/v1", "Service")
GATEWAY_API = ("gateway.networking.k8s.io/v1", "HTTPRoute")
KEDA_API = ("keda.sh/v1alpha1", "ScaledObject")


@dataclass(frozen=True)
class KServeDefault:
    """KServe's default mode, as read from its ConfigMap.

    ``mode`` is None when there is no usable answer; ``problem`` then says why (the ConfigMap
    is missing or unreadable, or names a mode optiloop does not deploy to).
    """

    mode: ServingMode | None
    source: str
    problem: str = ""


DEFAULT_DOMAIN_TEMPLATE = "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"
DEFAULT_INGRESS_DOMAIN = "example.com"


@dataclass(frozen=True)
class KServeIngress:
    """How KServe names an InferenceService's hosts: the ``domainTemplate`` and ``ingressDomain``
    of the ``ingress`` key of its ConfigMap, with KServe's defaults for what is unset."""

    domain_template: str = DEFAULT_DOMAIN_TEMPLATE
    ingress_domain: str = DEFAULT_INGRESS_DOMAIN
    source: str = ""


@dataclass(frozen=True)
class Capabilities:
    """What the cluster offers for serving, from one discovery."""

    kserve: bool = False
    knative: bool = False
    gateway_api: bool = False
    keda: bool = False
    kserve_default: KServeDefault = KServeDefault(None, "", "KServe's configuration has not been read")
    kserve_ingress: KServeIngress = field(default_factory=lambda: KServeIngress())


def kserve_mode(value: str) -> tuple[bool, ServingMode | None]:
    """``(known, mode)`` for one of KServe's mode names; an unknown name is not known."""
    if value not in _KSERVE_MODES:
        return False, None
    return True, _KSERVE_MODES[value]


def annotation_mode(annotations: Mapping[str, str]) -> ServingMode | None:
    """The mode the resource's ``serving.kserve.io/deploymentMode`` annotation asks for; KServe
    ignores a value it does not know, and so does this (ModelMesh counts as not asking)."""
    value = annotations.get(DEPLOYMENT_MODE_ANNOTATION)
    return kserve_mode(value)[1] if value is not None else None


def default_from_config(data: Mapping[str, str] | None, source: str) -> KServeDefault:
    """KServe's default mode from the ``data`` of its ``inferenceservice-config`` ConfigMap
    (None: the ConfigMap does not exist)."""
    if data is None:
        return KServeDefault(None, source, f"ConfigMap {source} does not exist")
    raw = data.get("deploy")
    if raw is None:
        # KServe leaves the mode empty and takes its Knative path.
        return KServeDefault("knative", source)
    try:
        deploy = json.loads(raw)
    except ValueError as exc:
        return KServeDefault(None, source, f"ConfigMap {source}: key deploy is not JSON ({exc})")
    value = deploy.get("defaultDeploymentMode") if isinstance(deploy, dict) else None
    if not isinstance(value, str) or not value:
        return KServeDefault(None, source, f"ConfigMap {source}: deploy has no defaultDeploymentMode")
    known, mode = kserve_mode(value)
    if not known:
        return KServeDefault(None, source, f"ConfigMap {source}: defaultDeploymentMode {value!r} is not a KServe mode")
    if mode is None:
        return KServeDefault(
            None, source, f"ConfigMap {source}: KServe defaults to {value}, which optiloop does not use"
        )
    return KServeDefault(mode, source)


def ingress_from_config(data: Mapping[str, str] | None, source: str) -> KServeIngress:
    """KServe's host naming from the ``data`` of its ConfigMap: its defaults where the ``ingress``
    key, or a field of it, is missing or unusable (as KServe fills them in ``NewIngressConfig``)."""
    try:
        ingress = json.loads((data or {}).get("ingress") or "{}")
    except ValueError:
        ingress = {}
    if not isinstance(ingress, dict):
        ingress = {}
    template, domain = ingress.get("domainTemplate"), ingress.get("ingressDomain")
    return KServeIngress(
        domain_template=template if isinstance(template, str) and template else DEFAULT_DOMAIN_TEMPLATE,
        ingress_domain=domain if isinstance(domain, str) and domain else DEFAULT_INGRESS_DOMAIN,
        source=source,
    )


def serves(resources: Mapping[str, object] | None, kind: str) -> bool:
    """Whether a discovery document (``GET /apis/<group>/<version>``) lists ``kind``; None: the
    group version is not served at all."""
    if resources is None:
        return False
    listed = resources.get("resources")
    return isinstance(listed, list) and any(isinstance(r, dict) and r.get("kind") == kind for r in listed)
