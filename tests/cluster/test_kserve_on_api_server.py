"""What the operator writes for each serving mode is what KServe v0.20 and the Gateway API really
accept and do: every InferenceService, HTTPRoute and probe Job passes their real schemas (CRDs
from the Go module proxy, strict field validation); KServe's own manager, run against the API
server, gives a Standard-mode predictor the HPA metric the spec asked for, admits the Knative-mode
manifests through its webhooks (and refuses the shapes optiloop avoids), and builds the two
revisions whose predictor Services the HTTPRoute sends traffic to, with pods the drift monitor's
NetworkPolicy lets in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from optiloop.api import ModelOptimization
from optiloop.operator.builders.jobs import probe_job
from optiloop.operator.builders.routing import http_route
from optiloop.operator.builders.serving import drift_monitor, inference_service
from optiloop.operator.capabilities import Capabilities, KServeDefault
from optiloop.operator.config import OperatorConfig
from optiloop.operator.topology import GatewayParent, Topology, resolve
from tests.conftest import REPO_ROOT, skip_or_fail
from tests.support.control_plane import ControlPlane, ControlPlaneUnavailableError, wait_for
from tests.support.kserve_release import KServeUnavailableError, Manager, crds, install_crds, start_manager

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]
CONFIG = OperatorConfig(predictor_image="registry.example/optiloop/serve:1", prometheus_url="http://prometheus:9090")
CLUSTER = Capabilities(
    kserve=True, knative=True, gateway_api=True, keda=True, kserve_default=KServeDefault("standard", "kserve/config")
)
GATEWAY = GatewayParent("gateways", "inference", "http")
NAMESPACE = "models"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """An API server of its own with KServe's and the Gateway API's real CRDs (the other tiers
    install a minimal InferenceService CRD under the same name)."""
    try:
        plane = ControlPlane.start(tmp_path_factory.mktemp("kserve-plane"))
    except ControlPlaneUnavailableError as exc:
        skip_or_fail(f"no Kubernetes API server: {exc}")
    try:
        ours = [yaml.safe_load(path.read_text()) for path in sorted((REPO_ROOT / "crds").glob("*.yaml"))]
        try:
            install_crds(plane, ours + crds())
        except KServeUnavailableError as exc:
            skip_or_fail(f"KServe's or the Gateway API's CRDs: {exc}")
        from kubernetes import client

        client.CoreV1Api(plane.api_client()).create_namespace({"metadata": {"name": NAMESPACE}})
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def owner(plane: ControlPlane) -> dict[str, Any]:
    """A stored ModelOptimization, so children carry a real owner (the garbage collector runs)."""
    from kubernetes import client

    body = {
        "apiVersion": "optiloop.dev/v1alpha1",
        "kind": "ModelOptimization",
        "metadata": {"name": "iris", "namespace": NAMESPACE},
        "spec": {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://models/iris"}},
    }
    return dict(
        client.CustomObjectsApi(plane.api_client()).create_namespaced_custom_object(
            "optiloop.dev", "v1alpha1", NAMESPACE, "modeloptimizations", body
        )
    )


def resource(owner: dict[str, Any], **deployment: Any) -> ModelOptimization:
    return ModelOptimization.model_validate(
        {
            "metadata": {"name": "iris", "namespace": NAMESPACE, "uid": owner["metadata"]["uid"]},
            "spec": {
                "dataset": {"uri": "builtin://iris"},
                "deployment": {"storageUri": "pvc://models/iris", "canaryTrafficPercent": 20, **deployment},
            },
        }
    )


def topology(model: ModelOptimization) -> Topology:
    found = resolve(model, CLUSTER, CONFIG)
    assert isinstance(found, Topology), found
    return found


def create(plane: ControlPlane, body: dict[str, Any], dry_run: bool = True) -> dict[str, Any]:
    """Create ``body`` with strict field validation (unknown fields are errors)."""
    from kubernetes.dynamic import DynamicClient

    resources = DynamicClient(plane.api_client()).resources.get(api_version=body["apiVersion"], kind=body["kind"])
    kwargs: dict[str, Any] = {"field_validation": "Strict"}
    if dry_run:
        kwargs["dry_run"] = "All"
    return dict(resources.create(body=body, namespace=NAMESPACE, **kwargs).to_dict())


SPECS = {
    "knative-concurrency-canary": ({"mode": "knative"}, True),
    "knative-cpu-hpa-class": ({"mode": "knative", "scaleMetric": "cpu", "scaleTarget": 60}, False),
    "knative-scale-to-zero": ({"mode": "knative", "minReplicas": 0, "scaleMetric": "rps"}, False),
    "standard-hpa-cpu": ({"mode": "standard"}, False),
    "standard-hpa-memory": ({"mode": "standard", "scaleMetric": "memory", "scaleTarget": 70}, False),
    "standard-keda-cpu": ({"mode": "standard", "autoscalerClass": "keda"}, False),
    "standard-keda-rps": ({"mode": "standard", "autoscalerClass": "keda", "scaleMetric": "rps"}, False),
    "standard-keda-concurrency": ({"mode": "standard", "autoscalerClass": "keda", "scaleMetric": "concurrency"}, False),
    "batcher": ({"mode": "standard", "batcher": {"maxBatchSize": 64, "maxLatencyMs": 10}}, False),
    "onnx-runtime": ({"mode": "standard", "runtime": "onnx"}, False),
}


@pytest.mark.parametrize("case", SPECS)
def test_every_mode_writes_inference_services_kserves_schema_accepts(
    plane: ControlPlane, owner: dict[str, Any], case: str
) -> None:
    deployment, canary = SPECS[case]
    model = resource(owner, **deployment)
    body = inference_service(model, CONFIG, 2, topology(model), canary=canary)
    created = create(plane, body)
    assert created["spec"]["predictor"]["minReplicas"] == deployment.get("minReplicas", 1)


def test_the_route_and_the_probe_job_pass_their_real_schemas(plane: ControlPlane, owner: dict[str, Any]) -> None:
    model = resource(owner, mode="standard", hostnames=["iris.models.example.com"])
    route = http_route(model, GATEWAY, [("iris-r1", 80), ("iris-r2", 20)])
    created = create(plane, route)
    assert [b["weight"] for b in created["spec"]["rules"][0]["backendRefs"]] == [80, 20]
    job = probe_job(model, CONFIG, 2, "http://iris-r2-predictor.models.svc.cluster.local")
    create(plane, job)


def test_the_gateway_apis_own_rules_refuse_a_weight_out_of_range(plane: ControlPlane, owner: dict[str, Any]) -> None:
    """The schema really validates: a weight above the Gateway API's bound is refused."""
    from kubernetes.client import ApiException

    route = http_route(resource(owner, mode="standard"), GATEWAY, [("iris-r1", 2_000_000)])
    with pytest.raises(ApiException) as refused:
        create(plane, route)
    assert "weight" in str(refused.value.body)


