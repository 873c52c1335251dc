"""Artifacts on S3, served and monitored on the real node with the resource's own Secret: an
S3-compatible server inside the node holds a revision's model directory, written with the export
stage's writer. The operator's InferenceService (Standard mode) becomes Ready through KServe's real
manager: its pod's init container (our jobs image) copies the verified directory with the tenant's
Secret (keys and endpoint, in the form the stage Jobs take them), KServe adds no storage initializer
of its own, and the predictor answers what ONNX Runtime computes on the same file. The drift
monitor's pod copies it the same way and becomes Ready. A revision whose file no longer matches its
marker never serves: the copy fails, and the operator's reading of the pod names the hash mismatch."""

from __future__ import annotations

import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiloop.operator.builders.serving import drift_monitor, inference_service
from optiloop.operator.config import OperatorConfig
from optiloop.operator.observed import predictor_trouble
from tests.node.test_kserve_on_node import _ask_through_the_service, _expected
from tests.support.control_plane import _Process, _spawn, wait_for
from tests.support.kserve_node import KServeOnNode, import_our_image
from tests.support.kserve_serving import (
    isvc_condition,
    isvc_ready,
    read_isvc,
    resolved_topology,
    stored_model_optimization,
)
from tests.support.model_dirs import city_frame, city_model, write_model_directory
from tests.support.namespaces import create_namespace, delete_namespace
from tests.support.node import Node
from tests.support.node_config import NODE_IP
from tests.support.node_forward import net_namespace_of

pytestmark = pytest.mark.timeout(900)
S3_PORT = 9000
BUCKET = "models"
ISVCS = "inferenceservices"
ROOT = f"s3://{BUCKET}/iris"
KEYS = {"AWS_ACCESS_KEY_ID": "tenant-key", "AWS_SECRET_ACCESS_KEY": "tenant-secret", "AWS_DEFAULT_REGION": "us-east-1"}
SMALL = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
"""Two predictors (one never starting), their agents and a drift monitor on the node's 2 CPUs."""

UPLOAD = """
import sys
import boto3
from optiloop.formats.model_dir import read_model_directory, write_model_directory
from optiloop.jobs.storage import open_store
local, root, prefix, tamper = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "tamper"
bucket, _, base = root.removeprefix("s3://").partition("/")
client = boto3.client("s3")
if bucket not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
    client.create_bucket(Bucket=bucket)
found = read_model_directory(local, reference=True)
write_model_directory(open_store(root), found.contents, {"stage": "export"}, prefix=prefix)
if tamper:
    key = f"{base}/{prefix}/{found.model_file}"
    client.put_object(Bucket=bucket, Key=key, Body=found.contents[found.model_file] + b"tampered")
"""
"""Writes a local model directory under ``root``/``prefix`` with the export stage's writer (the
marker last), as a Job with the artifact store's credentials does; ``tamper`` then changes the model
file behind the marker's back."""


PROBE = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {S3_PORT}), timeout=2).close()
    print("up")
except OSError:
    print("down")
"""


def _s3_server(node: Node, workdir: Path) -> _Process:
    """moto's S3 server in the node's network namespace, on all its addresses: pods reach it at the
    node's address. Only the network namespace, so stopping it reaches moto itself."""
    argv = [sys.executable, "-m", "moto.server", "-H", "0.0.0.0", "-p", str(S3_PORT)]
    server = _spawn("s3", argv, workdir, net_namespace_of(node))
    try:
        wait_for(lambda: node.run_inside([sys.executable, "-c", PROBE], timeout=10).stdout.strip() == "up", 60,
                 interval=0.5, what=f"moto's S3 server in the node ({server.log})")  # fmt: skip
    except BaseException:
        server.stop()
        raise
    return server


