"""The status of a resource the planner cannot plan for: an invalid spec, or a child name held
by an object the resource does not own."""

from __future__ import annotations

from datetime import datetime

from ...api.status import ModelOptimizationStatus, Phase
from ..conditions import set_condition


def invalid_spec(
    status: ModelOptimizationStatus | None, generation: int, message: str, now: datetime
) -> ModelOptimizationStatus:
    """The status of a resource whose spec does not validate: ``Ready=False, reason=InvalidSpec``."""
    return _blocked(status, generation, "InvalidSpec", message, now, "Failed")


def child_name_taken(
    status: ModelOptimizationStatus | None, generation: int, message: str, now: datetime
) -> ModelOptimizationStatus:
    """The status of a resource whose child cannot be written because an object it does not own
    holds the child's name: ``Ready=False, reason=ChildNameTaken``, the rest as it was (the
    operator retries, and carries on once the name is free)."""
    return _blocked(status, generation, "ChildNameTaken", message, now, None)


def _blocked(
    status: ModelOptimizationStatus | None,
    generation: int,
    reason: str,
    message: str,
    now: datetime,
    phase: Phase | None,
) -> ModelOptimizationStatus:
    result = (status or ModelOptimizationStatus()).model_copy(deep=True)
    result.conditions = set_condition(result.conditions, "Ready", "False", reason, message, generation, now)
    result.observed_generation = generation
    result.phase = phase or result.phase or "Pending"
    return result
