"""The API models: defaults a first run relies on, cross-field rules, and lossless serialization."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from optiloop.api import ApiModel, ModelOptimization, ModelOptimizationSpec, ObjectMeta
from optiloop.api.spec import CompressionStep, FloatRange, IntRange, Objective, SplitFractions, natural_direction
from tests.support.manifests import maximal_manifest, round_trip_documents

MINIMAL_SPEC = {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://claim/iris"}}


def test_minimal_spec_gets_working_defaults_for_every_stage() -> None:
    spec = ModelOptimizationSpec.model_validate(MINIMAL_SPEC)
    assert spec.dataset.task == "classification"
    assert spec.tuning.algorithm == "tpe"
    assert spec.tuning.max_trials >= spec.tuning.parallel_trials
    assert [step.kind for step in spec.compression.steps] == ["prune", "quantize"]
    assert spec.monitoring.retraining.on_drift is True
    assert spec.data_quality.fail_on_violation is True


@pytest.mark.parametrize(("task", "metric"), [("classification", "accuracy"), ("regression", "rmse")])
def test_objectives_default_to_the_tasks_metric(task: str, metric: str) -> None:
    uri = "builtin://diabetes" if task == "regression" else "builtin://wine"
    spec = ModelOptimizationSpec.model_validate({**MINIMAL_SPEC, "dataset": {"uri": uri, "task": task}})
    assert [o.metric for o in spec.objectives()] == [metric]


@pytest.mark.parametrize(
    ("metric", "direction"),
    [
        ("accuracy", "maximize"),
        ("r2", "maximize"),
        ("rmse", "minimize"),
        ("latencyMs", "minimize"),
        ("parameters", "minimize"),
    ],
)
def test_natural_direction(metric: str, direction: str) -> None:
    assert natural_direction(metric) == direction  # type: ignore[arg-type]
    Objective.model_validate({"metric": metric, "direction": direction})


def test_snake_case_in_python_camel_case_on_the_wire() -> None:
    spec = ModelOptimizationSpec.model_validate(MINIMAL_SPEC)
    wire = spec.to_manifest()
    assert "dataQuality" in wire
    assert "data_quality" not in wire
    assert wire["tuning"]["maxTrials"] == spec.tuning.max_trials
    assert ModelOptimizationSpec.model_validate(wire) == spec


@pytest.mark.parametrize("source", list(round_trip_documents()))
def test_manifest_round_trips_unchanged(source: str) -> None:
    model = ModelOptimization.model_validate(round_trip_documents()[source])
    assert ModelOptimization.model_validate(model.to_manifest()) == model


def _models_reachable_from(model: type[BaseModel]) -> set[type[ApiModel]]:
    found: set[type[ApiModel]] = set()
    pending: list[Any] = [model]
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, ApiModel):
            if annotation not in found and annotation is not ObjectMeta:
                found.add(annotation)
                pending.extend(f.annotation for f in annotation.model_fields.values())
        else:
            pending.extend(typing.get_args(annotation))
    return found


def _fields_set(value: Any, seen: set[tuple[type, str]]) -> None:
    if isinstance(value, ApiModel):
        for name in type(value).model_fields:
            field_value = getattr(value, name)
            if field_value is not None:
                seen.add((type(value), name))
            _fields_set(field_value, seen)
    elif isinstance(value, list | tuple):
        for item in value:
            _fields_set(item, seen)


def test_round_trip_documents_exercise_every_field_of_every_model() -> None:
    """Otherwise the server round trip would not prove that every field fits the schema."""
    seen: set[tuple[type, str]] = set()
    for document in round_trip_documents().values():
        _fields_set(ModelOptimization.model_validate(document), seen)
    every_field = {(cls, name) for cls in _models_reachable_from(ModelOptimization) for name in cls.model_fields}
    missing = sorted(f"{cls.__name__}.{name}" for cls, name in every_field - seen)
    assert not missing, f"no round-trip document sets {missing}"


@pytest.mark.parametrize(
    ("fractions", "valid"),
    [((0.7, 0.15, 0.15), True), ((0.8, 0.1, 0.1), True), ((0.8, 0.15, 0.15), False), ((0.5, 0.2, 0.2), False)],
)
def test_split_fractions_must_add_up_to_one(fractions: tuple[float, float, float], valid: bool) -> None:
    data = dict(zip(("train", "validation", "test"), fractions, strict=True))
    if valid:
        SplitFractions.model_validate(data)
    else:
        with pytest.raises(ValidationError, match="add up to 1"):
            SplitFractions.model_validate(data)


@pytest.mark.parametrize(
    ("members", "valid"),
    [
        ({"prune": {}}, True),
        ({"quantize": {}}, True),
        ({"distill": {}}, True),
        ({}, False),
        ({"prune": {}, "distill": {}}, False),
    ],
)
def test_compression_step_sets_exactly_one_member(members: dict[str, dict[str, object]], valid: bool) -> None:
    if valid:
        assert CompressionStep.model_validate(members).kind == next(iter(members))
    else:
        with pytest.raises(ValidationError, match="exactly one"):
            CompressionStep.model_validate(members)


@pytest.mark.parametrize("range_type", [IntRange, FloatRange])
def test_ranges_reject_inverted_bounds_and_log_from_zero(range_type: type[IntRange] | type[FloatRange]) -> None:
    range_type.model_validate({"min": 1, "max": 10, "log": True})
    with pytest.raises(ValidationError, match="min must not exceed max"):
        range_type.model_validate({"min": 10, "max": 1})
    with pytest.raises(ValidationError, match="logarithmic"):
        range_type.model_validate({"min": 0, "max": 1, "log": True})


@pytest.mark.parametrize(
    "uri",
    ["pvc://claim/a/b.csv", "s3://my-bucket/data/train.parquet", "builtin://breast_cancer", "pvc://claim", "s3://b/k/"],
)
def test_dataset_uri_accepts_supported_schemes(uri: str) -> None:
    ModelOptimizationSpec.model_validate({**MINIMAL_SPEC, "dataset": {"uri": uri}})


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://example.com/a.csv", "must be a URI of the form"),
        ("file:///etc/passwd", "works only with `optiloop run`; in a cluster use pvc://"),
        ("pvc://claim/../secret", "path segments"),
        ("pvc://claim/./x", "path segments"),
        ("pvc://../x", "path segments"),
        ("s3://Bucket/key", "must be a URI of the form"),
        ("pvc://claim/a b", "must be a URI of the form"),
        ("pvc://claim/a\\b", "must be a URI of the form"),
        ("builtin://../iris", "path segments"),
    ],
)
def test_dataset_uri_rejects_other_schemes_and_traversal(uri: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        ModelOptimizationSpec.model_validate({**MINIMAL_SPEC, "dataset": {"uri": uri}})


def test_dotted_names_inside_a_segment_are_not_traversal() -> None:
    spec = ModelOptimizationSpec.model_validate({**MINIMAL_SPEC, "dataset": {"uri": "pvc://claim/v1..2/data.v2.csv"}})
    assert spec.dataset.uri.endswith("data.v2.csv")


@pytest.mark.parametrize(
    ("quantity", "valid"),
    [("500m", True), (2, True), ("1Gi", True), ("1.5", True), ("lots", False), (-1, False), ("1 Gi", False)],
)
def test_resource_quantities(quantity: object, valid: bool) -> None:
    data = {**MINIMAL_SPEC, "jobs": {"resources": {"requests": {"cpu": quantity}}}}
    if valid:
        ModelOptimizationSpec.model_validate(data)
    else:
        with pytest.raises(ValidationError, match=r"quantity|negative"):
            ModelOptimizationSpec.model_validate(data)


def test_status_condition_lookup() -> None:
    model = ModelOptimization.model_validate(maximal_manifest())
    assert model.status is not None
    ready = model.status.condition("Ready")
    assert ready is not None
    assert ready.status == "True"


def test_model_family_defaults_to_searching_every_family_and_a_bad_one_names_the_field() -> None:
    spec = ModelOptimizationSpec.model_validate(MINIMAL_SPEC)
    assert spec.model.family == "auto"
    assert set(spec.model.families()) == {"mlp", "linear", "lightgbm"}
    pinned = ModelOptimizationSpec.model_validate({**MINIMAL_SPEC, "model": {"family": "lightgbm"}})
    assert pinned.model.families() == ("lightgbm",)
    with pytest.raises(ValidationError, match=r"model\.family"):
        ModelOptimizationSpec.model_validate({**MINIMAL_SPEC, "model": {"family": "xgboost"}})
