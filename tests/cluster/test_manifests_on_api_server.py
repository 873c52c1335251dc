"""The API server accepts every example and rejects each malformed manifest, naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from optiloop.api import GROUP, PLURAL, VERSION
from tests.support.manifests import EXAMPLES, MALFORMED, Malformed


def _dry_run_create(k8s: Any, namespace: str, body: dict[str, Any]) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(k8s).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, dry_run="All", field_validation="Strict"
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_by_dry_run_create(k8s: Any, namespace: str, example: Path) -> None:
    created = _dry_run_create(k8s, namespace, yaml.safe_load(example.read_text()))
    assert created["metadata"]["name"]


@pytest.mark.parametrize("case", MALFORMED, ids=lambda c: c.id)
def test_malformed_manifest_is_rejected_naming_the_field(k8s: Any, namespace: str, case: Malformed) -> None:
    from kubernetes import client

    with pytest.raises(client.ApiException) as raised:
        _dry_run_create(k8s, namespace, case.manifest())
    assert raised.value.status in (400, 422)
    message = json.loads(raised.value.body)["message"]
    assert case.field in message, message


def test_a_local_file_is_refused_with_what_to_use_in_a_cluster(k8s: Any, namespace: str) -> None:
    """`optiloop run` takes file:// datasets; the API server says to use pvc:// or s3:// instead."""
    from kubernetes import client

    case = next(c for c in MALFORMED if c.id == "local-file-dataset")
    with pytest.raises(client.ApiException) as raised:
        _dry_run_create(k8s, namespace, case.manifest())
    message = json.loads(raised.value.body)["message"]
    assert "works only with `optiloop run`; in a cluster use pvc://<claim>/<path> or s3://<bucket>/<key>" in message
    assert "must be a URI of the form" not in message, "one message, the one that says what to do"
