"""The linear family is fitted in closed form: a run pinned to it delivers what scikit-learn's
regularized logistic or ridge regression would, through the same ONNX graph (raw features in),
for binary, multiclass and regression targets, classes missing from a fold included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optiloop.api.jobs import Architecture
from optiloop.api.spec import DataQualitySpec, DatasetSpec, FeaturesSpec
from optiloop.jobs.features import encode_raw, encode_target, fit_transform
from optiloop.jobs.linear import fit_linear
from optiloop.jobs.storage import open_store
from optiloop.jobs.training import EncodedSplit, build_model, predict
from optiloop.jobs.tune import run_tuning
from tests.jobs.test_trees import _frame
from tests.jobs.test_tune_stage import quick_spec, stage_input


def _split(classes: int) -> tuple[object, EncodedSplit, EncodedSplit, Architecture]:
    task = "classification" if classes else "regression"
    train, test = _frame(400, 0, classes), _frame(200, 1, classes)
    dataset = DatasetSpec(uri="builtin://iris", task=task, categorical_columns=["city"])
    transform = fit_transform(train, ["city"], dataset, FeaturesSpec(), DataQualitySpec())
    architecture = Architecture(
        family="linear", inputs=transform.input_width, outputs=classes or 1, hidden=[], task=task
    )
    encode = lambda frame: EncodedSplit(encode_raw(transform, frame), encode_target(transform, frame["target"]))  # noqa: E731
    return transform, encode(train), encode(test), architecture


@pytest.mark.parametrize("classes", [2, 3])
def test_a_closed_form_fit_classifies_as_well_as_the_signal_allows(classes: int) -> None:
    transform, train, test, architecture = _split(classes)
    model = build_model(transform, architecture, train, 0)  # type: ignore[arg-type]
    fit_linear(model, train, None, seed=0)
    accuracy = float((predict(model, test.raw).argmax(axis=1) == test.target).mean())
    # The classes are quantiles of a linear signal plus unit noise: a linear model separates them well.
    assert accuracy >= (0.85 if classes == 2 else 0.7)


def test_a_class_missing_from_the_rows_is_never_predicted() -> None:
    transform, train, test, architecture = _split(3)
    without = EncodedSplit(train.raw[train.target != 2], train.target[train.target != 2])
    model = build_model(transform, architecture, without, 0)  # type: ignore[arg-type]
    fit_linear(model, without, None, seed=0)
    assert set(predict(model, test.raw).argmax(axis=1)) <= {0, 1}


def test_regression_in_the_millions_is_fitted_on_the_standardized_target() -> None:
    transform, train, test, architecture = _split(0)
    model = build_model(transform, architecture, train, 0)  # type: ignore[arg-type]
    fit_linear(model, train, None, seed=0)
    predicted = predict(model, test.raw)
    r2 = 1 - float(np.mean((predicted - test.target) ** 2) / np.var(test.target))
    assert r2 > 0.8


def test_a_model_with_hidden_layers_is_refused() -> None:
    transform, train, _, architecture = _split(2)
    model = build_model(transform, architecture.model_copy(update={"hidden": [8]}), train, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="without hidden layers"):
        fit_linear(model, train, None, seed=0)


def test_a_run_pinned_to_linear_delivers_the_linear_models_accuracy_on_breast_cancer(tmp_path: Path) -> None:
    spec = quick_spec("builtin://breast_cancer", trials=2, model={"family": "linear", "folds": None})
    stage = stage_input(str(tmp_path / "out"), spec)
    store = open_store(stage.artifacts)
    result = run_tuning(stage, store)
    assert result is not None
    assert result.architecture.family == "linear"
    assert result.architecture.hidden == []
    # Regularized logistic regression reaches about 0.97 on this split; trained by gradient, 0.94.
    assert result.test_metrics["accuracy"] >= 0.95


@pytest.mark.parametrize("classes", [2, 3, 0])
def test_the_exported_graph_matches_scikit_learn_within_1e_5(classes: int) -> None:
    """Raw features through the ONNX graph give what the fitted scikit-learn estimator gives on
    the preprocessed features (probabilities, or values in the target's own units)."""
    import onnxruntime as ort
    import torch

    from optiloop.jobs.onnx_export import export_onnx

    transform, train, test, architecture = _split(classes)
    model = build_model(transform, architecture, train, 0)  # type: ignore[arg-type]
    estimator = fit_linear(model, train, None, seed=0)
    with torch.no_grad():
        features = model.preprocess(torch.from_numpy(test.raw)).double().numpy()
    session = ort.InferenceSession(export_onnx(model), providers=["CPUExecutionProvider"])
    served = session.run(None, {session.get_inputs()[0].name: test.raw})
    if classes:
        np.testing.assert_allclose(served[-1], estimator.predict_proba(features), atol=1e-5)
    else:
        expected = estimator.predict(features) * float(model.target_std) + float(model.target_mean)
        np.testing.assert_allclose(served[0].ravel(), expected, rtol=1e-5)