# --- KServe's own manager ------------------------------------------------------


@pytest.fixture(scope="module")
def manager(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Manager]:
    try:
        running = start_manager(plane, tmp_path_factory.mktemp("kserve-manager") / "run", default_mode="Standard")
    except KServeUnavailableError as exc:
        skip_or_fail(f"KServe's manager: {exc}")
    yield running
    running.stop()


def _read(plane: ControlPlane, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import NotFoundError

    resources = DynamicClient(plane.api_client()).resources.get(api_version=api_version, kind=kind)
    try:
        return dict(resources.get(name=name, namespace=NAMESPACE).to_dict())
    except NotFoundError:
        return None


@pytest.mark.parametrize(("deployment", "metric"), [
    ({"scaleTarget": 65}, {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 65}}),
    ({"scaleMetric": "memory", "scaleTarget": 70},
     {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 70}}),
], ids=["cpu", "memory"])  # fmt: skip
def test_kserves_manager_gives_a_standard_predictor_the_hpa_metric_the_spec_asked_for(
    plane: ControlPlane, owner: dict[str, Any], manager: Manager, deployment: dict[str, Any], metric: dict[str, Any]
) -> None:
    model = resource(owner, mode="standard", minReplicas=2, maxReplicas=7, **deployment)
    revision = 5 if metric["name"] == "cpu" else 6
    body = inference_service(model, CONFIG, revision, topology(model))
    stored = create(plane, body, dry_run=False)
    assert stored["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    name = f"iris-r{revision}-predictor"
    hpa = wait_for(lambda: _read(plane, "autoscaling/v2", "HorizontalPodAutoscaler", name), 60, interval=0.5,
                   what=f"KServe's HPA {name} ({manager.log})")  # fmt: skip
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": metric}]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 7)
    assert hpa["spec"]["scaleTargetRef"]["name"] == name


def test_kserves_manager_keeps_the_predictors_own_health_probes_instead_of_a_tcp_probe(
    plane: ControlPlane, owner: dict[str, Any], manager: Manager
) -> None:
    """Without probes of its own, KServe's Standard mode gives the model server a TCP readiness probe,
    which calls a pod ready before its model directory is verified and loaded."""
    model = resource(owner, mode="standard")
    create(plane, inference_service(model, CONFIG, 9, topology(model)), dry_run=False)
    name = "iris-r9-predictor"
    deployment = wait_for(lambda: _read(plane, "apps/v1", "Deployment", name), 60, interval=0.5,
                          what=f"KServe's Deployment {name} ({manager.log})")  # fmt: skip
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "kserve-container"]
    ready, live = container["readinessProbe"], container["livenessProbe"]
    assert (ready["httpGet"]["path"], ready["httpGet"]["port"]) == ("/v2/health/ready", 8080)
    assert (live["httpGet"]["path"], live["httpGet"]["port"]) == ("/v2/health/live", 8080)
    assert "tcpSocket" not in ready


