"""The loop on the real node as a user runs it: the chart installed with Helm (the operator as a pod,
querying a Prometheus that discovers the drift monitor's pod through the API), ``kubectl apply`` of
a small ModelOptimization, and then everything as pods from our images: the tuning and compression
Jobs from the jobs image writing to a PersistentVolume, KServe's real manager turning the operator's
InferenceService into a Deployment with its agent, our predictor answering through the predictor's
Service, our drift monitor taking what the agent logs. Shifted traffic makes the monitor report
drift, the operator retrains and recompresses as pods again, and tries revision 2 before it takes
over: blue/green (its probe Job) with no gateway on the cluster, or, with Traefik serving the
Gateway API, as a canary that the operator's HTTPRoute gives 20% of the requests sent through the
gateway, analysed on its own predictor metrics in Prometheus and promoted. ``kubectl get`` and
``kubectl describe`` tell the story; deleting the resource removes every child."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import skip_or_fail
from tests.node.test_chart_on_node import chart_values, get, items, kubectl
from tests.node.test_gateway_canary_on_node import GATEWAY, LISTENER, _counted, _gateway
from tests.node.test_kserve_on_node import CLIENT
from tests.support.chart_release import install, uninstall
from tests.support.control_plane import wait_for
from tests.support.gateway_node import LISTENER_PORT, GatewayOnNode
from tests.support.images import ImagesMissingError
from tests.support.kserve_node import KServeOnNode, import_our_image
from tests.support.namespaces import create_namespace, delete_namespace
from tests.support.node import Node
from tests.support.node_config import NODE_IP
from tests.support.node_prometheus import PORT, PrometheusUnavailableError, prometheus_binary, prometheus_on_node
from tests.support.node_storage import claim_on_host_folder

pytestmark = pytest.mark.timeout(1800)
CLAIM = "models"
SPEC: dict[str, Any] = {
    "dataset": {"uri": "builtin://iris"},
    "model": {"search": {"layers": {"min": 1, "max": 1}, "width": {"min": 8, "max": 16}}},
    "tuning": {"maxTrials": 2, "search": {"epochs": {"min": 5, "max": 10}}},
    "compression": {"steps": [{"quantize": {"mode": "dynamicInt8"}}], "gates": {"maxMetricDrop": 0.05}},
    # Requests that fit two revisions, the drift monitor, the operator and a probe on the node's
    # 2 CPUs: with the defaults the probe Job's pod found no room (ProbePodNotStarting).
    "jobs": {"resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "4Gi"}}},
    "deployment": {
        "storageUri": f"pvc://{CLAIM}/iris",
        "canaryAnalysis": {"windowSeconds": 30},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    },
    "monitoring": {
        "windowSize": 30,
        "evaluationIntervalSeconds": 5,
        "retraining": {"consecutiveEvaluations": 2, "cooldownSeconds": 600},
    },
}
PHASES = ("Tuning", "Compressing", "Serving")
"""Phases the resource must show on its way, in this order (others may come between them)."""


@pytest.fixture(scope="module")
def images(kserve: KServeOnNode) -> dict[str, str]:
    """Our four images imported into the node, by target."""
    try:
        return {target: import_our_image(kserve.node, target) for target in ("operator", "jobs", "serve", "drift")}
    except ImagesMissingError as exc:
        skip_or_fail(f"our images: {exc}")
        raise  # skip_or_fail never returns


DRIFT_MONITORS = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PodMonitor",
    "metadata": {"name": "optiloop-drift"},
    "spec": {"selector": {"matchLabels": {"optiloop.dev/component": "drift-monitor"}},
             "podMetricsEndpoints": [{"port": "http"}]},
}  # fmt: skip
"""What a platform team's Prometheus scrapes of optiloop's drift monitors (their pods' ``http`` port)."""
PREDICTORS = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PodMonitor",
    "metadata": {"name": "optiloop-predictors"},
    "spec": {"selector": {"matchLabels": {"optiloop.dev/component": "serving"}},
             "podMetricsEndpoints": [{"port": "http1"}]},
}  # fmt: skip
"""And of the predictors, whose metrics the canary analysis queries (KServe copies the
InferenceService's labels onto its pods; the operator names the predictor's port)."""
CANARY_PERCENT = 20

