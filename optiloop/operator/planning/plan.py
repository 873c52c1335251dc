"""What one reconcile decides: child writes, Events, the new status, and when to run again.

Every write is idempotent: children have derived names, and a child is replaced only when the
hash of its desired spec (:func:`spec_hash`) differs from the hash recorded on it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ...api.spec import ModelOptimizationSpec
from ...api.status import ModelOptimizationStatus

TRAINING_FIELDS = ("dataset", "data_quality", "features", "model", "tuning", "regularization", "compression")


@dataclass(frozen=True)
class Apply:
    """Create the child, or replace it when ``resource_version`` is set (optimistic concurrency)."""

    body: dict[str, Any]
    resource_version: str | None = None

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])


@dataclass(frozen=True)
class Delete:
    """Delete a child (a superseded revision's Job, a drift monitor no longer wanted), only while
    it is still the object ``uid`` that was observed as ours."""

    api_version: str
    kind: str
    name: str
    uid: str | None = None


@dataclass(frozen=True)
class Event:
    """An Event to post on the resource."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Action = Apply | Delete


@dataclass
class Plan:
    """What one reconcile decided."""

    status: ModelOptimizationStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_at: datetime | None = None
    """When the planner next needs to run although nothing changed: a drift evaluation, a
    canary's next look at its metrics, a scheduled retrain. None: only an event (a spec change,
    a child's change) brings new work. A time at or before the plan's ``now``: the next tick."""


def fingerprint(spec: ModelOptimizationSpec) -> str:
    """Hash of what shapes the model: data, features, search, training, compression, artifact root."""
    shaping = spec.model_dump(mode="json", include=set(TRAINING_FIELDS))
    shaping["storage_uri"] = str(spec.deployment.storage_uri)
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def spec_hash(body: dict[str, Any]) -> str:
    """Hash of a child's desired spec and labels (recorded on it in an annotation)."""
    content = {"spec": body.get("spec"), "labels": body["metadata"].get("labels")}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
