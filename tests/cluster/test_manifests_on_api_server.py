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
