"""The operator as a process on a real API server in each serving topology: KServe's mode from
the resource's annotation or KServe's ConfigMap, a Standard-mode canary split by an HTTPRoute
(weights, promotion, the old revision removed once the gateway moved), blue/green with a probe
Job where no split exists (promoted after the probe passed, rolled back when it failed), and
specs the cluster cannot serve reported with the field at fault."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.operator.conftest import StartOperator
from tests.support.control_plane import ControlPlane
from tests.support.operator import Finish, Resources, StandIn, probe_outcome, succeed_all, wait_until
from tests.support.prometheus import PrometheusStandIn

STANDARD = {"serving.kserve.io/deploymentMode": "RawDeployment"}


@pytest.fixture
def prometheus() -> Iterator[PrometheusStandIn]:
    stand_in = PrometheusStandIn()
    stand_in.latency_ms = 2.0
    yield stand_in
    stand_in.stop()


def spec(url: str, **deployment: Any) -> dict[str, Any]:
    return {
        "dataset": {"uri": "builtin://iris"},
        "deployment": {
            "storageUri": "pvc://models/iris",
            "canaryTrafficPercent": 20,
            "canaryAnalysis": {"windowSeconds": 30, "maxErrorRate": 0.05, "maxLatencyP95Ms": 50},
            **deployment,
        },
        "monitoring": {
            "evaluationIntervalSeconds": 5,
            "prometheus": {"url": url},
            "retraining": {"consecutiveEvaluations": 1, "cooldownSeconds": 0, "maxRetrains": 1},
        },
    }


def status(resources: Resources) -> dict[str, Any]:
    return dict(resources.get("iris").get("status") or {})


def services(resources: Resources) -> dict[str, dict[str, Any]]:
    items = resources.custom.list_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", resources.namespace, "inferenceservices"
    )["items"]
    return {i["metadata"]["name"]: i for i in items}


def route_weights(resources: Resources) -> list[tuple[str, int]]:
    route = resources.http_route("iris")
    return [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]] if route else []


def monitored(resources: Resources) -> list[str]:
    """The InferenceServices the drift monitor's Deployment accepts events from."""
    from kubernetes.client.exceptions import ApiException

    try:
        deployment = resources.apps.read_namespaced_deployment("iris-drift", resources.namespace)
    except ApiException:
        return []  # not there yet
    args = deployment.spec.template.spec.containers[0].args
    return [args[i + 1] for i, arg in enumerate(args) if arg == "--inference-service"]


def test_standard_mode_splits_a_canary_with_an_http_route_and_removes_the_old_revision_after_promotion(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator, prometheus: PrometheusStandIn
) -> None:
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator(env={"OPTILOOP_GATEWAY": "gateways/inference"})
    with StandIn(control_plane, watched):
        resources.create("iris", spec(prometheus.url), STANDARD)
        wait_until(lambda: resources.ready("iris"), 60, "revision 1 to serve", operator)
        assert set(services(resources)) == {"iris-r1"}
        wait_until(lambda: route_weights(resources) == [("iris-r1-predictor", 100)], 20, "the route", operator)
        wait_until(lambda: monitored(resources) == ["iris-r1"], 20, "the monitor accepting revision 1's", operator)
        serving = status(resources)["serving"]
        assert serving == {"mode": "Standard", "modeSource": "annotation", "canaryMethod": "GatewayAPI",
                           "autoscaler": "hpa", "scaleMetric": "cpu", "scaleTarget": 80, "route": "iris"}  # fmt: skip
        isvc = services(resources)["iris-r1"]
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
        assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]

        prometheus.drift = 1.0
        wait_until(lambda: route_weights(resources) == [("iris-r1-predictor", 80), ("iris-r2-predictor", 20)], 60,
                   "revision 2 as a 20% canary behind the route", operator)  # fmt: skip
        prometheus.drift = 0.0
        wait_until(lambda: monitored(resources) == ["iris-r1", "iris-r2"], 20, "the monitor accepting the canary's",
                   operator)  # fmt: skip
        assert status(resources)["servingRevision"] == 1
        assert resources.ready("iris")
        wait_until(lambda: route_weights(resources) == [("iris-r2-predictor", 100)], 60, "the promotion", operator)
        wait_until(lambda: set(services(resources)) == {"iris-r2"}, 30, "revision 1's InferenceService gone", operator)
        wait_until(lambda: monitored(resources) == ["iris-r2"], 20, "the monitor accepting revision 2's", operator)
        final = status(resources)
    assert final["servingRevision"] == 2
    assert [(r["revision"], r["outcome"], r.get("canaryMethod")) for r in final["history"]] == [
        (1, "Superseded", None),
        (2, "Promoted", "GatewayAPI"),
    ]
    split = next(c for c in final["conditions"] if c["type"] == "TrafficSplit")
    assert (split["status"], split["reason"]) == ("True", "GatewayAPIRoute")
    events = {e["reason"]: e["message"] for e in resources.events("iris")}
    assert "HTTPRoute" in events["CanaryStarted"]
    assert "HTTPRoute" in events["CanaryPromoted"]


