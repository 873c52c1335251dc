"""The PromQL the operator runs (pure: strings in, strings out).

The default drift query is :func:`optiloop.formats.metrics.default_drift_query`, beside the
metric name the drift monitor exports, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..api import ModelOptimization
from ..formats.metrics import PREDICTOR_INFERENCE_SECONDS, PREDICTOR_REQUESTS, default_drift_query


def _selector(namespace: str, name: str, revision: int) -> str:
    return f'namespace="{namespace}", model="{name}", revision="{revision}"'


def drift_query(resource: ModelOptimization, revision: int, templates: Mapping[str, str] | None = None) -> str:
    """The query template the spec names (from the operator's ``templates``), with
    ``$namespace``, ``$name`` and ``$revision`` filled in, or the default: 1 while the serving
    revision's drift monitor reports drift. The values are a DNS label, a resource name and a
    number, so they cannot break out of a label matcher."""
    namespace = resource.metadata.namespace or "default"
    name = resource.metadata.name
    template = resource.spec.monitoring.prometheus.query_template
    if template is not None and templates is not None and template in templates:
        text = templates[template]
        return text.replace("$namespace", namespace).replace("$name", name).replace("$revision", str(revision))
    return default_drift_query(namespace, name, revision)


SERVED_OUTCOMES = ("ok", "error")
"""The predictor's request outcomes that count in a canary's error rate: the requests it tried to
answer. ``invalid`` and ``too_large`` are the client's fault; counting them, even only in the
total, would let any client move a canary's error rate."""


def canary_error_rate_query(resource: ModelOptimization, revision: int, window_seconds: int) -> str:
    """Share of the canary's served requests that failed on the server over the analysis window:
    ``outcome="error"`` among ``ok`` and ``error``. Requests the predictor refused (invalid, too
    large) count neither as errors nor in the total, so a client sending bad requests can neither
    fail a canary nor water its real errors down."""
    selector = _selector(resource.metadata.namespace or "default", resource.metadata.name, revision)
    served = "|".join(SERVED_OUTCOMES)
    total = f'sum(rate({PREDICTOR_REQUESTS}{{{selector}, outcome=~"{served}"}}[{window_seconds}s]))'
    errors = f'sum(rate({PREDICTOR_REQUESTS}{{{selector}, outcome="error"}}[{window_seconds}s]))'
    return f"({errors} or vector(0)) / {total}"


def canary_served_query(resource: ModelOptimization, revision: int, window_seconds: int) -> str:
    """How many requests the canary served (``ok`` or ``error``) over the analysis window: none
    means its error rate says nothing, whether no traffic reached it or nothing scrapes it."""
    selector = _selector(resource.metadata.namespace or "default", resource.metadata.name, revision)
    served = "|".join(SERVED_OUTCOMES)
    return f'sum(increase({PREDICTOR_REQUESTS}{{{selector}, outcome=~"{served}"}}[{window_seconds}s]))'


def canary_latency_query(resource: ModelOptimization, revision: int, window_seconds: int) -> str:
    """The canary's p95 inference latency in milliseconds over the analysis window."""
    selector = _selector(resource.metadata.namespace or "default", resource.metadata.name, revision)
    buckets = f"sum by (le) (rate({PREDICTOR_INFERENCE_SECONDS}_bucket{{{selector}}}[{window_seconds}s]))"
    return f"histogram_quantile(0.95, {buckets}) * 1000"


def request_rate_query(resource: ModelOptimization, revision: int) -> str:
    """Requests per second to one revision's predictors (all replicas): KEDA's ``rps`` trigger."""
    selector = _selector(resource.metadata.namespace or "default", resource.metadata.name, revision)
    return f"sum(rate({PREDICTOR_REQUESTS}{{{selector}}}[1m]))"


def concurrency_query(resource: ModelOptimization, revision: int) -> str:
    """Requests in flight at one revision's predictors, averaged over a minute: the seconds spent
    in inference per second (Little's law), KEDA's ``concurrency`` trigger."""
    selector = _selector(resource.metadata.namespace or "default", resource.metadata.name, revision)
    return f"sum(rate({PREDICTOR_INFERENCE_SECONDS}_sum{{{selector}}}[1m]))"
