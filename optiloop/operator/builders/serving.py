"""The KServe InferenceService that serves a revision, and the drift monitor that watches it.

The InferenceService (``serving.kserve.io/v1beta1``) runs either KServe's ONNX runtime
(``modelFormat: onnx``, protocol v2, the model directory's Triton layout, loaded by KServe's
storage initializer) or optiloop's predictor image (a custom container reading ``/mnt/models``).
On a claim, KServe mounts the model directory there (``STORAGE_URI``); on ``s3://`` an init
container of ours copies it there with the resource's own artifact credentials (see
:func:`fetched_model`). Its payload logger sends every request to the drift monitor. It names
its deployment mode and autoscaler explicitly (see :mod:`optiloop.operator.topology`). In
Knative mode a retrained revision is rolled out as a canary with ``canaryTrafficPercent``;
promotion drops the field (100% to the latest revision), rollback puts the previous revision
back. In Standard mode each revision has its own InferenceService (see :mod:`.routing`).

The drift monitor is a Deployment and a Service in the resource's namespace. It reads the
serving revision's model directory from the artifact claim, mounted read-only.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from ...api import ModelOptimization
from .. import names, queries
from ..capabilities import (
    AUTOSCALER_CLASS_ANNOTATION,
    DEPLOYMENT_MODE_ANNOTATION,
    KNATIVE_CLASS_ANNOTATION,
    KNATIVE_HPA_CLASS,
    KSERVE_MODE_NAMES,
)
from ..config import OperatorConfig
from ..topology import Topology
from .common import (
    container_security_context,
    labels,
    metadata,
    pod_security_context,
    resources_or_default,
    scratch_volume,
)
from .jobs import FETCH_MODULE, PVC_ROOT, artifact_credentials, artifacts_root

ISVC_API_VERSION = "serving.kserve.io/v1beta1"
DRIFT_PORT = 8080
"""The drift monitor container's port."""
PREDICTOR_COMPONENT = "serving"
"""The ``optiloop.dev/component`` of the InferenceServices (KServe copies it onto their pods)."""
SERVICE_PORT = 80
"""The drift monitor Service's port (so the payload logger's URL needs none)."""
PREDICTOR_CONTAINER_PORT = 8080
"""The port KServe routes to in its model server container (and optiloop's predictor listens on)."""
PREDICTOR_PORT_NAME = "http1"
"""The predictor port's name: what a ``PodMonitor`` names to scrape the predictors' metrics (the
canary analysis queries them), and the one HTTP name Knative accepts on a serving container."""


def predictor_probes() -> dict[str, Any]:
    """The predictor's own health endpoints as the container's probes. Without them KServe's
    Standard mode falls back to a TCP probe, which calls a pod ready as soon as the port is open,
    before the model directory is verified and loaded; its agent sidecar (batcher, payload logger)
    forwards the readiness probe it is given. Liveness tolerates a minute of a slow model load."""
    port = PREDICTOR_CONTAINER_PORT
    return {
        "ports": [{"name": PREDICTOR_PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": port},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": port},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 6,
        },
    }


def model_uri(resource: ModelOptimization, revision: int) -> str:
    """Storage URI of a revision's model for the configured runtime."""
    base = f"{artifacts_root(resource).rstrip('/')}/r{revision}/model"
    return f"{base}/triton" if resource.spec.deployment.runtime == "onnx" else base


def drift_monitor_url(resource: ModelOptimization, revision: int) -> str:
    """Where ``revision``'s payload logger posts: the resource's drift monitor, on the path that
    tells it which revision sent the events (a canary's are kept out of the drift window)."""
    namespace = resource.metadata.namespace or "default"
    return f"http://{names.drift_monitor(resource.metadata.name)}.{namespace}.svc.cluster.local/revisions/{revision}"


