"""KServe's real manager on the real node serves optiloop's predictor image as the operator asks:
the InferenceService the operator builds (Standard mode, our serve image, a model directory on a
PersistentVolume) becomes Ready, KServe's webhook injects its real agent as the payload logger, the
predictor's Service answers exactly what ONNX Runtime computes on the same file, and every process
of the predictor pod runs as uid 65532."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiloop.operator import names
from optiloop.operator.builders.serving import drift_monitor, inference_service
from optiloop.operator.config import OperatorConfig
from optiloop.operator.topology import Unservable, resolve
from tests.support.control_plane import wait_for
from tests.support.kserve_node import KServeOnNode, import_our_image
from tests.support.kserve_serving import (
    CLAIM,
    RUNTIME_UID,
    isvc_condition,
    isvc_ready,
    kserve_capabilities,
    read_isvc,
    resolved_topology,
    stored_model_optimization,
    written_as_the_jobs_write_it,
)
from tests.support.model_dirs import city_frame, city_model, write_model_directory
from tests.support.namespaces import create_namespace, delete_namespace
from tests.support.node import Node
from tests.support.node_pods import pod_processes
from tests.support.node_storage import claim_on_host_folder

pytestmark = pytest.mark.timeout(900)
RECORDER = """
import http.server, sys

class Recorder(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sys.stdout.write(self.requestline + "\\n" + str(self.headers) + body.decode("utf-8", "replace") + "\\n")
        sys.stdout.flush()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("", 8080), Recorder).serve_forever()
"""
"""Answers 200 only after it has read the whole request (an answer sent before the request was read
let Go's client close the connection before its body left), and writes each request to its log."""


def _event_recorder(api: Any, namespace: str, name: str, image: str) -> str:
    """A pod of ``image`` (any image with Python) behind a Service named ``name`` (port 80) that logs
    every request it gets; returns the pod's name once it runs. It stands where the drift monitor
    would be, to see what KServe's agent really posts to the operator's logger URL."""
    from kubernetes import client, utils

    labels = {"app": name}
    container = {
        "name": "recorder", "image": image, "imagePullPolicy": "Never", "command": ["python", "-c", RECORDER],
        "ports": [{"containerPort": 8080}],
    }  # fmt: skip
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False},
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    for obj in (pod, service):
        utils.create_from_dict(api, obj, namespace=namespace)
    core = client.CoreV1Api(api)
    wait_for(lambda: core.read_namespaced_pod_status(name, namespace).status.phase == "Running", 90, interval=0.25,
             what=f"the recorder pod {name} to run")  # fmt: skip
    # The agent posts each event once and never retries: the Service must lead to the pod first.
    wait_for(lambda: (core.read_namespaced_endpoints(name, namespace).subsets or [None])[0], 30, interval=0.25,
             what=f"the recorder Service {name} to have its endpoint")  # fmt: skip
    return name


@pytest.fixture
def short_namespace(node_api: Any) -> Iterator[str]:
    """A namespace with a short name: KServe's Standard mode puts ``<isvc>-predictor-<namespace>``
    in one DNS label (see the host-name test), so a long test-named one may not serve."""
    name = create_namespace(node_api, "isvc")
    yield name
    delete_namespace(node_api, name)


@pytest.fixture
def long_namespace(node_api: Any) -> Iterator[str]:
    """A namespace of 49 characters: KServe can name the InferenceService host in it, not the predictor's."""
    name = create_namespace(node_api, "kserve-joins-predictor-and-namespace-label")
    yield name
    delete_namespace(node_api, name)


CLIENT = """
import sys, time, urllib.request
url, body = sys.argv[1], sys.argv[2].encode()
for attempt in range(40):
    try:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            sys.stdout.write(answer.read().decode())
            break
    except OSError as exc:
        sys.stderr.write(f"{exc}\\n")
        time.sleep(0.5)
else:
    sys.exit(f"no answer from {url}")
"""


