"""One reconcile, as a pure function: the resource, its observed children and the time in; the
new status, the child writes and the Events out.

The loop per revision: tuning Job, then compression Job, then the InferenceService (a canary
when another revision serves), then promotion or rollback. A revision starts when the
resource is new, when a spec change alters what shapes the model (its *fingerprint*), when
a failed revision's spec changes, or when drift is sustained (the timer passes a
:class:`~optiloop.operator.policy.DriftDecision`). Changes that only touch serving settings
update the InferenceService in place.

Every write is idempotent: children have derived names, and a child is replaced only when the
hash of its desired spec differs from the hash recorded on it.

    plan = reconcile(resource, observed, config, now)
    for action in plan.actions: ...          # k8s.apply
    if plan.status != resource.status: ...   # one status write, only when something changed
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..api import ModelOptimization
from ..api.spec import ModelOptimizationSpec
from ..api.status import (
    HISTORY_LIMIT,
    ConditionType,
    DriftStatus,
    ModelOptimizationStatus,
    Phase,
    RevisionRecord,
    Trigger,
)
from . import names
from .builders.jobs import compression_job, tuning_job
from .builders.serving import drift_monitor, inference_service
from .conditions import ConditionStatus, find, set_condition
from .config import OperatorConfig
from .observed import SPEC_HASH_ANNOTATION, Observed, ObservedChild, ObservedJob
from .policy import DriftDecision, judge_canary, schedule_due

FINAL_OUTCOMES = ("Failed", "RolledBack", "Superseded")
TRAINING_FIELDS = ("dataset", "data_quality", "features", "model", "tuning", "regularization", "compression")
DRIFT_CONDITION: dict[str, ConditionStatus] = {"WithinBounds": "True", "PrometheusUnreachable": "Unknown"}


@dataclass(frozen=True)
class Apply:
    """Create the child, or replace it when ``resource_version`` is set (optimistic concurrency)."""

    body: dict[str, Any]
    resource_version: str | None = None

    @property
    def kind(self) -> str:
        return str(self.body["kind"])


@dataclass(frozen=True)
class Delete:
    """Delete a child (a superseded revision's Job, a drift monitor no longer wanted)."""

    api_version: str
    kind: str
    name: str


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


def fingerprint(spec: ModelOptimizationSpec) -> str:
    """Hash of what shapes the model: data, features, search, training, compression, artifact root."""
    shaping = spec.model_dump(mode="json", include=set(TRAINING_FIELDS))
    shaping["storage_uri"] = str(spec.deployment.storage_uri)
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def spec_hash(body: dict[str, Any]) -> str:
    """Hash of a child's desired spec and labels (recorded on it in an annotation)."""
    content = {"spec": body.get("spec"), "labels": body["metadata"].get("labels")}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def retraining_in_flight(status: ModelOptimizationStatus | None) -> bool:
    """Whether the current revision is still being built or analysed."""
    record = _record(status.history, status.revision) if status is not None else None
    return record is not None and record.outcome == "InProgress"


def canary_revision(status: ModelOptimizationStatus | None) -> int | None:
    """The revision being analysed as a canary, whose metrics the next reconcile needs."""
    if status is None or status.revision is None or status.serving_revision in (None, status.revision):
        return None
    record = _record(status.history, status.revision)
    if record is None or record.outcome != "InProgress" or record.deployed_at is None:
        return None
    return record.revision


def _record(history: Sequence[RevisionRecord], revision: int | None) -> RevisionRecord | None:
    return next((r for r in history if r.revision == revision), None) if revision is not None else None


class _Reconcile:
    """The mutable scratch state of one reconcile; :func:`reconcile` is the only entry point."""

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

    # --- helpers -------------------------------------------------------------

    def condition(self, type_: ConditionType, status: ConditionStatus, reason: str, message: str = "") -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type_, status, reason, message, self.generation, self.now
        )

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(Event("Warning" if warning else "Normal", reason, message))

    def record(self, revision: int | None) -> RevisionRecord | None:
        return _record(self.history, revision)

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

    # --- the loop ------------------------------------------------------------

    def run(self, drift: DriftDecision | None) -> Plan:
        if drift is not None:
            self.apply_drift(drift)
        self.maybe_start_revision(drift)
        current = self.record(self.status.revision)
        if current is not None and current.outcome == "InProgress":
            self.build(current)
        self.serve()
        self.monitor()
        self.roll_up()
        self.status.history = self.history[-HISTORY_LIMIT:]
        self.status.observed_generation = self.generation
        return Plan(self.status, self.actions, self.events)

    def apply_drift(self, decision: DriftDecision) -> None:
        self.status.drift = decision.drift
        value = decision.drift.last_value
        status = DRIFT_CONDITION.get(decision.reason, "False")
        if decision.reason == "PrometheusUnreachable":
            message = "the drift query could not be answered; no retraining while it cannot"
        else:
            message = f"drift query returned {value}; {decision.drift.consecutive_drifting} drifting in a row"
        previous = find(self.status.conditions, "DriftWithinBounds")
        if status == "False" and (previous is None or previous.status != "False"):
            self.event("DriftDetected", message, warning=True)
        self.condition("DriftWithinBounds", status, decision.reason, message)

    def maybe_start_revision(self, drift: DriftDecision | None) -> None:
        spec = self.resource.spec
        current = self.record(self.status.revision)
        print_ = fingerprint(spec)
        trigger: Trigger | None = None
        if current is None:
            trigger = "Created"
        elif (current.generation or 0) < self.generation and (
            current.fingerprint != print_ or current.outcome == "Failed"
        ):
            trigger = "SpecChanged"
        elif drift is not None and drift.retrain:
            trigger = "Drift"
        elif schedule_due(spec.monitoring.retraining, self.status, self.now):
            trigger = "Schedule"
        if trigger is None:
            return
        number = max([r.revision for r in self.history] + [self.status.revision or 0]) + 1
        if current is not None and current.outcome == "InProgress":
            current.outcome, current.finished_at = "Superseded", self.now
            current.message = f"superseded by revision {number} ({trigger})"
            for job in self.observed.jobs.values():
                if job.revision == current.revision and job.state == "Running":
                    self.actions.append(Delete("batch/v1", "Job", job.name))
        record = RevisionRecord(
            revision=number,
            trigger=trigger,
            generation=self.generation,
            triggered_at=self.now,
            fingerprint=print_,
            parent_revision=self.status.serving_revision,
        )
        self.history.append(record)
        self.status.revision = number
        self.status.best_trial = None
        if trigger == "Drift":
            self.event("RetrainStarted", f"drift sustained: retraining as revision {number}")
        else:
            self.event("RevisionStarted", f"revision {number} started ({trigger})")

    # --- building a revision -------------------------------------------------

    def build(self, record: RevisionRecord) -> None:
        if record.tuned_at is None and not self.stage(record, "tuning"):
            return
        if record.compressed_at is None and not self.stage(record, "compression"):
            return
        self.deploy(record)

    def stage(self, record: RevisionRecord, component: Literal["tuning", "compression"]) -> bool:
        """Drive one stage Job; True once it has succeeded."""
        n = record.revision
        job = self.observed.jobs.get((component, n))
        condition: ConditionType = "Tuned" if component == "tuning" else "Compressed"
        title = "tuning" if component == "tuning" else "compression"
        if job is None:
            build = tuning_job if component == "tuning" else compression_job
            body = build(self.resource, self.config, n, record.parent_revision)
            self.actions.append(Apply(body))
            name = body["metadata"]["name"]
            # Created (or seen running) before and now missing: someone deleted it.
            previous = find(self.status.conditions, condition)
            if previous is not None and previous.reason in ("JobCreated", "JobRunning"):
                self.event("JobRecreated", f"revision {n}: Job {name} was deleted; created it again", warning=True)
            else:
                self.event(f"{title.capitalize()}Started", f"revision {n}: created Job {name}")
            if component == "tuning" and record.started_at is None:
                record.started_at = self.now
            if component == "tuning":
                self.condition("DataValidated", "Unknown", "Checking", f"Job {name} checks the data first")
            self.condition(condition, "Unknown", "JobCreated", f"revision {n}: Job {name} created")
            return False
        if job.state == "Running":
            if component == "tuning":
                self.condition("DataValidated", "Unknown", "Checking", f"Job {job.name} checks the data first")
            self.condition(condition, "Unknown", "JobRunning", f"revision {n}: Job {job.name} is running")
            return False
        outcome = job.outcome
        if job.state == "Failed" or (outcome is not None and not outcome.succeeded):
            self.fail(record, job, condition)
            return False
        if component == "tuning":
            record.tuned_at = self.now
            best = outcome.best_trial if outcome is not None else None
            self.status.best_trial = best
            record.best_trial = best.number if best is not None else None
            self.condition("DataValidated", "True", "Passed", "every data-quality rule passed")
            summary = f"best trial #{best.number} of {best.trials_completed}" if best is not None else "done"
            self.condition("Tuned", "True", "Succeeded", f"revision {n}: {summary}")
            self.event("TuningSucceeded", f"revision {n}: {summary}")
        else:
            record.compressed_at = self.now
            model = outcome.model if outcome is not None else None
            record.model = model
            if model is not None:
                record.candidate, record.primary_value = model.candidate, model.primary_value
            passed = model is None or model.gates_passed is not False
            message = (outcome.message if outcome is not None else "") or "compressed"
            self.condition("Compressed", "True", "GatesPassed" if passed else "BaselineFallback", message)
            self.event("CompressionSucceeded", f"revision {n}: {message}"[:1024])
        return True

    def fail(self, record: RevisionRecord, job: ObservedJob, condition: ConditionType) -> None:
        outcome = job.outcome
        data_quality = outcome is not None and outcome.reason == "DataQualityFailed"
        reason = "DataQualityFailed" if data_quality else "JobFailed"
        details = outcome.message if outcome is not None and outcome.message else ""
        job_part = f"Job {job.name} failed" + (f" ({job.reason}: {job.message})" if job.reason else "")
        message = f"{job_part}: {details}" if details else job_part
        if data_quality:
            self.condition("DataValidated", "False", reason, details)
        self.condition(condition, "False", reason, message)
        record.outcome, record.finished_at, record.message = "Failed", self.now, message[:4096]
        self.event("StageFailed", f"revision {record.revision}: {message}"[:1024], warning=True)

    # --- serving -------------------------------------------------------------

    def deploy(self, record: RevisionRecord) -> None:
        """Mark the revision deployed; as a canary when another revision serves."""
        serving = self.status.serving_revision
        canary = serving is not None and serving != record.revision
        if record.deployed_at is None:
            record.deployed_at = self.now
            if canary:
                percent = self.resource.spec.deployment.canary_traffic_percent
                self.event(
                    "CanaryStarted", f"revision {record.revision} deployed as a canary with {percent}% of traffic"
                )
            else:
                self.event("Deploying", f"revision {record.revision} deployed")

    def desired_service(self) -> tuple[int, bool] | None:
        current = self.record(self.status.revision)
        serving = self.status.serving_revision
        if current is not None and current.outcome == "InProgress" and current.deployed_at is not None:
            if serving is None or serving == current.revision:
                return current.revision, False
            return current.revision, True
        return (serving, False) if serving is not None else None

    def serve(self) -> None:
        desired = self.desired_service()
        if desired is None:
            return
        revision, canary = desired
        body = inference_service(self.resource, self.config, revision, canary=canary)
        observed = self.observed.service
        current = self.ensure(body, observed)
        ready = current and observed is not None and observed.ready
        if ready and observed is not None and observed.url:
            self.status.url = observed.url
        record = self.record(revision)
        if canary and record is not None:
            self.analyse_canary(record, ready)
        elif record is not None and record.outcome == "InProgress":
            if ready:
                self.status.serving_revision = revision
                record.outcome = "Serving"
                self.status.model = record.model
                self.event("Serving", f"revision {revision} serves at {self.status.url}")
                self.condition("Deployed", "True", "Serving", f"revision {revision} serves at {self.status.url}")
            else:
                self.condition("Deployed", "Unknown", "Deploying", f"waiting for revision {revision} to be Ready")
        elif ready:
            self.condition("Deployed", "True", "Serving", f"revision {revision} serves at {self.status.url}")
        elif not current or (observed is not None and observed.updating):
            self.condition("Deployed", "Unknown", "Updating", f"applying serving settings to revision {revision}")
        else:
            self.condition("Deployed", "Unknown", "PredictorNotReady", "the InferenceService is not Ready")

    def analyse_canary(self, record: RevisionRecord, ready: bool) -> None:
        deployment = self.resource.spec.deployment
        analysis = deployment.canary_analysis
        if analysis.max_latency_p95_ms is None and self.resource.spec.compression.gates.max_latency_p95_ms:
            analysis = analysis.model_copy(
                update={"max_latency_p95_ms": self.resource.spec.compression.gates.max_latency_p95_ms}
            )
        metrics = self.observed.canary
        started = record.deployed_at or self.now
        decision = judge_canary(
            ready,
            started,
            self.now,
            analysis,
            metrics.error_rate if metrics is not None else None,
            metrics.latency_p95_ms if metrics is not None else None,
        )
        previous = self.status.serving_revision
        n = record.revision
        if decision.action == "wait":
            self.condition("Deployed", "Unknown", decision.reason, f"revision {n} is a canary next to {previous}")
            return
        # The canary's InferenceService was just planned; the final one replaces it.
        self.actions = [a for a in self.actions if not (isinstance(a, Apply) and a.kind == "InferenceService")]
        if decision.action == "promote":
            old = self.record(previous)
            if old is not None:
                old.outcome, old.finished_at = "Superseded", self.now
                old.message = f"replaced by revision {n}"
            record.outcome, record.promoted_at = "Promoted", self.now
            self.status.serving_revision = n
            self.status.model = record.model
            target, reason = n, "CanaryPromoted"
            message = f"canary revision {n} promoted to all traffic ({decision.reason})"
        else:
            record.outcome, record.finished_at = "RolledBack", self.now
            record.message = f"rolled back: {decision.reason}"
            target, reason = (previous if previous is not None else n), "CanaryRolledBack"
            message = f"canary revision {n} rolled back to revision {target} ({decision.reason})"
        self.event(reason, message, warning=reason == "CanaryRolledBack")
        self.ensure(inference_service(self.resource, self.config, target, canary=False), self.observed.service)
        self.condition("Deployed", "True", reason, message)

    def monitor(self) -> None:
        monitoring = self.resource.spec.monitoring
        serving = self.status.serving_revision
        existing = self.observed.monitor
        if not monitoring.enabled or serving is None:
            for child in existing.values():
                api_version = "apps/v1" if child.kind == "Deployment" else "v1"
                self.actions.append(Delete(api_version, child.kind, child.name))
            reason = "MonitoringDisabled" if not monitoring.enabled else "NotServing"
            if find(self.status.conditions, "DriftWithinBounds") is None or not monitoring.enabled:
                self.condition("DriftWithinBounds", "Unknown", reason, "no drift monitor runs")
            return
        try:
            bodies = drift_monitor(self.resource, self.config, serving)
        except ValueError as exc:
            self.condition("DriftWithinBounds", "Unknown", "MonitorUnavailable", str(exc))
            return
        for body in bodies:
            self.ensure(body, existing.get(body["kind"]))
        if self.status.drift is None:
            self.status.drift = DriftStatus()
        drift = find(self.status.conditions, "DriftWithinBounds")
        if drift is None or drift.reason in ("NotServing", "MonitoringDisabled", "MonitorUnavailable"):
            monitor = names.drift_monitor(self.resource.metadata.name)
            message = f"{monitor} watches the inputs; the first evaluation is pending"
            self.condition("DriftWithinBounds", "Unknown", "NotEvaluated", message)

    # --- roll-up -------------------------------------------------------------

    def roll_up(self) -> None:
        current = self.record(self.status.revision)
        serving = self.status.serving_revision
        failed = current is not None and current.outcome == "Failed"
        # A revision the user asked for (a spec change) that failed makes the resource not Ready,
        # even while an older revision still serves; a failed drift retrain does not.
        user_failed = failed and current is not None and current.trigger in ("Created", "SpecChanged")
        deployed = find(self.status.conditions, "Deployed")
        phase: Phase
        if user_failed and current is not None:
            reason = _failure_reason(self.status)
            self.condition("Ready", "False", reason, f"revision {current.revision}: {current.message}")
            phase = "Failed"
        elif serving is not None:
            if deployed is not None and deployed.reason == "PredictorNotReady":
                self.condition("Ready", "Unknown", "PredictorNotReady", deployed.message)
            else:
                self.condition("Ready", "True", "Serving", f"revision {serving} serves at {self.status.url}")
            building = current is not None and current.outcome == "InProgress"
            phase = (
                ("Canary" if current is not None and current.deployed_at else "Retraining") if building else "Serving"
            )
        else:
            phase = _building_phase(current)
            self.condition("Ready", "Unknown", phase, f"revision {self.status.revision}: {phase.lower()}")
        self.status.phase = phase


