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
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import skip_or_fail
from tests.node.test_chart_on_node import chart_values, get, items, kubectl
from tests.node.test_gateway_canary_on_node import CLIENT as COUNTING_CLIENT
from tests.node.test_gateway_canary_on_node import GATEWAY, LISTENER, _counted, _gateway
from tests.node.test_kserve_on_node import CLIENT
from tests.support.chart_release import install, uninstall
from tests.support.control_plane import wait_for
from tests.support.faulty_model import make_directory_fail_above
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
SHIFTED_ABOVE = 8.1
"""Sepal length (column 0) between iris' largest (7.9 cm) and the shifted rows' smallest (8.3 cm):
the bound above which revision 3's sabotaged model fails."""

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


def _shifted_v2_request() -> dict[str, Any]:
    rows = _shifted_rows()
    flat = [value for row in rows for value in row]
    return {"inputs": [{"name": "features", "datatype": "FP32", "shape": [len(rows), 4], "data": flat}]}


@contextmanager
def _failing_once_finished(model_dir: Path) -> Iterator[Callable[[], float]]:
    """While the block runs, a thread waits for the model directory at ``model_dir`` to be
    finished (its marker written, which a Job does last) and at once rewrites it to fail on the
    shifted rows (:func:`make_directory_fail_above`): the operator creates the InferenceService
    only after the Job has ended, so the predictor loads the faulty model. Yields a function that
    returns when the rewrite was done (seconds on the monotonic clock) or raises why not."""
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def rewrite() -> None:
        try:
            while not stop.wait(0.05):
                if (model_dir / "_COMPLETE.json").is_file():
                    make_directory_fail_above(model_dir, 0, SHIFTED_ABOVE)
                    outcome["at"] = time.monotonic()
                    return
        except Exception as exc:  # noqa: BLE001 - whatever it was, done() reports it in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=rewrite, name="fault-injector", daemon=True)
    thread.start()

    def done() -> float:
        if "error" in outcome:
            raise AssertionError(f"rewriting {model_dir} failed: {outcome['error']!r}")
        if "at" not in outcome:
            raise AssertionError(f"{model_dir} was never finished, so never made to fail")
        return float(outcome["at"])

    try:
        yield done
    finally:
        stop.set()
        thread.join(timeout=10)


def _faulty_canary_rolls_back(
    node: Node,
    namespace: str,
    gateway_ip: str,
    url: str,
    shifted: str,
    prom: Any,
    watch: Callable[[Callable[[dict[str, Any]], bool], float, str], dict[str, Any]],
    sabotaged: Callable[[], float],
    story: Callable[[], str],
) -> dict[str, float]:
    """Revision 2 serves through the gateway and shifted traffic goes on: the operator retrains
    again, and revision 3's model (made to fail on shifted rows once its Job finished it) becomes
    the canary. Requests through the gateway: the canary answers its share with 500s, which its
    predictor counts as errors; Prometheus has them, the operator rolls it back on
    ``ErrorRateTooHigh`` and the route gives revision 2 everything again. In no batch of requests
    did the canary get more than its share. Returns the seconds measured."""
    seconds: dict[str, float] = {}
    began = time.monotonic()
    while _status(node, namespace).get("revision") != 3:
        assert time.monotonic() - began < 300, f"no second retrain after 300 s of shifted traffic; {story()}"
        node.run_inside([sys.executable, "-c", TRAFFIC, url, shifted, "10"], timeout=120)

    def analysing(s: dict[str, Any]) -> bool:
        return s.get("revision") == 3 and _has_its_share(s)

    watch(analysing, 900, "revision 3's canary analysis")
    seconds["faulty model rewritten to its canary analysed"] = time.monotonic() - sabotaged()
    analysed_at = time.monotonic()

    def rolled_back(s: dict[str, Any]) -> bool:
        last = (s.get("history") or [{}])[-1]
        return last.get("revision") == 3 and last.get("outcome") == "RolledBack"

    request = json.dumps(_shifted_v2_request())
    argv = [sys.executable, "-c", COUNTING_CLIENT, gateway_ip, str(LISTENER_PORT), "/v2/models/iris/infer", request]
    bursts: list[Counter[str]] = []
    while not rolled_back(_status(node, namespace)):
        assert time.monotonic() - analysed_at < 300, f"revision 3 not rolled back after 300 s; {bursts}; {story()}"
        bursts.append(Counter(json.loads(node.run_inside([*argv, "50"], timeout=300).stdout)))
    seconds["faulty canary analysed to rolled back"] = time.monotonic() - analysed_at
    print(f"\nthrough the gateway while revision 3 was the canary, by answer: {bursts}")
    assert sum(burst["HTTP 500"] for burst in bursts) > 0, bursts
    for burst in bursts:
        # Its share at most (Traefik's weighted round robin gives it 10 of 50), less once the
        # rollback moved the route.
        assert burst["HTTP 500"] <= 50 * (CANARY_PERCENT + 5) // 100, bursts
        # The serving revision answered the rest (a request or two may meet the gateway's switch).
        assert burst["HTTP 500"] + burst["2"] >= 48, bursts

    status = watch(lambda s: s.get("servingRevision") == 2 and _ready(s), 120, "Ready on revision 2 again")
    last = status["history"][-1]
    assert "ErrorRateTooHigh" in last["message"], last
    assert status["serving"]["canaryMethod"] == "GatewayAPI", status["serving"]
    wait_for(lambda: [i["metadata"]["name"] for i in items(node, "inferenceservices", "-n", namespace)]
             == ["iris-r2"], 180, interval=1, what="revision 3's InferenceService to go")  # fmt: skip
    route = get(node, "httproutes", "-n", namespace, "iris")
    backends = [(b["name"], b.get("weight", 1)) for b in route["spec"]["rules"][0]["backendRefs"]]
    assert backends == [("iris-r2-predictor", 100)], backends
    after = Counter(json.loads(node.run_inside([*argv, "20"], timeout=300).stdout))
    assert after == Counter({"2": 20}), after
    # What the analysis read: the canary's own errors, in Prometheus (kept after its pods went).
    errors = prom.query(
        f'max_over_time(optiloop_predictor_requests_total{{namespace="{namespace}", model="iris", revision="3", '
        f'outcome="error"}}[15m])'
    )
    assert errors, "no errors of revision 3 in Prometheus"
    assert sum(float(r["value"][1]) for r in errors) > 0, errors
    described = kubectl(node, "describe", "modeloptimization", "-n", namespace, "iris")
    assert "CanaryRolledBack" in described, described
    print(kubectl(node, "get", "mopt", "-n", namespace))
    return seconds


