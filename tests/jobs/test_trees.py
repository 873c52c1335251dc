"""The gradient-boosted tree family: its ONNX graph (raw features in, one graph) computes what
LightGBM computes, missing values and unseen categories included, and a tuning run pinned to it
(or searching across families) delivers a served model that matches the booster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from optiloop.api.jobs import Architecture
from optiloop.api.spec import DataQualitySpec, DatasetSpec, FeaturesSpec
from optiloop.jobs.checkpoint import load_model
from optiloop.jobs.compress import run_compression
from optiloop.jobs.features import encode_raw, encode_target, fit_transform
from optiloop.jobs.latency import open_session
from optiloop.jobs.prepare import prepare_data
from optiloop.jobs.storage import open_store
from optiloop.jobs.trees import TreeModel, TreeSettings, build_tree_model, export_tree_onnx
from optiloop.jobs.tune import run_tuning
from optiloop.serve.model_dir import load_model_directory
from tests.jobs.test_tune_stage import quick_spec, stage_input


def _frame(rows: int, seed: int, classes: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=rows),
            "b": rng.uniform(0, 5, size=rows),
            "city": rng.choice(["oslo", "lima", "rome"], size=rows),
            "count": rng.integers(0, 4, size=rows).astype(float),
        }
    )
    frame.loc[::7, "b"] = np.nan
    signal = 3 * frame["a"] + np.nan_to_num(frame["b"]) + 2 * (frame["city"] == "oslo") + rng.normal(size=rows)
    if classes:
        frame["target"] = pd.qcut(signal, classes, labels=False)
    else:
        frame["target"] = 5_000_000 + 1_000_000 * signal  # house-price-sized values
    return frame


def _fitted(classes: int) -> tuple[TreeModel, np.ndarray]:
    task = "classification" if classes else "regression"
    train, test = _frame(600, 0, classes), _frame(300, 1, classes)
    test.loc[0, "city"] = "paris"  # unseen category
    test.loc[1, "a"] = np.nan  # missing where training had none
    dataset = DatasetSpec(uri="builtin://iris", task=task, categorical_columns=["city"])
    transform = fit_transform(train, ["city"], dataset, FeaturesSpec(), DataQualitySpec())
    architecture = Architecture(
        family="lightgbm", inputs=len(transform.columns), outputs=classes or 1, hidden=[], task=task
    )
    model = build_tree_model(
        transform,
        architecture,
        encode_raw(transform, train),
        encode_target(transform, train["target"]),
        None,
        TreeSettings(trees=120, leaves=15),
        seed=0,
    )
    return model, encode_raw(transform, test)


@pytest.mark.parametrize("classes", [2, 3])
def test_exported_probabilities_match_lightgbm_within_1e_5(classes: int) -> None:
    model, raw = _fitted(classes)
    exported = export_tree_onnx(model)
    assert {n.op_type for n in onnx.load_from_string(exported).graph.node} >= {"TreeEnsembleRegressor", "Softmax"}
    predictions, probabilities = open_session(exported, 1).run(None, {"features": raw})
    expected = model.booster.predict(raw)
    if expected.ndim == 1:
        expected = np.column_stack([1 - expected, expected])
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_array_equal(predictions, expected.argmax(axis=1))
    # The torch-side view the rest of the pipeline evaluates agrees too.
    np.testing.assert_allclose(torch.softmax(model(torch.from_numpy(raw)), dim=1).numpy(), expected, atol=1e-5)


def test_exported_regression_matches_lightgbm_within_1e_5_of_targets_in_the_millions() -> None:
    model, raw = _fitted(0)
    (predictions,) = open_session(export_tree_onnx(model), 1).run(None, {"features": raw})
    expected = model.booster.predict(raw) * float(model.target_std) + float(model.target_mean)
    assert np.abs(expected).min() > 1e5
    assert predictions.shape == (len(raw),)
    np.testing.assert_allclose(predictions, expected, rtol=1e-5)


def test_a_run_pinned_to_lightgbm_serves_the_booster_it_trained(tmp_path: Path) -> None:
    spec = quick_spec(
        "builtin://breast_cancer",
        trials=3,
        model={"family": "lightgbm", "folds": None},  # automatic: 5 folds on 483 rows
        compression={"steps": [{"prune": {"method": "structured", "amount": 0.5}}, {"quantize": {}}]},
    )
    stage = stage_input(str(tmp_path / "out"), spec)
    store = open_store(stage.artifacts)
    result = run_tuning(stage, store)
    assert result is not None
    assert result.architecture.family == "lightgbm"
    assert result.validation_folds == 5
    assert result.test_metrics["accuracy"] >= 0.9
    trials = json.loads((tmp_path / "out/r1/tuning/trials.json").read_text())
    assert {t["params"]["family"] for t in trials} == {"lightgbm"}
    assert all(t["validationLoss"] > 0 for t in trials)

    report = run_compression(stage, store)
    by_name = {c.name: c for c in report.candidates}
    assert by_name["baseline"].error is None
    fewer = by_name["1-prune-trees"]
    assert fewer.error is None
    assert fewer.parameters < by_name["baseline"].parameters  # fewer trees, and measured
    assert "tree ensemble" in (by_name["2-quantize-dynamicint8"].error or "")

    model = load_model(store, "r1/tuning")
    assert isinstance(model, TreeModel)
    test = prepare_data(stage, store).splits["test"]
    directory = load_model_directory(tmp_path / "out" / "r1" / "model")
    served = open_session(directory.onnx_bytes, 1).run(None, {"features": test.raw})
    if report.chosen == "baseline":
        expected = model.booster.predict(test.raw)
        np.testing.assert_allclose(served[1][:, 1], expected, atol=1e-5)
    assert served[1].shape == (len(test.raw), 2)


def test_the_default_search_tries_every_family(tmp_path: Path) -> None:
    spec = quick_spec("builtin://iris", trials=4, model={"family": "auto", "folds": 2}, tuning={"algorithm": "random"})
    stage = stage_input(str(tmp_path / "out"), spec)
    result = run_tuning(stage, open_store(stage.artifacts))
    assert result is not None
    trials = json.loads((tmp_path / "out/r1/tuning/trials.json").read_text())
    # Each family's starting point runs first, so even a short search measured all of them.
    assert [t["params"]["family"] for t in trials[:3]] == ["lightgbm", "linear", "mlp"]
    best = min((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["validationLoss"])
    assert result.best_trial.number == best["number"]  # ranked on the validation loss


def test_a_model_that_never_predicts_the_rare_class_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On pure noise with 3% positives the honest model answers the majority class; the run's
    result says that it never predicts the rare class, and the reweighting was a searched choice."""
    rng = np.random.default_rng(0)
    rows = 600
    frame = pd.DataFrame({"x": rng.normal(size=rows), "y": rng.normal(size=rows)})
    frame["target"] = np.where(np.arange(rows) % 33 == 0, "fraud", "ok")
    (tmp_path / "pvc" / "data").mkdir(parents=True)
    frame.to_csv(tmp_path / "pvc" / "data" / "noise.csv", index=False)
    monkeypatch.setenv("OPTILOOP_PVC_ROOT", str(tmp_path / "pvc"))
    spec = quick_spec(
        "pvc://data/noise.csv",
        trials=4,
        model={"family": "lightgbm"},
        dataQuality={"minRows": 20, "classImbalance": {"maxRatio": 5, "action": "reweight"}},
        tuning={"algorithm": "random"},
    )
    stage = stage_input(str(tmp_path / "out"), spec)
    result = run_tuning(stage, open_store(stage.artifacts))
    assert result is not None
    trials = json.loads((tmp_path / "out/r1/tuning/trials.json").read_text())
    assert all("class_weighted" in t["params"] for t in trials)
    assert any("never predicts class fraud" in w or "most frequent class" in w for w in result.warnings)
