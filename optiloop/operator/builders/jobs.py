"""The tuning and compression Jobs of one revision.

The pod runs the job entry point with the :class:`StageInput` in ``OPTILOOP_STAGE_INPUT``.
Artifacts on ``pvc://<claim>/<path>`` come from the claim mounted at ``/mnt/pvc/<claim>``
(a dataset on another claim is mounted there too, read-only); on ``s3://`` the credentials
come from the referenced Secrets (``envFrom``), never from the resource itself: the artifact
store's as ``AWS_*``, the dataset's as ``OPTILOOP_DATASET_AWS_*``, so each store is read with
its own identity. With ``tuning.parallelTrials > 1`` the tuning Job is an Indexed Job whose
pods share one study (Kubernetes gives each its ``JOB_COMPLETION_INDEX``).
"""

from __future__ import annotations

from typing import Any

from ...api import ModelOptimization
from ...api.jobs import DATASET_CREDENTIALS_PREFIX, DATASET_URI_ENV, PROBE_URL_ENV, STAGE_INPUT_ENV, StageInput
from .. import names
from ..config import OperatorConfig
from .common import (
    container_security_context,
    metadata,
    pod_security_context,
    resources_or_default,
    scratch_volume,
)

PVC_ROOT = "/mnt/pvc"
TUNE_MODULE = "optiloop.jobs.tune"
COMPRESS_MODULE = "optiloop.jobs.compress"
PROBE_MODULE = "optiloop.jobs.probe"
FETCH_MODULE = "optiloop.jobs.fetch"
PROBE_GRACE_SECONDS = 600
"""How much longer than the analysis window a probe Job may take (pod start, image pull) before
Kubernetes stops it and the blue/green revision is rolled back."""
TERMINATION_MESSAGE_PATH = "/dev/termination-log"


def artifacts_root(resource: ModelOptimization) -> str:
    """Where the revision's artifacts live: the deployment's storage URI."""
    return str(resource.spec.deployment.storage_uri)


def stage_input(resource: ModelOptimization, revision: int, parent_revision: int | None = None) -> StageInput:
    """The input every stage pod of ``revision`` gets."""
    return StageInput(
        name=resource.metadata.name,
        spec=resource.spec,
        artifacts=artifacts_root(resource),
        revision=revision,
        worker_count=resource.spec.tuning.parallel_trials,
        parent_revision=parent_revision,
    )


def _claim(uri: str) -> str | None:
    return uri.removeprefix("pvc://").split("/", 1)[0] if uri.startswith("pvc://") else None


def artifact_credentials(resource: ModelOptimization) -> list[dict[str, Any]]:
    """``envFrom`` entries giving a container the artifact store's S3 credentials (``AWS_*``)."""
    if (store := resource.spec.deployment.storage_credentials_secret_ref) is None:
        return []
    return [{"secretRef": {"name": store.name}}]


def _storage(resource: ModelOptimization) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes, mounts and env-from entries that give the pod its artifact store and its data:
    the artifact claim read-write, a dataset on another claim read-only, and each store's S3
    credentials from its own Secret: the artifact store's as ``AWS_*``, the dataset's as
    ``OPTILOOP_DATASET_AWS_*``, which storage uses for the dataset's object only."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    artifacts = _claim(artifacts_root(resource))
    if artifacts is not None:
        volumes.append({"name": "artifacts", "persistentVolumeClaim": {"claimName": artifacts}})
        mounts.append({"name": "artifacts", "mountPath": f"{PVC_ROOT}/{artifacts}"})
    dataset = _claim(str(resource.spec.dataset.uri))
    if dataset is not None and dataset != artifacts:
        volumes.append({"name": "dataset", "persistentVolumeClaim": {"claimName": dataset, "readOnly": True}})
        mounts.append({"name": "dataset", "mountPath": f"{PVC_ROOT}/{dataset}", "readOnly": True})
    env_from = artifact_credentials(resource)
    if (reader := resource.spec.dataset.credentials_secret_ref) is not None:
        env_from.append({"prefix": DATASET_CREDENTIALS_PREFIX, "secretRef": {"name": reader.name}})
    return volumes, mounts, env_from