TRAFFIC = """
import json, sys, time, urllib.request
url, body, count = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.2
answered = 0
for _ in range(count):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            answered += answer.status == 200
    except OSError:
        pass
    time.sleep(pause)
print(answered)
"""


@pytest.fixture(scope="module")
def prometheus_built() -> None:
    try:
        prometheus_binary()
    except PrometheusUnavailableError as exc:
        skip_or_fail(f"Prometheus with kubernetes_sd_configs: {exc}")


def _shifted_rows() -> list[list[float]]:
    """Iris rows far outside the training data: every measurement 4 cm longer."""
    from sklearn.datasets import load_iris

    return [[float(v) + 4.0 for v in row] for row in load_iris().data[::15]]


def _predict(node: Node, cluster_ip: str, rows: list[list[float]]) -> dict[str, Any]:
    url = f"http://{cluster_ip}:80/v1/models/iris:predict"
    done = node.run_inside([sys.executable, "-c", CLIENT, url, json.dumps({"instances": rows})], timeout=60)
    return dict(json.loads(done.stdout))


def _in_order(seen: list[str], expected: tuple[str, ...]) -> bool:
    remaining = iter(seen)
    return all(phase in remaining for phase in expected)


def _status(node: Node, namespace: str, name: str = "iris") -> dict[str, Any]:
    return dict((get(node, "modeloptimizations", "-n", namespace, name) or {}).get("status") or {})


