"""The operator's own Prometheus metrics (Kopf exports none)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RECONCILE_SECONDS = Histogram(
    "optiloop_operator_reconcile_duration_seconds",
    "Time of one reconcile: reading the resource and its children, planning, writing.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RECONCILE_ERRORS = Counter("optiloop_operator_reconcile_errors_total", "Reconciles that failed, by reason.", ["reason"])
CHILDREN_CREATED = Counter("optiloop_operator_children_created_total", "Children created, by kind.", ["kind"])
RECONCILES_COALESCED = Counter(
    "optiloop_operator_reconciles_coalesced_total",
    "Reconcile requests dropped because one for the same resource was already waiting to run.",
)
STATUS_WRITES = Counter("optiloop_operator_status_writes_total", "Status writes (only when the status changed).")
STATUS_REBASES = Counter(
    "optiloop_operator_status_rebases_total",
    "Status writes redone on a newer resourceVersion whose spec and status were unchanged.",
)
DRIFT_EVALUATIONS = Counter(
    "optiloop_operator_drift_evaluations_total", "Drift evaluations, by outcome (the decision's reason).", ["outcome"]
)
RETRAINS = Counter("optiloop_operator_retrains_triggered_total", "New revisions started because drift was sustained.")
CANARIES = Counter(
    "optiloop_operator_canaries_total", "Canary decisions, by outcome (promoted, rolled_back).", ["outcome"]
)


def serve_metrics(port: int, address: str) -> None:
    """Expose ``/metrics`` on ``address:port`` from a background thread."""
    start_http_server(port, addr=address)
