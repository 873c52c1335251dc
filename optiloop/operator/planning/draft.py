"""The scratch state of one reconcile: the resource and what was observed (read only), and the
status, history, child writes and Events being planned. Each concern module reads and updates
one :class:`Draft`; :func:`optiloop.operator.reconcile.reconcile` runs them in order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ...api import ModelOptimization
from ...api.status import ConditionType, ModelOptimizationStatus, RevisionRecord
from ..conditions import ConditionStatus, set_condition
from ..config import OperatorConfig
from ..observed import SPEC_HASH_ANNOTATION, Observed, ObservedChild
from ..topology import Topology, Unservable, resolve
from .plan import Action, Apply, Event, spec_hash


def find_record(history: Sequence[RevisionRecord], revision: int | None) -> RevisionRecord | None:
    """The history record of ``revision``, if kept."""
    return next((r for r in history if r.revision == revision), None) if revision is not None else None


class Draft:
    """One reconcile's work in progress."""

    def __init__(self, resource: ModelOptimization, observed: Observed, config: OperatorConfig, now: datetime) -> None:
        self.resource = resource
        self.observed = observed
        self.config = config
        self.now = now
        self.generation = resource.metadata.generation or 0
        self.status = (resource.status or ModelOptimizationStatus()).model_copy(deep=True)
        self.history = [r.model_copy() for r in self.status.history]
        self.actions: list[Action] = []
        self.events: list[Event] = []
        self.topology: Topology | Unservable = resolve(resource, observed.capabilities, config)
        self.settling = False
        """Children are changing over (traffic moving between revisions): run again at the next tick."""

    def condition(self, type_: ConditionType, status: ConditionStatus, reason: str, message: str = "") -> None:
        """Set one condition for the current generation."""
        self.status.conditions = set_condition(
            self.status.conditions, type_, status, reason, message, self.generation, self.now
        )

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        """Plan an Event on the resource."""
        self.events.append(Event("Warning" if warning else "Normal", reason, message))

    def record(self, revision: int | None) -> RevisionRecord | None:
        """The (mutable) history record of ``revision``."""
        return find_record(self.history, revision)

    @property
    def current(self) -> RevisionRecord | None:
        """The record of the latest revision, the one being built or serving."""
        return self.record(self.status.revision)

    def ensure(self, body: dict[str, Any], observed: ObservedChild | None) -> bool:
        """Create or replace ``body`` unless the child already has its spec; True when up to date."""
        digest = spec_hash(body)
        # A fresh metadata dict: builders may share one between children (the hash is per child).
        body["metadata"] = {**body["metadata"], "annotations": {**body["metadata"].get("annotations", {})}}
        body["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = digest
        if observed is None:
            self.actions.append(Apply(body))
            return False
        if observed.spec_hash != digest:
            self.actions.append(Apply(body, observed.resource_version))
            return False
        return True
