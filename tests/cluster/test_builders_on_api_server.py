"""The children the operator builds (stage Jobs, the drift monitor) are accepted by the real API
server, and their pods pass the `restricted` Pod Security admission of a namespace enforcing it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from optiloop.api import ModelOptimization
from optiloop.operator.builders.jobs import compression_job, probe_job, tuning_job
from optiloop.operator.builders.serving import drift_monitor, inference_service
from optiloop.operator.capabilities import Capabilities, KServeDefault
from optiloop.operator.config import OperatorConfig
from optiloop.operator.topology import Topology, resolve
from tests.support.namespaces import create_namespace, delete_namespace


@pytest.fixture
def restricted_namespace(k8s: Any) -> Iterator[str]:
    name = create_namespace(k8s, "restricted", restricted=True)
    yield name
    delete_namespace(k8s, name)


def resource(namespace: str, **spec: Any) -> ModelOptimization:
    return ModelOptimization.model_validate(
        {
            "apiVersion": "optiloop.dev/v1alpha1",
            "kind": "ModelOptimization",
            "metadata": {"name": "iris", "namespace": namespace, "uid": "0b8f5c2e-1111-2222-3333-444455556666"},
            "spec": {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://models/iris"}, **spec},
        }
    )


def pod_from(job: dict[str, Any], namespace: str) -> dict[str, Any]:
    template = job["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{job['metadata']['name']}-pod", "namespace": namespace, **template["metadata"]},
        "spec": template["spec"],
    }


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {
            "tuning": {
                "maxTrials": 8,
                "parallelTrials": 4,
                "studyStorage": {"type": "rdb", "urlSecretRef": {"name": "db", "key": "url"}},
            }
        },
    ],
    ids=["single", "indexed"],
)
def test_built_jobs_pass_server_validation_and_restricted_admission(
    k8s: Any, restricted_namespace: str, spec: dict[str, Any]
) -> None:
    from kubernetes import client

    batch, core = client.BatchV1Api(k8s), client.CoreV1Api(k8s)
    model = resource(restricted_namespace, **spec)
    jobs = (
        tuning_job(model, OperatorConfig(), 1),
        compression_job(model, OperatorConfig(), 1),
        probe_job(model, OperatorConfig(), 2, "http://iris-r2-predictor.ns.svc.cluster.local"),
    )
    for job in jobs:
        created = batch.create_namespaced_job(restricted_namespace, job, dry_run="All", field_validation="Strict")
        assert created.metadata.name == job["metadata"]["name"]
        pod = core.create_namespaced_pod(restricted_namespace, pod_from(job, restricted_namespace), dry_run="All")
        assert pod.spec.containers[0].security_context.allow_privilege_escalation is False


def test_stage_jobs_carry_the_datasets_and_the_artifact_stores_credentials_apart(
    k8s: Any, restricted_namespace: str
) -> None:
    """Two Secrets reach every stage Job as the API server stores it: the artifact store's as
    AWS_*, the dataset's under the OPTILOOP_DATASET_ prefix, with the dataset's URI beside it."""
    from kubernetes import client

    model = resource(
        restricted_namespace,
        dataset={"uri": "s3://datasets/iris/train.csv", "credentialsSecretRef": {"name": "data-reader"}},
        deployment={"storageUri": "s3://models/iris", "storageCredentialsSecretRef": {"name": "model-store"}},
    )
    batch = client.BatchV1Api(k8s)
    for job in (tuning_job(model, OperatorConfig(), 1), compression_job(model, OperatorConfig(), 1)):
        # The create's answer is the object as stored. It is not read again: the garbage collector
        # may delete it at once, since the resource that owns it was never created.
        stored = batch.create_namespaced_job(restricted_namespace, job, field_validation="Strict")
        container = stored.spec.template.spec.containers[0]
        sources = [(e.prefix, e.secret_ref.name) for e in container.env_from]
        assert sources == [(None, "model-store"), ("OPTILOOP_DATASET_", "data-reader")]
        env = {e.name: e.value for e in container.env}
        assert env["OPTILOOP_DATASET_URI"] == "s3://datasets/iris/train.csv"


def test_the_namespace_really_enforces_restricted(k8s: Any, restricted_namespace: str) -> None:
    from kubernetes import client

    job = tuning_job(resource(restricted_namespace), OperatorConfig(), 1)
    pod = pod_from(job, restricted_namespace)
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(client.ApiException) as raised:
        client.CoreV1Api(k8s).create_namespaced_pod(restricted_namespace, pod, dry_run="All")
    assert raised.value.status == 403
    assert "allowPrivilegeEscalation" in raised.value.body


def test_drift_monitor_passes_server_validation_and_restricted_admission(k8s: Any, restricted_namespace: str) -> None:
    from kubernetes import client

    deployment, service, policy = drift_monitor(
        resource(restricted_namespace), OperatorConfig(), 1, inference_services=["iris"]
    )
    apps, core = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    apps.create_namespaced_deployment(restricted_namespace, deployment, dry_run="All", field_validation="Strict")
    core.create_namespaced_service(restricted_namespace, service, dry_run="All", field_validation="Strict")
    client.NetworkingV1Api(k8s).create_namespaced_network_policy(
        restricted_namespace, policy, dry_run="All", field_validation="Strict"
    )
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "drift-pod", **template["metadata"]},
        "spec": template["spec"],
    }
    core.create_namespaced_pod(restricted_namespace, pod, dry_run="All")


@pytest.mark.parametrize("deployment", [
    {},
    {"storageUri": "s3://models/iris", "storageCredentialsSecretRef": {"name": "model-store"}},
], ids=["claim", "s3-init-container"])  # fmt: skip
def test_the_predictor_settings_we_control_pass_restricted_admission(
    k8s: Any, restricted_namespace: str, deployment: dict[str, Any]
) -> None:
    from kubernetes import client

    model = resource(restricted_namespace, deployment={"storageUri": "pvc://models/iris", **deployment})
    standard = Capabilities(kserve=True, kserve_default=KServeDefault("standard", "kserve/config"))
    topology = resolve(model, standard, OperatorConfig())
    assert isinstance(topology, Topology)
    isvc = inference_service(model, OperatorConfig(), 1, topology)
    predictor = isvc["spec"]["predictor"]
    # KServe adds its agent, on a claim its mount of the model and, serverless, its queue proxy;
    # the rest (our copy of an s3:// model included) is ours.
    ours = ("initContainers", "containers", "volumes", "securityContext")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "predictor-pod", "namespace": restricted_namespace},
        "spec": {k: v for k, v in predictor.items() if k in ours},
    }
    created = client.CoreV1Api(k8s).create_namespaced_pod(restricted_namespace, pod, dry_run="All")
    assert created.spec.containers[0].security_context.read_only_root_filesystem is True
