"""The generated CRD is accepted by a real API server and publishes a schema kubectl can explain."""

from __future__ import annotations

from typing import Any

from optiloop.api import GROUP, KIND, PLURAL, VERSION
from tests.support.control_plane import wait_for


def test_crd_is_established_with_names_and_status_subresource(k8s: Any) -> None:
    from kubernetes import client

    crd = client.ApiextensionsV1Api(k8s).read_custom_resource_definition(f"{PLURAL}.{GROUP}")
    assert crd.status.accepted_names.short_names == ["mopt"]
    assert crd.status.accepted_names.categories == ["optiloop"]
    version = crd.spec.versions[0]
    assert version.subresources.status == {}
    columns = [c.name for c in version.additional_printer_columns]
    assert columns == ["Phase", "Ready", "Mode", "Canary", "Objective", "Size", "P95-Latency", "Revision", "Age"]
    wide = [c.name for c in version.additional_printer_columns if c.priority]
    assert wide == ["Mode", "Canary"], "shown with -o wide, so the default view keeps its width"


def test_discovery_lists_the_resource_with_short_name(control_plane: Any, k8s: Any) -> None:
    resources = control_plane.get_json(f"/apis/{GROUP}/{VERSION}")["resources"]
    main = next(r for r in resources if r["name"] == PLURAL)
    assert main["kind"] == KIND
    assert main["namespaced"] is True
    assert main["shortNames"] == ["mopt"]
    assert any(r["name"] == f"{PLURAL}/status" for r in resources)


def test_openapi_v3_publishes_field_descriptions(control_plane: Any, k8s: Any) -> None:
    """What `kubectl explain modeloptimization.spec.tuning.maxTrials` reads."""
    # The API server publishes a new CRD's OpenAPI document a moment after establishing it.
    document = wait_for(
        lambda: control_plane.get_json(f"/openapi/v3/apis/{GROUP}/{VERSION}"), 30, what="the OpenAPI v3 document"
    )
    schema = document["components"]["schemas"][f"dev.optiloop.{VERSION}.{KIND}"]
    tuning = schema["properties"]["spec"]["properties"]["tuning"]
    max_trials = tuning["properties"]["maxTrials"]
    assert "Trials to run in total" in max_trials["description"]
    assert max_trials["minimum"] == 1
    assert tuning["properties"]["algorithm"]["enum"] == ["grid", "random", "tpe", "gp", "cmaes", "nsga2"]
    assert "x-kubernetes-validations" in tuning