def _upload(node: Node, local: Path, prefix: str, tamper: bool = False) -> None:
    env = [f"{k}={v}" for k, v in {**KEYS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}"}.items()]
    argv = ["env", *env, sys.executable, "-c", UPLOAD, str(local), ROOT, prefix, "tamper" if tamper else "keep"]
    node.run_inside(argv, timeout=120)


def _pods(api: Any, namespace: str, isvc: str) -> list[dict[str, Any]]:
    from kubernetes import client

    core = client.CoreV1Api(api)
    found = core.list_namespaced_pod(namespace, label_selector=f"serving.kserve.io/inferenceservice={isvc}").items
    return [api.sanitize_for_serialization(pod) for pod in found]


def test_an_s3_revision_is_served_and_monitored_with_the_resources_own_secret_and_a_tampered_one_never_serves(
    kserve: KServeOnNode, node_api: Any, tmp_path: Path, record_property: Any
) -> None:
    from kubernetes import client, utils

    node = kserve.node
    config = OperatorConfig(
        predictor_image=import_our_image(node, "serve"), jobs_image=import_our_image(node, "jobs"),
        drift_image=import_our_image(node, "drift"), image_pull_policy="IfNotPresent",
    )  # fmt: skip
    with ExitStack() as cleanup:
        namespace = create_namespace(node_api, "s3")
        cleanup.callback(delete_namespace, node_api, namespace)
        server = _s3_server(node, tmp_path)
        cleanup.callback(server.stop)
        model_dir = write_model_directory(tmp_path / "model", city_model(), name="iris")
        _upload(node, model_dir, "r1/model")
        _upload(node, model_dir, "r2/model", tamper=True)
        core = client.CoreV1Api(node_api)
        core.create_namespaced_secret(namespace, {
            "metadata": {"name": "store"},
            "stringData": {**KEYS, "AWS_ENDPOINT_URL": f"http://{NODE_IP}:{S3_PORT}"},
        })  # fmt: skip
        model = stored_model_optimization(
            node_api, namespace, storageUri=ROOT, storageCredentialsSecretRef={"name": "store"}, resources=SMALL
        )
        topology = resolved_topology(node_api, model, config)
        objects = client.CustomObjectsApi(node_api)
        began = time.monotonic()
        names = []
        for revision in (1, 2):
            body = inference_service(model, config, revision, topology)
            body["metadata"]["name"] = f"iris-r{revision}"  # both at once, as Standard mode's revisions are
            names.append(body["metadata"]["name"])
            objects.create_namespaced_custom_object("serving.kserve.io", "v1beta1", namespace, ISVCS, body)
        good, tampered = names
        wait_for(lambda: isvc_ready(node_api, namespace, good), 600, interval=0.5,
                 what=f"InferenceService {good} to be Ready ({kserve.manager.log})")  # fmt: skip
        seconds = {"InferenceService created to Ready (its model copied from S3)": time.monotonic() - began}

        # Our init container copied the model with the tenant's Secret; KServe added nothing of its own.
        (pod,) = _pods(node_api, namespace, good)
        assert [c["name"] for c in pod["spec"]["initContainers"]] == ["fetch-model"], pod["spec"]["initContainers"]
        [fetched] = pod["status"]["initContainerStatuses"]
        assert fetched["state"]["terminated"]["exitCode"] == 0, fetched
        assert "STORAGE_URI" not in json.dumps(pod["spec"]["containers"])
        frame = city_frame(12, 4)
        a, b = frame["a"].to_numpy(np.float32), frame["b"].fillna(0.5).to_numpy(np.float32)
        city = frame["city"].to_numpy(dtype=object)
        request = {"inputs": [
            {"name": "a", "datatype": "FP32", "shape": [len(a)], "data": a.tolist()},
            {"name": "b", "datatype": "FP32", "shape": [len(b)], "data": b.tolist()},
            {"name": "city", "datatype": "BYTES", "shape": [len(city)], "data": list(city)},
        ]}  # fmt: skip
        service = core.read_namespaced_service(f"{good}-predictor", namespace)
        answer = _ask_through_the_service(node, service.spec.cluster_ip, "iris", request)
        outputs = {o["name"]: o for o in answer["outputs"]}
        labels, probabilities = _expected(model_dir, a, b, city)
        assert outputs["predictions"]["data"] == labels
        got = np.array(outputs["probabilities"]["data"], dtype=np.float32).reshape(outputs["probabilities"]["shape"])
        np.testing.assert_allclose(got, probabilities, rtol=1e-6, atol=1e-7)

        # The drift monitor copies the serving revision's directory the same way and loads it.
        for obj in drift_monitor(model, config, 1, inference_services=[good]):
            utils.create_from_dict(node_api, obj, namespace=namespace)
        apps = client.AppsV1Api(node_api)
        began = time.monotonic()
        wait_for(lambda: apps.read_namespaced_deployment("iris-drift", namespace).status.available_replicas == 1,
                 300, interval=1, what="the drift monitor, its model copied from S3, to be available")  # fmt: skip
        seconds["drift monitor created to available (its model copied from S3)"] = time.monotonic() - began

        # The tampered revision's copy fails on the hash, and the operator's reading of its pod says so.
        def trouble() -> Any:
            return predictor_trouble(_pods(node_api, namespace, tampered))

        found = wait_for(trouble, 180, interval=1, what=f"{tampered}'s pod to fail its copy")
        rounded = {step: round(value, 1) for step, value in seconds.items()}
        record_property("s3_seconds", rounded)
        print(f"\non the node with artifacts on S3, seconds: {rounded}")
        print(f"{tampered}: {found.reason}: {found.message}")
        assert found.reason == "PredictorCrashLooping", found
        assert "container fetch-model Error (exit code 1)" in found.message, found.message
        assert "SHA-256 mismatch" in found.message, found.message
        ready = isvc_condition(read_isvc(node_api, namespace, tampered), "Ready")
        assert ready is not None, "KServe gave the tampered revision no Ready condition"
        assert ready["status"] != "True", ready
