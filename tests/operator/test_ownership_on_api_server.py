"""Another team's objects under our children's names are never taken over: the operator
neither replaces nor deletes an InferenceService, Deployment or Service it does not own, the
resource says ChildNameTaken naming the object, and deleting the resource leaves them be."""

from __future__ import annotations

from typing import Any

from tests.operator.conftest import StartOperator
from tests.support.control_plane import ControlPlane
from tests.support.operator import Resources, StandIn, wait_until

SPEC: dict[str, Any] = {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://models/iris"}}
TEAM = {"team": "vision"}


def foreign_objects(resources: Resources, namespace: str) -> None:
    """Another team's InferenceService ``iris`` and drift-monitor-named Deployment and Service ``wine-drift``."""
    resources.custom.create_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices",
        {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
         "metadata": {"name": "iris", "labels": TEAM},
         "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://team/model"}}}},
    )  # fmt: skip
    pod = {"metadata": {"labels": TEAM}, "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}
    resources.apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "wine-drift", "labels": TEAM},
        "spec": {"replicas": 0, "selector": {"matchLabels": TEAM}, "template": pod},
    })  # fmt: skip
    resources.core.create_namespaced_service(
        namespace,
        {"metadata": {"name": "wine-drift", "labels": TEAM}, "spec": {"selector": TEAM, "ports": [{"port": 80}]}},
    )


def snapshot(resources: Resources, namespace: str) -> dict[str, Any]:
    """What another team would notice changing: specs, labels, annotations, owners, identity."""

    def essentials(obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        keep = ("uid", "labels", "annotations", "ownerReferences")
        return {"metadata": {k: meta.get(k) for k in keep}, "spec": obj["spec"]}

    deployment = resources.apps.read_namespaced_deployment("wine-drift", namespace)
    service = resources.core.read_namespaced_service("wine-drift", namespace)
    return {
        "InferenceService": essentials(resources.inference_service("iris") or {}),
        "Deployment": essentials(resources.api.sanitize_for_serialization(deployment)),
        "Service": essentials(resources.api.sanitize_for_serialization(service)),
    }


def test_foreign_children_are_reported_never_replaced_or_deleted_and_survive_the_resource(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator
) -> None:
    """While the operator is down, iris's InferenceService is deleted and another team creates
    its own under that name, and wine (served without monitoring) is asked for a drift monitor
    whose names another team's Deployment and Service hold. Back up, the operator reads those
    objects by name, and must not take them over, delete them, or let them be collected."""
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator()
    with StandIn(control_plane, watched):
        resources.create("iris", SPEC)
        resources.create("wine", {**SPEC, "monitoring": {"enabled": False}})
        wait_until(lambda: resources.ready("iris") and resources.ready("wine"), 60, "both Ready", operator)
        operator.stop()
        resources.custom.delete_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", watched, "inferenceservices", "iris"
        )
        wait_until(lambda: resources.inference_service("iris") is None, 30, "iris's InferenceService gone")
        foreign_objects(resources, watched)
        resources.patch_spec("wine", {"monitoring": {"enabled": True}})
        before = snapshot(resources, watched)
        operator = start_operator()

        def taken(name: str, what: str) -> bool:
            ready = resources.condition(name, "Ready") or {}
            return ready.get("reason") == "ChildNameTaken" and what in ready.get("message", "")

        wait_until(lambda: taken("iris", f"InferenceService {watched}/iris exists and is not owned"), 60,
                   "iris to report its InferenceService's name taken", operator)  # fmt: skip
        wait_until(lambda: taken("wine", f"{watched}/wine-drift exists and is not owned"), 60,
                   "wine to report its drift monitor's name taken", operator)  # fmt: skip
        assert resources.condition("iris", "Ready")["status"] == "False"
        assert snapshot(resources, watched) == before, "another team's objects were changed"
        resources.event_reasons("iris", {"ChildNameTaken"})

        # Monitoring off again: the monitor is no longer wanted, and theirs is not ours to delete.
        resources.patch_spec("wine", {"monitoring": {"enabled": False}})
        wait_until(lambda: resources.ready("wine"), 60, "wine Ready without a monitor", operator)
        assert snapshot(resources, watched) == before, "another team's monitor-named objects were deleted or changed"

        resources.delete("iris")
        resources.delete("wine")
        wait_until(lambda: resources.inference_service("wine") is None, 60, "wine's own InferenceService collected")
        wait_until(lambda: not resources.jobs(), 60, "the resources' Jobs collected")
    assert snapshot(resources, watched) == before, "deleting the resources took another team's objects"