def test_kserves_manager_keeps_the_init_container_that_copies_an_s3_model_with_the_resources_secret(
    plane: ControlPlane, owner: dict[str, Any], manager: Manager
) -> None:
    """On s3:// the predictor's model comes through our own init container, with the artifact store's
    Secret; KServe's Deployment keeps it as written and gets no STORAGE_URI to start a storage
    initializer of its own for."""
    store = {"storageUri": "s3://models/iris", "storageCredentialsSecretRef": {"name": "store"}}
    model = resource(owner, mode="standard", **store)
    create(plane, inference_service(model, CONFIG, 10, topology(model)), dry_run=False)
    name = "iris-r10-predictor"
    deployment = wait_for(lambda: _read(plane, "apps/v1", "Deployment", name), 60, interval=0.5,
                          what=f"KServe's Deployment {name} ({manager.log})")  # fmt: skip
    pod = deployment["spec"]["template"]["spec"]
    [fetch] = pod["initContainers"]
    assert (fetch["name"], fetch["envFrom"]) == ("fetch-model", [{"secretRef": {"name": "store"}}])
    assert fetch["args"] == ["--source", "s3://models/iris/r10/model", "--to", "/mnt/models"]
    [container] = [c for c in pod["containers"] if c["name"] == "kserve-container"]
    assert "STORAGE_URI" not in {e["name"] for e in container.get("env") or []}
    assert {"name": "model", "mountPath": "/mnt/models", "readOnly": True} in container["volumeMounts"]


