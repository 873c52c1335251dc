"""The pure reconcile: which children it writes, which revision it starts, and the status it
computes, across a revision's whole life (tuning to canary), failures and spec changes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from optiloop.api import ModelOptimization
from optiloop.api.jobs import StageOutcome
from optiloop.api.status import DriftStatus, ModelOptimizationStatus, RevisionRecord
from optiloop.operator.capabilities import Capabilities, KServeDefault
from optiloop.operator.config import OperatorConfig
from optiloop.operator.observed import SPEC_HASH_ANNOTATION, CanaryMetrics, Observed, ObservedChild, ObservedJob
from optiloop.operator.planning.blocked import invalid_spec
from optiloop.operator.planning.plan import Apply, Delete, Plan, fingerprint
from optiloop.operator.policy import DriftDecision
from optiloop.operator.reconcile import reconcile

CONFIG = OperatorConfig(jobs_image="jobs:1", predictor_image="serve:1", drift_image="drift:1")
KNATIVE_CLUSTER = Capabilities(
    kserve=True, knative=True, kserve_default=KServeDefault("knative", "kserve/inferenceservice-config")
)
"""A cluster running KServe in its default (Knative) mode: one InferenceService, canaryTrafficPercent."""


def seen(**observed: Any) -> Observed:
    """What the operator observed, on :data:`KNATIVE_CLUSTER` unless told otherwise."""
    return Observed(**{"capabilities": KNATIVE_CLUSTER, **observed})


def one(child: ObservedChild) -> dict[str, ObservedChild]:
    """An observed InferenceService, keyed by name as :class:`Observed` holds them."""
    return {child.name: child}


T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TUNED = StageOutcome.model_validate(
    {"stage": "tuning", "succeeded": True, "reason": "Succeeded",
     "bestTrial": {"number": 4, "trialsCompleted": 9, "values": [{"metric": "accuracy", "value": 0.95}]}}
)  # fmt: skip
COMPRESSED = StageOutcome.model_validate(
    {"stage": "compression", "succeeded": True, "reason": "Succeeded", "message": "chose 1-prune",
     "model": {"candidate": "1-prune", "primaryMetric": "accuracy", "primaryValue": 0.94, "gatesPassed": True}}
)  # fmt: skip


def resource(generation: int = 1, status: ModelOptimizationStatus | None = None, **spec: Any) -> ModelOptimization:
    body: dict[str, Any] = {
        "dataset": {"uri": "builtin://iris"},
        "deployment": {"storageUri": "pvc://models/iris", "canaryTrafficPercent": 25},
        **spec,
    }
    return ModelOptimization.model_validate(
        {
            "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "generation": generation},
            "spec": body,
            "status": status.model_dump(by_alias=True) if status is not None else None,
        }
    )


def job(component: str, revision: int, state: str, outcome: StageOutcome | None = None) -> ObservedJob:
    prefix = "tune" if component == "tuning" else "compress"
    return ObservedJob(f"iris-{prefix}-r{revision}", component, revision, state, outcome=outcome)  # type: ignore[arg-type]


def child_from(plan: Plan, kind: str, ready: bool = True) -> ObservedChild:
    """The child as it exists after ``plan`` was applied (and its controller acted, when ``ready``)."""
    body = next(a.body for a in plan.actions if isinstance(a, Apply) and a.kind == kind)
    return ObservedChild(
        kind=kind,
        name=body["metadata"]["name"],
        resource_version="7",
        spec_hash=body["metadata"]["annotations"][SPEC_HASH_ANNOTATION],  # as stored by the API server
        revision=int(body["metadata"]["labels"]["optiloop.dev/revision"]),
        ready=ready,
        url="http://iris.ml.example.com" if ready else None,
    )


def kinds(plan: Plan) -> list[tuple[str, str]]:
    return [(type(a).__name__, a.kind if isinstance(a, Apply) else f"{a.kind}/{a.name}") for a in plan.actions]


def condition(plan: Plan, type_: str) -> tuple[str, str]:
    found = plan.status.condition(type_)  # type: ignore[arg-type]
    assert found is not None, type_
    return found.status, found.reason


def serve_revision_one() -> tuple[ModelOptimization, Observed, Plan]:
    """Walk revision 1 from creation to serving; returns the last resource, observation and plan."""
    plan = reconcile(resource(), seen(), CONFIG, T0)
    tuned = seen(jobs={("tuning", 1): job("tuning", 1, "Succeeded", TUNED)})
    plan = reconcile(resource(status=plan.status), tuned, CONFIG, T0 + timedelta(minutes=1))
    both = seen(jobs={**tuned.jobs, ("compression", 1): job("compression", 1, "Succeeded", COMPRESSED)})
    plan = reconcile(resource(status=plan.status), both, CONFIG, T0 + timedelta(minutes=2))
    observed = seen(jobs=both.jobs, services=one(child_from(plan, "InferenceService")))
    plan = reconcile(resource(status=plan.status), observed, CONFIG, T0 + timedelta(minutes=3))
    monitor = {k: child_from(plan, k) for k in ("Deployment", "Service", "NetworkPolicy")}
    observed = replace(observed, monitor=monitor)
    return resource(status=plan.status), observed, plan


def test_a_new_resource_gets_revision_one_and_its_tuning_job() -> None:
    plan = reconcile(resource(), seen(), CONFIG, T0)
    assert kinds(plan) == [("Apply", "Job")]
    assert plan.actions[0].body["metadata"]["name"] == "iris-tune-r1"  # type: ignore[union-attr]
    assert plan.status.revision == 1
    assert plan.status.observed_generation == 1
    assert condition(plan, "Ready") == ("Unknown", "Tuning")
    assert condition(plan, "Tuned") == ("Unknown", "JobCreated")
    record = plan.status.history[0]
    assert (record.trigger, record.outcome, record.started_at) == ("Created", "InProgress", T0)
    assert record.fingerprint == fingerprint(resource().spec)
    assert [e.reason for e in plan.events] == ["RevisionStarted", "TuningStarted"]


def test_a_tuning_job_whose_pod_cannot_start_says_why_on_the_resource_and_warns_once() -> None:
    created = reconcile(resource(), seen(), CONFIG, T0)
    stuck = replace(job("tuning", 1, "Running"), stuck='ErrImageNeverPull: image "optiloop/jobs:1" is not present')
    observed = seen(jobs={("tuning", 1): stuck})
    plan = reconcile(resource(status=created.status), observed, CONFIG, T0 + timedelta(seconds=30))
    assert condition(plan, "Tuned") == ("Unknown", "JobPodNotStarting")
    tuned = plan.status.condition("Tuned")
    assert tuned is not None
    assert "Job iris-tune-r1's pod cannot start: ErrImageNeverPull" in tuned.message
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "JobPodNotStarting")]
    again = reconcile(resource(status=plan.status), observed, CONFIG, T0 + timedelta(seconds=60))
    assert again.events == [], "one Warning, not one per look"
    started = seen(jobs={("tuning", 1): job("tuning", 1, "Running")})
    pulled = reconcile(resource(status=again.status), started, CONFIG, T0 + timedelta(seconds=90))
    assert condition(pulled, "Tuned") == ("Unknown", "JobRunning")


def test_a_running_job_changes_nothing_and_a_repeat_reconcile_is_a_no_op() -> None:
    first = reconcile(resource(), seen(), CONFIG, T0)
    running = seen(jobs={("tuning", 1): job("tuning", 1, "Running")})
    second = reconcile(resource(status=first.status), running, CONFIG, T0 + timedelta(seconds=5))
    assert second.actions == []
    assert condition(second, "Tuned") == ("Unknown", "JobRunning")
    third = reconcile(resource(status=second.status), running, CONFIG, T0 + timedelta(seconds=9))
    assert third.actions == []
    assert third.events == []
    assert third.status == second.status


def test_a_revision_goes_from_tuning_to_compression_to_serving() -> None:
    final, observed, plan = serve_revision_one()
    assert plan.status.serving_revision == 1
    assert plan.status.best_trial is not None
    assert plan.status.best_trial.number == 4
    assert plan.status.model is not None
    assert plan.status.model.candidate == "1-prune"
    assert plan.status.url == "http://iris.ml.example.com"
    assert plan.status.phase == "Serving"
    for type_ in ("DataValidated", "Tuned", "Compressed", "Deployed", "Ready"):
        assert condition(plan, type_)[0] == "True", type_
    assert condition(plan, "DriftWithinBounds") == ("Unknown", "NotEvaluated")
    record = plan.status.history[0]
    assert (record.outcome, record.best_trial, record.candidate, record.primary_value) == (
        "Serving",
        4,
        "1-prune",
        0.94,
    )
    # Fully converged: nothing to write.
    again = reconcile(final, observed, CONFIG, T0 + timedelta(minutes=4))
    assert again.actions == []
    assert again.status == final.status


def test_a_deleted_job_of_a_finished_stage_is_not_recreated_but_a_missing_child_is() -> None:
    final, observed, _ = serve_revision_one()
    plan = reconcile(final, replace(observed, jobs={}, services={}), CONFIG, T0 + timedelta(minutes=5))
    assert kinds(plan) == [("Apply", "InferenceService")]


@pytest.mark.parametrize(
    ("outcome", "ready_reason", "data_validated"),
    [
        (None, "JobFailed", ("Unknown", "Checking")),
        (StageOutcome(stage="tuning", succeeded=False, reason="DataQualityFailed", message="minRows: 3 < 50"),
         "DataQualityFailed", ("False", "DataQualityFailed")),
    ],
)  # fmt: skip
def test_a_failed_tuning_job_makes_the_resource_not_ready_until_the_spec_changes(
    outcome: StageOutcome | None, ready_reason: str, data_validated: tuple[str, str]
) -> None:
    first = reconcile(resource(), seen(), CONFIG, T0)
    failed = ObservedJob("iris-tune-r1", "tuning", 1, "Failed", "BackoffLimitExceeded", "too many failures", outcome)
    observed = seen(jobs={("tuning", 1): failed})
    plan = reconcile(resource(status=first.status), observed, CONFIG, T0 + timedelta(minutes=1))
    assert condition(plan, "Ready") == ("False", ready_reason)
    assert condition(plan, "DataValidated") == data_validated
    assert plan.status.phase == "Failed"
    assert plan.status.history[0].outcome == "Failed"
    assert "BackoffLimitExceeded" in plan.status.history[0].message
    assert [e.type for e in plan.events] == ["Warning"]
    # The same spec: wait. A new generation (any change): a new revision.
    assert reconcile(resource(status=plan.status), observed, CONFIG, T0 + timedelta(minutes=2)).actions == []
    retried = reconcile(resource(2, plan.status, jobs={"backoffLimit": 3}), observed, CONFIG, T0)
    assert retried.status.revision == 2
    assert retried.status.history[-1].trigger == "SpecChanged"
    assert kinds(retried) == [("Apply", "Job")]


def test_a_deployment_only_change_replaces_the_inference_service_without_retraining() -> None:
    final, observed, _ = serve_revision_one()
    changed = resource(2, final.status, deployment={"storageUri": "pvc://models/iris", "maxReplicas": 9})
    plan = reconcile(changed, observed, CONFIG, T0 + timedelta(minutes=5))
    assert plan.status.revision == 1
    assert kinds(plan) == [("Apply", "InferenceService")]
    action = plan.actions[0]
    assert isinstance(action, Apply)
    assert action.resource_version == "7"
    assert action.body["spec"]["predictor"]["maxReplicas"] == 9
    assert condition(plan, "Ready") == ("True", "Serving")


def test_a_training_change_starts_a_revision_that_becomes_a_canary_and_is_promoted() -> None:
    final, observed, _ = serve_revision_one()
    changed = resource(2, final.status, tuning={"maxTrials": 50})
    plan = reconcile(changed, observed, CONFIG, T0 + timedelta(minutes=5))
    assert plan.status.revision == 2
    assert kinds(plan) == [("Apply", "Job")]
    assert plan.actions[0].body["metadata"]["name"] == "iris-tune-r2"  # type: ignore[union-attr]
    assert plan.status.history[-1].parent_revision == 1
    assert condition(plan, "Ready") == ("True", "Serving")
    assert plan.status.phase == "Retraining"

    jobs = {
        **observed.jobs,
        ("tuning", 2): job("tuning", 2, "Succeeded", TUNED),
        ("compression", 2): job("compression", 2, "Succeeded", COMPRESSED),
    }
    now = T0 + timedelta(minutes=6)
    plan = reconcile(resource(2, plan.status, tuning={"maxTrials": 50}), replace(observed, jobs=jobs), CONFIG, now)
    isvc = next(a for a in plan.actions if isinstance(a, Apply) and a.kind == "InferenceService")
    assert isvc.body["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert isvc.body["metadata"]["labels"]["optiloop.dev/revision"] == "2"
    assert plan.status.phase == "Canary"
    assert plan.status.serving_revision == 1

    canary = replace(observed, jobs=jobs, services=one(child_from(plan, "InferenceService")))
    waiting = reconcile(
        resource(2, plan.status, tuning={"maxTrials": 50}),
        replace(canary, canary=CanaryMetrics(0.0, 1.0, 50.0)),
        CONFIG,
        now + timedelta(seconds=60),
    )
    assert condition(waiting, "Deployed") == ("Unknown", "CanaryAnalysing")
    promoted = reconcile(
        resource(2, waiting.status, tuning={"maxTrials": 50}),
        replace(canary, canary=CanaryMetrics(0.0, 1.0, 50.0)),
        CONFIG,
        now + timedelta(seconds=301),
    )
    assert promoted.status.serving_revision == 2
    assert [(r.revision, r.outcome) for r in promoted.status.history] == [(1, "Superseded"), (2, "Promoted")]
    final_isvc = next(a for a in promoted.actions if isinstance(a, Apply) and a.kind == "InferenceService")
    assert "canaryTrafficPercent" not in final_isvc.body["spec"]["predictor"]
    assert "CanaryPromoted" in [e.reason for e in promoted.events]
    monitors = [a for a in promoted.actions if isinstance(a, Apply) and a.kind == "Deployment"]
    assert monitors[0].body["metadata"]["labels"]["optiloop.dev/revision"] == "2"


def test_a_canary_with_errors_is_rolled_back_to_the_serving_revision() -> None:
    final, observed, _ = serve_revision_one()
    drifting = DriftDecision(DriftStatus(retrains_triggered=1, last_retrain_time=T0), True, "DriftSustained")
    plan = reconcile(final, observed, CONFIG, T0 + timedelta(minutes=5), drifting)
    assert plan.status.history[-1].trigger == "Drift"
    assert [e.reason for e in plan.events] == ["DriftDetected", "RetrainStarted", "TuningStarted"]
    assert condition(plan, "DriftWithinBounds") == ("False", "DriftSustained")
    jobs = {
        **observed.jobs,
        ("tuning", 2): job("tuning", 2, "Succeeded", TUNED),
        ("compression", 2): job("compression", 2, "Succeeded", COMPRESSED),
    }
    plan = reconcile(resource(status=plan.status), replace(observed, jobs=jobs), CONFIG, T0 + timedelta(minutes=6))
    canary = replace(
        observed, jobs=jobs, services=one(child_from(plan, "InferenceService")), canary=CanaryMetrics(0.2, 1.0, 50.0)
    )
    rolled = reconcile(resource(status=plan.status), canary, CONFIG, T0 + timedelta(minutes=7))
    assert rolled.status.serving_revision == 1
    record = rolled.status.history[-1]
    assert (record.outcome, record.message) == ("RolledBack", "rolled back: ErrorRateTooHigh")
    isvc = next(a for a in rolled.actions if isinstance(a, Apply) and a.kind == "InferenceService")
    assert isvc.body["metadata"]["labels"]["optiloop.dev/revision"] == "1"
    assert "canaryTrafficPercent" not in isvc.body["spec"]["predictor"]
    assert condition(rolled, "Ready") == ("True", "Serving")


def test_a_spec_change_supersedes_a_revision_in_flight_and_deletes_its_running_job() -> None:
    first = reconcile(resource(), seen(), CONFIG, T0)
    running = seen(jobs={("tuning", 1): job("tuning", 1, "Running")})
    plan = reconcile(resource(2, first.status, tuning={"maxTrials": 5}), running, CONFIG, T0 + timedelta(minutes=1))
    assert kinds(plan) == [("Delete", "Job/iris-tune-r1"), ("Apply", "Job")]
    assert [(r.revision, r.outcome) for r in plan.status.history] == [(1, "Superseded"), (2, "InProgress")]


def test_prometheus_unreachable_sets_drift_unknown_and_never_retrains() -> None:
    final, observed, _ = serve_revision_one()
    unreachable = DriftDecision(DriftStatus(last_evaluation_time=T0), False, "PrometheusUnreachable")
    plan = reconcile(final, observed, CONFIG, T0 + timedelta(minutes=5), unreachable)
    assert condition(plan, "DriftWithinBounds") == ("Unknown", "PrometheusUnreachable")
    assert plan.status.revision == 1
    assert plan.actions == []


def test_monitoring_off_removes_the_monitor_and_s3_storage_gets_one_that_copies_its_model() -> None:
    final, observed, _ = serve_revision_one()
    off = resource(2, final.status, monitoring={"enabled": False})
    plan = reconcile(off, observed, CONFIG, T0 + timedelta(minutes=5))
    assert ("Delete", "Deployment/iris-drift") in kinds(plan)
    assert ("Delete", "Service/iris-drift") in kinds(plan)
    assert condition(plan, "DriftWithinBounds") == ("Unknown", "MonitoringDisabled")
    s3 = resource(
        2, final.status,
        deployment={"storageUri": "s3://bucket/iris", "storageCredentialsSecretRef": {"name": "s3"}},
    )  # fmt: skip
    plan = reconcile(s3, replace(observed, monitor={}), CONFIG, T0 + timedelta(minutes=5))
    [monitor] = [a.body for a in plan.actions if isinstance(a, Apply) and a.kind == "Deployment"]
    assert [c["name"] for c in monitor["spec"]["template"]["spec"]["initContainers"]] == ["fetch-model"]
    assert condition(plan, "DriftWithinBounds")[1] == "NotEvaluated"


def test_history_keeps_the_latest_twenty_revisions() -> None:
    records = [
        RevisionRecord(revision=n, trigger="Drift", outcome="Failed", generation=1, triggered_at=T0)
        for n in range(1, 21)
    ]
    status = ModelOptimizationStatus(revision=20, history=records)
    plan = reconcile(resource(2, status, tuning={"maxTrials": 7}), seen(), CONFIG, T0)
    assert [r.revision for r in plan.status.history] == list(range(2, 22))


def test_an_invalid_spec_sets_ready_false_with_the_message() -> None:
    status = invalid_spec(None, 3, "spec.tuning.maxTrials: must be at least 1", T0)
    ready = status.condition("Ready")
    assert ready is not None
    assert (ready.status, ready.reason, ready.observed_generation) == ("False", "InvalidSpec", 3)
    assert "spec.tuning.maxTrials" in ready.message
    assert status.phase == "Failed"


def test_the_fingerprint_ignores_serving_and_monitoring_settings() -> None:
    base = resource().spec
    assert fingerprint(base) == fingerprint(
        resource(deployment={"storageUri": "pvc://models/iris", "maxReplicas": 8}).spec
    )
    assert fingerprint(base) == fingerprint(resource(monitoring={"windowSize": 100}).spec)
    assert fingerprint(base) != fingerprint(resource(tuning={"maxTrials": 3}).spec)
    assert fingerprint(base) != fingerprint(resource(deployment={"storageUri": "pvc://models/other"}).spec)


def test_delete_actions_name_their_api_version() -> None:
    final, observed, _ = serve_revision_one()
    plan = reconcile(resource(2, final.status, monitoring={"enabled": False}), observed, CONFIG, T0)
    deletes = [a for a in plan.actions if isinstance(a, Delete)]
    assert {(d.api_version, d.kind) for d in deletes} == {
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
    }


def test_a_job_deleted_after_it_was_created_is_created_again_with_a_warning() -> None:
    first = reconcile(resource(), seen(), CONFIG, T0)
    again = reconcile(resource(status=first.status), seen(), CONFIG, T0 + timedelta(seconds=30))
    assert kinds(again) == [("Apply", "Job")]
    assert [(e.type, e.reason) for e in again.events] == [("Warning", "JobRecreated")]
    assert again.status.history[0].started_at == T0