def test_without_a_gateway_a_retrained_revision_is_tried_blue_green_and_takes_over_only_after_its_probe(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator, prometheus: PrometheusStandIn
) -> None:
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator()
    probes: list[str] = []

    def jobs(job: dict[str, Any]) -> Finish | None:
        if job["metadata"]["labels"]["optiloop.dev/component"] != "probe":
            return succeed_all(job)
        probes.append(job["metadata"]["name"])
        return Finish(True, probe_outcome())

    with StandIn(control_plane, watched, jobs):
        resources.create("iris", spec(prometheus.url), STANDARD)
        wait_until(lambda: resources.ready("iris"), 60, "revision 1 to serve", operator)
        first_url = status(resources)["url"]
        split = next(c for c in status(resources)["conditions"] if c["type"] == "TrafficSplit")
        assert (split["status"], split["reason"]) == ("False", "NoGateway")
        assert "blue/green" in split["message"]
        prometheus.drift = 1.0
        wait_until(lambda: "iris-r2" in services(resources), 60, "revision 2 beside revision 1", operator)
        prometheus.drift = 0.0
        assert route_weights(resources) == []
        wait_until(lambda: status(resources)["servingRevision"] == 2, 90, "the switch after the probe", operator)
        wait_until(lambda: set(services(resources)) == {"iris-r2"}, 30, "revision 1 removed", operator)
        final = status(resources)
    assert probes == ["iris-probe-r2"]
    assert final["url"] != first_url
    assert final["url"].startswith("http://iris-r2.")
    assert final["history"][-1]["canaryMethod"] == "BlueGreen"


def test_a_failed_probe_rolls_the_blue_green_revision_back_and_says_why(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator, prometheus: PrometheusStandIn
) -> None:
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator()

    def jobs(job: dict[str, Any]) -> Finish:
        if job["metadata"]["labels"]["optiloop.dev/component"] == "probe":
            return Finish(False, probe_outcome(failed=45), reason="BackoffLimitExceeded")
        return succeed_all(job)

    with StandIn(control_plane, watched, jobs):
        resources.create("iris", spec(prometheus.url, canaryMethod="blueGreen"), STANDARD)
        wait_until(lambda: resources.ready("iris"), 60, "revision 1 to serve", operator)
        prometheus.drift = 1.0
        wait_until(lambda: status(resources)["history"][-1].get("outcome") == "RolledBack" and
                   status(resources)["revision"] == 2, 90, "the rollback", operator)  # fmt: skip
        wait_until(lambda: set(services(resources)) == {"iris-r1"}, 30, "revision 2 removed", operator)
        final = status(resources)
    assert final["servingRevision"] == 1
    assert final["history"][-1]["message"] == "rolled back: ProbeFailed: 300 requests, 45 failed (15.0%), p95 3.0 ms"
    warning = next(e for e in resources.events("iris") if e["reason"] == "CanaryRolledBack")
    assert warning["type"] == "Warning"


def test_auto_follows_kserves_configmap_and_refuses_what_the_resolved_mode_cannot_do(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator, prometheus: PrometheusStandIn
) -> None:
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator()
    with StandIn(control_plane, watched):
        # KServe's ConfigMap says Serverless: one InferenceService with Knative's split.
        resources.create("iris", spec(prometheus.url))
        wait_until(lambda: resources.ready("iris"), 60, "revision 1 to serve", operator)
        serving = status(resources)["serving"]
        assert (serving["mode"], serving["modeSource"], serving["canaryMethod"]) == (
            "Knative", "kserveConfig", "KnativeTraffic"
        )  # fmt: skip
        assert set(services(resources)) == {"iris"}
        # The annotation switches it to Standard, where concurrency needs KEDA: refused by name.
        resources.patch_spec("iris", {"deployment": {"scaleMetric": "concurrency"}})
        resources.patch_metadata("iris", {"annotations": STANDARD})
        resources.patch_spec("iris", {"deployment": {"maxReplicas": 4}})  # a new generation reads the annotation

        def refused() -> dict[str, Any] | None:
            ready = resources.condition("iris", "Ready")
            return ready if ready is not None and ready["reason"] == "UnsupportedInMode" else None

        ready = wait_until(refused, 30, "Ready=False UnsupportedInMode", operator)
        assert ready["status"] == "False"
        assert "spec.deployment.scaleMetric" in ready["message"]
        assert "revision 1 keeps serving" in ready["message"]
        assert set(services(resources)) == {"iris"}, "the serving revision is left as it was"
