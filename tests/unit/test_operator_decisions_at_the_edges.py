"""The operator's decisions at their edges, written to kill the mutants that survived the rest
of the unit tests (docs/mutation.md): bounds that are inclusive, the one InferenceService write
a canary's end leaves, a failed retrain that does not make a serving model un-Ready, a
predictor that stops being Ready, and the canary's latency bound taken from the compression
gate."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from optiloop.api.spec import CanaryAnalysis
from optiloop.api.status import DriftStatus
from optiloop.operator.observed import CanaryMetrics, Observed, ObservedJob, PodTrouble
from optiloop.operator.planning.plan import Apply, Plan
from optiloop.operator.policy import DriftDecision, judge_canary
from optiloop.operator.reconcile import reconcile
from tests.unit.test_operator_reconcile import (
    COMPRESSED,
    CONFIG,
    T0,
    TUNED,
    child_from,
    condition,
    job,
    one,
    resource,
    seen,
    serve_revision_one,
)

ANALYSIS = CanaryAnalysis(window_seconds=300, max_error_rate=0.01, max_latency_p95_ms=20.0)


@pytest.mark.parametrize(("error_rate", "p95"), [(0.01, 5.0), (0.0, 20.0)])
def test_a_canary_exactly_at_a_bound_is_within_it(error_rate: float, p95: float) -> None:
    decision = judge_canary(True, T0, T0 + timedelta(seconds=300), ANALYSIS, error_rate, p95)
    assert (decision.action, decision.reason) == ("promote", "CanaryHealthy")


def drifted_revision_two() -> tuple[Plan, Observed]:
    """Revision 1 serves; drift starts revision 2, whose Jobs succeed: it is deployed as a canary."""
    final, observed, _ = serve_revision_one()
    drifting = DriftDecision(DriftStatus(retrains_triggered=1, last_retrain_time=T0), True, "DriftSustained")
    plan = reconcile(final, observed, CONFIG, T0 + timedelta(minutes=5), drifting)
    jobs = {
        **observed.jobs,
        ("tuning", 2): job("tuning", 2, "Succeeded", TUNED),
        ("compression", 2): job("compression", 2, "Succeeded", COMPRESSED),
    }
    return reconcile(resource(status=plan.status), replace(observed, jobs=jobs), CONFIG, T0 + timedelta(minutes=6)), (
        replace(observed, jobs=jobs)
    )


def isvc_writes(plan: Plan) -> list[Apply]:
    return [a for a in plan.actions if isinstance(a, Apply) and a.kind == "InferenceService"]


def test_a_canary_ended_in_the_pass_that_planned_it_leaves_only_the_stable_revisions_inference_service() -> None:
    plan, observed = drifted_revision_two()
    # The canary's InferenceService was never written (the stable revision's is what exists), and
    # two windows passed: rolled back, and the canary's write planned in this pass is dropped.
    later = T0 + timedelta(minutes=6) + timedelta(seconds=601)
    rolled = reconcile(
        resource(status=plan.status), replace(observed, canary=CanaryMetrics(0.0, 1.0, 50.0)), CONFIG, later
    )
    assert rolled.status.history[-1].outcome == "RolledBack"
    assert isvc_writes(rolled) == [], "the stable revision's InferenceService is already as it should be"
    # The same with a canary InferenceService that exists but is not current: one write, the stable one.
    [served] = observed.services.values()
    stale = replace(served, spec_hash="stale", revision=2)
    rolled = reconcile(resource(status=plan.status), replace(observed, services=one(stale),
                       canary=CanaryMetrics(0.0, 1.0, 50.0)), CONFIG, later)  # fmt: skip
    [write] = isvc_writes(rolled)
    assert write.body["metadata"]["labels"]["optiloop.dev/revision"] == "1"
    assert "canaryTrafficPercent" not in write.body["spec"]["predictor"]


def test_a_failed_drift_retrain_leaves_the_serving_model_ready() -> None:
    final, observed, _ = serve_revision_one()
    drifting = DriftDecision(DriftStatus(retrains_triggered=1, last_retrain_time=T0), True, "DriftSustained")
    plan = reconcile(final, observed, CONFIG, T0 + timedelta(minutes=5), drifting)
    failed = ObservedJob("iris-tune-r2", "tuning", 2, "Failed", "BackoffLimitExceeded", "boom")
    after = reconcile(resource(status=plan.status), replace(observed, jobs={**observed.jobs, ("tuning", 2): failed}),
                      CONFIG, T0 + timedelta(minutes=6))  # fmt: skip
    assert after.status.history[-1].outcome == "Failed"
    assert condition(after, "Tuned") == ("False", "JobFailed")
    assert condition(after, "Ready") == ("True", "Serving")
    assert after.status.phase == "Serving"
    # The same failure on a revision the user asked for does make it not Ready.
    changed = reconcile(resource(2, final.status, tuning={"maxTrials": 5}), observed, CONFIG, T0 + timedelta(minutes=5))
    failed_user = reconcile(resource(2, changed.status, tuning={"maxTrials": 5}),
                            replace(observed, jobs={**observed.jobs, ("tuning", 2): failed}), CONFIG,
                            T0 + timedelta(minutes=6))  # fmt: skip
    ready = failed_user.status.condition("Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "JobFailed")
    assert ready.message.startswith("revision 2: Job iris-tune-r2 failed (BackoffLimitExceeded: boom)")
    assert failed_user.status.phase == "Failed"


def test_a_serving_predictor_that_stops_being_ready_makes_ready_unknown_with_its_reason() -> None:
    final, observed, _ = serve_revision_one()
    [served] = observed.services.values()
    down = replace(observed, services=one(replace(served, ready=False)))
    plan = reconcile(final, down, CONFIG, T0 + timedelta(minutes=5))
    assert condition(plan, "Deployed") == ("Unknown", "PredictorNotReady")
    ready = plan.status.condition("Ready")
    assert ready is not None
    assert (ready.status, ready.reason, ready.message) == (
        "Unknown",
        "PredictorNotReady",
        "the InferenceService is not Ready",
    )
    assert plan.status.phase == "Serving"


OOM = PodTrouble("PredictorOOMKilled", "pod iris-predictor-7d9: container kserve-container OOMKilled (exit code 137)")


def test_a_serving_predictor_killed_for_memory_makes_ready_false_naming_it_warns_once_and_recovers() -> None:
    final, observed, _ = serve_revision_one()
    [served] = observed.services.values()
    down = replace(observed, services=one(replace(served, ready=False, trouble=OOM)))
    plan = reconcile(final, down, CONFIG, T0 + timedelta(minutes=5))
    message = f"revision 1's predictor does not serve: {OOM.message}"
    assert condition(plan, "Deployed") == ("False", "PredictorOOMKilled")
    ready = plan.status.condition("Ready")
    assert ready is not None
    assert (ready.status, ready.reason, ready.message) == ("False", "PredictorOOMKilled", message)
    assert plan.status.phase == "Serving", "revision 1 is still the serving revision"
    assert [(e.type, e.reason, e.message) for e in plan.events] == [("Warning", "PredictorOOMKilled", message)]
    # Pod changes reach no watched object: the operator looks again.
    assert plan.requeue_at is not None
    assert plan.requeue_at <= T0 + timedelta(minutes=5, seconds=30)
    again = reconcile(resource(status=plan.status), down, CONFIG, T0 + timedelta(minutes=6))
    assert again.events == [], "one Warning, not one per look"
    back = reconcile(resource(status=again.status), observed, CONFIG, T0 + timedelta(minutes=7))
    assert condition(back, "Ready") == ("True", "Serving")


def test_a_first_revision_whose_predictor_crash_loops_is_not_ready_with_the_pods_reason() -> None:
    plan = reconcile(resource(), seen(), CONFIG, T0)
    tuned = seen(jobs={("tuning", 1): job("tuning", 1, "Succeeded", TUNED)})
    plan = reconcile(resource(status=plan.status), tuned, CONFIG, T0 + timedelta(minutes=1))
    both = seen(jobs={**tuned.jobs, ("compression", 1): job("compression", 1, "Succeeded", COMPRESSED)})
    plan = reconcile(resource(status=plan.status), both, CONFIG, T0 + timedelta(minutes=2))
    starting = child_from(plan, "InferenceService", ready=False)
    plan = reconcile(resource(status=plan.status), seen(jobs=both.jobs, services=one(starting)), CONFIG,
                     T0 + timedelta(minutes=3))  # fmt: skip
    assert condition(plan, "Ready") == ("Unknown", "Deploying"), "starting pods are no trouble yet"
    crashing = PodTrouble("PredictorCrashLooping", "pod p: container kserve-container Error (exit code 1)")
    observed = seen(jobs=both.jobs, services=one(replace(starting, trouble=crashing)))
    plan = reconcile(resource(status=plan.status), observed, CONFIG, T0 + timedelta(minutes=4))
    assert condition(plan, "Deployed") == ("False", "PredictorCrashLooping")
    assert condition(plan, "Ready") == ("False", "PredictorCrashLooping")
    assert plan.status.phase == "Deploying"
    assert plan.status.serving_revision is None
    assert [e.reason for e in plan.events] == ["PredictorCrashLooping"]
    # Pods left from before the latest spec say nothing about it: KServe has not acted yet.
    updating = seen(jobs=both.jobs, services=one(replace(starting, trouble=crashing, updating=True)))
    plan = reconcile(resource(status=plan.status), updating, CONFIG, T0 + timedelta(minutes=5))
    assert condition(plan, "Deployed") == ("Unknown", "Deploying")


def test_ready_says_what_serves_and_what_is_being_built() -> None:
    first = reconcile(resource(), seen(), CONFIG, T0)
    ready = first.status.condition("Ready")
    assert ready is not None
    assert ready.message == "revision 1: tuning"
    _, _, plan = serve_revision_one()
    ready = plan.status.condition("Ready")
    assert ready is not None
    assert ready.message == "revision 1 serves at http://iris.ml.example.com"


def test_without_its_own_latency_bound_a_canary_is_held_to_the_compression_gate() -> None:
    final, observed, _ = serve_revision_one()
    spec = {"compression": {"gates": {"maxLatencyP95Ms": 10.0}}}
    drifting = DriftDecision(DriftStatus(retrains_triggered=1, last_retrain_time=T0), True, "DriftSustained")
    plan = reconcile(resource(status=final.status, **spec), observed, CONFIG, T0 + timedelta(minutes=5), drifting)
    jobs = {
        **observed.jobs,
        ("tuning", 2): job("tuning", 2, "Succeeded", TUNED),
        ("compression", 2): job("compression", 2, "Succeeded", COMPRESSED),
    }
    now = T0 + timedelta(minutes=6)
    plan = reconcile(resource(status=plan.status, **spec), replace(observed, jobs=jobs), CONFIG, now)
    canary = replace(observed, jobs=jobs, services=one(child_from(plan, "InferenceService")))
    later = now + timedelta(seconds=30)
    slow = reconcile(resource(status=plan.status, **spec), replace(canary, canary=CanaryMetrics(0.0, 12.0, 50.0)),
                     CONFIG, later)  # fmt: skip
    assert slow.status.history[-1].message == "rolled back: LatencyTooHigh"
    fast = reconcile(resource(status=plan.status, **spec), replace(canary, canary=CanaryMetrics(0.0, 9.0, 50.0)),
                     CONFIG, later)  # fmt: skip
    assert condition(fast, "Deployed") == ("Unknown", "CanaryAnalysing")
