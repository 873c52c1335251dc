"""Each serving mode's plan: how the deployment mode, canary method and autoscaler are resolved
from the spec, the resource's annotation and what the cluster serves; what each mode writes
(InferenceServices, the HTTPRoute, the probe Job); and a canary's whole life in each method:
its share of traffic, promotion, rollback, and the clean-up once the traffic has moved."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest

from optiloop.api import ModelOptimization
from optiloop.api.jobs import StageOutcome
from optiloop.api.status import DriftStatus
from optiloop.operator.builders.routing import http_route
from optiloop.operator.builders.serving import inference_service
from optiloop.operator.capabilities import Capabilities, default_from_config
from optiloop.operator.observed import (
    SPEC_HASH_ANNOTATION,
    CanaryMetrics,
    Observed,
    ObservedChild,
    ObservedJob,
    PodTrouble,
)
from optiloop.operator.planning.monitor import API_VERSIONS as MONITOR_PARTS
from optiloop.operator.planning.plan import Apply, Delete, Plan
from optiloop.operator.policy import DriftDecision
from optiloop.operator.reconcile import reconcile
from optiloop.operator.topology import GatewayParent, Topology, Unservable, resolve
from tests.unit.test_operator_reconcile import COMPRESSED, CONFIG, T0, TUNED, condition, job

SOURCE = "kserve/inferenceservice-config"
GATEWAY_CONFIG = replace(CONFIG, gateway=("gateways", "inference", None))


def cluster(
    default: str | None = "Standard", knative: bool = False, gateway_api: bool = True, keda: bool = False
) -> Capabilities:
    """A cluster with KServe whose ConfigMap defaults to ``default`` (None: no ConfigMap)."""
    data = {"deploy": json.dumps({"defaultDeploymentMode": default})} if default is not None else None
    return Capabilities(
        kserve=True, knative=knative, gateway_api=gateway_api, keda=keda,
        kserve_default=default_from_config(data, SOURCE),
    )  # fmt: skip


def model(annotations: dict[str, str] | None = None, status: Any = None, **deployment: Any) -> ModelOptimization:
    return ModelOptimization.model_validate(
        {
            "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "generation": 1,
                         "annotations": annotations or {}},
            "spec": {
                "dataset": {"uri": "builtin://iris"},
                "deployment": {"storageUri": "pvc://models/iris", "canaryTrafficPercent": 20, **deployment},
            },
            "status": status.model_dump(by_alias=True) if status is not None else None,
        }
    )  # fmt: skip


KNATIVE = cluster("Knative", knative=True)
NO_GATEWAY_API = cluster(gateway_api=False)
BLUE_GREEN = {"canaryMethod": "blueGreen"}
SPLIT_ONLY = {"canaryMethod": "trafficSplit"}


def topology(resource: ModelOptimization, capabilities: Capabilities, config: Any = GATEWAY_CONFIG) -> Topology:
    found = resolve(resource, capabilities, config)
    assert isinstance(found, Topology), found
    return found


# --- the mode ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "default", "mode", "source"),
    [
        (None, "Standard", "standard", "kserveConfig"),
        (None, "RawDeployment", "standard", "kserveConfig"),
        (None, "Serverless", "knative", "kserveConfig"),
        (None, "Knative", "knative", "kserveConfig"),
        ("RawDeployment", "Knative", "standard", "annotation"),
        ("Standard", "Knative", "standard", "annotation"),
        ("Serverless", "Standard", "knative", "annotation"),
        ("ModelMesh", "Standard", "standard", "kserveConfig"),  # not a mode optiloop deploys: ignored
        ("Bogus", "Knative", "knative", "kserveConfig"),  # KServe ignores an unknown value too
    ],
)
def test_auto_follows_the_annotation_else_kserves_default(
    annotation: str | None, default: str, mode: str, source: str
) -> None:
    annotations = {"serving.kserve.io/deploymentMode": annotation} if annotation else {}
    found = topology(model(annotations), cluster(default, knative=True))
    assert (found.mode, found.source) == (mode, source)


def test_an_explicit_mode_wins_over_annotation_and_default() -> None:
    resource = model({"serving.kserve.io/deploymentMode": "Serverless"}, mode="standard")
    found = topology(resource, cluster("Knative", knative=True))
    assert (found.mode, found.source) == ("standard", "spec")


@pytest.mark.parametrize(
    ("data", "mode", "problem"),
    [
        ({}, "knative", ""),  # no deploy key: KServe leaves the mode empty and takes its Knative path
        ({"deploy": '{"defaultDeploymentMode": "RawDeployment"}'}, "standard", ""),
        ({"deploy": "{not json"}, None, "not JSON"),
        ({"deploy": "{}"}, None, "no defaultDeploymentMode"),
        ({"deploy": '{"defaultDeploymentMode": "ModelMesh"}'}, None, "does not use"),
        ({"deploy": '{"defaultDeploymentMode": "Fast"}'}, None, "not a KServe mode"),
        (None, None, "does not exist"),
    ],
)
def test_kserves_default_is_read_like_kserve_reads_it(
    data: dict[str, str] | None, mode: str | None, problem: str
) -> None:
    default = default_from_config(data, SOURCE)
    assert default.mode == mode
    assert problem in default.problem


@pytest.mark.parametrize(
    ("capabilities", "deployment", "reason", "names"),
    [
        (Capabilities(), {}, "KServeUnavailable", "install KServe"),
        (cluster(None), {}, "DeploymentModeUnknown", "spec.deployment.mode"),
        (cluster("Knative"), {}, "KnativeUnavailable", "Knative Serving"),
        (cluster("Standard"), {"scaleMetric": "concurrency"}, "UnsupportedInMode", "spec.deployment.scaleMetric"),
        (cluster("Standard"), {"minReplicas": 0}, "UnsupportedInMode", "spec.deployment.minReplicas"),
        (cluster("Knative", knative=True), {"autoscalerClass": "hpa"}, "UnsupportedInMode", "autoscalerClass"),
        (cluster("Standard"), {"autoscalerClass": "keda"}, "KedaUnavailable", "install KEDA"),
    ],
)
def test_what_the_cluster_cannot_do_is_refused_with_the_field_or_the_missing_part(
    capabilities: Capabilities, deployment: dict[str, Any], reason: str, names: str
) -> None:
    found = resolve(model(**deployment), capabilities, GATEWAY_CONFIG)
    assert isinstance(found, Unservable)
    assert found.reason == reason
    assert names in found.message


@pytest.mark.parametrize(
    ("mode", "deployment", "capabilities", "config", "method", "split"),
    [
        ("knative", {}, KNATIVE, CONFIG, "KnativeTraffic", ("True", "KnativeTraffic")),
        ("standard", {}, cluster(), GATEWAY_CONFIG, "GatewayAPI", ("True", "GatewayAPIRoute")),
        ("standard", {"gateway": {"name": "own"}}, cluster(), CONFIG, "GatewayAPI", ("True", "GatewayAPIRoute")),
        ("standard", {}, cluster(), CONFIG, "BlueGreen", ("False", "NoGateway")),
        ("standard", {}, NO_GATEWAY_API, GATEWAY_CONFIG, "BlueGreen", ("False", "GatewayAPIUnavailable")),
        ("standard", BLUE_GREEN, cluster(), GATEWAY_CONFIG, "BlueGreen", ("False", "BlueGreenRequested")),
        ("knative", BLUE_GREEN, KNATIVE, CONFIG, "BlueGreen", ("False", "BlueGreenRequested")),
        ("standard", SPLIT_ONLY, NO_GATEWAY_API, CONFIG, None, ("False", "GatewayAPIUnavailable")),
    ],
)  # fmt: skip
def test_the_canary_method_is_a_split_where_the_cluster_has_one_else_blue_green(
    mode: str, deployment: dict[str, Any], capabilities: Capabilities, config: Any, method: str | None,
    split: tuple[str, str],
) -> None:  # fmt: skip
    found = topology(model(mode=mode, **deployment), capabilities, config)
    assert found.canary_method == method
    assert (found.split.status, found.split.reason) == split
    if method == "GatewayAPI":
        assert found.gateway is not None
        assert found.gateway.namespace in ("gateways", "ml")


# --- what each mode writes -----------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "deployment", "capabilities", "annotations", "scaling"),
    [
        ("knative", {}, cluster("Knative", knative=True), {}, {"scaleMetric": "concurrency", "scaleTarget": 10}),
        ("knative", {"scaleMetric": "cpu"}, cluster("Knative", knative=True),
         {"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"}, {"scaleMetric": "cpu", "scaleTarget": 80}),
        ("standard", {}, cluster(), {"serving.kserve.io/autoscalerClass": "hpa"},
         {"scaleMetric": "cpu", "scaleTarget": 80}),
        ("standard", {"scaleMetric": "memory", "scaleTarget": 70}, cluster(),
         {"serving.kserve.io/autoscalerClass": "hpa"}, {"scaleMetric": "memory", "scaleTarget": 70}),
        ("standard", {"autoscalerClass": "keda"}, cluster(keda=True), {"serving.kserve.io/autoscalerClass": "keda"},
         {"autoScaling": {"metrics": [{"type": "Resource", "resource": {
             "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
    ],
)  # fmt: skip
def test_each_autoscaler_gets_exactly_the_metric_the_spec_asks_for(
    mode: str, deployment: dict[str, Any], capabilities: Capabilities, annotations: dict[str, str],
    scaling: dict[str, Any],
) -> None:  # fmt: skip
    resource = model(mode=mode, **deployment)
    body = inference_service(resource, CONFIG, 3, topology(resource, capabilities))
    expected_mode = "Knative" if mode == "knative" else "Standard"
    assert body["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": expected_mode, **annotations}
    predictor = body["spec"]["predictor"]
    for key in ("scaleMetric", "scaleTarget", "autoScaling"):
        assert predictor.get(key) == scaling.get(key), key
    assert body["metadata"]["name"] == ("iris" if mode == "knative" else "iris-r3")


@pytest.mark.parametrize(("metric", "series"), [("rps", "requests_total"), ("concurrency", "inference_seconds_sum")])
def test_keda_scales_on_this_revisions_own_request_metrics_in_prometheus(metric: str, series: str) -> None:
    resource = model(mode="standard", autoscalerClass="keda", scaleMetric=metric, scaleTarget=30)
    predictor = inference_service(resource, CONFIG, 4, topology(resource, cluster(keda=True)))["spec"]["predictor"]
    assert "scaleMetric" not in predictor  # KServe's webhook refuses scaleMetric with KEDA
    [trigger] = predictor["autoScaling"]["metrics"]
    assert trigger["type"] == "External"
    assert trigger["external"]["target"] == {"type": "Value", "value": 30}
    query = trigger["external"]["metric"]["query"]
    assert f"optiloop_predictor_{series}" in query
    assert 'namespace="ml", model="iris", revision="4"' in query
    assert trigger["external"]["metric"]["serverAddress"] == CONFIG.prometheus_url


def test_the_batcher_and_a_knative_canary_share_are_set_on_the_predictor() -> None:
    resource = model(mode="knative", batcher={"maxBatchSize": 16, "maxLatencyMs": 25})
    found = topology(resource, cluster("Knative", knative=True))
    predictor = inference_service(resource, CONFIG, 2, found, canary=True)["spec"]["predictor"]
    assert predictor["batcher"] == {"maxBatchSize": 16, "maxLatency": 25}
    assert predictor["canaryTrafficPercent"] == 20
    standard = model(mode="standard")
    body = inference_service(standard, CONFIG, 2, topology(standard, cluster()), canary=True)
    assert "canaryTrafficPercent" not in body["spec"]["predictor"], "Standard mode would silently ignore it"
    assert "batcher" not in body["spec"]["predictor"]


def test_the_route_sends_each_revision_its_weight_on_the_named_gateway() -> None:
    resource = model(mode="standard", hostnames=["iris.example.com"])
    route = http_route(resource, GatewayParent("gateways", "inference", "http"), [("iris-r1", 80), ("iris-r2", 20)])
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["name"] == "iris"
    assert route["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gateways", "name": "inference",
         "sectionName": "http"}
    ]  # fmt: skip
    assert route["spec"]["hostnames"] == ["iris.example.com"]
    [rule] = route["spec"]["rules"]
    assert [(b["name"], b["port"], b["weight"]) for b in rule["backendRefs"]] == [
        ("iris-r1-predictor", 80, 80),
        ("iris-r2-predictor", 80, 20),
    ]


# --- a canary's life in each method -------------------------------------------


@dataclass
class Cluster:
    """Plays the API server and the controllers for pure plans: applies a plan's writes to what
    the next reconcile observes; InferenceServices become Ready and the gateway accepts routes
    unless told otherwise."""

    capabilities: Capabilities
    observed: Observed = field(default_factory=Observed)
    isvc_ready: bool = True
    route_accepted: bool = True

    def __post_init__(self) -> None:
        self.observed = replace(self.observed, capabilities=self.capabilities)

    def apply(self, plan: Plan) -> None:
        services = dict(self.observed.services)
        jobs = dict(self.observed.jobs)
        route = self.observed.route
        monitor = dict(self.observed.monitor)
        for action in plan.actions:
            if isinstance(action, Delete):
                services.pop(action.name, None) if action.kind == "InferenceService" else None
                route = None if action.kind == "HTTPRoute" else route
                monitor.pop(action.kind, None) if action.kind in MONITOR_PARTS else None
                continue
            body, kind = action.body, action.kind
            meta = body["metadata"]
            revision = (
                int(meta["labels"]["optiloop.dev/revision"]) if "optiloop.dev/revision" in meta["labels"] else None
            )
            child = ObservedChild(
                kind=kind, name=meta["name"], resource_version="1",
                spec_hash=meta.get("annotations", {}).get(SPEC_HASH_ANNOTATION), revision=revision,
            )  # fmt: skip
            if kind == "InferenceService":
                ready = self.isvc_ready
                services[child.name] = replace(
                    child, ready=ready, url=f"http://{child.name}.ml.example.com" if ready else None
                )
            elif kind == "HTTPRoute":
                route = replace(child, ready=self.route_accepted)
            elif kind in MONITOR_PARTS:
                monitor[kind] = replace(child, ready=True)
            elif kind == "Job":
                component = meta["labels"]["optiloop.dev/component"]
                jobs[(component, revision or 0)] = ObservedJob(meta["name"], component, revision or 0, "Running")
        self.observed = replace(self.observed, services=services, jobs=jobs, route=route, monitor=monitor)

    def finish_job(self, component: str, revision: int, state: str, outcome: StageOutcome | None = None) -> None:
        name = self.observed.jobs[(component, revision)].name
        jobs = {
            **self.observed.jobs,
            (component, revision): ObservedJob(name, component, revision, state, outcome=outcome),
        }  # type: ignore[arg-type]
        self.observed = replace(self.observed, jobs=jobs)


@dataclass
class Walk:
    """One resource reconciled step by step on a :class:`Cluster`."""

    cluster: Cluster
    deployment: dict[str, Any]
    config: Any = GATEWAY_CONFIG
    plan: Plan | None = None
    now: Any = T0
    monitor_args: list[str] = field(default_factory=list)
    """The drift monitor's arguments as last written."""
    plans: list[Plan] = field(default_factory=list)
    """Every plan made, in order."""

    def step(self, seconds: float = 10, drift: DriftDecision | None = None, **observed: Any) -> Plan:
        self.now += timedelta(seconds=seconds)
        status = self.plan.status if self.plan is not None else None
        if observed:
            self.cluster.observed = replace(self.cluster.observed, **observed)
        self.plan = reconcile(
            model(status=status, **self.deployment), self.cluster.observed, self.config, self.now, drift
        )
        self.cluster.apply(self.plan)
        self.plans.append(self.plan)
        for action in self.plan.actions:
            if isinstance(action, Apply) and action.kind == "Deployment":
                self.monitor_args = action.body["spec"]["template"]["spec"]["containers"][0]["args"]
        return self.plan

    def monitored(self) -> list[str]:
        """The InferenceServices the drift monitor accepts events from (its --inference-service flags)."""
        args = self.monitor_args
        return [args[i + 1] for i, arg in enumerate(args) if arg == "--inference-service"]

    def build_first(self) -> Plan:
        """Reconcile until revision 1 is tuned and compressed; the plan made once it was built."""
        self.step()
        self.cluster.observed = replace(
            self.cluster.observed, jobs={("tuning", 1): job("tuning", 1, "Succeeded", TUNED)}
        )
        self.step()
        self.cluster.observed = replace(
            self.cluster.observed,
            jobs={**self.cluster.observed.jobs, ("compression", 1): job("compression", 1, "Succeeded", COMPRESSED)},
        )
        return self.step()

    def serve_first_then_build_second(self) -> Plan:
        self.build_first()  # deploys revision 1
        plan = self.step()  # revision 1 Ready: it serves
        assert plan.status.serving_revision == 1, plan.status.conditions
        evaluated = DriftStatus(retrains_triggered=1, last_retrain_time=self.now, last_evaluation_time=self.now)
        drifting = DriftDecision(evaluated, True, "DriftSustained")
        self.step(drift=drifting)
        jobs = {
            **self.cluster.observed.jobs,
            ("tuning", 2): job("tuning", 2, "Succeeded", TUNED),
            ("compression", 2): job("compression", 2, "Succeeded", COMPRESSED),
        }
        self.cluster.observed = replace(self.cluster.observed, jobs=jobs)
        return self.step()  # deploys revision 2 next to revision 1


