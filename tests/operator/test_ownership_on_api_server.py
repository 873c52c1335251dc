"""Another team's objects under our children's names are never taken over: the operator
neither replaces nor deletes an InferenceService (Knative mode's ``<name>`` or Standard mode's
``<name>-r<N>``), HTTPRoute, Deployment or Service it does not own, the resource says
ChildNameTaken naming the object, and deleting the resource leaves them be."""

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


STANDARD = {"serving.kserve.io/deploymentMode": "RawDeployment"}
# Copies of the labels the operator puts on its InferenceServices: it lists them by these.
OUR_LABELS = {"app.kubernetes.io/managed-by": "optiloop", "optiloop.dev/name": "iris",
              "optiloop.dev/component": "serving"}  # fmt: skip
ROUTES = ("gateway.networking.k8s.io", "v1")


def team_inference_service(resources: Resources, name: str, revision: int) -> None:
    resources.custom.create_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", resources.namespace, "inferenceservices",
        {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
         "metadata": {"name": name, "labels": {**TEAM, **OUR_LABELS, "optiloop.dev/revision": str(revision)}},
         "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://team/model"}}}},
    )  # fmt: skip


def essentials(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    meta = obj["metadata"]
    keep = ("uid", "labels", "annotations", "ownerReferences")
    return {"metadata": {k: meta.get(k) for k in keep}, "spec": obj["spec"]}


def test_standard_modes_revision_service_and_route_held_by_another_team_are_reported_and_left_alone(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator
) -> None:
    """Before iris is created in KServe's Standard mode, another team holds ``iris-r1`` (an
    InferenceService with copies of our labels, so the operator lists it) and the HTTPRoute
    ``iris``. Each name is reported as taken in turn and neither object changes; once both are
    free, iris serves behind its own route. The team's ``iris-r9``, also with our labels, is
    not retired as a revision nobody serves, and deleting iris does not collect it."""
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator(env={"OPTILOOP_GATEWAY": "gateways/inference"})
    with StandIn(control_plane, watched):
        team_inference_service(resources, "iris-r1", 1)
        team_inference_service(resources, "iris-r9", 9)
        team_route = {
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "iris", "labels": TEAM},
            "spec": {"parentRefs": [{"name": "team-gateway"}],
                     "rules": [{"backendRefs": [{"name": "team-app", "port": 80}]}]},
        }  # fmt: skip
        resources.custom.create_namespaced_custom_object(*ROUTES, watched, "httproutes", team_route)
        before = {name: essentials(resources.inference_service(name)) for name in ("iris-r1", "iris-r9")}
        their_route = essentials(resources.http_route("iris"))
        resources.create("iris", SPEC, STANDARD)

        def taken(what: str) -> bool:
            ready = resources.condition("iris", "Ready") or {}
            return ready.get("reason") == "ChildNameTaken" and what in ready.get("message", "")

        wait_until(lambda: taken(f"InferenceService {watched}/iris-r1 exists and is not owned"), 90,
                   "iris to report its revision's InferenceService name taken", operator)  # fmt: skip
        assert {name: essentials(resources.inference_service(name)) for name in before} == before
        assert essentials(resources.http_route("iris")) == their_route
        resources.custom.delete_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", watched, "inferenceservices", "iris-r1"
        )
        wait_until(lambda: taken(f"HTTPRoute {watched}/iris exists and is not owned"), 60,
                   "iris to report its route's name taken", operator)  # fmt: skip
        assert essentials(resources.http_route("iris")) == their_route, "another team's route was changed"
        resources.custom.delete_namespaced_custom_object(*ROUTES, watched, "httproutes", "iris")
        wait_until(lambda: resources.ready("iris"), 60, "iris Ready behind its own route", operator)
        ours = resources.http_route("iris")
        assert ours is not None
        assert [o["uid"] for o in ours["metadata"]["ownerReferences"]] == [resources.get("iris")["metadata"]["uid"]]
        # Blue/green from now on: iris's route goes (deleted as the object observed as ours), and
        # the team's iris-r9 stays although it carries our labels and no revision serves from it.
        resources.patch_spec("iris", {"deployment": {"canaryMethod": "blueGreen"}})
        wait_until(lambda: resources.http_route("iris") is None, 30, "iris's own route deleted", operator)
        assert essentials(resources.inference_service("iris-r9")) == before["iris-r9"]
        resources.delete("iris")
        wait_until(lambda: resources.inference_service("iris-r1") is None, 60, "iris's own iris-r1 collected")
    assert essentials(resources.inference_service("iris-r9")) == before["iris-r9"], "the team's iris-r9 was taken"
