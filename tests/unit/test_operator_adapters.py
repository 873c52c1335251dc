"""Reading what the operator observes: Job states and stage outcomes from pods, child readiness,
Prometheus answers (good, empty and garbage), the PromQL it sends, and its configuration."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from optiloop.api import ModelOptimization
from optiloop.api.jobs import TERMINATION_MESSAGE_LIMIT, StageOutcome
from optiloop.api.status import BestTrial, ParameterValue
from optiloop.jobs.outcome import failed_outcome, termination_message
from optiloop.operator import prometheus, queries
from optiloop.operator.config import OperatorConfig, host_priority
from optiloop.operator.observed import (
    PodTrouble,
    job_state,
    observe_child,
    observe_job,
    observe_route,
    pod_outcome,
    pod_stuck,
    predictor_trouble,
)
from tests.conftest import skip_or_fail


def pod(message: str | None, component: str = "tuning") -> dict[str, Any]:
    terminated = {"exitCode": 0} if message is None else {"exitCode": 0, "message": message}
    return {
        "metadata": {"labels": {"optiloop.dev/component": component}},
        "status": {"containerStatuses": [{"state": {"terminated": terminated}}]},
    }


def outcome(**fields: Any) -> str:
    return json.dumps({"stage": "tuning", "succeeded": True, "reason": "Succeeded", **fields})


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([], ("Running", "", "")),
        ([{"type": "Complete", "status": "True"}], ("Succeeded", "", "")),
        ([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too slow"}],
         ("Failed", "DeadlineExceeded", "too slow")),
        ([{"type": "SuccessCriteriaMet", "status": "True"}], ("Running", "", "")),
        ([{"type": "Failed", "status": "False"}], ("Running", "", "")),
    ],
)  # fmt: skip
def test_job_state_follows_the_finished_conditions(conditions: list[dict[str, str]], expected: Any) -> None:
    assert job_state({"status": {"conditions": conditions}}) == expected


def test_the_first_worker_result_wins_over_other_workers_and_failures() -> None:
    pods = [
        pod(outcome(reason="WorkerFinished")),
        pod(outcome(bestTrial={"number": 2})),
        pod(json.dumps({"stage": "tuning", "succeeded": False, "reason": "StageFailed", "message": "x"})),
        pod(None),
    ]
    best = pod_outcome(pods)
    assert best is not None
    assert best.best_trial is not None
    assert best.best_trial.number == 2


def test_a_log_tail_instead_of_an_outcome_becomes_a_failure_with_that_text() -> None:
    found = pod_outcome([pod("Traceback ...\nMemoryError", component="compression")])
    assert found is not None
    assert (found.stage, found.succeeded, found.reason) == ("compression", False, "StageFailed")
    assert "MemoryError" in found.message
    assert pod_outcome([pod(None)]) is None


OURS = [{"apiVersion": "optiloop.dev/v1alpha1", "kind": "ModelOptimization", "name": "iris", "uid": "u-1"}]


def test_observe_job_ignores_jobs_without_our_labels_or_our_owner_and_reads_finished_pods() -> None:
    assert observe_job({"metadata": {"name": "x", "labels": {}, "ownerReferences": OURS}}, [], "u-1") is None
    body = {
        "metadata": {
            "name": "iris-tune-r3",
            "uid": "job-1",
            "labels": {"optiloop.dev/component": "tuning", "optiloop.dev/revision": "3"},
            "ownerReferences": OURS,
        },
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }
    seen = observe_job(body, [pod(outcome())], "u-1")
    assert seen is not None
    assert (seen.component, seen.revision, seen.state, seen.uid) == ("tuning", 3, "Succeeded", "job-1")
    assert seen.outcome is not None
    # Another resource's Job, or one someone labelled like ours: not ours, never acted on.
    assert observe_job(body, [pod(outcome())], "u-2") is None
    assert observe_job({**body, "metadata": {**body["metadata"], "ownerReferences": []}}, [], "u-1") is None
    assert observe_job(body, [], "") is None


def test_a_running_jobs_pod_that_cannot_pull_its_image_or_find_a_node_says_why() -> None:
    def waiting(reason: str, message: str = "", init: bool = False) -> dict[str, Any]:
        key = "initContainerStatuses" if init else "containerStatuses"
        return {"status": {key: [{"name": "stage", "state": {"waiting": {"reason": reason, "message": message}}}]}}

    never = waiting("ErrImageNeverPull", 'Container image "optiloop/jobs:1" is not present with pull policy of Never')
    assert pod_stuck([never]) == (
        'ErrImageNeverPull: Container image "optiloop/jobs:1" is not present with pull policy of Never'
    )
    assert pod_stuck([waiting("ImagePullBackOff", init=True)]) == "ImagePullBackOff: container stage"
    assert pod_stuck([waiting("ContainerCreating"), waiting("PodInitializing")]) == "", "starting, not stuck"
    scheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
    unschedulable = {"status": {"conditions": [{**scheduled, "message": "0/1 nodes: Insufficient memory."}]}}
    assert pod_stuck([unschedulable]) == "Unschedulable: 0/1 nodes: Insufficient memory."
    body = {
        "metadata": {
            "name": "iris-tune-r1",
            "labels": {"optiloop.dev/component": "tuning", "optiloop.dev/revision": "1"},
            "ownerReferences": OURS,
        },
        "status": {"active": 1},
    }
    seen = observe_job(body, [never], "u-1")
    assert seen is not None
    assert (seen.state, seen.stuck.split(":")[0]) == ("Running", "ErrImageNeverPull")
    finished = {**body, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert observe_job(finished, [never], "u-1").stuck == ""  # type: ignore[union-attr]


def test_a_child_is_ready_only_for_its_current_generation() -> None:
    def isvc(generation: int, observed: int | None) -> dict[str, Any]:
        status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True"}], "url": "http://x"}
        if observed is not None:
            status["observedGeneration"] = observed
        return {"kind": "InferenceService", "metadata": {"name": "iris", "generation": generation,
                "resourceVersion": "5", "labels": {"optiloop.dev/revision": "2"}, "ownerReferences": OURS,
                "annotations": {"optiloop.dev/spec-hash": "abc"}}, "status": status}  # fmt: skip

    current = observe_child(isvc(3, 3), "u-1")
    assert current is not None
    assert (current.ready, current.updating, current.revision, current.spec_hash) == (True, False, 2, "abc")
    stale = observe_child(isvc(4, 3), "u-1")
    assert stale is not None
    assert (stale.ready, stale.updating) == (False, True)
    available = {"conditions": [{"type": "Available", "status": "True"}]}
    deployment = observe_child({"kind": "Deployment", "metadata": {"name": "d", "ownerReferences": OURS},
                                "status": available}, "u-1")  # fmt: skip
    assert deployment is not None
    assert deployment.ready


def test_another_teams_child_of_the_same_name_is_never_planned_over() -> None:
    """The takeover the issue reproduced with the pure planner: InferenceServices (Knative mode's
    ``iris``, Standard mode's ``iris-r1``), an HTTPRoute and a drift monitor of the same names,
    owned by someone else, are left out of the observation, so the plan neither replaces them (it
    creates its own, which the API server refuses: ChildNameTaken) nor, with monitoring off or
    serving in another mode, deletes them."""
    from dataclasses import replace

    from optiloop.operator.capabilities import Capabilities, KServeDefault
    from optiloop.operator.reconcile import reconcile
    from tests.unit.test_operator_reconcile import CONFIG, T0, resource, serve_revision_one

    final, observed, _ = serve_revision_one()
    theirs = [{"apiVersion": "v1", "kind": "Team", "name": "vision", "uid": "other"}]
    foreign = {
        (kind, name): {"kind": kind, "metadata": {"name": name, "uid": f"{kind}-x", "resourceVersion": "9",
                                                  "ownerReferences": theirs}}
        for kind, name in (("InferenceService", "iris"), ("InferenceService", "iris-r1"), ("HTTPRoute", "iris"),
                           ("Deployment", "iris-drift"), ("Service", "iris-drift"), ("NetworkPolicy", "iris-drift"))
    }  # fmt: skip
    assert all(observe_child(obj, "u-1") is None for obj in foreign.values())
    assert observe_route(foreign[("HTTPRoute", "iris")], "u-1") is None
    unowned = replace(observed, services={}, monitor={})
    changed = resource(2, final.status, deployment={"storageUri": "pvc://models/iris", "maxReplicas": 9})
    plan = reconcile(changed, unowned, CONFIG, T0)
    writes = [(type(a).__name__, a.kind, getattr(a, "resource_version", None)) for a in plan.actions]
    assert ("Apply", "InferenceService", None) in writes, "a create, never a replace of theirs"
    off = resource(2, final.status, monitoring={"enabled": False})
    assert [a for a in reconcile(off, unowned, CONFIG, T0).actions if type(a).__name__ == "Delete"] == []
    # Standard mode behind a Gateway: revision 1's InferenceService and the route are created,
    # never replaced; nothing of theirs is deleted.
    standard = Capabilities(kserve=True, gateway_api=True, kserve_default=KServeDefault("standard", "kserve/cfg"))
    gateway = replace(CONFIG, gateway=("gateways", "inference", None))
    plan = reconcile(changed, replace(unowned, capabilities=standard), gateway, T0)
    writes = [(type(a).__name__, a.kind, a.name, getattr(a, "resource_version", None)) for a in plan.actions]
    assert ("Apply", "InferenceService", "iris-r1", None) in writes
    assert ("Apply", "HTTPRoute", "iris", None) in writes
    assert not [w for w in writes if w[0] == "Delete" or w[3] is not None], writes


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"status": "success", "data": {"resultType": "vector", "result": []}}, (True, None)),
        ({"status": "success", "data": {"resultType": "vector",
          "result": [{"value": [1, "0"]}, {"value": [1, "1"]}]}}, (True, 1.0)),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, "0.25"]}}, (True, 0.25)),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "NaN"]}]}}, (True, None)),
        ({"status": "error", "error": "bad query"}, (False, None)),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, (False, None)),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "high"]}]}}, (False, None)),
        ("<html>", (False, None)),
        ({"status": "success"}, (False, None)),
    ],
)  # fmt: skip
def test_prometheus_answers_are_read_or_refused(document: Any, expected: tuple[bool, float | None]) -> None:
    result = prometheus.parse_answer(document)
    assert (result.reachable, result.value) == expected


def test_a_prometheus_that_refuses_connections_is_unreachable() -> None:
    from tests.support.control_plane import free_port

    result = prometheus.query(f"http://127.0.0.1:{free_port()}", "up", deadline=2)
    assert not result.reachable
    assert result.error


def resource(**monitoring: Any) -> ModelOptimization:
    return ModelOptimization.model_validate(
        {
            "metadata": {"name": "iris", "namespace": "ml"},
            "spec": {
                "dataset": {"uri": "builtin://iris"},
                "deployment": {"storageUri": "pvc://models/iris"},
                "monitoring": monitoring,
            },
        }
    )


def test_the_default_drift_query_is_the_one_the_drift_monitor_documents() -> None:
    from optiloop.drift.metrics import default_query

    assert queries.drift_query(resource(), 3) == default_query("ml", "iris", 3)


def test_a_platform_query_template_gets_namespace_name_and_revision() -> None:
    templates = {"p-drift": 'max(my_drift{ns="$namespace", app="$name", rev="$revision"})'}
    custom = resource(prometheus={"queryTemplate": "p-drift"})
    assert queries.drift_query(custom, 2, templates) == 'max(my_drift{ns="ml", app="iris", rev="2"})'
    assert queries.drift_query(custom, 2, {}) == queries.drift_query(resource(), 2), "unknown: the default"


def test_tenants_query_only_the_prometheus_and_templates_the_platform_allows() -> None:
    from optiloop.operator.prometheus_access import access_errors

    def errors(allowed: tuple[str, ...] = (), api: str | None = "10.96.0.1", **prometheus: Any) -> list[str]:
        return [str(e) for e in access_errors(resource(prometheus=prometheus), allowed, {"p-drift": "x"}, api)]

    assert errors() == []
    assert errors(queryTemplate="p-drift") == []
    assert errors(queryTemplate="other") == [
        "spec.monitoring.prometheus.queryTemplate: 'other' is not a query template of this operator (p-drift)"
    ]
    [message] = errors(url="http://prom.team-a:9090")
    assert message.startswith("spec.monitoring.prometheus.url: this operator lets resources use only its own")
    allowed = ("http://prom.team-a", "https://thanos.example.com:443/tenant-a")
    assert errors(allowed, url="http://prom.team-a:9090") == []
    assert errors(allowed, url="https://thanos.example.com/tenant-a/x") == []
    for refused in ("http://prom.team-b:9090", "https://thanos.example.com/tenant-b", "http://evil.example"):
        assert "not among the Prometheus URLs" in errors(allowed, url=refused)[0], refused
    # Never these, whatever the allowlist says.
    everything = (
        "http://169.254.169.254",
        "http://[fe80::1]",
        "http://0.0.0.0",
        "https://kubernetes.default.svc",
        "https://10.96.0.1",
        "http://metadata.google.internal",
        "https://kubernetes.default.svc.cluster.local",
    )
    for url in everything:
        assert "must not be" in errors(everything, url=url)[0], url


def test_canary_queries_select_the_canary_revision_and_count_only_server_errors() -> None:
    error_rate = queries.canary_error_rate_query(resource(), 4, 120)
    assert 'revision="4"' in error_rate
    assert 'outcome="error"' in error_rate
    assert "[120s]" in error_rate
    assert "histogram_quantile(0.95" in queries.canary_latency_query(resource(), 4, 120)


def test_canary_error_rate_is_server_errors_among_served_requests_whatever_clients_send(tmp_path: Path) -> None:
    """Evaluated by Prometheus' own engine (promtool) on a canary that answered 90 requests a
    minute, failed 10, and refused 900 invalid and 100 too large ones: 10 %, not 1 % (refusals
    diluting the total) and not 91 % (refusals counted as errors); another revision's errors
    do not count."""
    promtool = shutil.which("promtool")
    if promtool is None:
        skip_or_fail("promtool is not installed (make install installs Debian's prometheus package)")
    labels = 'namespace="ml", model="iris", protocol="v2"'
    per_minute = {("4", "ok"): 90, ("4", "error"): 10, ("4", "invalid"): 900, ("4", "too_large"): 100,
                  ("3", "error"): 1000, ("3", "ok"): 1}  # fmt: skip
    series = [
        {"series": f'optiloop_predictor_requests_total{{{labels}, revision="{rev}", outcome="{outcome}"}}',
         "values": f"0+{count}x10"}
        for (rev, outcome), count in per_minute.items()
    ]  # fmt: skip
    cases = [
        # promtool compares exactly; 10 % within 1e-9 reads 1 (0.9 % or 91 % read 0).
        {"expr": f"abs(({queries.canary_error_rate_query(resource(), 4, 120)}) - 0.1) < bool 1e-9",
         "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": 1}]},
        # Only refused requests: no sample, as with no traffic at all (refusals never make it 100 %).
        {"expr": queries.canary_error_rate_query(resource(), 5, 120), "eval_time": "10m", "exp_samples": []},
    ]  # fmt: skip
    refused_only = {"series": f'optiloop_predictor_requests_total{{{labels}, revision="5", outcome="invalid"}}',
                    "values": "0+50x10"}  # fmt: skip
    test = {"tests": [{"interval": "1m", "input_series": [*series, refused_only], "promql_expr_test": cases}]}
    path = tmp_path / "canary-test.yaml"
    path.write_text(json.dumps(test))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_termination_messages_fit_in_four_kibibytes() -> None:
    params = [ParameterValue(name=f"p{i}", value="x" * 256) for i in range(64)]
    big = StageOutcome(stage="tuning", succeeded=True, reason="Succeeded",
                       best_trial=BestTrial(number=1, params=params))  # fmt: skip
    text = termination_message(big)
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert StageOutcome.model_validate_json(text).best_trial is not None
    failed = termination_message(failed_outcome("compression", "StageFailed", "é" * 5000))
    assert len(failed.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert StageOutcome.model_validate_json(failed).message.endswith("...")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OPTILOOP_RESYNC_SECONDS", "soon", "OPTILOOP_RESYNC_SECONDS must be a number"),
        ("OPTILOOP_WORKERS", "0", "OPTILOOP_WORKERS must be at least 1"),
        ("OPTILOOP_IMAGE_PULL_POLICY", "Sometimes", "OPTILOOP_IMAGE_PULL_POLICY must be"),
        ("OPTILOOP_RETIRE_DELAY_SECONDS", "-1", "OPTILOOP_RETIRE_DELAY_SECONDS must be at least 0"),
        ("OPTILOOP_RETIRE_DELAY_SECONDS", "nan", "OPTILOOP_RETIRE_DELAY_SECONDS must be a finite number"),
        ("OPTILOOP_DRAIN_SECONDS", "inf", "OPTILOOP_DRAIN_SECONDS must be a finite number"),
    ],
)
def test_bad_configuration_names_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorConfig.from_env({variable: value})


def test_the_retire_delay_defaults_to_30_seconds_and_is_read_from_its_variable() -> None:
    assert OperatorConfig.from_env({}).retire_delay_seconds == 30.0
    assert OperatorConfig.from_env({"OPTILOOP_RETIRE_DELAY_SECONDS": "2.5"}).retire_delay_seconds == 2.5


def test_replicas_get_distinct_priorities_from_their_host_names() -> None:
    priorities = {host_priority(f"optiloop-operator-5d9f-{i}") for i in range(50)}
    assert len(priorities) == 50
    assert OperatorConfig.from_env({"OPTILOOP_PRIORITY": "7"}).priority == 7


def _predictor_pod(*containers: dict[str, Any], init: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris-r1-predictor-7d9"},
        "status": {"containerStatuses": list(containers), "initContainerStatuses": list(init)},
    }


def _ended(reason: str, code: int, message: str = "") -> dict[str, Any]:
    return {"reason": reason, "exitCode": code, **({"message": message} if message else {})}


def test_a_predictor_pod_killed_for_memory_or_crash_looping_says_which_with_its_exit_and_restarts() -> None:
    agent = {"name": "agent", "ready": True, "restartCount": 0, "state": {"running": {}}}
    oom = {
        "name": "kserve-container", "ready": False, "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
        "lastState": {"terminated": _ended("OOMKilled", 137)},
    }  # fmt: skip
    assert predictor_trouble([_predictor_pod(agent, oom)]) == PodTrouble(
        "PredictorOOMKilled",
        "pod iris-r1-predictor-7d9: container kserve-container OOMKilled (exit code 137), restarted 3 times,"
        " CrashLoopBackOff",
    )
    # Between two crashes the container runs, not ready, and only its last state says why.
    between = {**oom, "state": {"running": {}}}
    assert predictor_trouble([_predictor_pod(between)]) is not None
    crashing = {**oom, "lastState": {"terminated": _ended("Error", 1, "model directory incomplete: no _COMPLETE.json")}}
    trouble = predictor_trouble([_predictor_pod(crashing)])
    assert trouble is not None
    assert trouble.reason == "PredictorCrashLooping"
    assert trouble.message.endswith("Error (exit code 1), restarted 3 times, CrashLoopBackOff: model directory"
                                    " incomplete: no _COMPLETE.json")  # fmt: skip
    # A container that ran, exited with an error once and runs again is no trouble until it fails again.
    recovered = {**crashing, "ready": True, "state": {"running": {}}}
    assert predictor_trouble([_predictor_pod(recovered)]) is None
    # OOM first: its message has no log to point at.
    assert predictor_trouble([_predictor_pod(crashing), _predictor_pod(oom)]) == predictor_trouble(
        [_predictor_pod(oom)]
    )


def test_a_predictor_pod_still_starting_or_done_initialising_is_no_trouble_and_one_that_cannot_start_is() -> None:
    initialised = {"name": "storage-initializer", "state": {"terminated": _ended("Completed", 0)}}
    creating = {"name": "kserve-container", "ready": False, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}}  # fmt: skip
    assert predictor_trouble([_predictor_pod(creating, init=(initialised,))]) is None
    assert predictor_trouble([]) is None
    failed_init = {"name": "storage-initializer", "restartCount": 2,
                   "state": {"terminated": _ended("Error", 1, "s3: AccessDenied")}}  # fmt: skip
    trouble = predictor_trouble([_predictor_pod(creating, init=(failed_init,))])
    assert trouble is not None
    assert (trouble.reason, trouble.message.split(": ", 1)[1]) == (
        "PredictorCrashLooping",
        "container storage-initializer Error (exit code 1), restarted 2 times: s3: AccessDenied",
    )
    pulling = {"name": "kserve-container", "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "no image"}}}
    assert predictor_trouble([_predictor_pod(pulling)]) == PodTrouble(
        "PredictorPodNotStarting", "ErrImageNeverPull: no image"
    )
