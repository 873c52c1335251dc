"""The InferenceService and drift-monitor builders: the runtime and storage URI per revision,
autoscaling and canary settings, the payload logger aimed at the drift monitor, and a drift
monitor that reads the serving revision's model directory with restricted pod security."""

from __future__ import annotations

from typing import Any

from optiloop.api import ModelOptimization
from optiloop.operator.builders.serving import drift_monitor, inference_service, model_uri
from optiloop.operator.capabilities import Capabilities, KServeDefault
from optiloop.operator.config import OperatorConfig
from optiloop.operator.topology import Topology, resolve

CONFIG = OperatorConfig(predictor_image="registry.example/optiloop/serve:1", drift_image="registry.example/drift:1")
KNATIVE_CLUSTER = Capabilities(kserve=True, knative=True, kserve_default=KServeDefault("knative", "kserve/config"))


def knative(model: ModelOptimization) -> Topology:
    """How ``model`` is served on a cluster whose KServe runs in Knative mode."""
    topology = resolve(model, KNATIVE_CLUSTER, CONFIG)
    assert isinstance(topology, Topology), topology
    return topology


def resource(**spec: Any) -> ModelOptimization:
    deployment = {"storageUri": "pvc://models/iris", **spec.pop("deployment", {})}
    return ModelOptimization.model_validate(
        {
            "apiVersion": "optiloop.dev/v1alpha1",
            "kind": "ModelOptimization",
            "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1"},
            "spec": {"dataset": {"uri": "builtin://iris"}, "deployment": deployment, **spec},
        }
    )


def test_optiloop_runtime_serves_the_revisions_model_directory_with_its_own_image() -> None:
    isvc = inference_service(resource(), CONFIG, 3, knative(resource()))
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["name"] == "iris"
    assert isvc["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    predictor = isvc["spec"]["predictor"]
    container = predictor["containers"][0]
    assert container["image"] == CONFIG.predictor_image
    assert {"name": "STORAGE_URI", "value": "pvc://models/iris/r3/model"} in container["env"]
    assert container["args"] == ["--model-dir", "/mnt/models", "--model-name", "iris"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert "canaryTrafficPercent" not in predictor


def test_optiloop_runtime_on_s3_copies_the_model_with_the_resources_own_credentials_not_kserves() -> None:
    """On s3:// the predictor's pod copies the verified model directory with the artifact store's
    Secret (endpoint included) before the predictor starts; no STORAGE_URI, so KServe adds no
    storage initializer of its own, which would have no credentials."""
    model = resource(deployment={"storageUri": "s3://bucket/iris", "storageCredentialsSecretRef": {"name": "store"}})
    predictor = inference_service(model, CONFIG, 3, knative(model))["spec"]["predictor"]
    [container] = predictor["containers"]
    [fetch] = predictor["initContainers"]
    assert "STORAGE_URI" not in {e["name"] for e in container["env"]}
    assert fetch["image"] == CONFIG.jobs_image
    assert fetch["command"] == ["python", "-m", "optiloop.jobs.fetch"]
    assert fetch["args"] == ["--source", "s3://bucket/iris/r3/model", "--to", "/mnt/models"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "store"}}]
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "model", "mountPath": "/mnt/models"} in fetch["volumeMounts"]
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"  # why a copy failed, on the pod
    assert container["args"][:2] == ["--model-dir", "/mnt/models"]
    assert {"name": "model", "mountPath": "/mnt/models", "readOnly": True} in container["volumeMounts"]
    assert "envFrom" not in container, "the predictor itself holds no storage credentials"
    assert {"name": "model", "emptyDir": {}} in predictor["volumes"]
    claim = inference_service(resource(), CONFIG, 3, knative(resource()))["spec"]["predictor"]
    assert "initContainers" not in claim
    assert [v["name"] for v in claim["volumes"]] == ["scratch"]


def test_onnx_runtime_uses_kserves_onnx_format_and_the_triton_layout() -> None:
    model = resource(deployment={"runtime": "onnx", "storageUri": "s3://bucket/iris"})
    predictor = inference_service(model, CONFIG, 2, knative(model))["spec"]["predictor"]
    assert predictor["model"]["modelFormat"] == {"name": "onnx"}
    assert predictor["model"]["protocolVersion"] == "v2"
    assert predictor["model"]["storageUri"] == "s3://bucket/iris/r2/model/triton"
    assert "containers" not in predictor
    assert model_uri(model, 2).endswith("/triton")


