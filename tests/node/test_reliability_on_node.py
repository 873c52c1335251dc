"""Reliability on the real node, with the operator as a pod from the chart: a stage Job's pod deleted
while it runs is retried by the Job controller and the resource's status agrees; the operator's pods
killed during a Job are restarted by their Deployment and nothing is created twice; a predictor
killed for memory on every start shows on the resource as not Ready with that reason, and Ready
again once its limit is raised."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import skip_or_fail
from tests.node.test_chart_on_node import chart_values, items, kubectl, operator_pods
from tests.node.test_loop_on_node import _status
from tests.support.chart_release import install, uninstall
from tests.support.control_plane import wait_for
from tests.support.images import ImagesMissingError
from tests.support.kserve_node import KServeOnNode, import_our_image
from tests.support.namespaces import create_namespace, delete_namespace
from tests.support.node import Node
from tests.support.node_storage import claim_on_host_folder

pytestmark = pytest.mark.timeout(1500)
CLAIM = "models"
SPEC: dict[str, Any] = {
    "dataset": {"uri": "builtin://iris"},
    "model": {"search": {"layers": {"min": 1, "max": 1}, "width": {"min": 8, "max": 16}}},
    # Long enough to delete its pod and then kill the operator while the retried pod still runs.
    "tuning": {"maxTrials": 3, "search": {"epochs": {"min": 20, "max": 30}}},
    "compression": {"steps": [{"quantize": {"mode": "dynamicInt8"}}], "gates": {"maxMetricDrop": 0.05}},
    "jobs": {"resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "4Gi"}}},
    "deployment": {
        "storageUri": f"pvc://{CLAIM}/iris",
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    },
    "monitoring": {"enabled": False},
}
STARVED_MEMORY = "40Mi"
"""A predictor limit below what Python with ONNX Runtime needs to start: killed on every start."""


@pytest.fixture(scope="module")
def images(kserve: KServeOnNode) -> dict[str, str]:
    """The operator, jobs and serve images imported into the node, by target."""
    try:
        return {target: import_our_image(kserve.node, target) for target in ("operator", "jobs", "serve")}
    except ImagesMissingError as exc:
        skip_or_fail(f"our images: {exc}")
        raise  # skip_or_fail never returns


def _manifest(tmp_path: Path, name: str, spec: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yaml"
    resource = {"apiVersion": "optiloop.dev/v1alpha1", "kind": "ModelOptimization", "metadata": {"name": name}}
    path.write_text(yaml.safe_dump({**resource, "spec": spec}))
    return path


def _starved(spec: dict[str, Any], memory: str) -> dict[str, Any]:
    starved = copy.deepcopy(spec)
    starved["deployment"]["storageUri"] = f"pvc://{CLAIM}/starved"
    starved["deployment"]["resources"] = {"requests": {"cpu": "100m", "memory": memory}, "limits": {"memory": memory}}
    starved["tuning"] = {"maxTrials": 1, "search": {"epochs": {"min": 5, "max": 5}}}
    return starved


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions", [])}


def _running_pod(node: Node, namespace: str, job: str) -> dict[str, Any] | None:
    pods = items(node, "pods", "-n", namespace, "-l", f"job-name={job}")
    return next((p for p in pods if p["status"].get("phase") == "Running" and "deletionTimestamp" not in p["metadata"]),
                None)  # fmt: skip


def _events(node: Node, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={name},reason={reason}"
    return items(node, "events", "-n", namespace, "--field-selector", selector)


def test_deleted_job_pod_killed_operator_and_a_predictor_killed_for_memory_on_the_node(
    kserve: KServeOnNode, images: dict[str, str], node_api: Any, tmp_path: Path, record_property: Any
) -> None:
    node = kserve.node
    system = create_namespace(node_api, "optiloop-system", restricted=True)
    watched = create_namespace(node_api, "ml")
    values = chart_values(images["operator"], "namespaced", watched)
    values["childImages"] = {**values["childImages"], "jobs": images["jobs"], "predictor": images["serve"]}
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    artifacts.chmod(0o777)  # the Jobs write as the images' non-root user
    seconds: dict[str, float] = {}

    def story(name: str) -> str:
        described = kubectl(node, "describe", "modeloptimization", "-n", watched, name)
        pods = kubectl(node, "get", "pods", "-n", watched, "-o", "wide")
        return f"\n{described}\n{pods}"

    def wait_status(name: str, condition: Any, timeout: float, what: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = _status(node, watched, name)
            if status.get("phase") == "Failed":
                raise AssertionError(f"{name} failed: {story(name)}")
            return status if condition(status) else None

        try:
            return wait_for(check, timeout, interval=2, what=what)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; {story(name)}") from None

    installed = False
    try:
        install(node.kubeconfig, tmp_path, "optiloop", system, values)
        installed = True
        claim_on_host_folder(node_api, watched, CLAIM, artifacts)
        kubectl(node, "apply", "-n", watched, "-f", str(_manifest(tmp_path, "iris", SPEC)))
        kubectl(node, "apply", "-n", watched, "-f", str(_manifest(tmp_path, "starved", _starved(SPEC, STARVED_MEMORY))))

        # 1. The tuning Job's pod is deleted while it runs: the Job controller starts another (the
        # Job's backoffLimit is 1), and the operator neither recreates the Job nor calls it failed.
        job = "iris-tune-r1"
        first = wait_for(lambda: _running_pod(node, watched, job), 300, interval=1, what=f"{job}'s pod to run")
        deleted = first["metadata"]["name"]
        kubectl(node, "delete", "pod", "-n", watched, deleted, "--wait=false")
        began = time.monotonic()
        wait_for(
            lambda: (p := _running_pod(node, watched, job)) is not None and p["metadata"]["name"] != deleted and p,
            180, interval=1, what=f"the Job controller to run {job} again",
        )  # fmt: skip
        seconds["deleted Job pod to its replacement running"] = time.monotonic() - began
        during = _conditions(_status(node, watched, "iris"))["Tuned"]
        assert (during["status"], during["reason"]) in (("Unknown", "JobCreated"), ("Unknown", "JobRunning")), during

        # 2. Every operator pod is killed while the retried pod runs: the Deployment restarts them,
        # and the new leader carries on from the status (no second Job, no second revision).
        killed = {p["metadata"]["name"] for p in operator_pods(node, system)}
        assert len(killed) == 2, killed
        assert _running_pod(node, watched, job) is not None, "the operator is killed during the Job"
        kubectl(node, "delete", "pod", "-n", system, *sorted(killed), "--grace-period=0", "--force", "--wait=false")
        began = time.monotonic()

        def restarted() -> bool:
            pods = operator_pods(node, system)
            fresh = [p for p in pods if p["metadata"]["name"] not in killed]
            ready = [p for p in fresh if any(c["type"] == "Ready" and c["status"] == "True"
                                             for c in p["status"].get("conditions", []))]  # fmt: skip
            return len(ready) == 2

        wait_for(restarted, 180, interval=1, what="the operator's Deployment to restart both pods")
        seconds["operator pods killed to both Ready again"] = time.monotonic() - began

        ready = wait_status(
            "iris", lambda s: _conditions(s).get("Ready", {}).get("status") == "True", 900, "iris to be Ready"
        )
        assert (ready["revision"], ready["servingRevision"], len(ready["history"])) == (1, 1, 1), ready
        assert ready["history"][0]["outcome"] == "Serving", ready["history"]
        jobs = items(node, "jobs", "-n", watched, "-l", "optiloop.dev/name=iris")
        assert sorted(j["metadata"]["name"] for j in jobs) == ["iris-compress-r1", "iris-tune-r1"], jobs
        tuning = next(j for j in jobs if j["metadata"]["name"] == job)
        # What the Job controller counted agrees with the status: one pod lost, then success.
        assert (tuning["status"].get("failed"), tuning["status"].get("succeeded")) == (1, 1), tuning["status"]
        tuned = _conditions(ready)["Tuned"]
        assert (tuned["status"], tuned["reason"]) == ("True", "Succeeded"), tuned
        assert [e.get("count", 1) for e in _events(node, watched, "iris", "TuningStarted")] == [1]
        assert _events(node, watched, "iris", "JobRecreated") == []
        assert [i["metadata"]["name"] for i in items(node, "inferenceservices", "-n", watched, "-l",
                                                      "optiloop.dev/name=iris")] == ["iris-r1"]  # fmt: skip

        # 3. A predictor killed for memory on every start: the resource is not Ready and says why.
        began = time.monotonic()

        def starved_says_why(status: dict[str, Any]) -> bool:
            return _conditions(status).get("Ready", {}).get("reason") == "PredictorOOMKilled"

        starved = wait_status("starved", starved_says_why, 600, "starved to say its predictor is OOMKilled")
        seconds["starved built to PredictorOOMKilled"] = time.monotonic() - began
        conditions = _conditions(starved)
        assert conditions["Ready"]["status"] == "False", conditions["Ready"]
        assert (conditions["Deployed"]["status"], conditions["Deployed"]["reason"]) == ("False", "PredictorOOMKilled")
        message = conditions["Deployed"]["message"]
        assert message.startswith("revision 1's predictor does not serve: pod starved-r1-predictor-"), message
        assert "container kserve-container OOMKilled (exit code 137)" in message, message
        assert starved.get("servingRevision") is None, starved
        assert starved["phase"] == "Deploying", starved
        warnings = _events(node, watched, "starved", "PredictorOOMKilled")
        assert [(e["type"], e.get("count", 1)) for e in warnings] == [("Warning", 1)], warnings
        table = kubectl(node, "get", "mopt", "-n", watched, "starved")
        print(f"\n{table}{conditions['Ready']}")
        described = kubectl(node, "describe", "modeloptimization", "-n", watched, "starved")
        assert "PredictorOOMKilled" in described, described

        # Raising the limit is the fix a person makes; the resource then serves and is Ready.
        patch = {"spec": {"deployment": {"resources": SPEC["deployment"]["resources"]}}}
        kubectl(node, "patch", "modeloptimization", "-n", watched, "starved", "--type=merge", "-p", json.dumps(patch))
        began = time.monotonic()

        def serves_the_patch(status: dict[str, Any]) -> bool:
            ready = _conditions(status).get("Ready", {})
            return status.get("observedGeneration") == 2 and ready.get("status") == "True"

        served = wait_status("starved", serves_the_patch, 600, "starved to serve once its memory is raised")
        seconds["memory raised to Ready"] = time.monotonic() - began
        assert served["servingRevision"] is not None, served
        (isvc,) = items(node, "inferenceservices", "-n", watched, "-l", "optiloop.dev/name=starved")
        (container,) = isvc["spec"]["predictor"]["containers"]
        assert container["resources"]["limits"]["memory"] == "1Gi", container
        rounded = {step: round(value, 1) for step, value in seconds.items()}
        record_property("reliability_seconds", rounded)
        print(f"on the node, seconds: {rounded}")
    finally:
        if installed:
            uninstall(node.kubeconfig, tmp_path, "optiloop", system)
        for namespace in (watched, system):
            delete_namespace(node_api, namespace)
