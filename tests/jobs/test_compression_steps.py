"""Compression per model family: every candidate a step makes for a tree ensemble or a linear model
is served by a graph that matches its training library, is measured and judged by the gates, and
a finished stage is reused; steps that cannot help a family are listed with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from optiloop.api.jobs import Architecture, TrainingConfig
from optiloop.api.spec import CompressionStep, DataQualitySpec, DatasetSpec, FeaturesSpec
from optiloop.jobs.compress import parity_tolerance, run_compression
from optiloop.jobs.features import encode_raw, encode_target, fit_transform
from optiloop.jobs.latency import open_session
from optiloop.jobs.models import TabularModel
from optiloop.jobs.onnx_export import export_onnx
from optiloop.jobs.steps import Made, StepContext, steps_for
from optiloop.jobs.storage import open_store
from optiloop.jobs.training import EncodedSplit
from optiloop.jobs.trees import AnyModel, TreeModel, TreeSettings, build_tree_model, export_tree_onnx
from optiloop.jobs.tune import run_tuning
from optiloop.serve.model_dir import load_model_directory
from tests.jobs.test_trees import _frame
from tests.jobs.test_tune_stage import quick_spec, stage_input


def _export(model: AnyModel) -> bytes:
    return export_tree_onnx(model) if isinstance(model, TreeModel) else export_onnx(model)


def _ensemble(classes: int) -> tuple[TreeModel, StepContext, np.ndarray]:
    """A fitted ensemble of 15-leaf trees, the rows its steps learn from, and unseen rows."""
    task = "classification" if classes else "regression"
    train, validation, test = _frame(600, 0, classes), _frame(200, 2, classes), _frame(300, 1, classes)
    test.loc[0, "city"] = "paris"  # unseen category
    test.loc[1, "a"] = np.nan  # missing where training had none
    dataset = DatasetSpec(uri="builtin://iris", task=task, categorical_columns=["city"])
    transform = fit_transform(train, ["city"], dataset, FeaturesSpec(), DataQualitySpec())
    architecture = Architecture(
        family="lightgbm", inputs=len(transform.columns), outputs=classes or 1, hidden=[], task=task, leaves=15
    )
    rows = EncodedSplit(encode_raw(transform, train), encode_target(transform, train["target"]))
    held = EncodedSplit(encode_raw(transform, validation), encode_target(transform, validation["target"]))
    model = build_tree_model(
        transform, architecture, rows.raw, rows.target, None, TreeSettings(trees=80, leaves=15), seed=0
    )
    training = TrainingConfig(learning_rate=0.05, epochs=20, batch_size=32, seed=0)
    return model, StepContext(rows, held, training, None, 0), encode_raw(transform, test)


def _library_outputs(model: AnyModel, raw: np.ndarray) -> np.ndarray:
    """What the training library itself predicts: LightGBM's probabilities or values, torch's softmax or values."""
    if isinstance(model, TreeModel):
        expected = np.asarray(model.booster.predict(raw), dtype=np.float64)
        if model.task == "regression":
            return expected * float(model.target_std) + float(model.target_mean)
        return np.column_stack([1 - expected, expected]) if expected.ndim == 1 else expected
    model.eval()
    with torch.inference_mode():
        out = model(torch.from_numpy(raw))
    return (torch.softmax(out, dim=1) if model.task == "classification" else out).numpy().astype(np.float64)


def _served(made: Made, raw: np.ndarray, task: str) -> np.ndarray:
    outputs = open_session(made.onnx_bytes, 1).run(None, {"features": raw})
    return np.asarray(outputs[1] if task == "classification" else outputs[0], dtype=np.float64)


@pytest.mark.parametrize("classes", [2, 3, 0])
def test_every_tree_candidate_matches_its_library_within_1e_5(classes: int) -> None:
    model, context, raw = _ensemble(classes)
    steps = [
        CompressionStep.model_validate({"prune": {"amount": 0.5}}),
        CompressionStep.model_validate({"distill": {"hiddenLayers": [16], "epochs": 5}}),
    ]
    made = [(s.name, s.apply(model, _export, context)) for step in steps for s in steps_for(step, model)]
    assert [name for name, _ in made] == ["prune-trees", "prune-leaves", "distill"]
    for name, result in made:
        expected = _library_outputs(result.model, raw)
        got = _served(result, raw, model.task)
        worst = float(np.max(np.abs(got - expected)))
        assert worst <= parity_tolerance(expected, 1e-5), f"{name}: {worst}"
    fewer_trees, fewer_leaves, student = (result.model for _, result in made)
    assert isinstance(fewer_trees, TreeModel)
    assert fewer_trees.rounds() == model.rounds() // 2
    assert isinstance(fewer_leaves, TreeModel)
    assert fewer_leaves.architecture.leaves == 8
    assert max(int(t["num_leaves"]) for t in fewer_leaves.booster.dump_model()["tree_info"]) <= 8
    assert isinstance(student, TabularModel)
    assert student.architecture.hidden == [16]


def test_quantizing_a_tree_ensemble_is_skipped_with_the_reason() -> None:
    model, context, _ = _ensemble(2)
    (step,) = steps_for(CompressionStep.model_validate({"quantize": {"mode": "fp16"}}), model)
    with pytest.raises(Exception, match="skipped: a tree ensemble has no matrix products"):
        step.apply(model, _export, context)


def test_a_pinned_lightgbm_run_measures_fewer_trees_fewer_leaves_and_a_distilled_student(tmp_path: Path) -> None:
    spec = quick_spec(
        "builtin://breast_cancer",
        trials=2,
        model={"family": "lightgbm", "folds": 1},
        compression={
            "steps": [
                {"prune": {"amount": 0.5}},
                {"quantize": {"mode": "dynamicInt8"}},
                {"distill": {"hiddenLayers": [16], "epochs": 10}},
                {"quantize": {"mode": "dynamicInt8"}},
            ],
            "gates": {"maxMetricDrop": 0.03},
            "selection": "smallest",
        },
    )
    stage = stage_input(str(tmp_path / "out"), spec)
    store = open_store(stage.artifacts)
    run_tuning(stage, store)
    report = run_compression(stage, store)
    by_name = {c.name: c for c in report.candidates}
    assert list(by_name) == [
        "baseline",
        "1-prune-trees",
        "1-prune-leaves",
        "2-quantize-dynamicint8",
        "3-distill",
        "4-quantize-dynamicint8",
    ]
    baseline = by_name["baseline"]
    for name in ("1-prune-trees", "1-prune-leaves", "3-distill", "4-quantize-dynamicint8"):
        candidate = by_name[name]
        assert candidate.error is None, name
        assert [entry.batch_size for entry in candidate.latency] == [1, 64], name
        assert candidate.size_bytes < baseline.size_bytes, name
        # The drop gate judged the measured accuracy, nothing else failed.
        assert candidate.passed == (candidate.metric_drop <= 0.03), name
    assert "tree ensemble" in (by_name["2-quantize-dynamicint8"].error or "")
    assert not by_name["2-quantize-dynamicint8"].passed
    # The chain went on from the fewer-trees model: the student learned from it, and int8 quantized the student.
    assert by_name["3-distill"].steps == ["prune trees 50%", "distill to hidden [16]"]
    assert by_name["4-quantize-dynamicint8"].precision == "int8"
    assert by_name["3-distill"].hidden == [16]
    passing = [c for c in report.candidates if c.passed]
    assert report.chosen == min(passing, key=lambda c: c.size_bytes).name
    directory = load_model_directory(tmp_path / "out" / "r1" / "model")
    assert directory.metadata.lineage.candidate == report.chosen
    assert directory.onnx_bytes == (tmp_path / f"out/r1/compression/candidates/{report.chosen}.onnx").read_bytes()

    # A rerun (a restarted Job) reuses the finished stage instead of building anything again.
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "out/r1/compression").rglob("*") if p.is_file()}
    assert run_compression(stage, store) == report
    assert {p: p.stat().st_mtime_ns for p in written} == written


def test_a_linear_model_skips_structured_pruning_and_is_still_quantized(tmp_path: Path) -> None:
    spec = quick_spec(
        "builtin://breast_cancer",
        trials=1,
        model={"family": "linear"},
        compression={"steps": [{"prune": {"method": "structured"}}, {"quantize": {"mode": "dynamicInt8"}}]},
    )
    stage = stage_input(str(tmp_path / "out"), spec)
    store = open_store(stage.artifacts)
    run_tuning(stage, store)
    report = run_compression(stage, store)
    by_name = {c.name: c for c in report.candidates}
    assert "skipped: a linear model has no hidden neurons" in (by_name["1-prune-structured"].error or "")
    assert by_name["2-quantize-dynamicint8"].error is None
    assert by_name["2-quantize-dynamicint8"].test_metrics["accuracy"] > 0.9
    saved = json.loads((tmp_path / "out/r1/compression/report.json").read_text())
    assert [c["name"] for c in saved["candidates"]] == list(by_name)