def writes(plan: Plan) -> list[tuple[str, str, str]]:
    return [
        (type(a).__name__, a.kind, a.name) for a in plan.actions if a.kind in ("InferenceService", "HTTPRoute", "Job")
    ]


def route_weights(plan: Plan) -> list[tuple[str, int]] | None:
    route = next((a for a in plan.actions if isinstance(a, Apply) and a.kind == "HTTPRoute"), None)
    if route is None:
        return None
    return [(b["name"], b["weight"]) for b in route.body["spec"]["rules"][0]["backendRefs"]]


def test_gateway_api_canary_gets_its_share_then_all_traffic_and_the_old_revision_goes_once_the_gateway_moved() -> None:
    """The old revision's InferenceService outlives the promotion by the retire delay (30 s by
    default), and goes only once the gateway has also reported the new route."""
    walk = Walk(Cluster(cluster()), {"mode": "standard"})
    walk.step()
    plan = walk.serve_first_then_build_second()
    assert ("Apply", "InferenceService", "iris-r2") in writes(plan)
    # No share before its InferenceService is Ready: a real gateway fails requests routed to a
    # predictor Service that does not exist yet (tests/node/test_gateway_canary_on_node.py).
    assert route_weights(plan) is None
    split = walk.step()  # revision 2 is Ready
    assert route_weights(split) == [("iris-r1-predictor", 80), ("iris-r2-predictor", 20)]
    assert condition(split, "Deployed") == ("Unknown", "RouteNotAccepted")
    record = plan.status.history[-1]
    assert record.canary_method == "GatewayAPI"
    started = next(e for e in plan.events if e.reason == "CanaryStarted")
    assert "20% of traffic" in started.message
    assert "HTTPRoute" in started.message
    assert plan.status.serving is not None
    assert plan.status.serving.route == "iris"
    assert condition(plan, "TrafficSplit") == ("True", "GatewayAPIRoute")

    analysing = walk.step(canary=CanaryMetrics(0.0, 2.0, 50.0))
    assert condition(analysing, "Deployed") == ("Unknown", "CanaryAnalysing")
    assert analysing.actions == [] or all(a.kind not in ("InferenceService", "HTTPRoute") for a in analysing.actions)

    promoted = walk.step(300, canary=CanaryMetrics(0.0, 2.0, 50.0))
    assert promoted.status.serving_revision == 2
    assert route_weights(promoted) == [("iris-r2-predictor", 100)]
    assert ("Delete", "InferenceService", "iris-r1") not in writes(promoted), "not before the gateway took the route"
    assert "CanaryPromoted" in [e.reason for e in promoted.events]
    assert [(r.revision, r.outcome) for r in promoted.status.history] == [(1, "Superseded"), (2, "Promoted")]

    taken = walk.step(canary=None)  # 10 s later: the gateway took the route
    assert writes(taken) == [], "a gateway applies a route a moment after it reports it: requests may still come"
    assert taken.requeue_at == walk.now
    settled = walk.step(20)
    assert writes(settled) == [("Delete", "InferenceService", "iris-r1")]
    assert walk.step().actions == [], "then nothing more to do"


