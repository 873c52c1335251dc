"""The closed loop on one machine with real parts: drift in live traffic leads, without a person,
to a retrained, recompressed revision served as a canary and promoted; the operator survives a
SIGKILL during the retrain and a Prometheus outage; deleting the resource removes everything.

Real API server, etcd and garbage collector; the operator as its own process; Debian's
Prometheus scraping the drift monitor, the predictors and the operator; the drift monitor from
its own environment; optiloop's predictor; the stage Jobs as local processes (see NodeAgent).
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import skip_or_fail
from tests.support.control_plane import ControlPlane, free_port
from tests.support.node_agent import NodeAgent, drift_python
from tests.support.operator import OperatorProcess, Resources, install_operator_crds, wait_until
from tests.support.prometheus import prometheus_bin, running_prometheus

pytestmark = pytest.mark.cluster
INTERVAL = 5
SPEC: dict[str, Any] = {
    "dataset": {"uri": "builtin://iris"},
    "model": {"search": {"layers": {"min": 1, "max": 1}, "width": {"min": 8, "max": 32, "log": True}}},
    "tuning": {"maxTrials": 3, "search": {"epochs": {"min": 10, "max": 20}}},
    "compression": {"steps": [{"quantize": {"mode": "dynamicInt8"}}], "gates": {"maxMetricDrop": 0.05}},
    "deployment": {
        "storageUri": "pvc://models/iris",
        "canaryTrafficPercent": 30,
        "canaryAnalysis": {"windowSeconds": 30, "maxErrorRate": 0.05, "maxLatencyP95Ms": 2000},
    },
    "monitoring": {
        "detector": "tabular",
        "pValue": 0.01,
        "windowSize": 60,
        "evaluationIntervalSeconds": INTERVAL,
        "retraining": {"consecutiveEvaluations": 2, "cooldownSeconds": 600, "maxRetrains": 3},
    },
}


def iris_rows() -> list[list[float]]:
    from sklearn.datasets import load_iris

    return [list(map(float, row)) for row in load_iris().data]


class Traffic:
    """Requests to the served URL from a background thread: in-distribution or shifted rows."""

    def __init__(self, url: str) -> None:
        self.url = f"{url}/v1/models/iris:predict"
        self.rows = iris_rows()
        self.shift = 0.0
        self.sent = self.failed = 0
        self.revisions: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def predict(self, rows: list[list[float]]) -> tuple[int, dict[str, Any], str]:
        body = json.dumps({"instances": rows}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response), response.headers.get("X-Revision", "")

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = [[v + self.shift for v in row] for row in random.sample(self.rows, 6)]
            try:
                _, answer, revision = self.predict(batch)
                assert len(answer["predictions"]) == 6
                self.sent += 1
                self.revisions[revision] = self.revisions.get(revision, 0) + 1
            except Exception:  # noqa: BLE001 - counted; the test asserts on the count
                self.failed += 1
            self._stop.wait(0.1)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def drift_reason(resources: Resources) -> str:
    condition = resources.condition("iris", "DriftWithinBounds")
    return condition["reason"] if condition else ""


class PrometheusProcess:
    """Debian's Prometheus on a fixed port, which the test can stop and start again."""

    def __init__(self, targets: list[str], file_sd: Path) -> None:
        self.targets, self.file_sd, self.port = targets, file_sd, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._context: contextlib.AbstractContextManager[Any] | None = None
        self.server: Any = None

    def start(self) -> None:
        self._context = running_prometheus(self.targets, file_sd=self.file_sd, port=self.port)
        self.server = self._context.__enter__()

    def stop(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None

    def query(self, promql: str) -> list[dict[str, Any]]:
        return list(self.server.query(promql))


def test_drift_retrains_recompresses_and_promotes_a_canary_without_a_person(
    control_plane: ControlPlane, k8s: Any, tmp_path: Path
) -> None:
    if prometheus_bin() is None:
        skip_or_fail("Debian's prometheus is not installed (make install)")
    if not Path(drift_python()).exists():
        skip_or_fail(f"the drift environment is missing at {drift_python()} (make install)")
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    install_operator_crds(k8s)
    namespace = f"e2e-{random.randrange(16**6):06x}"
    client.CoreV1Api(k8s).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    resources = Resources(k8s, namespace)
    drift_port, operator_port = free_port(), free_port()
    agent = NodeAgent(control_plane, namespace, tmp_path, drift_port)
    prometheus = PrometheusProcess([f"127.0.0.1:{drift_port}", f"127.0.0.1:{operator_port}"], agent.targets_file)
    times: dict[str, float] = {}
    flaps: list[str] = []
    operators: list[OperatorProcess] = []

    def start_operator() -> OperatorProcess:
        operators.append(
            OperatorProcess(
                control_plane, [namespace], tmp_path / f"operator-{len(operators)}.log", metrics_port=operator_port,
                env={"OPTILOOP_PROMETHEUS_URL": prometheus.url},
            ).start()
        )  # fmt: skip
        return operators[-1]

    def lap(what: str, since: float) -> float:
        now = time.monotonic()
        times[what] = now - since
        return now

    prometheus.start()
    operator = start_operator()
    try:
        with agent:
            # 1. Apply: revision 1 is tuned, compressed, served, and answers.
            mark = time.monotonic()
            resources.create("iris", SPEC)
            wait_until(lambda: resources.ready("iris"), 300, "revision 1 to serve", operator)
            mark = lap("apply -> revision 1 Ready", mark)
            traffic = Traffic(resources.get("iris")["status"]["url"])
            status, answer, _ = traffic.predict(iris_rows()[:3])
            assert status == 200
            assert len(answer["predictions"]) == 3
            wait_until(agent.monitor_ready.is_set, 180, "the drift monitor to load", operator)

            def outcomes() -> dict[str, float]:
                prefix = 'optiloop_operator_drift_evaluations_total{outcome="'
                samples = operator.metrics().items()
                return {k.removeprefix(prefix).removesuffix('"}'): v for k, v in samples if k.startswith(prefix)}

            def evaluations(outcome: str = "") -> float:
                return sum(v for k, v in outcomes().items() if outcome in k)

            def next_outcome() -> str:
                """Wait for the operator's next drift evaluation and say what it decided."""
                before = outcomes()
                wait_until(lambda: sum(outcomes().values()) > sum(before.values()), 3 * INTERVAL,
                           "the next evaluation", operator)  # fmt: skip
                return next(k for k, v in outcomes().items() if v > before.get(k, 0))

            with traffic:
                # 2. In-distribution traffic over several evaluations: within bounds, no new revision.
                wait_until(lambda: agent.requests_logged >= 15, 60, "a full window of live rows", operator)
                before = evaluations()
                wait_until(lambda: evaluations() >= before + 3, 60, "three evaluations", operator)
                assert drift_reason(resources) == "WithinBounds"
                assert resources.get("iris")["status"]["revision"] == 1

                # 2b. Drift that flaps around the threshold: shifted and in-distribution traffic
                # take turns between evaluations, so no two in a row drift and nothing retrains.
                next_outcome()
                for i in range(6):
                    traffic.shift = 3.0 if i % 2 == 0 else 0.0
                    flaps.append(next_outcome())
                    assert (resources.get("iris")["status"].get("drift") or {}).get("consecutiveDrifting", 0) <= 1
                assert flaps.count("DriftPending") >= 2, flaps
                assert flaps.count("WithinBounds") >= 2, flaps
                assert "DriftSustained" not in flaps, flaps
                traffic.shift = 0.0
                next_outcome()
                assert resources.get("iris")["status"]["revision"] == 1
                assert [j["metadata"]["name"] for j in resources.jobs("iris")] == ["iris-compress-r1", "iris-tune-r1"]

                # 3. Shifted traffic: drift reaches Prometheus; revision 2 starts without a person.
                traffic.shift = 3.0
                mark = time.monotonic()
                wait_until(lambda: prometheus.query('optiloop_drift_detected{model="iris"} == 1'), 120,
                           "Prometheus to see the drift", operator)  # fmt: skip
                mark = lap("shifted traffic -> drift in Prometheus", mark)
                # Two consecutive drifting evaluations, then the Job within one more interval.
                wait_until(lambda: any(j["metadata"]["name"] == "iris-tune-r2" for j in resources.jobs("iris")),
                           3 * INTERVAL + 5, "revision 2's tuning Job", operator)  # fmt: skip
                mark = lap("drift in Prometheus -> revision 2 Job", mark)
                # The operator is killed during the retrain and comes back. It is killed once it has
                # said so: Events, like Kubernetes' own, are best effort, and one still queued at a
                # SIGKILL is lost (the status history is the record; the Job-create crash window is
                # what tests/operator's SIGKILL test covers).
                resources.event_reasons("iris", {"RetrainStarted"})
                operator.kill()
                operator = start_operator()
                wait_until(lambda: isvc_canary(resources) == ("2", 30), 300, "revision 2 as a canary", operator)
                mark = lap("revision 2 Job -> canary (incl. restart)", mark)
                wait_until(lambda: isvc_canary(resources) == ("2", None), 180, "the canary promoted", operator)
                mark = lap("canary -> promoted", mark)
                assert traffic.revisions.get("2", 0) > 0, "the canary received traffic"
                # While revision 2 was built the drift went on: held, never a second retrain.
                assert evaluations("RetrainInFlight") >= 1, outcomes()

                # Drift goes on against revision 2: the cooldown holds a third revision back.
                wait_until(lambda: evaluations("CooldownActive") >= 2, 120, "two evaluations in cooldown", operator)
                assert resources.get("iris")["status"]["revision"] == 2

                # 4. Prometheus stops during evaluation: Unknown, no retrain; then it is back.
                prometheus.stop()
                wait_until(lambda: drift_reason(resources) == "PrometheusUnreachable", 3 * INTERVAL,
                           "PrometheusUnreachable", operator)  # fmt: skip
                down = evaluations("PrometheusUnreachable")
                wait_until(lambda: evaluations("PrometheusUnreachable") >= down + 2, 4 * INTERVAL,
                           "two more evaluations while Prometheus is down", operator)  # fmt: skip
                assert resources.get("iris")["status"]["revision"] == 2
                prometheus.start()
                wait_until(lambda: drift_reason(resources) not in ("PrometheusUnreachable", ""), 60,
                           "evaluations to resume", operator)  # fmt: skip
            assert traffic.failed == 0, f"{traffic.failed} of {traffic.sent + traffic.failed} requests failed"

            final = resources.get("iris")["status"]
            assert [(r["revision"], r["trigger"], r["outcome"]) for r in final["history"]] == [
                (1, "Created", "Superseded"), (2, "Drift", "Promoted")
            ]  # fmt: skip
            chain = final["history"][1]
            assert chain["triggeredAt"] <= chain["startedAt"] <= chain["tunedAt"] <= chain["compressedAt"]
            assert chain["compressedAt"] <= chain["deployedAt"] <= chain["promotedAt"]
            assert final["servingRevision"] == 2
            assert [j["metadata"]["name"] for j in resources.jobs("iris")].count("iris-tune-r2") == 1
            resources.event_reasons("iris", {"DriftDetected", "RetrainStarted", "CanaryStarted", "CanaryPromoted"})

            # 5. Delete: every child goes, through owner references.
            mark = time.monotonic()
            resources.delete("iris")

            def gone() -> bool:
                try:
                    resources.get("iris")
                    return False
                except ApiException as exc:
                    return exc.status == 404

            wait_until(
                lambda: gone() and not resources.jobs("iris") and resources.inference_service("iris") is None
                and not resources.apps.list_namespaced_deployment(namespace).items
                and not resources.core.list_namespaced_service(namespace).items,
                60, "the resource and every child to be gone", operator,
            )  # fmt: skip
            lap("delete -> every child gone", mark)
        assert not agent.errors, agent.errors
    finally:
        for process in operators:
            process.stop()
        agent.shutdown()
        prometheus.stop()
    print("\nclosed loop, measured on this machine:")
    for what, seconds in times.items():
        print(f"  {what:<45} {seconds:6.1f} s")
    print(f"  drift decisions while it flapped: {', '.join(flaps)}")


def isvc_canary(resources: Resources) -> tuple[str, int | None]:
    isvc = resources.inference_service("iris")
    if isvc is None:
        return "", None
    return isvc["metadata"]["labels"]["optiloop.dev/revision"], isvc["spec"]["predictor"].get("canaryTrafficPercent")