def _failure_reason(status: ModelOptimizationStatus) -> str:
    for type_ in ("DataValidated", "Tuned", "Compressed"):
        condition = find(status.conditions, type_)
        if condition is not None and condition.status == "False":
            return condition.reason
    return "JobFailed"


def _building_phase(record: RevisionRecord | None) -> Phase:
    if record is None or record.tuned_at is None:
        return "Tuning"
    if record.compressed_at is None:
        return "Compressing"
    return "Deploying"


def reconcile(
    resource: ModelOptimization,
    observed: Observed,
    config: OperatorConfig,
    now: datetime,
    drift: DriftDecision | None = None,
) -> Plan:
    """Plan one reconcile of ``resource`` (see the module docstring)."""
    return _Reconcile(resource, observed, config, now).run(drift)


def invalid_spec(
    status: ModelOptimizationStatus | None, generation: int, message: str, now: datetime
) -> ModelOptimizationStatus:
    """The status of a resource whose spec does not validate: ``Ready=False, reason=InvalidSpec``."""
    return _blocked(status, generation, "InvalidSpec", message, now, "Failed")


def child_name_taken(
    status: ModelOptimizationStatus | None, generation: int, message: str, now: datetime
) -> ModelOptimizationStatus:
    """The status of a resource whose child cannot be created because an object it does not own
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