def test_the_old_revision_waits_for_the_gateway_however_long_the_retire_delay_has_run() -> None:
    """A gateway that reports the promoted route only after the retire delay: the old revision's
    InferenceService goes at once then, and not before."""
    walk = Walk(Cluster(cluster()), {"mode": "standard"})
    walk.step()
    walk.serve_first_then_build_second()
    walk.step()  # revision 2 is Ready: the route gives it its share
    promoted = walk.step(300, canary=CanaryMetrics(0.0, 2.0, 50.0))
    assert route_weights(promoted) == [("iris-r2-predictor", 100)]
    route = walk.cluster.observed.route
    assert route is not None
    lagging = replace(route, updating=True)
    walk.cluster.observed = replace(walk.cluster.observed, route=lagging)
    assert writes(walk.step(60, canary=None)) == [], "the gateway has not reported the new route"
    walk.cluster.observed = replace(walk.cluster.observed, route=replace(lagging, updating=False))
    assert writes(walk.step(1)) == [("Delete", "InferenceService", "iris-r1")]


@pytest.mark.parametrize("delay", [0.0, 45.0])
def test_the_retire_delay_is_the_operators_to_set(delay: float) -> None:
    walk = Walk(Cluster(cluster()), {"mode": "standard"}, config=replace(GATEWAY_CONFIG, retire_delay_seconds=delay))
    walk.step()
    walk.serve_first_then_build_second()
    walk.step()  # revision 2 is Ready: the route gives it its share
    walk.step(300, canary=CanaryMetrics(0.0, 2.0, 50.0))  # promoted
    deleted_after = None
    for elapsed in range(10, 70, 10):
        if ("Delete", "InferenceService", "iris-r1") in writes(walk.step(10, canary=None)):
            deleted_after = elapsed
            break
    assert deleted_after == (10 if delay == 0 else 50)