@pytest.mark.parametrize("method", ["BlueGreen", "GatewayAPI"])
def test_kubectl_apply_serves_then_drift_retrains_and_rolls_out_revision_2_all_as_pods(
    kserve: KServeOnNode,
    images: dict[str, str],
    prometheus_built: None,
    node_api: Any,
    tmp_path: Path,
    record_property: Any,
    request: pytest.FixtureRequest,
    method: str,
) -> None:
    node = kserve.node
    system = create_namespace(node_api, "optiloop-system", restricted=True)
    watched = create_namespace(node_api, "ml")
    monitoring = create_namespace(node_api, "monitoring")
    spec = json.loads(json.dumps(SPEC))
    address = ""
    if method == "GatewayAPI":
        gateway: GatewayOnNode = request.getfixturevalue("gateway")
        found = _gateway(node_api, watched, gateway.class_name)
        address = f"{found['status']['addresses'][0]['value']}:{LISTENER_PORT}"
        # A window the burst below fits in well before the canary is promoted.
        spec["deployment"] |= {"canaryTrafficPercent": CANARY_PERCENT, "canaryAnalysis": {"windowSeconds": 60},
                               "gateway": {"name": GATEWAY, "sectionName": LISTENER}}  # fmt: skip
    values = chart_values(images["operator"], "namespaced", watched)
    values["prometheus"] = {"url": f"http://{NODE_IP}:{PORT}"}
    values["childImages"] = {
        "jobs": images["jobs"], "predictor": images["serve"], "drift": images["drift"], "pullPolicy": "Never",
    }  # fmt: skip
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    artifacts.chmod(0o777)  # the Jobs write as the images' non-root user
    manifest = tmp_path / "iris.yaml"
    resource = {"apiVersion": "optiloop.dev/v1alpha1", "kind": "ModelOptimization", "metadata": {"name": "iris"}}
    manifest.write_text(yaml.safe_dump({**resource, "spec": spec}))
    monitors = [{**m, "metadata": {**m["metadata"], "namespace": watched}} for m in (DRIFT_MONITORS, PREDICTORS)]
    seconds: dict[str, float] = {}
    phases: list[str] = []

    def story() -> str:
        described = kubectl(node, "describe", "modeloptimization", "-n", watched, "iris")
        pods = kubectl(node, "get", "pods", "-n", watched, "-o", "wide")
        return f"phases {phases}\n{described}\n{pods}"

    def watch(condition: Any, timeout: float, what: str) -> dict[str, Any]:
        """Poll the resource's status until ``condition(status)``, noting every phase it shows."""

        def check() -> dict[str, Any] | None:
            status = _status(node, watched)
            if status.get("phase") and (not phases or phases[-1] != status["phase"]):
                phases.append(status["phase"])
            if status.get("phase") == "Failed":
                raise AssertionError(f"the resource failed: {story()}")
            return status if condition(status) else None

        try:
            return wait_for(check, timeout, interval=2, what=what)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; {story()}") from None

    installed = False
    with prometheus_on_node(node, node_api, monitors, monitoring, tmp_path / "prometheus", for_pods=True) as prom:
        try:
            install(node.kubeconfig, tmp_path, "optiloop", system, values)
            installed = True
            claim_on_host_folder(node_api, watched, CLAIM, artifacts)
            applied = time.monotonic()
            kubectl(node, "apply", "-n", watched, "-f", str(manifest))

            def ready(status: dict[str, Any]) -> bool:
                conditions = {c["type"]: c for c in status.get("conditions", [])}
                return conditions.get("Ready", {}).get("status") == "True"

            status = watch(ready, 1200, "revision 1 to be Ready")
            seconds["apply to Ready"] = time.monotonic() - applied
            assert _in_order(phases, PHASES), phases
            assert (status["revision"], status["servingRevision"]) == (1, 1), status

            # The stage Jobs ran as pods from the jobs image and finished.
            jobs = items(node, "jobs", "-n", watched, "-l", "optiloop.dev/name=iris")
            assert sorted(j["metadata"]["labels"]["optiloop.dev/component"] for j in jobs) == ["compression", "tuning"]
            for job in jobs:
                assert job["status"].get("succeeded") == 1, job["status"]
                assert [c["image"] for c in job["spec"]["template"]["spec"]["containers"]] == [images["jobs"]]

            # KServe made the predictor from the operator's InferenceService; our predictor answers.
            (isvc,) = items(node, "inferenceservices", "-n", watched)
            predictor = get(node, "service", "-n", watched, f"{isvc['metadata']['name']}-predictor")
            answer = _predict(node, predictor["spec"]["clusterIP"], [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
            assert len(answer["predictions"]) == 2, answer

            table = kubectl(node, "get", "mopt", "-n", watched)
            print(f"\n{table}")
            assert "Serving" in table.splitlines()[1], table
            described = kubectl(node, "describe", "modeloptimization", "-n", watched, "iris")
            for reason in ("RevisionStarted", "TuningStarted", "TuningSucceeded", "CompressionSucceeded", "Serving"):
                assert reason in described, (reason, described)

            # The drift monitor pod is up and Prometheus scrapes it through pod discovery.
            def monitor_available() -> bool:
                monitor = get(node, "deployment", "-n", watched, "iris-drift") or {}
                return bool(monitor.get("status", {}).get("availableReplicas") == 1)

            wait_for(monitor_available, 300, interval=1, what="the drift monitor to be available")
            query = f'optiloop_drift_window_samples{{namespace="{watched}", model="iris", revision="1"}}'
            wait_for(lambda: prom.query(query), 60, interval=1, what=f"Prometheus to scrape {query}")

            # Shifted traffic (through the gateway when there is one, else the serving revision's
            # Service): the monitor reports drift, the operator sees it twice in a row and starts
            # revision 2.
            shifted = json.dumps({"instances": _shifted_rows()})
            url = f"http://{address or predictor['spec']['clusterIP'] + ':80'}/v1/models/iris:predict"
            began = time.monotonic()
            answered = 0
            while _status(node, watched).get("revision") != 2:
                assert time.monotonic() - began < 300, f"no retrain after 300 s of shifted traffic; {story()}"
                done = node.run_inside([sys.executable, "-c", TRAFFIC, url, shifted, "10"], timeout=120)
                answered += int(done.stdout.strip() or 0)
            seconds["shifted traffic to revision 2 started"] = time.monotonic() - began
            assert answered > 0
            drift = prom.query(f'optiloop_drift_detected{{namespace="{watched}", model="iris", revision="1"}}')
            assert [r["value"][1] for r in drift] == ["1"], drift

            if method == "GatewayAPI":
                # The canary gets its share once it is Ready and the gateway took the route: 20 of
                # 100 requests through the gateway, counted by each revision's own predictors.
                def analysed(s: dict[str, Any]) -> bool:
                    deployed = {c["type"]: c for c in s.get("conditions", [])}.get("Deployed", {})
                    return deployed.get("reason") == "CanaryAnalysing"

                watch(analysed, 1200, "revision 2's canary analysis")
                before = {r: _counted(node, node_api, watched, f"iris-r{r}") for r in (1, 2)}
                done = node.run_inside([sys.executable, "-c", TRAFFIC, url, shifted, "100", "0"], timeout=300)
                shares = {r: _counted(node, node_api, watched, f"iris-r{r}") - before[r] for r in (1, 2)}
                print(f"\nthrough the gateway during the canary analysis: {shares} ({done.stdout.strip()} answered)")
                record_property("canary_shares", shares)
                assert sum(shares.values()) == 100, shares
                assert 15 <= shares[2] <= 25, shares
                # The analysis reads the canary's own series, which Prometheus has.
                query = f'optiloop_predictor_requests_total{{namespace="{watched}", model="iris", revision="2"}}'
                wait_for(lambda: prom.query(query), 60, interval=1, what=f"Prometheus to scrape {query}")

            # Revision 2 is built by pods again, tried, and takes over.
            status = watch(lambda s: s.get("servingRevision") == 2, 1200, "revision 2 to serve")
            seconds["shifted traffic to revision 2 served"] = time.monotonic() - began
            history = {r["revision"]: r for r in status["history"]}
            assert history[2]["trigger"] == "Drift", history
            assert status["serving"]["canaryMethod"] == method, status["serving"]
            if method == "GatewayAPI":
                assert history[2]["outcome"] == "Promoted", history
                route = get(node, "httproutes", "-n", watched, "iris")
                backends = [(b["name"], b.get("weight", 1)) for b in route["spec"]["rules"][0]["backendRefs"]]
                assert backends == [("iris-r2-predictor", 100)], backends
                described = kubectl(node, "describe", "modeloptimization", "-n", watched, "iris")
                for reason in ("CanaryStarted", "CanaryPromoted"):
                    assert reason in described, (reason, described)
            described = kubectl(node, "describe", "modeloptimization", "-n", watched, "iris")
            for reason in ("DriftDetected", "RetrainStarted"):
                assert reason in described, (reason, described)
            wait_for(lambda: [i["metadata"]["name"] for i in items(node, "inferenceservices", "-n", watched)]
                     == ["iris-r2"], 180, interval=1, what="revision 1's InferenceService to go")  # fmt: skip
            served = get(node, "service", "-n", watched, "iris-r2-predictor")
            answer = _predict(node, served["spec"]["clusterIP"], [[5.1, 3.5, 1.4, 0.2]])
            assert len(answer["predictions"]) == 1, answer
            print(kubectl(node, "get", "mopt", "-n", watched))

            # Deleting the resource removes every child (owner references, the garbage collector).
            kubectl(node, "delete", "modeloptimization", "-n", watched, "iris", "--wait=true", "--timeout=120s")

            def children() -> list[str]:
                kinds = "jobs,deployments,services,inferenceservices,networkpolicies,pods,httproutes"
                return [f"{o['kind']}/{o['metadata']['name']}" for o in items(node, kinds, "-n", watched)]

            wait_for(lambda: children() == [], 180, interval=1, what="every child of iris to go")
            rounded = {step: round(value, 1) for step, value in seconds.items()}
            record_property("loop_seconds", rounded)
            print(f"on the node ({method}), seconds: {rounded}; phases {phases} (load {os.getloadavg()[0]:.1f})")
        finally:
            if installed:
                uninstall(node.kubeconfig, tmp_path, "optiloop", system)
            for namespace in (watched, system, monitoring):
                delete_namespace(node_api, namespace)
