"""crds/ is a fresh render of the models, and the schema is structural, bounded and documented."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optiloop.api import crd

Schema = dict[str, Any]


def _walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


@pytest.fixture(scope="module")
def schema() -> Schema:
    return crd.openapi_schema()


def test_committed_crd_matches_a_fresh_render() -> None:
    assert crd.main(["--check"]) == 0, "run `python -m optiloop.api.crd` and commit crds/"


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "crd.yaml"
    stale.write_text(crd.render_yaml().replace("maxTrials", "maxTrialz"))
    assert crd.main(["--check", "--file", str(stale)]) == 1
    assert crd.main(["--file", str(stale)]) == 0
    assert crd.main(["--check", "--file", str(stale)]) == 0


def test_schema_is_structural(schema: Schema) -> None:
    for path, node in _walk(schema):
        assert not {"$ref", "oneOf", "allOf"} & node.keys(), path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path
        else:
            assert "type" in node, f"{path} has no type"


def test_every_field_is_described(schema: Schema) -> None:
    for path, node in _walk(schema["properties"]["spec"], "spec"):
        if not path.endswith("{}") and not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description"
    for path, node in _walk(schema["properties"]["status"], "status"):
        if not path.endswith("{}") and not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description"


def test_strings_lists_and_maps_are_bounded(schema: Schema) -> None:
    """Unbounded values would blow the API server's CEL cost budget and let one object bloat etcd."""
    for path, node in _walk(schema["properties"]["spec"], "spec"):
        kind = node.get("type")
        if kind == "string" and "enum" not in node and "format" not in node:
            assert "maxLength" in node, f"{path} has no maxLength"
        if kind == "array":
            assert "maxItems" in node, f"{path} has no maxItems"
        if kind == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{path} has no maxProperties"


def test_cross_field_rules_are_rendered_as_cel(schema: Schema) -> None:
    tuning = schema["properties"]["spec"]["properties"]["tuning"]
    rules = {r["rule"]: r for r in tuning["x-kubernetes-validations"]}
    assert rules["self.maxTrials >= self.parallelTrials"]["fieldPath"] == ".maxTrials"
    uri = schema["properties"]["spec"]["properties"]["deployment"]["properties"]["storageUri"]
    assert any("path segments" in r["message"] for r in uri["x-kubernetes-validations"])


def test_conditions_are_a_list_keyed_by_type(schema: Schema) -> None:
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) >= {"type", "status", "reason", "lastTransitionTime"}
