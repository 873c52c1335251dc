"""Pure helpers for ``status.conditions``: set one condition without churning its transition
time, and order the list the same way every time (so an unchanged status compares equal)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from ..api.status import CONDITION_TYPES, Condition, ConditionType

ConditionStatus = Literal["True", "False", "Unknown"]


def set_condition(
    conditions: Sequence[Condition],
    type_: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """``conditions`` with ``type_`` set; ``lastTransitionTime`` moves only when ``status`` does."""
    existing = find(conditions, type_)
    since = existing.last_transition_time if existing is not None and existing.status == status else now
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:32768],
        last_transition_time=since,
        observed_generation=generation,
    )
    others = [c for c in conditions if c.type != type_]
    return sorted([*others, updated], key=lambda c: CONDITION_TYPES.index(c.type))


def find(conditions: Sequence[Condition], type_: ConditionType) -> Condition | None:
    """The condition of ``type_``, if set."""
    return next((c for c in conditions if c.type == type_), None)


def is_ready(conditions: Sequence[Condition], generation: int | None) -> bool:
    """``Ready=True`` computed for the current generation (a stale ``Ready`` never counts)."""
    ready = find(conditions, "Ready")
    return ready is not None and ready.status == "True" and ready.observed_generation == generation