def _ask_through_the_service(node: Node, cluster_ip: str, model: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` to the Service's ClusterIP from inside the node (kube-proxy's rules route it),
    retrying briefly: a fresh Service's rules follow its endpoints within a second or two."""
    url = f"http://{cluster_ip}:80/v2/models/{model}/infer"
    try:
        done = node.run_inside([sys.executable, "-c", CLIENT, url, json.dumps(body)], timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{url} did not answer") from exc
    return dict(json.loads(done.stdout))


def _expected(model_dir: Path, a: np.ndarray, b: np.ndarray, city: np.ndarray) -> tuple[list[str], np.ndarray]:
    """ONNX Runtime's labels and probabilities on the model file the predictor serves."""
    import onnxruntime as ort

    metadata = json.loads((model_dir / "metadata.json").read_text())
    categories = next(f["categories"] for f in metadata["features"] if f["name"] == "city")
    matrix = np.stack([a, b, np.array([categories.index(v) for v in city], dtype=np.float32)], axis=1)
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    indices, probabilities = session.run(None, {metadata["inputName"]: matrix.astype(np.float32)})
    return [metadata["classes"][int(i)] for i in np.ravel(indices)], probabilities


def test_kserves_manager_serves_our_predictor_image_from_the_operators_inference_service(
    kserve: KServeOnNode, node_api: Any, short_namespace: str, tmp_path: Path, record_property: Any
) -> None:
    from kubernetes import client

    node_namespace = short_namespace
    node = kserve.node
    serve_image = import_our_image(node, "serve")
    artifacts = tmp_path / "artifacts"
    model_dir = write_model_directory(artifacts / "iris" / "r1" / "model", city_model(), name="iris")
    written_as_the_jobs_write_it(artifacts)
    claim_on_host_folder(node_api, node_namespace, CLAIM, artifacts)
    recorder = _event_recorder(node_api, node_namespace, names.drift_monitor("iris"), serve_image)

    config = OperatorConfig(predictor_image=serve_image, image_pull_policy="IfNotPresent")
    model = stored_model_optimization(node_api, node_namespace)
    topology = resolved_topology(node_api, model, config)
    assert (topology.mode, topology.source) == ("standard", "kserveConfig")
    body = inference_service(model, config, 1, topology)
    name = body["metadata"]["name"]
    objects = client.CustomObjectsApi(node_api)
    began = time.monotonic()
    objects.create_namespaced_custom_object("serving.kserve.io", "v1beta1", node_namespace, "inferenceservices", body)
    isvc = wait_for(
        lambda: isvc_ready(node_api, node_namespace, name),
        600,
        interval=0.5,
        what=f"InferenceService {name} to be Ready ({kserve.manager.log}, {node.workdir}/kubelet.log)",
    )
    seconds = time.monotonic() - began
    record_property("create_to_ready_seconds", round(seconds, 1))
    print(f"\nInferenceService {name}: created to Ready in {seconds:.1f}s (load {os.getloadavg()[0]:.1f})")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"

    # KServe made one Deployment whose pod carries our predictor and the agent it injected as the
    # payload logger, aimed at the drift monitor's URL.
    core = client.CoreV1Api(node_api)
    (pod,) = core.list_namespaced_pod(node_namespace, label_selector=f"serving.kserve.io/inferenceservice={name}").items
    conditions = {c.type: c.status for c in pod.status.conditions}
    assert conditions["Ready"] == "True", "KServe called the InferenceService Ready before its pod was"
    containers = {c.name: c for c in pod.spec.containers}
    assert containers["kserve-container"].image == serve_image
    assert containers["agent"].image.startswith("optiloop.local/kserve-agent:")
    logger_url = body["spec"]["predictor"]["logger"]["url"]
    assert logger_url in containers["agent"].args, containers["agent"].args

    # Every process of the pod (but the sandbox's pause) runs as 65532.
    processes = {command: uid for command, uid in pod_processes(pod.metadata.uid).items() if command != "/pause"}
    assert any("optiloop.serve" in command for command in processes), processes
    assert any("/ko-app/agent" in command for command in processes), processes
    assert set(processes.values()) == {RUNTIME_UID}, processes

    # Through the predictor's Service, the answers are ONNX Runtime's on the same file.
    frame = city_frame(24, 9)
    a = frame["a"].to_numpy(np.float32)
    b = frame["b"].fillna(1.5).to_numpy(np.float32)
    city = frame["city"].to_numpy(dtype=object)
    request = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [len(a)], "data": a.tolist()},
            {"name": "b", "datatype": "FP32", "shape": [len(b)], "data": b.tolist()},
            {"name": "city", "datatype": "BYTES", "shape": [len(city)], "data": list(city)},
        ]
    }
    service = core.read_namespaced_service(f"{name}-predictor", node_namespace)
    args = body["spec"]["predictor"]["containers"][0]["args"]
    answer = _ask_through_the_service(node, service.spec.cluster_ip, args[args.index("--model-name") + 1], request)
    outputs = {o["name"]: o for o in answer["outputs"]}
    labels, probabilities = _expected(model_dir, a, b, city)
    assert outputs["predictions"]["data"] == labels
    got = np.array(outputs["probabilities"]["data"], dtype=np.float32).reshape(outputs["probabilities"]["shape"])
    np.testing.assert_allclose(got, probabilities, rtol=1e-6, atol=1e-7)

    # KServe's real agent posted the request, as a CloudEvent, to the URL the operator gave its
    # logger: the drift monitor's Service name, resolved through the cluster's DNS.
    def posted() -> str | None:
        log = core.read_namespaced_pod_log(recorder, node_namespace)
        return log if "\r\n\r\n{" in log or "\n\n{" in log else None

    try:
        event = wait_for(posted, 30, interval=0.5, what="the payload logger's event at the recorder")
    except TimeoutError as exc:
        agent = core.read_namespaced_pod_log(pod.metadata.name, node_namespace, container="agent", tail_lines=30)
        seen = core.read_namespaced_pod_log(recorder, node_namespace)
        raise AssertionError(f"no event reached the recorder\n--- agent\n{agent}\n--- recorder\n{seen}") from exc
    head, _, payload = event.replace("\r\n", "\n").partition("\n\n")
    headers = {
        key.strip().lower(): value.strip()
        for key, _, value in (line.partition(":") for line in head.splitlines()[1:] if ":" in line)
    }
    assert event.startswith("POST /revisions/1 HTTP/1.1"), event
    assert headers["ce-type"] == "org.kubeflow.serving.inference.request", headers
    assert headers["ce-inferenceservicename"] == name
    assert headers["ce-namespace"] == node_namespace
    assert headers["ce-component"] == "predictor"
    # Not the pod's name, as KServe's injector means it to be: the webhook passes the pod's name as
    # --source-uri, but a Deployment's pod has no name yet when it is admitted (only generateName),
    # so the agent falls back to its own URL. Every replica's events carry the same source.
    agent_args = containers["agent"].args
    assert agent_args[agent_args.index("--source-uri") + 1] == ""
    assert headers["ce-source"] == "http://localhost:9081/"
    assert json.loads(payload) == request


def test_kserve_refuses_a_predictor_host_name_over_63_characters_and_says_so_on_the_inference_service(
    kserve: KServeOnNode, node_api: Any, long_namespace: str
) -> None:
    """Why the operator checks host names first: a resource name (up to 40 characters) and a
    namespace (up to 63) that Kubernetes accepts can still make an InferenceService KServe's
    Standard mode cannot serve, because its default ``domainTemplate`` joins
    ``<name>-r<N>-predictor`` and the namespace into one DNS label. Created anyway, the
    InferenceService stays not Ready with no Deployment; the operator refuses the same host, from
    KServe's real ConfigMap, before creating anything."""
    from kubernetes import client

    config = OperatorConfig(predictor_image="optiloop.local/unused:1")
    model = stored_model_optimization(node_api, long_namespace)
    refused_first = resolve(model, kserve_capabilities(node_api, config), config)
    assert isinstance(refused_first, Unservable), refused_first
    assert refused_first.reason == "HostNameInvalid"
    # What KServe does with it had the operator created it: the topology of the same resource in a
    # short namespace (the namespace only matters to the host), its InferenceService in the long one.
    elsewhere = model.model_copy(update={"metadata": model.metadata.model_copy(update={"namespace": "ml"})})
    body = inference_service(model, config, 1, resolved_topology(node_api, elsewhere, config))
    name = body["metadata"]["name"]
    host = f"{name}-predictor-{long_namespace}"
    assert len(host) > 63
    assert f"'{host}." in refused_first.message
    client.CustomObjectsApi(node_api).create_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", long_namespace, "inferenceservices", body
    )

    def refused() -> dict[str, Any] | None:
        ready = isvc_condition(read_isvc(node_api, long_namespace, name), "Ready")
        return ready if ready is not None and ready["status"] == "False" and ready.get("reason") else None

    ready = wait_for(refused, 60, interval=0.5, what=f"KServe to refuse {name} ({kserve.manager.log})")
    assert ready["reason"] == "ReconcileFailed"
    assert f"{name}-predictor-{long_namespace}" in ready["message"]
    assert "must be no more than 63 characters" in ready["message"]
    assert client.AppsV1Api(node_api).list_namespaced_deployment(long_namespace).items == []


@pytest.mark.parametrize(("metric", "target"), [("cpu", 60), ("memory", 75)])
def test_kserves_hpa_scales_on_the_metric_target_and_replicas_the_spec_asked_for(
    kserve: KServeOnNode, node_api: Any, short_namespace: str, metric: str, target: int
) -> None:
    """Standard mode: the HorizontalPodAutoscaler KServe's real manager makes for the operator's
    InferenceService scales on exactly the metric, utilisation and replica bounds the spec asked
    for (KServe would silently put CPU 80% in place of a metric it cannot use: the operator
    refuses those in Standard mode, see the serving-mode unit tests)."""
    from kubernetes import client

    config = OperatorConfig(predictor_image="optiloop.local/unused:1")
    model = stored_model_optimization(
        node_api, short_namespace, scaleMetric=metric, scaleTarget=target, minReplicas=2, maxReplicas=5
    )
    topology = resolved_topology(node_api, model, config)
    assert (topology.autoscaler, topology.scale_metric, topology.scale_target) == ("hpa", metric, target)
    body = inference_service(model, config, 1, topology)
    name = body["metadata"]["name"]
    client.CustomObjectsApi(node_api).create_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", short_namespace, "inferenceservices", body
    )
    autoscaling = client.AutoscalingV2Api(node_api)
    hpa = wait_for(
        lambda: autoscaling.read_namespaced_horizontal_pod_autoscaler(f"{name}-predictor", short_namespace),
        60,
        interval=0.5,
        what=f"KServe to create the HorizontalPodAutoscaler of {name} ({kserve.manager.log})",
    )
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 5)
    assert hpa.spec.scale_target_ref.kind == "Deployment"
    assert hpa.spec.scale_target_ref.name == f"{name}-predictor"
    (source,) = hpa.spec.metrics
    assert source.type == "Resource"
    assert source.resource.name == metric
    assert (source.resource.target.type, source.resource.target.average_utilization) == ("Utilization", target)


def _metrics_of(node: Node, cluster_ip: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples a Service's pods expose on ``/metrics`` (port 80), read from inside the node."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://{cluster_ip}:80/metrics"
    done = node.run_inside([sys.executable, "-c", FETCH, url], timeout=60)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(done.stdout)
        for sample in family.samples
    }


FETCH = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"


def test_kserves_agent_posts_each_request_to_our_drift_monitor_pod_which_counts_it_for_its_revision(
    kserve: KServeOnNode, node_api: Any, short_namespace: str, tmp_path: Path, record_property: Any
) -> None:
    """The drift monitor from our drift image, as the operator builds it (Deployment, Service,
    NetworkPolicy, the revision's model directory from the artifact claim), takes the events
    KServe's real agent posts for the operator's InferenceService: every request is accepted into
    revision 1's window, none rejected."""
    from kubernetes import client, utils

    namespace, node = short_namespace, kserve.node
    began = time.monotonic()
    config = OperatorConfig(
        predictor_image=import_our_image(node, "serve"),
        drift_image=import_our_image(node, "drift"),
        image_pull_policy="IfNotPresent",
    )
    record_property("image_imports_seconds", round(time.monotonic() - began, 1))
    artifacts = tmp_path / "artifacts"
    write_model_directory(artifacts / "iris" / "r1" / "model", city_model(), name="iris")
    written_as_the_jobs_write_it(artifacts)
    claim_on_host_folder(node_api, namespace, CLAIM, artifacts)
    model = stored_model_optimization(node_api, namespace)
    body = inference_service(model, config, 1, resolved_topology(node_api, model, config))
    name = body["metadata"]["name"]
    for part in drift_monitor(model, config, 1, inference_services=[name]):
        utils.create_from_dict(node_api, part, namespace=namespace)
    monitor = names.drift_monitor("iris")
    apps = client.AppsV1Api(node_api)
    wait_for(
        lambda: (apps.read_namespaced_deployment_status(monitor, namespace).status.available_replicas or 0) >= 1,
        300,
        interval=0.5,
        what=f"the drift monitor {monitor} to be available ({node.workdir}/kubelet.log)",
    )
    client.CustomObjectsApi(node_api).create_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", body
    )
    wait_for(
        lambda: isvc_ready(node_api, namespace, name), 600, interval=0.5, what=f"InferenceService {name} to be Ready"
    )

    core = client.CoreV1Api(node_api)
    predictor = core.read_namespaced_service(f"{name}-predictor", namespace).spec.cluster_ip
    args = body["spec"]["predictor"]["containers"][0]["args"]
    served_name = args[args.index("--model-name") + 1]
    requests, rows = 5, 0
    for seed in range(requests):
        frame = city_frame(8 + seed, seed)
        rows += len(frame)
        request = {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [len(frame)], "data": frame["a"].tolist()},
                {"name": "b", "datatype": "FP32", "shape": [len(frame)], "data": frame["b"].fillna(1.5).tolist()},
                {"name": "city", "datatype": "BYTES", "shape": [len(frame)], "data": frame["city"].tolist()},
            ]
        }
        _ask_through_the_service(node, predictor, served_name, request)

    labels = {"namespace": namespace, "model": "iris", "revision": "1"}
    monitor_ip = core.read_namespaced_service(monitor, namespace).spec.cluster_ip

    def counted() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        samples = _metrics_of(node, monitor_ip)
        accepted = samples.get(("optiloop_drift_events_total", frozenset({**labels, "outcome": "accepted"}.items())))
        return samples if accepted == requests else None

    samples = wait_for(counted, 60, interval=1, what=f"the drift monitor to count {requests} events")
    assert samples[("optiloop_drift_events_total", frozenset({**labels, "outcome": "rejected"}.items()))] == 0
    assert samples[("optiloop_drift_rows_total", frozenset(labels.items()))] == rows
    assert samples[("optiloop_drift_window_samples", frozenset(labels.items()))] == rows


CONCURRENT_CLIENT = """
import json, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
url, rows, clients = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])

def ask(row):
    body = json.dumps({"instances": [row]}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())

for attempt in range(40):  # a fresh Service's rules follow its endpoints within a second or two
    try:
        ask(rows[0])
        break
    except OSError as exc:
        sys.stderr.write(f"{exc}\\n")
        time.sleep(0.5)
else:
    sys.exit(f"no answer from {url}")
metrics = url.split("/v1/")[0] + "/metrics"
before = urllib.request.urlopen(metrics, timeout=10).read().decode()
with ThreadPoolExecutor(clients) as pool:
    answers = list(pool.map(ask, rows))
after = urllib.request.urlopen(metrics, timeout=10).read().decode()
json.dump({"answers": answers, "before": before, "after": after}, sys.stdout)
"""
"""Sends each row as its own v1 request, ``clients`` at a time, after one request that waits for the
Service; returns the answers in row order and the predictor's metrics before and after them."""


def _batch_histogram(exposition: str, model: str) -> tuple[float, float]:
    """The predictor's rows-per-inference histogram for ``model``: (inferences, rows)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if family.name == "optiloop_predictor_batch_size" and sample.labels.get("model") == model
    }
    return samples["optiloop_predictor_batch_size_count"], samples["optiloop_predictor_batch_size_sum"]


def test_kserves_batcher_gathers_concurrent_single_row_requests_into_one_inference_and_answers_each(
    kserve: KServeOnNode, node_api: Any, short_namespace: str, tmp_path: Path
) -> None:
    """``spec.deployment.batcher`` on the real node: KServe's webhook gives the agent the batcher's
    flags from the operator's InferenceService, concurrent one-row v1 requests through the Service
    reach our predictor as batches (its own rows-per-inference histogram says so), and every client
    gets exactly its own row's answer, which is ONNX Runtime's on the same file."""
    from kubernetes import client

    namespace, node = short_namespace, kserve.node
    serve_image = import_our_image(node, "serve")
    artifacts = tmp_path / "artifacts"
    model_dir = write_model_directory(artifacts / "iris" / "r1" / "model", city_model(), name="iris")
    written_as_the_jobs_write_it(artifacts)
    claim_on_host_folder(node_api, namespace, CLAIM, artifacts)
    config = OperatorConfig(predictor_image=serve_image, image_pull_policy="IfNotPresent")
    model = stored_model_optimization(node_api, namespace, batcher={"maxBatchSize": 4, "maxLatencyMs": 500})
    body = inference_service(model, config, 1, resolved_topology(node_api, model, config))
    name = body["metadata"]["name"]
    client.CustomObjectsApi(node_api).create_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", body
    )
    wait_for(
        lambda: isvc_ready(node_api, namespace, name), 600, interval=0.5, what=f"InferenceService {name} to be Ready"
    )

    core = client.CoreV1Api(node_api)
    (pod,) = core.list_namespaced_pod(namespace, label_selector=f"serving.kserve.io/inferenceservice={name}").items
    agent_args = {c.name: c for c in pod.spec.containers}["agent"].args
    assert "--enable-batcher" in agent_args, agent_args
    assert agent_args[agent_args.index("--max-batchsize") + 1] == "4"
    assert agent_args[agent_args.index("--max-latency") + 1] == "500"

    frame = city_frame(32, 3)
    frame["b"] = frame["b"].fillna(1.5)
    rows = [[float(a), float(b), str(city)] for a, b, city in zip(frame["a"], frame["b"], frame["city"], strict=True)]
    served = body["spec"]["predictor"]["containers"][0]["args"]
    served_name = served[served.index("--model-name") + 1]
    cluster_ip = core.read_namespaced_service(f"{name}-predictor", namespace).spec.cluster_ip
    url = f"http://{cluster_ip}:80/v1/models/{served_name}:predict"
    done = node.run_inside([sys.executable, "-c", CONCURRENT_CLIENT, url, json.dumps(rows), "8"], timeout=120)
    sent = json.loads(done.stdout)

    labels, _ = _expected(
        model_dir, frame["a"].to_numpy(np.float32), frame["b"].to_numpy(np.float32), frame["city"].to_numpy(object)
    )
    assert [answer["predictions"] for answer in sent["answers"]] == [[label] for label in labels]
    inferences_before, rows_before = _batch_histogram(sent["before"], served_name)
    inferences_after, rows_after = _batch_histogram(sent["after"], served_name)
    inferences, rows_run = inferences_after - inferences_before, rows_after - rows_before
    print(f"\nbatcher: {len(rows)} one-row requests, 8 at a time, reached the predictor as {inferences:.0f} inferences")
    assert rows_run == len(rows)
    # 8 clients and batches of up to 4 rows: most inferences carry several rows (8 would be perfect).
    assert inferences <= len(rows) / 2, f"{len(rows)} requests were run as {inferences:.0f} inferences"