def test_autoscaling_canary_and_logger_come_from_the_spec() -> None:
    model = resource(
        deployment={
            "minReplicas": 2,
            "maxReplicas": 9,
            "scaleMetric": "rps",
            "scaleTarget": 50,
            "canaryTrafficPercent": 20,
        }
    )
    predictor = inference_service(model, CONFIG, 4, knative(model), canary=True)["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 9)
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("rps", 50)
    assert predictor["canaryTrafficPercent"] == 20
    assert predictor["logger"] == {"mode": "request", "url": "http://iris-drift.ml.svc.cluster.local/revisions/4"}
    assert predictor["automountServiceAccountToken"] is False, "the predictor pod gets no API token"
    quiet = resource(monitoring={"enabled": False})
    assert "logger" not in inference_service(quiet, CONFIG, 1, knative(quiet))["spec"]["predictor"]


def test_drift_monitor_reads_the_serving_revision_from_the_claim() -> None:
    model = resource(
        monitoring={"detector": "ks", "pValue": 0.01, "correction": "fdr", "windowSize": 300, "window": "tumbling"}
    )
    deployment, service, _ = drift_monitor(model, CONFIG, revision=5, inference_services=["iris-r5"])
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "iris-drift"
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == CONFIG.drift_image
    args = container["args"]
    assert args[args.index("--model-dir") + 1] == "/mnt/pvc/models/iris/r5/model"
    assert args[args.index("--detector") + 1] == "ks"
    assert args[args.index("--window") + 1] == "tumbling"
    assert args[args.index("--inference-service") :] == ["--inference-service", "iris-r5"]
    assert {"name": "artifacts", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "optiloop.dev/revision" not in deployment["spec"]["selector"]["matchLabels"]  # stable across revisions
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_only_the_inference_services_pods_of_every_revision_and_prometheus_reach_the_drift_monitor() -> None:
    config = OperatorConfig(prometheus_namespace_labels={"team": "obs"}, prometheus_pod_labels={"app": "prom"})
    deployment, _, policy = drift_monitor(resource(), config, revision=5, inference_services=["iris-r5"])
    assert (policy["kind"], policy["metadata"]["name"]) == ("NetworkPolicy", "iris-drift")
    assert policy["spec"]["podSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    sources = [rule["from"] for rule in policy["spec"]["ingress"]]
    assert sources == [
        [
            {
                "podSelector": {
                    "matchLabels": {
                        "app.kubernetes.io/managed-by": "optiloop",
                        "optiloop.dev/name": "iris",
                        "optiloop.dev/component": "serving",
                    }
                }
            }
        ],
        [{"namespaceSelector": {"matchLabels": {"team": "obs"}}, "podSelector": {"matchLabels": {"app": "prom"}}}],
    ]
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]}
    # Every InferenceService of the resource carries those labels (KServe copies them onto its
    # pods): Knative mode's one and Standard mode's per revision, a canary's included.
    predictors = sources[0][0]["podSelector"]["matchLabels"]
    standard = Capabilities(kserve=True, kserve_default=KServeDefault("standard", "kserve/config"))
    for capabilities in (KNATIVE_CLUSTER, standard):
        topology = resolve(resource(), capabilities, CONFIG)
        assert isinstance(topology, Topology), topology
        for revision, canary in ((5, False), (6, True)):
            isvc = inference_service(resource(), CONFIG, revision, topology, canary=canary)
            assert predictors.items() <= isvc["metadata"]["labels"].items(), isvc["metadata"]["name"]
    assert not predictors.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    off = OperatorConfig(drift_network_policy=False)
    assert [b["kind"] for b in drift_monitor(resource(), off, revision=5, inference_services=["iris-r5"])] == [
        "Deployment",
        "Service",
    ]


def test_drift_monitor_on_s3_copies_the_verified_model_directory_before_it_starts() -> None:
    model = resource(deployment={"storageUri": "s3://bucket/iris", "storageCredentialsSecretRef": {"name": "store"}})
    deployment = drift_monitor(model, CONFIG, revision=4, inference_services=["iris"])[0]
    pod = deployment["spec"]["template"]["spec"]
    [fetch] = pod["initContainers"]
    [monitor] = pod["containers"]
    assert fetch["image"] == CONFIG.jobs_image
    assert fetch["command"] == ["python", "-m", "optiloop.jobs.fetch"]
    assert fetch["args"] == ["--source", "s3://bucket/iris/r4/model", "--to", "/mnt/model"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "store"}}]
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True
    # Only the revision's URI, never the spec: a serving-only spec change must not restart the monitor.
    changed = resource(deployment={"storageUri": "s3://bucket/iris", "storageCredentialsSecretRef": {"name": "store"},
                                   "minReplicas": 3})  # fmt: skip
    again = drift_monitor(changed, CONFIG, revision=4, inference_services=["iris"])[0]
    assert again["spec"]["template"] == deployment["spec"]["template"]
    assert monitor["args"][monitor["args"].index("--model-dir") + 1] == "/mnt/model"
    assert {"name": "model", "mountPath": "/mnt/model", "readOnly": True} in monitor["volumeMounts"]
    assert "envFrom" not in monitor, "the monitor itself holds no storage credentials"
    assert {"name": "model", "emptyDir": {}} in pod["volumes"]
    assert not any("persistentVolumeClaim" in volume for volume in pod["volumes"])


def test_drift_monitor_on_a_claim_needs_no_copy() -> None:
    deployment = drift_monitor(resource(), CONFIG, revision=2, inference_services=["iris"])[0]
    assert "initContainers" not in deployment["spec"]["template"]["spec"]
