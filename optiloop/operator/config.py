"""The operator's configuration, from environment variables (set by the Helm chart).

| variable | meaning | default |
|---|---|---|
| ``OPTILOOP_JOBS_IMAGE`` | image of the tuning and compression Jobs | ``ghcr.io/optiloop/jobs:<version>`` |
| ``OPTILOOP_PREDICTOR_IMAGE`` | image of optiloop's predictor | ``ghcr.io/optiloop/serve:<version>`` |
| ``OPTILOOP_DRIFT_IMAGE`` | image of the drift monitor | ``ghcr.io/optiloop/drift:<version>`` |
| ``OPTILOOP_IMAGE_PULL_POLICY`` | pull policy of those images | ``IfNotPresent`` |
| ``OPTILOOP_JOB_SERVICE_ACCOUNT`` | service account the Jobs run as | ``default`` |
| ``OPTILOOP_PROMETHEUS_URL`` | Prometheus for drift and canaries | ``http://prometheus-operated.monitoring:9090`` |
| ``OPTILOOP_NAMESPACES`` | comma-separated namespaces to watch; empty watches all | empty |

Images and service accounts come only from here: a ModelOptimization cannot choose them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import __version__


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
    namespaces: tuple[str, ...] = ()

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
            namespaces=namespaces,
        )
