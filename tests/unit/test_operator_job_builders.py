"""The operator's Job builders: derived names, owner references, labels, the stage input, the
artifact store, Indexed Jobs for parallel trials, and `restricted` pod security everywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest

from optiloop.api import ModelOptimization
from optiloop.api.jobs import StageInput
from optiloop.operator.builders.jobs import compression_job, tuning_job
from optiloop.operator.config import OperatorConfig

CONFIG = OperatorConfig(jobs_image="registry.example/optiloop/jobs:1.2.3", job_service_account="optiloop-jobs")


def resource(**spec: Any) -> ModelOptimization:
    body: dict[str, Any] = {
        "apiVersion": "optiloop.dev/v1alpha1",
        "kind": "ModelOptimization",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "0b8f5c2e-1111-2222-3333-444455556666", "generation": 3},
        "spec": {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://models/iris"}, **spec},
    }
    return ModelOptimization.model_validate(body)


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


def test_tuning_job_names_labels_and_owner() -> None:
    job = tuning_job(resource(), CONFIG, revision=2)
    meta = job["metadata"]
    assert meta["name"] == "iris-tune-r2"
    assert meta["namespace"] == "ml"
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "optiloop",
        "optiloop.dev/name": "iris",
        "optiloop.dev/component": "tuning",
        "optiloop.dev/revision": "2",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "optiloop.dev/v1alpha1",
            "kind": "ModelOptimization",
            "name": "iris",
            "uid": "0b8f5c2e-1111-2222-3333-444455556666",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert job["spec"]["template"]["metadata"]["labels"] == meta["labels"]


def test_the_pod_runs_the_stage_with_its_input() -> None:
    job = tuning_job(resource(), CONFIG, revision=2, parent_revision=1)
    assert container(job)["command"] == ["python", "-m", "optiloop.jobs.tune"]
    assert container(job)["image"] == CONFIG.jobs_image
    stage = StageInput.model_validate_json(env(job)["OPTILOOP_STAGE_INPUT"])
    assert (stage.name, stage.revision, stage.parent_revision, stage.artifacts) == ("iris", 2, 1, "pvc://models/iris")
    assert env(job)["OPTILOOP_THREADS"] == {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}
    compress = compression_job(resource(), CONFIG, revision=2)
    assert compress["metadata"]["name"] == "iris-compress-r2"
    assert container(compress)["command"] == ["python", "-m", "optiloop.jobs.compress"]


def test_pvc_artifacts_are_mounted_where_the_stage_looks() -> None:
    job = tuning_job(resource(), CONFIG, revision=1)
    pod = job["spec"]["template"]["spec"]
    assert {"name": "artifacts", "persistentVolumeClaim": {"claimName": "models"}} in pod["volumes"]
    assert {"name": "artifacts", "mountPath": "/mnt/pvc/models"} in container(job)["volumeMounts"]
    assert env(job)["OPTILOOP_PVC_ROOT"] == "/mnt/pvc"


def test_s3_credentials_come_only_from_the_referenced_secret() -> None:
    model = resource(deployment={"storageUri": "s3://bucket/iris", "storageCredentialsSecretRef": {"name": "store"}})
    job = tuning_job(model, CONFIG, revision=1)
    assert container(job)["envFrom"] == [{"secretRef": {"name": "store"}}]
    assert not any(v.get("persistentVolumeClaim") for v in job["spec"]["template"]["spec"]["volumes"])


def test_the_datasets_credentials_and_claim_reach_the_jobs_that_read_it() -> None:
    s3 = resource(dataset={"uri": "s3://data/train.csv", "credentialsSecretRef": {"name": "data-reader"}})
    for build in (tuning_job, compression_job):
        job = build(s3, CONFIG, revision=1)
        assert container(job)["envFrom"] == [{"prefix": "OPTILOOP_DATASET_", "secretRef": {"name": "data-reader"}}]
        assert env(job)["OPTILOOP_DATASET_URI"] == "s3://data/train.csv"
    other_claim = resource(dataset={"uri": "pvc://datasets/cancer/train.csv"})
    job = tuning_job(other_claim, CONFIG, revision=1)
    pod = job["spec"]["template"]["spec"]
    assert {"name": "dataset", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}} in pod["volumes"]
    assert {"name": "dataset", "mountPath": "/mnt/pvc/datasets", "readOnly": True} in container(job)["volumeMounts"]
    same_claim = tuning_job(resource(dataset={"uri": "pvc://models/data/train.csv"}), CONFIG, revision=1)
    assert [v["name"] for v in same_claim["spec"]["template"]["spec"]["volumes"]] == ["scratch", "artifacts"]


def test_the_dataset_and_the_artifact_store_each_get_their_own_secret() -> None:
    from optiloop.api.validation import manifest_errors

    document = resource().model_dump(mode="json", by_alias=True, exclude_none=True)
    document["spec"]["dataset"] = {"uri": "s3://data/train.csv", "credentialsSecretRef": {"name": "data-reader"}}
    document["spec"]["deployment"] = {
        "storageUri": "s3://bucket/iris",
        "storageCredentialsSecretRef": {"name": "store"},
    }
    assert manifest_errors(document) == []
    job = tuning_job(ModelOptimization.model_validate(document), CONFIG, revision=1)
    assert container(job)["envFrom"] == [
        {"secretRef": {"name": "store"}},  # AWS_*: the artifact store
        {"prefix": "OPTILOOP_DATASET_", "secretRef": {"name": "data-reader"}},  # the dataset's object only
    ]
    document["spec"]["dataset"] = {"uri": "builtin://iris", "credentialsSecretRef": {"name": "data-reader"}}
    [error] = manifest_errors(document)
    assert str(error) == "spec.dataset.credentialsSecretRef: credentialsSecretRef applies only to s3:// URIs"


def test_parallel_trials_make_an_indexed_job_sharing_an_rdb_study() -> None:
    model = resource(
        tuning={
            "maxTrials": 20,
            "parallelTrials": 4,
            "studyStorage": {"type": "rdb", "urlSecretRef": {"name": "optuna-db", "key": "url"}},
        }
    )
    job = tuning_job(model, CONFIG, revision=1)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    assert StageInput.model_validate_json(env(job)["OPTILOOP_STAGE_INPUT"]).worker_count == 4
    assert env(job)["OPTILOOP_STUDY_STORAGE_URL"] == {"secretKeyRef": {"name": "optuna-db", "key": "url"}}
    compress = compression_job(model, CONFIG, revision=1)
    assert "completionMode" not in compress["spec"]
    assert StageInput.model_validate_json(env(compress)["OPTILOOP_STAGE_INPUT"]).worker_count == 1


def test_job_settings_come_from_spec_jobs_and_the_rest_from_the_operator() -> None:
    model = resource(
        jobs={
            "resources": {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"cpu": 4}},
            "nodeSelector": {"pool": "cpu"},
            "backoffLimit": 3,
            "activeDeadlineSeconds": 3600,
        }
    )
    job = tuning_job(model, CONFIG, revision=1)
    pod = job["spec"]["template"]["spec"]
    assert container(job)["resources"] == {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"cpu": 4}}
    assert pod["nodeSelector"] == {"pool": "cpu"}
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (3, 3600)
    assert pod["serviceAccountName"] == "optiloop-jobs"
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"


@pytest.mark.parametrize("build", [tuning_job, compression_job])
def test_every_pod_meets_the_restricted_pod_security_standard(build: Any) -> None:
    job = build(resource(), CONFIG, revision=1)
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container(job)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert {"name": "scratch", "mountPath": "/tmp"} in container(job)["volumeMounts"]
    assert not any("hostPath" in volume for volume in pod["volumes"])
    assert json.dumps(job).count('privileged": true') == 0


def test_a_resource_without_a_uid_cannot_own_children() -> None:
    body = resource().model_dump(by_alias=True)
    body["metadata"]["uid"] = None
    with pytest.raises(ValueError, match="has no uid"):
        tuning_job(ModelOptimization.model_validate(body), CONFIG, revision=1)


def test_configuration_from_the_environment() -> None:
    config = OperatorConfig.from_env(
        {"OPTILOOP_JOBS_IMAGE": "x/jobs:1", "OPTILOOP_NAMESPACES": "a, b,", "OPTILOOP_IMAGE_PULL_POLICY": "Always"}
    )
    assert (config.jobs_image, config.namespaces, config.image_pull_policy) == ("x/jobs:1", ("a", "b"), "Always")
    with pytest.raises(ValueError, match="OPTILOOP_IMAGE_PULL_POLICY"):
        OperatorConfig.from_env({"OPTILOOP_IMAGE_PULL_POLICY": "Sometimes"})


def test_default_resources_apply_only_when_the_resource_asks_for_none() -> None:
    config = OperatorConfig.from_env(
        {"OPTILOOP_DEFAULT_JOB_RESOURCES": '{"requests": {"cpu": "1"}, "limits": {"memory": "4Gi"}}'}
    )
    assert container(tuning_job(resource(), config, revision=1))["resources"] == {
        "requests": {"cpu": "1"},
        "limits": {"memory": "4Gi"},
    }
    own = resource(jobs={"resources": {"limits": {"cpu": "3"}}})
    assert container(tuning_job(own, config, revision=1))["resources"] == {"limits": {"cpu": "3"}}


def test_malformed_default_resources_name_the_variable() -> None:
    with pytest.raises(ValueError, match="OPTILOOP_DEFAULT_PREDICTOR_RESOURCES must be JSON"):
        OperatorConfig.from_env({"OPTILOOP_DEFAULT_PREDICTOR_RESOURCES": '{"limits": {"gpu": "1"}}'})
