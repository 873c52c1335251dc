"""Names of the children of a ModelOptimization: derived, never random, so a retried create
finds its own earlier child (``AlreadyExists`` on a name we own is success).

Resource names are at most 40 characters (a CRD rule), so every derived name stays within
the 63 characters of a DNS label.
"""

from __future__ import annotations


def tuning_job(resource: str, revision: int) -> str:
    """``{name}-tune-r{revision}``."""
    return f"{resource}-tune-r{revision}"


def compression_job(resource: str, revision: int) -> str:
    """``{name}-compress-r{revision}``."""
    return f"{resource}-compress-r{revision}"


def drift_monitor(resource: str) -> str:
    """``{name}-drift``: the drift monitor's Deployment and Service."""
    return f"{resource}-drift"


def inference_service(resource: str) -> str:
    """The InferenceService carries the resource's own name, so its URL is predictable."""
    return resource


def revision_service(resource: str, revision: int) -> str:
    """``{name}-r{revision}``: one InferenceService per revision in Standard mode (KServe names its
    Deployment and Service ``{name}-r{revision}-predictor``)."""
    return f"{resource}-r{revision}"


def predictor_service(inference_service: str) -> str:
    """The Service KServe gives an InferenceService's predictor in Standard mode."""
    return f"{inference_service}-predictor"


def route(resource: str) -> str:
    """The HTTPRoute in front of the revisions carries the resource's own name."""
    return resource


def probe_job(resource: str, revision: int) -> str:
    """``{name}-probe-r{revision}``: the Job that sends a blue/green revision synthetic requests."""
    return f"{resource}-probe-r{revision}"