def test_gateway_api_canary_is_not_promoted_on_a_route_no_gateway_accepted() -> None:
    walk = Walk(Cluster(cluster(), route_accepted=False), {"mode": "standard"})
    walk.cluster.route_accepted = True
    walk.step()
    walk.serve_first_then_build_second()
    walk.cluster.route_accepted = False
    walk.cluster.apply(walk.step())  # the split route, written again, is not accepted
    walk.cluster.observed = replace(
        walk.cluster.observed,
        route=replace(walk.cluster.observed.route, ready=False),  # type: ignore[type-var]
    )
    waiting = walk.step(300, canary=CanaryMetrics(0.0, 2.0, 50.0))
    assert waiting.status.serving_revision == 1
    assert condition(waiting, "Deployed") == ("Unknown", "RouteNotAccepted")
    rolled = walk.step(400, canary=CanaryMetrics(0.0, 2.0, 50.0))
    assert rolled.status.history[-1].outcome == "RolledBack"
    assert "CanaryNotReady" in rolled.status.history[-1].message


def test_gateway_api_canary_with_errors_gets_all_traffic_taken_away_and_is_deleted() -> None:
    walk = Walk(Cluster(cluster()), {"mode": "standard"})
    walk.step()
    walk.serve_first_then_build_second()
    walk.step()  # revision 2 is Ready: the route gives it its share
    rolled = walk.step(canary=CanaryMetrics(0.3, 2.0, 50.0))
    assert rolled.status.serving_revision == 1
    assert route_weights(rolled) == [("iris-r1-predictor", 100)]
    assert rolled.status.history[-1].message == "rolled back: ErrorRateTooHigh"
    rollback = next(e for e in rolled.events if e.reason == "CanaryRolledBack")
    assert rollback.type == "Warning"
    assert "HTTPRoute" in rollback.message
    assert writes(walk.step(canary=None)) == [], "the gateway may still send it requests"
    assert writes(walk.step(20, canary=None)) == [("Delete", "InferenceService", "iris-r2")]


