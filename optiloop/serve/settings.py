"""The predictor's settings from the environment (limits, threads, workers, ports)."""

from __future__ import annotations

import os


def positive_env(name: str, default: int) -> int:
    """``$name`` as a positive integer, or ``default`` when unset or empty; raises ``ValueError``
    naming the variable for anything else."""
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {text!r}")
    return value
