"""The stage Jobs of a revision: tuning, then compression. Each stage is one class; the flow
they share (create the Job, wait for it, fail the revision or record the outcome) is written
once in :func:`drive`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from ...api import ModelOptimization
from ...api.jobs import StageOutcome
from ...api.status import ConditionType, RevisionRecord
from ..builders.jobs import compression_job, tuning_job
from ..conditions import find
from ..config import OperatorConfig
from ..observed import ObservedJob
from .draft import Draft
from .plan import Apply


class Stage:
    """What one stage Job adds to the shared flow."""

    component: ClassVar[Literal["tuning", "compression"]]
    condition: ClassVar[ConditionType]
    started_reason: ClassVar[str]

    def done(self, record: RevisionRecord) -> bool:
        """Whether the revision already has this stage's outcome."""
        raise NotImplementedError

    def job(self, resource: ModelOptimization, config: OperatorConfig, record: RevisionRecord) -> dict[str, Any]:
        """The stage's Job for ``record``'s revision."""
        raise NotImplementedError

    def waiting(self, draft: Draft, record: RevisionRecord, job: str, created: bool) -> None:
        """What else to record while its Job is being ``created`` or running."""

    def succeeded(self, draft: Draft, record: RevisionRecord, outcome: StageOutcome | None) -> None:
        """Record the outcome of the Job that succeeded, with the stage's condition and Event."""
        raise NotImplementedError


class Tuning(Stage):
    """Data quality, features and the search; the first stage of a revision."""

    component = "tuning"
    condition = "Tuned"
    started_reason = "TuningStarted"

    def done(self, record: RevisionRecord) -> bool:
        return record.tuned_at is not None

    def job(self, resource: ModelOptimization, config: OperatorConfig, record: RevisionRecord) -> dict[str, Any]:
        return tuning_job(resource, config, record.revision, record.parent_revision)

    def waiting(self, draft: Draft, record: RevisionRecord, job: str, created: bool) -> None:
        if created and record.started_at is None:
            record.started_at = draft.now
        draft.condition("DataValidated", "Unknown", "Checking", f"Job {job} checks the data first")

    def succeeded(self, draft: Draft, record: RevisionRecord, outcome: StageOutcome | None) -> None:
        n = record.revision
        record.tuned_at = draft.now
        best = outcome.best_trial if outcome is not None else None
        draft.status.best_trial = best
        record.best_trial = best.number if best is not None else None
        draft.condition("DataValidated", "True", "Passed", "every data-quality rule passed")
        summary = f"best trial #{best.number} of {best.trials_completed}" if best is not None else "done"
        draft.condition("Tuned", "True", "Succeeded", f"revision {n}: {summary}")
        draft.event("TuningSucceeded", f"revision {n}: {summary}")


class Compression(Stage):
    """Compression under the gates and export of the chosen model."""

    component = "compression"
    condition = "Compressed"
    started_reason = "CompressionStarted"

    def done(self, record: RevisionRecord) -> bool:
        return record.compressed_at is not None

    def job(self, resource: ModelOptimization, config: OperatorConfig, record: RevisionRecord) -> dict[str, Any]:
        return compression_job(resource, config, record.revision, record.parent_revision)

    def succeeded(self, draft: Draft, record: RevisionRecord, outcome: StageOutcome | None) -> None:
        record.compressed_at = draft.now
        model = outcome.model if outcome is not None else None
        record.model = model
        if model is not None:
            record.candidate, record.primary_value = model.candidate, model.primary_value
        passed = model is None or model.gates_passed is not False
        message = (outcome.message if outcome is not None else "") or "compressed"
        draft.condition("Compressed", "True", "GatesPassed" if passed else "BaselineFallback", message)
        draft.event("CompressionSucceeded", f"revision {record.revision}: {message}"[:1024])


STAGES: tuple[Stage, ...] = (Tuning(), Compression())
"""The stages of a revision, in order."""


def build(draft: Draft, record: RevisionRecord) -> bool:
    """Drive the revision's stages in order; True once every one has succeeded."""
    return all(stage.done(record) or drive(draft, record, stage) for stage in STAGES)


def drive(draft: Draft, record: RevisionRecord, stage: Stage) -> bool:
    """Drive one stage Job; True once it has succeeded."""
    n = record.revision
    job = draft.observed.jobs.get((stage.component, n))
    if job is None:
        body = stage.job(draft.resource, draft.config, record)
        draft.actions.append(Apply(body))
        name = body["metadata"]["name"]
        # Created (or seen running) before and now missing: someone deleted it.
        previous = find(draft.status.conditions, stage.condition)
        if previous is not None and previous.reason in ("JobCreated", "JobRunning", "JobPodNotStarting"):
            draft.event("JobRecreated", f"revision {n}: Job {name} was deleted; created it again", warning=True)
        else:
            draft.event(stage.started_reason, f"revision {n}: created Job {name}")
        stage.waiting(draft, record, name, created=True)
        draft.condition(stage.condition, "Unknown", "JobCreated", f"revision {n}: Job {name} created")
        return False
    if job.state == "Running":
        stage.waiting(draft, record, job.name, created=False)
        if job.stuck:
            message = f"revision {n}: Job {job.name}'s pod cannot start: {job.stuck}"
            previous = find(draft.status.conditions, stage.condition)
            if previous is None or previous.reason != "JobPodNotStarting":
                draft.event("JobPodNotStarting", message, warning=True)
            draft.condition(stage.condition, "Unknown", "JobPodNotStarting", message)
        else:
            draft.condition(stage.condition, "Unknown", "JobRunning", f"revision {n}: Job {job.name} is running")
        return False
    if job.state == "Failed" or (job.outcome is not None and not job.outcome.succeeded):
        fail(draft, record, job, stage.condition)
        return False
    stage.succeeded(draft, record, job.outcome)
    return True


def fail(draft: Draft, record: RevisionRecord, job: ObservedJob, condition: ConditionType) -> None:
    """The revision failed in ``job``: the stage's condition, the record and a Warning say why."""
    outcome = job.outcome
    data_quality = outcome is not None and outcome.reason == "DataQualityFailed"
    reason = "DataQualityFailed" if data_quality else "JobFailed"
    details = outcome.message if outcome is not None and outcome.message else ""
    job_part = f"Job {job.name} failed" + (f" ({job.reason}: {job.message})" if job.reason else "")
    message = f"{job_part}: {details}" if details else job_part
    if data_quality:
        draft.condition("DataValidated", "False", reason, details)
    draft.condition(condition, "False", reason, message)
    record.outcome, record.finished_at, record.message = "Failed", draft.now, message[:4096]
    draft.event("StageFailed", f"revision {record.revision}: {message}"[:1024], warning=True)