@pytest.mark.parametrize("metric", ["rps", "concurrency"])
def test_kserves_manager_gives_a_keda_predictor_a_trigger_on_this_revisions_own_metrics(
    plane: ControlPlane, owner: dict[str, Any], manager: Manager, metric: str
) -> None:
    model = resource(owner, mode="standard", autoscalerClass="keda", scaleMetric=metric, scaleTarget=30, maxReplicas=5)
    revision = 7 if metric == "rps" else 8
    create(plane, inference_service(model, CONFIG, revision, topology(model)), dry_run=False)
    name = f"iris-r{revision}-predictor"
    scaled = wait_for(lambda: _read(plane, "keda.sh/v1alpha1", "ScaledObject", name), 60, interval=0.5,
                      what=f"KServe's ScaledObject {name} ({manager.log})")  # fmt: skip
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["serverAddress"] == CONFIG.prometheus_url
    assert trigger["metadata"]["threshold"] == "30"
    series = "requests_total" if metric == "rps" else "inference_seconds_sum"
    assert trigger["metadata"]["query"] == (
        f'sum(rate(optiloop_predictor_{series}{{namespace="{NAMESPACE}", model="iris", revision="{revision}"}}[1m]))'
    )
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 5)
    assert _read(plane, "autoscaling/v2", "HorizontalPodAutoscaler", name) is None, "KEDA, not KServe's HPA"


def test_kserves_webhooks_admit_the_knative_manifests_and_refuse_the_shapes_optiloop_avoids(
    plane: ControlPlane, owner: dict[str, Any], manager: Manager
) -> None:
    from kubernetes.client import ApiException

    for deployment, canary in (SPECS["knative-concurrency-canary"], SPECS["knative-cpu-hpa-class"]):
        model = resource(owner, **deployment)
        admitted = create(plane, inference_service(model, CONFIG, 3, topology(model), canary=canary))
        assert admitted["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    # Without the HPA class annotation, Knative's autoscaler (KPA) cannot scale on cpu.
    cpu = resource(owner, mode="knative", scaleMetric="cpu")
    bare = inference_service(cpu, CONFIG, 3, topology(cpu))
    del bare["metadata"]["annotations"]["autoscaling.knative.dev/class"]
    with pytest.raises(ApiException) as refused:
        create(plane, bare)
    assert "[cpu] is not a supported metric" in str(refused.value.body)
    # KEDA takes no scaleMetric: KServe's validator refuses it, hence autoScaling.metrics.
    keda = resource(owner, mode="standard", autoscalerClass="keda", scaleMetric="rps")
    body = inference_service(keda, CONFIG, 3, topology(keda))
    create(plane, body)
    body["spec"]["predictor"]["scaleMetric"] = "rps"
    with pytest.raises(ApiException) as refused:
        create(plane, body)
    assert "ScaleMetric is not supported for KEDA" in str(refused.value.body)


def test_two_revisions_get_the_predictor_services_the_route_sends_to(
    plane: ControlPlane, owner: dict[str, Any], manager: Manager
) -> None:
    model = resource(owner, mode="standard")
    for revision in (1, 2):
        create(plane, inference_service(model, CONFIG, revision, topology(model)), dry_run=False)
    route = create(plane, http_route(model, GATEWAY, [("iris-r1", 80), ("iris-r2", 20)]), dry_run=False)
    # The drift monitor's NetworkPolicy lets in the predictor pods of both revisions.
    policy = next(
        b for b in drift_monitor(model, CONFIG, 1, inference_services=["iris"]) if b["kind"] == "NetworkPolicy"
    )
    predictors = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    for backend in route["spec"]["rules"][0]["backendRefs"]:
        service = wait_for(lambda b=backend: _read(plane, "v1", "Service", b["name"]), 60, interval=0.5,
                           what=f"KServe's Service {backend['name']} ({manager.log})")  # fmt: skip
        assert backend["port"] in [p["port"] for p in service["spec"]["ports"]]
        # KServe may write the Service before the Deployment; under load the gap is visible.
        deployment = wait_for(lambda b=backend: _read(plane, "apps/v1", "Deployment", b["name"]), 60, interval=0.5,
                              what=f"KServe's Deployment {backend['name']} ({manager.log})")  # fmt: skip
        revision = backend["name"].removeprefix("iris-r").removesuffix("-predictor")
        assert deployment["spec"]["template"]["metadata"]["labels"]["optiloop.dev/revision"] == revision
        assert predictors.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert "canaryTrafficPercent" not in str(_read(plane, "serving.kserve.io/v1beta1", "InferenceService", "iris-r2"))