def _has_its_share(status: dict[str, Any]) -> bool:
    """The canary is Ready and the gateway took the route with its weight: it is being analysed,
    with traffic (``CanaryAnalysing``) or still without (``CanaryNoTraffic``)."""
    deployed = {c["type"]: c for c in status.get("conditions", [])}.get("Deployed", {})
    return deployed.get("reason") in ("CanaryAnalysing", "CanaryNoTraffic")


def _ready(status: dict[str, Any]) -> bool:
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    return conditions.get("Ready", {}).get("status") == "True"


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
        # Drift against revision 2 retrains at once (revision 3, the faulty one), and no more.
        spec["monitoring"]["retraining"] |= {"cooldownSeconds": 0, "maxRetrains": 2}
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
    with (
        prometheus_on_node(node, node_api, monitors, monitoring, tmp_path / "prometheus", for_pods=True) as prom,
        _failing_once_finished(artifacts / "iris" / "r3" / "model") as sabotaged,
    ):
        try:
            install(node.kubeconfig, tmp_path, "optiloop", system, values)
            installed = True
            claim_on_host_folder(node_api, watched, CLAIM, artifacts)
            applied = time.monotonic()
            kubectl(node, "apply", "-n", watched, "-f", str(manifest))

            status = watch(_ready, 1200, "revision 1 to be Ready")
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
                status = watch(_has_its_share, 1200, "revision 2's canary analysis")
                # No request has reached it yet: it is not promoted on the error rate of nothing.
                deployed = {c["type"]: c for c in status["conditions"]}["Deployed"]
                assert deployed["reason"] == "CanaryNoTraffic", deployed
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

            # Revision 2 is built by pods again, tried, and takes over. Through the gateway, traffic
            # goes on as users' would: a canary is promoted only on requests within its window.
            def promoted(s: dict[str, Any]) -> bool:
                if s.get("servingRevision") == 2:
                    return True
                if method == "GatewayAPI":
                    node.run_inside([sys.executable, "-c", TRAFFIC, url, shifted, "5", "0.1"], timeout=120)
                return False

            status = watch(promoted, 1200, "revision 2 to serve")
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

            def isvcs() -> list[str]:
                return [i["metadata"]["name"] for i in items(node, "inferenceservices", "-n", watched)]

            wait_for(lambda: "iris-r1" not in isvcs(), 180, interval=1, what="revision 1's InferenceService to go")
            served = get(node, "service", "-n", watched, "iris-r2-predictor")
            answer = _predict(node, served["spec"]["clusterIP"], [[5.1, 3.5, 1.4, 0.2]])
            assert len(answer["predictions"]) == 1, answer
            print(kubectl(node, "get", "mopt", "-n", watched))

            if method == "GatewayAPI":
                gateway_ip = address.split(":")[0]
                seconds |= _faulty_canary_rolls_back(node, watched, gateway_ip, url, shifted, prom, watch, sabotaged,
                                                     story)  # fmt: skip

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
