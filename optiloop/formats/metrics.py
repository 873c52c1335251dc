"""Names shared between the drift monitor, which exports them, and the operator, which queries them."""

from __future__ import annotations

DRIFT_DETECTED = "optiloop_drift_detected"
"""1 while the latest evaluation of a revision's window found drift, else 0."""
DRIFT_LABELS = ("namespace", "model", "revision")


def default_drift_query(namespace: str, model: str, revision: int | str) -> str:
    """The PromQL the operator runs by default for one serving revision: 1 while it drifts."""
    selector = f'namespace="{namespace}", model="{model}", revision="{revision}"'
    return f"max by ({', '.join(DRIFT_LABELS)}) ({DRIFT_DETECTED}{{{selector}}})"