def test_blue_green_gives_the_new_revision_no_traffic_and_switches_only_after_the_probe_passed() -> None:
    walk = Walk(Cluster(cluster(gateway_api=False)), {"mode": "standard"})
    walk.step()
    plan = walk.serve_first_then_build_second()
    assert route_weights(plan) is None
    assert ("Apply", "InferenceService", "iris-r2") in writes(plan)
    assert condition(plan, "TrafficSplit") == ("False", "GatewayAPIUnavailable")
    assert plan.status.history[-1].canary_method == "BlueGreen"
    assert plan.status.url == "http://iris-r1.ml.example.com"

    probing = walk.step(canary=CanaryMetrics(0.0, 2.0, 50.0))
    [probe] = [a for a in probing.actions if isinstance(a, Apply) and a.kind == "Job"]
    assert probe.name == "iris-probe-r2"
    env = {e["name"]: e.get("value") for e in probe.body["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OPTILOOP_PROBE_URL"] == "http://iris-r2-predictor.ml.svc.cluster.local"
    assert probe.body["spec"]["activeDeadlineSeconds"] == 300 + 600

    waiting = walk.step(400, canary=CanaryMetrics(0.0, 2.0, 50.0))
    assert waiting.status.serving_revision == 1, "the window passed, but the probe has not"
    assert condition(waiting, "Deployed") == ("Unknown", "ProbeRunning")

    passed = StageOutcome(stage="probe", succeeded=True, reason="Succeeded", message="1500 requests, 0 failed")
    walk.cluster.finish_job("probe", 2, "Succeeded", passed)
    promoted = walk.step(canary=CanaryMetrics(0.0, 2.0, 50.0))
    assert promoted.status.serving_revision == 2
    assert promoted.status.url == "http://iris-r2.ml.example.com"
    assert ("Delete", "InferenceService", "iris-r1") not in writes(promoted), "clients may still use the old URL"
    assert ("Delete", "InferenceService", "iris-r1") in writes(walk.step(30))


def test_a_blue_green_probe_whose_pod_cannot_be_scheduled_is_named_on_the_resource_and_warned_once() -> None:
    walk = Walk(Cluster(cluster(gateway_api=False)), {"mode": "standard"})
    walk.step()
    walk.serve_first_then_build_second()
    walk.step(canary=CanaryMetrics(0.0, 2.0, 50.0))  # the probe Job is created
    probe = walk.cluster.observed.jobs[("probe", 2)]
    stuck = replace(probe, stuck="Unschedulable: 0/1 nodes are available: 1 Insufficient cpu.")
    walk.cluster.observed = replace(walk.cluster.observed, jobs={**walk.cluster.observed.jobs, ("probe", 2): stuck})
    waiting = walk.step(400, canary=CanaryMetrics(0.0, 2.0, 50.0))
    assert waiting.status.serving_revision == 1
    assert condition(waiting, "Deployed") == ("Unknown", "ProbePodNotStarting")
    deployed = waiting.status.condition("Deployed")
    assert deployed is not None
    assert "probe Job iris-probe-r2's pod cannot start: Unschedulable: 0/1 nodes" in deployed.message
    assert [(e.type, e.reason) for e in waiting.events] == [("Warning", "ProbePodNotStarting")]
    assert walk.step(canary=CanaryMetrics(0.0, 2.0, 50.0)).events == [], "one Warning, not one per look"


def test_a_tried_revision_whose_predictor_is_killed_for_memory_is_named_while_the_old_one_serves() -> None:
    walk = Walk(Cluster(cluster(gateway_api=False)), {"mode": "standard"})
    walk.step()
    walk.serve_first_then_build_second()
    services = walk.cluster.observed.services
    trouble = PodTrouble("PredictorOOMKilled", "pod iris-r2-predictor-5f: container kserve-container OOMKilled")
    down = replace(services["iris-r2"], ready=False, trouble=trouble)
    walk.cluster.observed = replace(walk.cluster.observed, services={**services, "iris-r2": down})
    waiting = walk.step(canary=CanaryMetrics(0.0, 2.0, 50.0))
    assert waiting.status.serving_revision == 1
    assert condition(waiting, "Deployed") == ("Unknown", "PredictorOOMKilled")
    deployed = waiting.status.condition("Deployed")
    assert deployed is not None
    assert deployed.message.endswith(f"its predictor does not serve: {trouble.message}")
    assert condition(waiting, "Ready") == ("True", "Serving"), "revision 1 still serves"
    assert [(e.type, e.reason) for e in waiting.events] == [("Warning", "PredictorOOMKilled")]
    assert ("Apply", "Job", "iris-probe-r2") not in writes(waiting), "no probe before it is Ready"


def test_blue_green_rolls_back_as_soon_as_the_probe_fails_and_says_why() -> None:
    walk = Walk(Cluster(cluster(gateway_api=False)), {"mode": "standard"})
    walk.step()
    walk.serve_first_then_build_second()
    walk.step(canary=CanaryMetrics(0.0, 2.0, 50.0))
    failed = StageOutcome.model_validate(
        {"stage": "probe", "succeeded": False, "reason": "StageFailed", "message": "40 requests, 9 failed (22.5%)"}
    )
    walk.cluster.finish_job("probe", 2, "Failed", failed)
    rolled = walk.step(canary=CanaryMetrics(None, None, None))
    assert rolled.status.serving_revision == 1
    assert rolled.status.history[-1].message == "rolled back: ProbeFailed: 40 requests, 9 failed (22.5%)"
    assert ("Delete", "InferenceService", "iris-r2") in writes(walk.step(30))


def test_knative_canary_is_one_inference_service_with_its_share() -> None:
    walk = Walk(Cluster(cluster("Knative", knative=True)), {}, config=CONFIG)
    walk.step()
    plan = walk.serve_first_then_build_second()
    [(_, _, name)] = [w for w in writes(plan) if w[1] == "InferenceService"]
    assert name == "iris"
    isvc = next(a for a in plan.actions if isinstance(a, Apply) and a.kind == "InferenceService")
    assert isvc.body["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert plan.status.serving is not None
    assert (plan.status.serving.mode, plan.status.serving.mode_source) == ("Knative", "kserveConfig")
    promoted = walk.step(301, canary=CanaryMetrics(0.0, 1.0, 50.0))
    assert promoted.status.history[-1].canary_method == "KnativeTraffic"
    assert (
        "canaryTrafficPercent"
        not in next(a for a in promoted.actions if isinstance(a, Apply) and a.kind == "InferenceService").body["spec"][
            "predictor"
        ]
    )


def test_a_canary_no_request_reached_waits_saying_why_and_is_rolled_back_after_two_windows() -> None:
    walk = Walk(Cluster(cluster("Knative", knative=True)), {}, config=CONFIG)
    walk.step()
    walk.serve_first_then_build_second()
    idle = walk.step(301, canary=CanaryMetrics(0.0, None, 0.0))
    deployed = next(c for c in idle.status.conditions if c.type == "Deployed")
    assert (deployed.status, deployed.reason) == ("Unknown", "CanaryNoTraffic")
    assert "does not scrape its predictors" in deployed.message
    assert "http1" in deployed.message
    assert idle.status.serving_revision == 1
    rolled = walk.step(300, canary=CanaryMetrics(0.0, None, 0.0))
    assert rolled.status.serving_revision == 1
    assert rolled.status.history[-1].outcome == "RolledBack"
    assert rolled.status.history[-1].message.startswith("rolled back: CanaryNoTraffic: none of its requests")
    assert [e.reason for e in rolled.events] == ["CanaryRolledBack"]


def test_a_retrained_revision_waits_when_the_spec_demands_a_split_the_cluster_lacks() -> None:
    walk = Walk(Cluster(cluster(gateway_api=False)), {"mode": "standard", "canaryMethod": "trafficSplit"})
    walk.step()
    plan = walk.serve_first_then_build_second()
    assert ("Apply", "InferenceService", "iris-r2") not in writes(plan)
    assert plan.status.history[-1].deployed_at is None
    assert condition(plan, "Deployed") == ("False", "GatewayAPIUnavailable")
    assert condition(plan, "Ready") == ("True", "Serving"), "revision 1 serves on"


def test_switching_from_knative_to_standard_keeps_the_old_service_until_the_new_one_is_ready() -> None:
    walk = Walk(Cluster(cluster("Knative", knative=True)), {}, config=CONFIG)
    walk.step()
    walk.serve_first_then_build_second()
    walk.step(301, canary=CanaryMetrics(0.0, 1.0, 50.0))  # revision 2 promoted under Knative
    walk.deployment = {"mode": "standard"}
    walk.cluster.isvc_ready = False
    switching = walk.step(canary=None)
    assert ("Apply", "InferenceService", "iris-r2") in writes(switching)
    assert ("Delete", "InferenceService", "iris") not in writes(switching)
    walk.cluster.observed = replace(
        walk.cluster.observed,
        services={n: replace(c, ready=True) for n, c in walk.cluster.observed.services.items()},
    )
    assert ("Delete", "InferenceService", "iris") in writes(walk.step())


def test_switching_from_standard_to_knative_removes_the_route_and_revisions_once_knative_serves() -> None:
    walk = Walk(Cluster(cluster("Standard", knative=True)), {})
    walk.step()
    walk.serve_first_then_build_second()
    walk.step()  # revision 2 is Ready: the route gives it its share
    walk.step(301, canary=CanaryMetrics(0.0, 1.0, 50.0))  # revision 2 promoted behind the route
    walk.step(30)  # the gateway took the route and the retire delay passed: revision 1's InferenceService goes
    assert walk.cluster.observed.route is not None
    assert set(walk.cluster.observed.services) == {"iris-r2"}
    walk.deployment = {"mode": "knative"}
    walk.cluster.isvc_ready = False
    switching = walk.step(canary=None)
    assert ("Apply", "InferenceService", "iris") in writes(switching)
    assert not [w for w in writes(switching) if w[0] == "Delete"], "nothing goes before Knative's serves"
    walk.cluster.observed = replace(
        walk.cluster.observed,
        services={n: replace(c, ready=True) for n, c in walk.cluster.observed.services.items()},
    )
    settled = writes(walk.step())
    assert ("Delete", "HTTPRoute", "iris") in settled
    assert ("Delete", "InferenceService", "iris-r2") in settled
    assert walk.cluster.observed.route is None


def test_a_spec_the_cluster_cannot_serve_makes_ready_false_once_a_revision_is_built() -> None:
    walk = Walk(Cluster(cluster("Standard")), {"scaleMetric": "concurrency"})
    built = walk.build_first()
    first = walk.plans[0]
    assert condition(first, "Deployed") == ("False", "UnsupportedInMode")
    assert condition(first, "Ready")[0] == "Unknown", "tuning goes on meanwhile"
    assert writes(built) == []
    assert condition(built, "Ready") == ("False", "UnsupportedInMode")
    ready = built.status.condition("Ready")
    assert ready is not None
    assert "spec.deployment.scaleMetric" in ready.message


def test_blue_green_in_knative_mode_keeps_one_inference_service_per_revision_and_no_split() -> None:
    walk = Walk(Cluster(KNATIVE), {"canaryMethod": "blueGreen"}, config=CONFIG)
    walk.step()
    plan = walk.serve_first_then_build_second()
    assert ("Apply", "InferenceService", "iris-r2") in writes(plan)
    isvc = next(a for a in plan.actions if isinstance(a, Apply) and a.name == "iris-r2")
    assert isvc.body["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert "canaryTrafficPercent" not in isvc.body["spec"]["predictor"]
    probing = walk.step(canary=CanaryMetrics(0.0, 2.0, 50.0))
    assert ("Apply", "Job", "iris-probe-r2") in writes(probing)


def test_the_plan_asks_for_the_next_tick_while_traffic_moves_and_not_after() -> None:
    walk = Walk(Cluster(cluster()), {"mode": "standard"})
    walk.step()
    walk.serve_first_then_build_second()
    walk.step()  # revision 2 is Ready: the route gives it its share
    promoted = walk.step(300, canary=CanaryMetrics(0.0, 2.0, 50.0))
    assert promoted.status.serving_revision == 2
    assert promoted.requeue_at == walk.now, "the old revision waits for the gateway: look again at the next tick"
    waiting = walk.step(canary=None)  # the gateway took the route; the retire delay runs
    assert waiting.requeue_at == walk.now
    walk.step(20, canary=None)  # the old InferenceService goes
    settled = walk.step()
    assert settled.actions == []
    assert settled.requeue_at != walk.now


@pytest.mark.parametrize(
    ("capabilities", "deployment", "config", "serving", "canary", "promoted"),
    [
        (cluster("Knative", knative=True), {}, CONFIG, ["iris"], ["iris"], ["iris"]),
        (cluster(), {"mode": "standard"}, GATEWAY_CONFIG, ["iris-r1"], ["iris-r1", "iris-r2"], ["iris-r2"]),
        (cluster(gateway_api=False), {"mode": "standard"}, GATEWAY_CONFIG, ["iris-r1"], ["iris-r1", "iris-r2"],
         ["iris-r2"]),
        (cluster("Knative", knative=True), BLUE_GREEN, CONFIG, ["iris-r1"], ["iris-r1", "iris-r2"], ["iris-r2"]),
    ],
    ids=["knative-split", "standard-route", "standard-blue-green", "knative-blue-green"],
)  # fmt: skip
def test_the_drift_monitor_accepts_events_only_from_the_resources_serving_inference_services(
    capabilities: Capabilities,
    deployment: dict[str, Any],
    config: Any,
    serving: list[str],
    canary: list[str],
    promoted: list[str],
) -> None:
    """One --inference-service per InferenceService that serves: Knative's split has one, <name>;
    otherwise each revision has its own, <name>-r<N>, the canary's (or blue/green's new one) too."""
    walk = Walk(Cluster(capabilities), deployment, config=config)
    walk.step()
    walk.step(jobs={("tuning", 1): job("tuning", 1, "Succeeded", TUNED)})
    walk.step(jobs={**walk.cluster.observed.jobs, ("compression", 1): job("compression", 1, "Succeeded", COMPRESSED)})
    walk.step()
    walk.step()
    assert walk.plan is not None
    assert walk.plan.status.serving_revision == 1
    assert walk.monitored() == serving
    plan = walk.serve_first_then_build_second()
    assert plan.status.history[-1].deployed_at is not None, "revision 2 is being tried"
    assert walk.monitored() == canary
    walk.step(canary=CanaryMetrics(0.0, 2.0, 50.0))
    if deployment.get("canaryMethod") == "blueGreen" or not capabilities.gateway_api:
        walk.cluster.finish_job(
            "probe", 2, "Succeeded", StageOutcome(stage="probe", succeeded=True, reason="Succeeded")
        )
    walk.step(400, canary=CanaryMetrics(0.0, 2.0, 50.0))
    for _ in range(3):
        walk.step(canary=None)
    assert walk.plan is not None
    assert walk.plan.status.serving_revision == 2
    assert walk.monitored() == promoted
