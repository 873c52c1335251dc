"""Objects written from the pydantic models are stored by the API server and parse back unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from optiloop.api import GROUP, PLURAL, VERSION, ModelOptimization
from tests.support.manifests import load_example, maximal_manifest, round_trip_documents


def _objects(k8s: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(k8s)


def _create(k8s: Any, namespace: str, model: ModelOptimization) -> dict[str, Any]:
    body = model.to_manifest()
    body.pop("status", None)
    return dict(
        _objects(k8s).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
        )
    )


@pytest.mark.parametrize("source", list(round_trip_documents()))
def test_spec_round_trips_through_the_api_server(k8s: Any, namespace: str, source: str) -> None:
    model = ModelOptimization.model_validate(round_trip_documents()[source])

    _create(k8s, namespace, model)
    stored = _objects(k8s).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, model.metadata.name)

    assert ModelOptimization.model_validate(stored).spec == model.spec


def test_full_status_round_trips_through_the_status_subresource(k8s: Any, namespace: str) -> None:
    model = ModelOptimization.model_validate(maximal_manifest())
    assert model.status is not None
    _create(k8s, namespace, model)

    _objects(k8s).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, model.metadata.name, {"status": model.status.to_manifest()}
    )
    stored = _objects(k8s).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, model.metadata.name)

    assert ModelOptimization.model_validate(stored).status == model.status


def test_status_patch_keeps_generation_and_spec_patch_bumps_it(k8s: Any, namespace: str) -> None:
    objects = _objects(k8s)
    model = ModelOptimization.model_validate(load_example("minimal.yaml"))
    name = model.metadata.name
    created = _create(k8s, namespace, model)
    assert created["metadata"]["generation"] == 1

    after_status = objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": {"phase": "Tuning", "observedGeneration": 1}}
    )
    assert after_status["metadata"]["generation"] == 1
    assert after_status["status"]["phase"] == "Tuning"
    assert after_status["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]

    after_spec = objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"tuning": {"maxTrials": 5}}}
    )
    assert after_spec["metadata"]["generation"] == 2
    assert after_spec["spec"]["tuning"]["maxTrials"] == 5
    assert after_spec["status"]["phase"] == "Tuning"


def test_status_written_through_the_main_resource_is_ignored(k8s: Any, namespace: str) -> None:
    """With the status subresource, a spec writer cannot forge status (and vice versa)."""
    body = load_example("minimal.yaml")
    body["status"] = {"phase": "Serving"}
    created = _objects(k8s).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert "status" not in created
