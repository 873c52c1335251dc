"""The operator's configuration, from environment variables (set by the Helm chart).

| variable | meaning | default |
|---|---|---|
| ``OPTILOOP_JOBS_IMAGE`` | image of the tuning and compression Jobs | ``ghcr.io/optiloop/jobs:<version>`` |
| ``OPTILOOP_PREDICTOR_IMAGE`` | image of optiloop's predictor | ``ghcr.io/optiloop/serve:<version>`` |
| ``OPTILOOP_DRIFT_IMAGE`` | image of the drift monitor | ``ghcr.io/optiloop/drift:<version>`` |
| ``OPTILOOP_IMAGE_PULL_POLICY`` | pull policy of those images | ``IfNotPresent`` |
| ``OPTILOOP_JOB_SERVICE_ACCOUNT`` | service account the Jobs run as | ``default`` |
| ``OPTILOOP_PROMETHEUS_URL`` | Prometheus for drift and canaries | ``http://prometheus-operated.monitoring:9090`` |
| ``OPTILOOP_PROMETHEUS_ALLOWED_URLS`` | comma-separated Prometheus URLs resources may name instead | none |
| ``OPTILOOP_PROMETHEUS_QUERY_TEMPLATES`` | JSON object: drift query name -> PromQL (``$namespace``...) | none |
| ``OPTILOOP_NAMESPACES`` | comma-separated namespaces to watch; empty watches all | empty |
| ``OPTILOOP_DEFAULT_JOB_RESOURCES`` | Job pod resources when ``spec.jobs.resources`` is empty (JSON) | none |
| ``OPTILOOP_DEFAULT_PREDICTOR_RESOURCES`` | the same for the predictor and ``spec.deployment.resources`` | none |
| ``OPTILOOP_RESYNC_SECONDS`` | period of the per-resource timer (drift checks, canary analysis) | ``10`` |
| ``OPTILOOP_FULL_RESYNC_SECONDS`` | a resource with nothing due is reconciled at least this often | ``300`` |
| ``OPTILOOP_WORKERS`` | threads reconciling new specs; a quarter as many (at least 2) run progress | ``16`` |
| ``OPTILOOP_METRICS_ADDRESS`` / ``OPTILOOP_METRICS_PORT`` | where ``/metrics`` listens | ``0.0.0.0`` / ``8080`` |
| ``OPTILOOP_HEALTH_PORT`` | port of the liveness endpoint ``/healthz`` (same address) | ``8081`` |
| ``OPTILOOP_PEERING`` | Kopf peering object shared by the replicas; empty runs standalone | ``optiloop`` |
| ``OPTILOOP_PRIORITY`` | this replica's peering priority; must differ between replicas | derived from the host name |
| ``OPTILOOP_PEERING_LIFETIME`` | seconds before a silent replica counts as gone (the takeover time) | ``60`` |
| ``OPTILOOP_DRAIN_SECONDS`` | on SIGTERM, time for reconciles in flight and queued Events | ``20`` |
| ``OPTILOOP_DRIFT_NETWORK_POLICY`` | give each drift monitor a NetworkPolicy (``true``/``false``) | ``true`` |
| ``OPTILOOP_PROMETHEUS_NAMESPACE_LABELS`` | JSON labels of Prometheus' namespace, let through | ``monitoring`` |
| ``OPTILOOP_PROMETHEUS_POD_LABELS`` | JSON labels of Prometheus' pods, let through | ``prometheus`` |
| ``OPTILOOP_KSERVE_CONFIG`` | KServe's ConfigMap (default mode) | ``kserve/inferenceservice-config`` |
| ``OPTILOOP_GATEWAY`` | Gateway of Standard mode's HTTPRoutes, ``namespace/name[/listener]`` | empty: none |
| ``OPTILOOP_DISCOVERY_SECONDS`` | how long the cluster's KServe, Knative, Gateway API and KEDA are cached | ``60`` |
| ``OPTILOOP_RETIRE_DELAY_SECONDS`` | how long a revision's InferenceService outlives the move of its traffic | ``30`` |

Images and service accounts come only from here: a ModelOptimization cannot choose them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import ValidationError

from .. import __version__
from ..api.spec import ResourceRequirements

N = TypeVar("N", int, float)


def _default_image(component: str) -> str:
    return f"ghcr.io/optiloop/{component}:{__version__}"


@dataclass(frozen=True)
class OperatorConfig:
    """What the operator is told by its deployment, as opposed to what a resource asks for."""

    jobs_image: str = field(default_factory=lambda: _default_image("jobs"))
    predictor_image: str = field(default_factory=lambda: _default_image("serve"))
    drift_image: str = field(default_factory=lambda: _default_image("drift"))
    image_pull_policy: str = "IfNotPresent"
    job_service_account: str = "default"
    prometheus_url: str = "http://prometheus-operated.monitoring:9090"
    prometheus_allowed_urls: tuple[str, ...] = ()
    """Prometheus URLs a resource may name in ``spec.monitoring.prometheus.url`` (none by default)."""
    prometheus_query_templates: Mapping[str, str] = field(default_factory=dict)
    """Drift queries a resource may name in ``spec.monitoring.prometheus.queryTemplate``."""
    api_server_host: str | None = None
    """The API server's address in the cluster, which no resource may have queried."""
    drift_network_policy: bool = True
    """Give each drift monitor a NetworkPolicy: only its InferenceServices' pods and Prometheus reach it."""
    prometheus_namespace_labels: Mapping[str, str] = field(
        default_factory=lambda: {"kubernetes.io/metadata.name": "monitoring"}
    )
    """Labels of the namespace Prometheus runs in (who may scrape the drift monitors)."""
    prometheus_pod_labels: Mapping[str, str] = field(default_factory=lambda: {"app.kubernetes.io/name": "prometheus"})
    """Labels of Prometheus' pods."""
    namespaces: tuple[str, ...] = ()
    default_job_resources: ResourceRequirements = field(default_factory=ResourceRequirements)
    default_predictor_resources: ResourceRequirements = field(default_factory=ResourceRequirements)
    resync_seconds: float = 10.0
    full_resync_seconds: float = 300.0
    workers: int = 16
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 8080
    health_port: int = 8081
    peering: str = "optiloop"
    priority: int = field(default_factory=lambda: host_priority(socket.gethostname()))
    peering_lifetime: int = 60
    drain_seconds: float = 20.0
    """At shutdown, how long reconciles in flight may finish and queued Events be posted; keep it
    below the pod's ``terminationGracePeriodSeconds``."""
    kserve_config: tuple[str, str] = ("kserve", "inferenceservice-config")
    """Namespace and name of KServe's ConfigMap, read for its default deployment mode."""
    gateway: tuple[str, str, str | None] | None = None
    """Namespace, name and listener (None: all) of the default Gateway for HTTPRoutes."""
    discovery_seconds: float = 60.0
    """How long a discovery of the cluster's serving capabilities is reused."""
    retire_delay_seconds: float = 30.0
    """How long an InferenceService that lost its traffic (a superseded or rolled-back revision) is
    kept after the decision, and at least until the gateway reports the new route: gateways apply
    a route a moment after they report it accepted (Traefik: its providers' throttle, 2 s), and
    requests they still send to a deleted predictor fail."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read the ``OPTILOOP_*`` variables; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        defaults = cls()
        policy = env.get("OPTILOOP_IMAGE_PULL_POLICY", defaults.image_pull_policy)
        if policy not in ("Always", "IfNotPresent", "Never"):
            raise ValueError(f"OPTILOOP_IMAGE_PULL_POLICY must be Always, IfNotPresent or Never, not {policy!r}")
        namespaces = tuple(n.strip() for n in env.get("OPTILOOP_NAMESPACES", "").split(",") if n.strip())
        return cls(
            jobs_image=env.get("OPTILOOP_JOBS_IMAGE", defaults.jobs_image),
            predictor_image=env.get("OPTILOOP_PREDICTOR_IMAGE", defaults.predictor_image),
            drift_image=env.get("OPTILOOP_DRIFT_IMAGE", defaults.drift_image),
            image_pull_policy=policy,
            job_service_account=env.get("OPTILOOP_JOB_SERVICE_ACCOUNT", defaults.job_service_account),
            prometheus_url=env.get("OPTILOOP_PROMETHEUS_URL", defaults.prometheus_url),
            prometheus_allowed_urls=tuple(
                u.strip() for u in env.get("OPTILOOP_PROMETHEUS_ALLOWED_URLS", "").split(",") if u.strip()
            ),
            prometheus_query_templates=_templates(env, "OPTILOOP_PROMETHEUS_QUERY_TEMPLATES"),
            api_server_host=env.get("KUBERNETES_SERVICE_HOST") or None,
            drift_network_policy=_flag(env, "OPTILOOP_DRIFT_NETWORK_POLICY", defaults.drift_network_policy),
            prometheus_namespace_labels=_labels(
                env, "OPTILOOP_PROMETHEUS_NAMESPACE_LABELS", defaults.prometheus_namespace_labels
            ),
            prometheus_pod_labels=_labels(env, "OPTILOOP_PROMETHEUS_POD_LABELS", defaults.prometheus_pod_labels),
            namespaces=namespaces,
            default_job_resources=_resources(env, "OPTILOOP_DEFAULT_JOB_RESOURCES"),
            default_predictor_resources=_resources(env, "OPTILOOP_DEFAULT_PREDICTOR_RESOURCES"),
            resync_seconds=_number(env, "OPTILOOP_RESYNC_SECONDS", defaults.resync_seconds, float, 1),
            full_resync_seconds=_number(env, "OPTILOOP_FULL_RESYNC_SECONDS", defaults.full_resync_seconds, float, 1),
            workers=_number(env, "OPTILOOP_WORKERS", defaults.workers, int, 1),
            metrics_address=env.get("OPTILOOP_METRICS_ADDRESS", defaults.metrics_address),
            metrics_port=_number(env, "OPTILOOP_METRICS_PORT", defaults.metrics_port, int, 0),
            health_port=_number(env, "OPTILOOP_HEALTH_PORT", defaults.health_port, int, 0),
            peering=env.get("OPTILOOP_PEERING", defaults.peering),
            priority=_number(env, "OPTILOOP_PRIORITY", defaults.priority, int, 0),
            peering_lifetime=_number(env, "OPTILOOP_PEERING_LIFETIME", defaults.peering_lifetime, int, 5),
            drain_seconds=_number(env, "OPTILOOP_DRAIN_SECONDS", defaults.drain_seconds, float, 0),
            kserve_config=_kserve_config(env.get("OPTILOOP_KSERVE_CONFIG", "")) or defaults.kserve_config,
            gateway=_gateway(env.get("OPTILOOP_GATEWAY", "")),
            discovery_seconds=_number(env, "OPTILOOP_DISCOVERY_SECONDS", defaults.discovery_seconds, float, 1),
            retire_delay_seconds=_number(env, "OPTILOOP_RETIRE_DELAY_SECONDS", defaults.retire_delay_seconds, float, 0),
        )


def host_priority(hostname: str) -> int:
    """A peering priority derived from the pod name: distinct replicas get distinct priorities
    (equal priorities would make Kopf pause every replica)."""
    return 1 + int(hashlib.sha256(hostname.encode()).hexdigest()[:6], 16)


def _resources(env: Mapping[str, str], name: str) -> ResourceRequirements:
    raw = env.get(name, "").strip()
    if not raw:
        return ResourceRequirements()
    try:
        return ResourceRequirements.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f'{name} must be JSON like {{"requests": {{"cpu": "1"}}}}: {problems}') from None


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, not {raw!r}")
    return raw == "true"


def _labels(env: Mapping[str, str], name: str, default: Mapping[str, str]) -> Mapping[str, str]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        labels = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f'{name} must be a JSON object of labels like {{"app": "prometheus"}}: {exc}') from None
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ValueError(f"{name} must map label names to label values (strings)")
    return labels


def _templates(env: Mapping[str, str], name: str) -> dict[str, str]:
    raw = env.get(name, "").strip()
    if not raw:
        return {}
    try:
        templates = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f'{name} must be a JSON object like {{"p99-drift": "max(...)"}}: {exc}') from None
    if not isinstance(templates, dict) or not all(
        isinstance(k, str) and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", k) and isinstance(v, str) and v
        for k, v in templates.items()
    ):
        raise ValueError(f"{name} must map lower-case names (a-z, 0-9, '-') to PromQL text")
    return templates


def _number(env: Mapping[str, str], name: str, default: N, kind: Callable[[str], N], minimum: float) -> N:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {raw!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {raw!r}")
    return value


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _reference(raw: str, name: str, parts: int) -> list[str]:
    """``raw`` split at ``/`` into 2 to ``parts`` DNS labels (namespace, name, ...), or an error
    naming the variable."""
    pieces = raw.split("/")
    if not 2 <= len(pieces) <= parts or not all(_DNS_LABEL.match(p) and len(p) <= 63 for p in pieces):
        shape = "namespace/name" + ("[/listener]" if parts > 2 else "")
        raise ValueError(f"{name} must be {shape} in lower-case DNS labels, not {raw!r}")
    return pieces


def _kserve_config(raw: str) -> tuple[str, str] | None:
    if not raw.strip():
        return None
    namespace, name = _reference(raw.strip(), "OPTILOOP_KSERVE_CONFIG", 2)
    return namespace, name


def _gateway(raw: str) -> tuple[str, str, str | None] | None:
    if not raw.strip():
        return None
    pieces = _reference(raw.strip(), "OPTILOOP_GATEWAY", 3)
    return pieces[0], pieces[1], pieces[2] if len(pieces) == 3 else None