def _env(resource: ModelOptimization, stage: StageInput) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": STAGE_INPUT_ENV, "value": stage.model_dump_json(by_alias=True, exclude_none=True)},
        {"name": "OPTILOOP_PVC_ROOT", "value": PVC_ROOT},
        # The pod reports its StageOutcome as the termination message the operator reads back.
        {"name": "OPTILOOP_RESULT_FILE", "value": TERMINATION_MESSAGE_PATH},
        {"name": "HOME", "value": "/tmp"},
        # The one object storage reads with the dataset's credentials (when it has its own).
        {"name": DATASET_URI_ENV, "value": str(resource.spec.dataset.uri)},
        # A container sees every CPU of its node; its CPU limit (rounded up) is what it may use.
        {"name": "OPTILOOP_THREADS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}},
    ]
    storage = resource.spec.tuning.study_storage
    if storage.type == "rdb" and storage.url_secret_ref is not None:
        env.append(
            {
                "name": "OPTILOOP_STUDY_STORAGE_URL",
                "valueFrom": {"secretKeyRef": {"name": storage.url_secret_ref.name, "key": storage.url_secret_ref.key}},
            }
        )
    return env


def _job(
    resource: ModelOptimization,
    config: OperatorConfig,
    name: str,
    component: str,
    revision: int,
    module: str,
    stage: StageInput,
    parallelism: int = 1,
    extra_env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    jobs = resource.spec.jobs
    volumes, mounts, env_from = _storage(resource)
    scratch, scratch_mount = scratch_volume()
    container: dict[str, Any] = {
        "name": component,
        "image": config.jobs_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", module],
        "env": _env(resource, stage) + (extra_env or []),
        "resources": resources_or_default(jobs.resources, config.default_job_resources),
        "securityContext": container_security_context(),
        "volumeMounts": [scratch_mount, *mounts],
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env_from:
        container["envFrom"] = env_from
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": config.job_service_account,
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [scratch, *volumes],
    }
    if jobs.node_selector:
        pod_spec["nodeSelector"] = dict(jobs.node_selector)
    job_meta = metadata(resource, name, component, revision)
    # No ttlSecondsAfterFinished: a finished Job's status is what the operator reads back.
    spec: dict[str, Any] = {
        "backoffLimit": jobs.backoff_limit,
        "template": {"metadata": {"labels": job_meta["labels"]}, "spec": pod_spec},
    }
    if jobs.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = jobs.active_deadline_seconds
    if parallelism > 1:
        spec.update(completionMode="Indexed", completions=parallelism, parallelism=parallelism)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_meta, "spec": spec}


def tuning_job(
    resource: ModelOptimization, config: OperatorConfig, revision: int, parent_revision: int | None = None
) -> dict[str, Any]:
    """The Job that runs data quality, features and the search for ``revision``."""
    stage = stage_input(resource, revision, parent_revision)
    name = names.tuning_job(resource.metadata.name, revision)
    parallel = resource.spec.tuning.parallel_trials
    return _job(resource, config, name, "tuning", revision, TUNE_MODULE, stage, parallelism=parallel)


def compression_job(
    resource: ModelOptimization, config: OperatorConfig, revision: int, parent_revision: int | None = None
) -> dict[str, Any]:
    """The Job that compresses and exports the tuned model of ``revision``."""
    stage = stage_input(resource, revision, parent_revision).model_copy(update={"worker_count": 1})
    name = names.compression_job(resource.metadata.name, revision)
    return _job(resource, config, name, "compression", revision, COMPRESS_MODULE, stage)


def probe_job(resource: ModelOptimization, config: OperatorConfig, revision: int, url: str) -> dict[str, Any]:
    """The Job that tries a blue/green ``revision`` before it gets user traffic: it sends the
    predictor at ``url`` requests made from the revision's training reference for the analysis
    window, and fails when too many fail or are too slow (the canary analysis bounds)."""
    stage = stage_input(resource, revision).model_copy(update={"worker_count": 1})
    name = names.probe_job(resource.metadata.name, revision)
    env = [{"name": PROBE_URL_ENV, "value": url}]
    job = _job(resource, config, name, "probe", revision, PROBE_MODULE, stage, extra_env=env)
    deadline = resource.spec.deployment.canary_analysis.window_seconds + PROBE_GRACE_SECONDS
    job["spec"]["activeDeadlineSeconds"] = deadline
    return job
