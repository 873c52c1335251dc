"""What every child shares: labels, the owner reference, and the `restricted` pod security."""

from __future__ import annotations

from typing import Any

from ...api import API_VERSION, KIND, ModelOptimization
from ...api.spec import ResourceRequirements

LABEL_NAME = "optiloop.dev/name"
LABEL_COMPONENT = "optiloop.dev/component"
LABEL_REVISION = "optiloop.dev/revision"
MANAGED_BY = {"app.kubernetes.io/managed-by": "optiloop"}
SCRATCH_VOLUME = "scratch"
SCRATCH_PATH = "/tmp"


def labels(resource: ModelOptimization, component: str, revision: int | None = None) -> dict[str, str]:
    """Selection labels: which resource, which part of the loop, which revision."""
    result = {**MANAGED_BY, LABEL_NAME: resource.metadata.name, LABEL_COMPONENT: component}
    if revision is not None:
        result[LABEL_REVISION] = str(revision)
    return result


def owner_reference(resource: ModelOptimization) -> dict[str, Any]:
    """Makes the child go away with the resource (garbage collection by owner reference)."""
    if not resource.metadata.uid:
        raise ValueError(f"ModelOptimization {resource.metadata.name} has no uid; build children from a stored object")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": resource.metadata.name,
        "uid": resource.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(resource: ModelOptimization, name: str, component: str, revision: int | None = None) -> dict[str, Any]:
    """``metadata`` of a child in the resource's namespace."""
    return {
        "name": name,
        "namespace": resource.metadata.namespace,
        "labels": labels(resource, component, revision),
        "ownerReferences": [owner_reference(resource)],
    }


def pod_security_context() -> dict[str, Any]:
    """Pod-level settings of the `restricted` Pod Security Standard."""
    return {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Container-level settings of the `restricted` standard, plus a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def scratch_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """An emptyDir for temporary files (the root filesystem is read-only), and its mount."""
    return {"name": SCRATCH_VOLUME, "emptyDir": {}}, {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_PATH}


def resources_or_default(requested: ResourceRequirements, default: ResourceRequirements) -> dict[str, Any]:
    """The resource's own requirements, or the operator's default when it asks for none."""
    chosen = requested if requested.requests or requested.limits else default
    return chosen.model_dump(mode="json", by_alias=True, exclude_defaults=True)
