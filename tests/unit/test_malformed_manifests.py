"""`optiloop validate` rejects the same malformed manifests as the API server, naming the same field."""

from __future__ import annotations

import pytest

from optiloop.api import manifest_errors
from tests.support.manifests import EXAMPLES, MALFORMED, Malformed, load_example


def test_the_table_is_large_enough() -> None:
    assert len(MALFORMED) >= 15
    assert len({case.id for case in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize("case", MALFORMED, ids=lambda c: c.id)
def test_malformed_manifest_is_rejected_naming_the_field(case: Malformed) -> None:
    errors = manifest_errors(case.manifest())
    assert case.field in [error.path for error in errors], errors


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(example: object) -> None:
    assert manifest_errors(load_example(example.name)) == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ([1, 2], ""),
        ({"apiVersion": "v1", "kind": "ConfigMap"}, "apiVersion"),
        ({"apiVersion": "optiloop.dev/v1alpha1", "kind": "Model"}, "kind"),
        ({"apiVersion": "optiloop.dev/v1alpha1", "kind": "ModelOptimization", "metadata": {"name": "x"}}, "spec"),
    ],
)
def test_documents_that_are_not_model_optimizations(document: object, path: str) -> None:
    errors = manifest_errors(document)
    assert errors
    assert errors[0].path == path


def test_union_and_map_key_errors_name_one_path_each() -> None:
    document = load_example("minimal.yaml")
    document["spec"]["jobs"] = {
        "resources": {"requests": {"cpu": [1], "gpu": 1}},
        "nodeSelector": {"bad key": "v"},
    }
    errors = {error.path: error.message for error in manifest_errors(document)}
    assert (
        errors["spec.jobs.resources.requests.cpu"]
        == "Input should be a valid integer; or Input should be a valid string"
    )
    assert errors["spec.jobs.resources.requests.gpu"].startswith("not an allowed key")
    assert errors["spec.jobs.nodeSelector.bad key"].startswith("not an allowed key")
