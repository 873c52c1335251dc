"""The operator drives a ModelOptimization from apply to a served revision on the real API server,
handles failed and deleted Jobs, spec and deployment-only updates, and writes status only on change."""

from __future__ import annotations

import urllib.request
from typing import Any

from tests.operator.conftest import StartOperator
from tests.support.control_plane import ControlPlane
from tests.support.operator import EVERY_TICK, Finish, Resources, StandIn, reconciles, succeed_all, wait_until

SPEC: dict[str, Any] = {
    "dataset": {"uri": "builtin://iris"},
    "tuning": {"maxTrials": 4},
    "deployment": {"storageUri": "pvc://models/iris", "canaryTrafficPercent": 20, "maxReplicas": 4},
    "jobs": {"resources": {"limits": {"cpu": "2", "memory": "2Gi"}}, "nodeSelector": {"pool": "cpu"}},
}


def test_apply_to_ready_creates_every_child_with_owner_labels_and_restricted_pods(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator
) -> None:
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator()
    with StandIn(control_plane, watched):
        created = resources.create("iris", SPEC)
        wait_until(lambda: resources.ready("iris"), 60, "iris to become Ready", operator)
    body = resources.get("iris")
    status = body["status"]
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert status["revision"] == 1
    assert status["servingRevision"] == 1
    assert status["phase"] == "Serving"
    assert status["bestTrial"]["number"] == 3
    assert status["model"]["candidate"] == "2-quantize-dynamicint8"
    assert status["url"] == f"http://iris.{watched}.example.com"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert {t: conditions[t]["status"] for t in ("DataValidated", "Tuned", "Compressed", "Deployed", "Ready")} == {
        "DataValidated": "True", "Tuned": "True", "Compressed": "True", "Deployed": "True", "Ready": "True"
    }  # fmt: skip
    record = status["history"][0]
    assert record["trigger"] == "Created"
    assert record["outcome"] == "Serving"
    assert all(record[k] for k in ("startedAt", "tunedAt", "compressedAt", "deployedAt"))

    owner = {"uid": created["metadata"]["uid"], "controller": True, "kind": "ModelOptimization"}
    jobs = {j["metadata"]["name"]: j for j in resources.jobs("iris")}
    assert sorted(jobs) == ["iris-compress-r1", "iris-tune-r1"]
    for job in jobs.values():
        assert {k: job["metadata"]["ownerReferences"][0][k] for k in owner} == owner
        assert job["metadata"]["labels"]["optiloop.dev/name"] == "iris"
        pod = job["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"pool": "cpu"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        container = pod["containers"][0]
        assert container["image"] == "registry.example/optiloop/jobs:test"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    isvc = resources.inference_service("iris")
    assert isvc is not None
    predictor = isvc["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    assert predictor["maxReplicas"] == 4
    assert predictor["logger"]["url"] == f"http://iris-drift.{watched}.svc.cluster.local/revisions/1"
    assert isvc["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    deployment = resources.apps.read_namespaced_deployment("iris-drift", watched)
    assert deployment.metadata.owner_references[0].uid == created["metadata"]["uid"]
    assert deployment.spec.template.spec.containers[0].image == "registry.example/optiloop/drift:test"
    args = deployment.spec.template.spec.containers[0].args
    assert args[args.index("--inference-service") :] == ["--inference-service", "iris"], "Knative's one"
    resources.event_reasons(
        "iris", {"RevisionStarted", "TuningStarted", "TuningSucceeded", "CompressionSucceeded", "Serving"}
    )
    # Kopf adds only its finalizer (for the timer): no bookkeeping annotations for Argo CD to diff.
    assert not body["metadata"].get("annotations")
    assert body["metadata"]["finalizers"] == ["optiloop.dev/finalizer"]
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.health_port}/healthz", timeout=5) as response:
        assert response.status == 200
    samples = operator.metrics()
    assert samples['optiloop_operator_children_created_total{kind="Job"}'] == 2
    assert samples['optiloop_operator_children_created_total{kind="InferenceService"}'] == 1


def test_a_failed_tuning_job_sets_ready_false_and_waits_for_a_spec_change(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator
) -> None:
    resources = Resources(control_plane.api_client(), watched)
    failures = {"iris-tune-r1"}

    def policy(job: dict[str, Any]) -> Finish:
        if job["metadata"]["name"] in failures:
            outcome = {"stage": "tuning", "succeeded": False, "reason": "StageFailed", "message": "TuningError: boom"}
            return Finish(False, outcome, "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        return succeed_all(job)

    operator = start_operator(env=EVERY_TICK)
    with StandIn(control_plane, watched, policy):
        resources.create("iris", SPEC)
        ready = wait_until(
            lambda: (c := resources.condition("iris", "Ready")) and c["status"] == "False" and c, 60,
            "Ready=False", operator,
        )  # fmt: skip
        assert ready["reason"] == "JobFailed"
        assert "BackoffLimitExceeded" in ready["message"]
        assert "TuningError: boom" in ready["message"]
        assert resources.get("iris")["status"]["phase"] == "Failed"
        # No new Job while the spec stays as it is.
        before = reconciles(operator)
        wait_until(lambda: reconciles(operator) >= before + 3, 20, "3 more reconciles", operator)
        assert [j["metadata"]["name"] for j in resources.jobs("iris")] == ["iris-tune-r1"]
        resources.event_reasons("iris", {"StageFailed"})
        resources.patch_spec("iris", {"tuning": {"maxTrials": 5}})
        wait_until(lambda: resources.ready("iris"), 60, "iris Ready after the spec change", operator)
    status = resources.get("iris")["status"]
    assert status["servingRevision"] == 2
    assert [(r["revision"], r["outcome"], r["trigger"]) for r in status["history"]] == [
        (1, "Failed", "Created"), (2, "Serving", "SpecChanged")
    ]  # fmt: skip
