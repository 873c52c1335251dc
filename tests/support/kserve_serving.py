"""The operator's InferenceServices on the real node: a stored ModelOptimization to own them, the
topology the operator resolves from KServe's real ConfigMap, and the InferenceService's conditions.
Shared by the node tests and ``bench/node_batching.py``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from optiloop.api import ModelOptimization
from optiloop.operator.capabilities import Capabilities, default_from_config, ingress_from_config
from optiloop.operator.config import OperatorConfig
from optiloop.operator.topology import Topology, resolve

RUNTIME_UID = 65532
"""The uid optiloop's images and pod security contexts run as."""
CLAIM = "models"


def stored_model_optimization(
    api: Any, namespace: str, name: str = "iris", spec: dict[str, Any] | None = None, **deployment: Any
) -> ModelOptimization:
    """A stored ModelOptimization ``name`` (so the InferenceService's owner reference is real and the
    garbage collector keeps it): mode ``auto`` (this KServe's default, Standard), artifacts on the
    ``models`` claim under ``name``, ``deployment``'s fields and ``spec``'s other sections."""
    from kubernetes import client

    body = {
        "apiVersion": "optiloop.dev/v1alpha1",
        "kind": "ModelOptimization",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "dataset": {"uri": "builtin://iris"},
            **(spec or {}),
            "deployment": {"storageUri": f"pvc://{CLAIM}/{name}", "mode": "auto", **deployment},
        },
    }
    stored = client.CustomObjectsApi(api).create_namespaced_custom_object(
        "optiloop.dev", "v1alpha1", namespace, "modeloptimizations", body
    )
    return ModelOptimization.model_validate(stored)


def kserve_capabilities(api: Any, config: OperatorConfig) -> Capabilities:
    """What the operator knows of this cluster's KServe: its default mode and host naming, read
    from its real ConfigMap as the operator reads them."""
    from kubernetes import client

    found = client.CoreV1Api(api).read_namespaced_config_map(config.kserve_config[1], config.kserve_config[0])
    source = "/".join(config.kserve_config)
    return Capabilities(
        kserve=True, gateway_api=True, keda=True,
        kserve_default=default_from_config(found.data, source), kserve_ingress=ingress_from_config(found.data, source),
    )  # fmt: skip


def resolved_topology(api: Any, model: ModelOptimization, config: OperatorConfig) -> Topology:
    """How the operator resolves the resource's serving on this cluster."""
    topology = resolve(model, kserve_capabilities(api, config), config)
    assert isinstance(topology, Topology), topology
    return topology


def written_as_the_jobs_write_it(root: Path) -> None:
    """Hand the model directory to uid 65532, as the export Job (which runs as it) leaves it."""
    for path in [root, *root.rglob("*")]:
        os.chown(path, RUNTIME_UID, RUNTIME_UID)


def isvc_condition(isvc: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in isvc.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def read_isvc(api: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes import client

    return dict(
        client.CustomObjectsApi(api).get_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", namespace, "inferenceservices", name
        )
    )


def isvc_ready(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """The InferenceService once Ready; fails at once when KServe gave up reconciling it."""
    isvc = read_isvc(api, namespace, name)
    ready = isvc_condition(isvc, "Ready")
    if ready is not None and ready.get("reason") == "ReconcileFailed":
        raise AssertionError(f"KServe could not reconcile {name}: {ready.get('message')}")
    return isvc if ready is not None and ready["status"] == "True" else None
