"""Metric names shared between the drift monitor and the predictor, which export them, and the
operator, which queries them."""

from __future__ import annotations

DRIFT_DETECTED = "optiloop_drift_detected"
"""1 while the latest evaluation of a revision's window found drift, else 0."""
DRIFT_LABELS = ("namespace", "model", "revision")
PREDICTOR_REQUESTS = "optiloop_predictor_requests_total"
"""The predictor's requests by model, revision, protocol and outcome: canary error rates, request rates."""
PREDICTOR_INFERENCE_SECONDS = "optiloop_predictor_inference_seconds"
"""The predictor's time per request (a histogram, queried through its ``_bucket`` and ``_sum`` series)."""


def default_drift_query(namespace: str, model: str, revision: int | str) -> str:
    """The PromQL the operator runs by default for one serving revision: 1 while it drifts."""
    selector = f'namespace="{namespace}", model="{model}", revision="{revision}"'
    return f"max by ({', '.join(DRIFT_LABELS)}) ({DRIFT_DETECTED}{{{selector}}})"