def _predictor_model(resource: ModelOptimization, config: OperatorConfig, revision: int) -> dict[str, Any]:
    deployment = resource.spec.deployment
    resources = resources_or_default(deployment.resources, config.default_predictor_resources)
    if deployment.runtime == "onnx":
        return {
            "model": {
                "modelFormat": {"name": "onnx"},
                "protocolVersion": "v2",
                "storageUri": model_uri(resource, revision),
                "resources": resources,
            }
        }
    scratch, scratch_mount = scratch_volume()
    cpus = {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}
    env: list[dict[str, Any]] = [{"name": "OPTILOOP_THREADS", "valueFrom": cpus}]
    volumes, mounts, init_containers = [scratch], [scratch_mount], []
    if artifacts_root(resource).startswith("s3://"):
        # Without STORAGE_URI KServe adds no storage initializer of its own: ours copies the model.
        volume, mount, fetch = fetched_model(resource, config, revision, PREDICTOR_MODEL_DIR)
        volumes, mounts, init_containers = [scratch, volume], [scratch_mount, mount], [fetch]
    else:
        env.insert(0, {"name": "STORAGE_URI", "value": model_uri(resource, revision)})  # KServe mounts the claim
    container = {
        "name": "kserve-container",
        "image": config.predictor_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", "optiloop.serve"],
        "args": ["--model-dir", PREDICTOR_MODEL_DIR, "--model-name", names.inference_service(resource.metadata.name)],
        "env": env,
        "resources": resources,
        **predictor_probes(),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    pod: dict[str, Any] = {"containers": [container], "volumes": volumes, "securityContext": pod_security_context()}
    if init_containers:
        pod["initContainers"] = init_containers
    return pod


def _autoscaling(
    resource: ModelOptimization, config: OperatorConfig, revision: int, topology: Topology
) -> tuple[dict[str, str], dict[str, Any]]:
    """The annotations and predictor fields that make KServe scale as ``topology`` says.

    Every choice is explicit, so KServe's webhook validates it rather than guessing: Knative's
    KPA takes concurrency or rps, its HPA class cpu or memory; Standard mode names its autoscaler
    class; KEDA takes no ``scaleMetric`` (KServe refuses it) but ``autoScaling.metrics``: a CPU or
    memory utilisation, or a Prometheus query over the predictor's own metrics for this revision.
    """
    metric, target = topology.scale_metric, topology.scale_target
    if topology.autoscaler == "kpa":
        return {}, {"scaleMetric": metric, "scaleTarget": target}
    if topology.autoscaler == "knativeHpa":
        return {KNATIVE_CLASS_ANNOTATION: KNATIVE_HPA_CLASS}, {"scaleMetric": metric, "scaleTarget": target}
    annotations: dict[str, str] = {AUTOSCALER_CLASS_ANNOTATION: topology.autoscaler}
    if topology.autoscaler == "hpa":
        return annotations, {"scaleMetric": metric, "scaleTarget": target}
    if metric in ("cpu", "memory"):
        source = {
            "type": "Resource",
            "resource": {"name": metric, "target": {"type": "Utilization", "averageUtilization": target}},
        }
    else:
        query = (queries.request_rate_query if metric == "rps" else queries.concurrency_query)(resource, revision)
        prometheus = resource.spec.monitoring.prometheus.url or config.prometheus_url
        source = {
            "type": "External",
            # KEDA's Prometheus trigger divides the query's value by the replicas (AverageValue).
            "external": {
                "metric": {"backend": "prometheus", "serverAddress": prometheus, "query": query},
                "target": {"type": "Value", "value": target},
            },
        }
    return annotations, {"autoScaling": {"metrics": [source]}}


def inference_service(
    resource: ModelOptimization, config: OperatorConfig, revision: int, topology: Topology, canary: bool = False
) -> dict[str, Any]:
    """The InferenceService serving ``revision`` in ``topology``'s mode; ``canary`` (Knative mode
    only) sends it only the spec's traffic share."""
    deployment = resource.spec.deployment
    annotations, scaling = _autoscaling(resource, config, revision, topology)
    annotations[DEPLOYMENT_MODE_ANNOTATION] = KSERVE_MODE_NAMES[topology.mode]
    predictor: dict[str, Any] = {
        # Serving needs no Kubernetes API: no token in the predictor pod for anyone to use.
        "automountServiceAccountToken": False,
        "minReplicas": deployment.min_replicas,
        "maxReplicas": deployment.max_replicas,
        **scaling,
        **_predictor_model(resource, config, revision),
    }
    if deployment.batcher is not None:
        predictor["batcher"] = {
            "maxBatchSize": deployment.batcher.max_batch_size,
            "maxLatency": deployment.batcher.max_latency_ms,
        }
    if resource.spec.monitoring.enabled:
        predictor["logger"] = {"mode": "request", "url": drift_monitor_url(resource, revision)}
    if canary and topology.canary_method == "KnativeTraffic":
        predictor["canaryTrafficPercent"] = deployment.canary_traffic_percent
    name = topology.inference_service(resource.metadata.name, revision)
    meta = metadata(resource, name, PREDICTOR_COMPONENT, revision)
    meta["annotations"] = annotations
    return {
        "apiVersion": ISVC_API_VERSION,
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {"predictor": predictor},
    }


FETCHED_MODEL_DIR = "/mnt/model"
"""Where the drift monitor reads a model directory copied out of an ``s3://`` store."""
PREDICTOR_MODEL_DIR = "/mnt/models"
"""Where optiloop's predictor reads its model directory (KServe's path for a custom container)."""
FETCHED_VOLUME = "model"
"""The emptyDir a model directory copied out of an ``s3://`` store lies in."""


def fetched_model(
    resource: ModelOptimization, config: OperatorConfig, revision: int, to: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The emptyDir, the reader's read-only mount of it at ``to``, and the init container
    (:func:`fetch_model_container`) that fills it: a pod's copy of ``revision``'s model directory."""
    volume = {"name": FETCHED_VOLUME, "emptyDir": {}}
    mount = {"name": FETCHED_VOLUME, "mountPath": to, "readOnly": True}
    return volume, mount, fetch_model_container(resource, config, revision, to)


def fetch_model_container(
    resource: ModelOptimization, config: OperatorConfig, revision: int, to: str
) -> dict[str, Any]:
    """An init container copying ``revision``'s finished model directory out of the ``s3://``
    artifact store into the :data:`FETCHED_VOLUME` emptyDir at ``to`` (the jobs image,
    ``python -m optiloop.jobs.fetch``): every file checked against the SHA-256 in its marker, the
    marker written last.

    It holds the artifact store's credentials, in the form the stage Jobs take them (the
    resource's ``storageCredentialsSecretRef`` as ``AWS_*``, endpoint included), so a private or
    S3-compatible store serves and is monitored with the tenant's own Secret; the container that
    reads the copy never gets them. KServe's storage initializer would need the Secret in KServe's
    own key names, through a ServiceAccount that tenants do not choose."""
    uri = artifacts_root(resource)
    if not uri.startswith("s3://"):
        raise ValueError(f"only a model directory on s3:// is fetched, not one on {uri}")
    _, scratch_mount = scratch_volume()
    return {
        "name": "fetch-model",
        "image": config.jobs_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", FETCH_MODULE],
        "args": ["--source", f"{uri.rstrip('/')}/r{revision}/model", "--to", to],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "envFrom": artifact_credentials(resource),
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": container_security_context(),
        # Why a copy failed (a missing marker, a hash that differs) is the last line it wrote; the
        # pod's status then carries it to `kubectl describe` and the resource's Ready condition.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [scratch_mount, {"name": FETCHED_VOLUME, "mountPath": to}],
    }


def _model_dir_source(
    resource: ModelOptimization, config: OperatorConfig, revision: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], str]:
    """Volumes, the monitor's mounts, init containers, and the path of ``revision``'s model directory.

    On a claim the directory is mounted read-only where it lies. On ``s3://``
    :func:`fetch_model_container` copies the finished directory into an emptyDir before the
    monitor starts; the monitor holds no credentials and verifies the copy again when it loads."""
    uri = artifacts_root(resource)
    if uri.startswith("pvc://"):
        claim, _, path = uri.removeprefix("pvc://").partition("/")
        volume = {"name": "artifacts", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        mount = {"name": "artifacts", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True}
        model_dir = "/".join(p for p in (PVC_ROOT, claim, path.strip("/"), f"r{revision}", "model") if p)
        return [volume], [mount], [], model_dir
    if not uri.startswith("s3://"):
        raise ValueError(f"the drift monitor cannot read a model directory from storageUri {uri}")
    volume, mount, fetch = fetched_model(resource, config, revision, FETCHED_MODEL_DIR)
    return [volume], [mount], [fetch], FETCHED_MODEL_DIR


def drift_monitor(
    resource: ModelOptimization, config: OperatorConfig, revision: int, *, inference_services: Sequence[str]
) -> list[dict[str, Any]]:
    """The drift monitor's Deployment and Service (and NetworkPolicy) for the serving ``revision``.

    ``inference_services`` are the names of the resource's InferenceServices whose payload events
    the monitor accepts (one ``--inference-service`` each): an event that names another one, from
    anywhere in the cluster, is refused rather than counted against the reference."""
    if not inference_services:
        raise ValueError("the drift monitor needs the InferenceServices it accepts events from")
    name = names.drift_monitor(resource.metadata.name)
    monitoring = resource.spec.monitoring
    volumes, mounts, init_containers, model_dir = _model_dir_source(resource, config, revision)
    scratch, scratch_mount = scratch_volume()
    meta = metadata(resource, name, "drift-monitor", revision)
    selector = {k: v for k, v in meta["labels"].items() if k != "optiloop.dev/revision"}
    args = [
        "serve", "--model-dir", model_dir, "--namespace", resource.metadata.namespace or "default",
        "--model", resource.metadata.name, "--detector", monitoring.detector, "--p-value", str(monitoring.p_value),
        "--correction", monitoring.correction, "--window-size", str(monitoring.window_size),
        "--window", monitoring.window, "--port", str(DRIFT_PORT),
    ]  # fmt: skip
    for accepted in sorted(set(inference_services)):
        args += ["--inference-service", accepted]
    probe = {"httpGet": {"path": "/healthz", "port": DRIFT_PORT}, "periodSeconds": 10}
    container = {
        "name": "drift-monitor",
        "image": config.drift_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", "optiloop.drift"],
        "args": args,
        "ports": [{"name": "http", "containerPort": DRIFT_PORT}],
        # Importing Alibi Detect takes about 20 s; readiness waits for the reference to load.
        "startupProbe": {**probe, "failureThreshold": 30},
        "livenessProbe": probe,
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": DRIFT_PORT}, "periodSeconds": 5},
        "securityContext": container_security_context(),
        "volumeMounts": [scratch_mount, *mounts],
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": meta["labels"],
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(DRIFT_PORT)},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    **({"initContainers": init_containers} if init_containers else {}),
                    "containers": [container],
                    "volumes": [scratch, *volumes],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": copy.deepcopy(meta),
        "spec": {"selector": selector, "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http"}]},
    }
    if not config.drift_network_policy:
        return [deployment, service]
    return [deployment, service, _monitor_network_policy(resource, config, copy.deepcopy(meta), selector)]


def _monitor_network_policy(
    resource: ModelOptimization, config: OperatorConfig, meta: dict[str, Any], selector: dict[str, str]
) -> dict[str, Any]:
    """Only the pods of the resource's InferenceServices (their payload logger) and Prometheus (its
    scrapes) reach the drift monitor: nobody else in the cluster can feed it events or hide drift.

    Per monitor rather than in the chart: the chart cannot know the namespaces of a cluster-wide
    install. The predictor pods are selected by the labels the operator puts on every
    InferenceService it writes and KServe copies onto their pods: they hold for Knative mode's
    one ``<name>`` and for each revision's ``<name>-r<N>`` (a canary's logger posts here too),
    where KServe's own pod label names only one InferenceService."""
    predictors = labels(resource, PREDICTOR_COMPONENT)
    port = [{"protocol": "TCP", "port": DRIFT_PORT}]
    prometheus = {
        "namespaceSelector": {"matchLabels": dict(config.prometheus_namespace_labels)},
        "podSelector": {"matchLabels": dict(config.prometheus_pod_labels)},
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": predictors}}], "ports": port},
                {"from": [prometheus], "ports": port},
            ],
        },
    }
