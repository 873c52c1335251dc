"""The feature transform is fitted on training data only and applied identically by torch; training
stops early on a plateau, restores its best weights, and is deterministic for a seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from optiloop.api.jobs import Architecture, TrainingConfig
from optiloop.api.spec import DataQualitySpec, DatasetSpec, FeaturesSpec
from optiloop.jobs.errors import TrainingDivergedError
from optiloop.jobs.features import Preprocessor, encode_raw, encode_target, fit_transform
from optiloop.jobs.training import EncodedSplit, build_model, evaluate, train_model

DATASET = DatasetSpec(uri="builtin://iris")


def _fit(train: pd.DataFrame, categorical_columns: list[str] | None = None, **features: object) -> object:
    return fit_transform(
        train, categorical_columns or [], DATASET, FeaturesSpec.model_validate(features), DataQualitySpec()
    )


def _apply(transform: object, frame: pd.DataFrame) -> np.ndarray:
    with torch.no_grad():
        return Preprocessor(transform)(torch.from_numpy(encode_raw(transform, frame))).numpy()  # type: ignore[arg-type]


def test_scaling_and_imputation_come_from_the_training_split_only() -> None:
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, np.nan], "target": [0, 1, 0, 1]})
    test = pd.DataFrame({"x": [100.0, np.nan], "target": [0, 1]})
    transform = _fit(train)
    column = transform.columns[0]  # type: ignore[attr-defined]
    assert column.fill == 2.0  # the training median
    assert column.center == pytest.approx(np.mean([1, 2, 3, 2]))
    out = _apply(transform, test)
    assert out[1, 0] == pytest.approx((2.0 - column.center) / column.scale)
    assert out[0, 0] == pytest.approx((100.0 - column.center) / column.scale, rel=1e-5)


@pytest.mark.parametrize("scaling", ["standard", "minMax", "robust", "none"])
def test_torch_transform_matches_the_fitted_numbers(scaling: str) -> None:
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"a": rng.normal(5, 2, 50), "b": rng.uniform(0, 1, 50), "target": rng.integers(0, 2, 50)})
    transform = _fit(train, scaling=scaling)
    out = _apply(transform, train)
    for index, column in enumerate(transform.columns):  # type: ignore[attr-defined]
        expected = (train[column.name].to_numpy() - column.center) / column.scale
        np.testing.assert_allclose(out[:, index], expected, rtol=1e-5, atol=1e-5)


def test_one_hot_encoding_maps_unseen_and_missing_categories() -> None:
    train = pd.DataFrame({"city": ["oslo", "lima", "oslo", "rome"], "x": [1.0, 2.0, 3.0, 4.0], "target": [0, 1, 0, 1]})
    transform = _fit(train, ["city"])
    assert transform.columns[0].categories == ["oslo", "lima", "rome"]  # type: ignore[attr-defined]
    assert transform.output_names[:3] == ["city=oslo", "city=lima", "city=rome"]  # type: ignore[attr-defined]
    out = _apply(transform, pd.DataFrame({"city": ["lima", "paris", None], "x": [1.0, 1.0, 1.0]}))
    np.testing.assert_array_equal(
        out[:, :3], [[0, 1, 0], [0, 0, 0], [1, 0, 0]]
    )  # unseen -> zeros; missing -> most frequent


def test_max_categories_keeps_the_most_frequent() -> None:
    train = pd.DataFrame({"c": list("aaabbc"), "target": [0, 1] * 3})
    transform = _fit(train, ["c"], categorical={"maxCategories": 2})
    assert transform.columns[0].categories == ["a", "b"]  # type: ignore[attr-defined]


def test_variance_selection_drops_near_constant_features() -> None:
    train = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "flat": [1.0, 1.0, 1.0, 1.001], "target": [0, 1, 0, 1]})
    transform = _fit(train, selection={"method": "variance", "varianceThreshold": 0.01})
    assert transform.output_names == ["a"]  # type: ignore[attr-defined]


def test_mutual_information_keeps_the_informative_features() -> None:
    rng = np.random.default_rng(1)
    target = rng.integers(0, 2, 300)
    train = pd.DataFrame(
        {
            "noise1": rng.normal(size=300),
            "signal": target + rng.normal(scale=0.1, size=300),
            "noise2": rng.normal(size=300),
            "target": target,
        }
    )
    transform = _fit(train, selection={"method": "mutualInfo", "maxFeatures": 1})
    assert transform.output_names == ["signal"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("reduction", "width"),
    [({"method": "pca", "components": 2}, 2), ({"method": "pca", "explainedVariance": 0.9}, None)],
)
def test_pca_projects_onto_fitted_components(reduction: dict[str, object], width: int | None) -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(200, 2))
    train = pd.DataFrame(base @ rng.normal(size=(2, 6)), columns=[f"f{i}" for i in range(6)])
    train["target"] = rng.integers(0, 2, 200)
    transform = _fit(train, reduction=reduction)
    out = _apply(transform, train)
    assert out.shape[1] == (width or out.shape[1])
    assert out.shape[1] <= 2  # the data is rank 2
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)


def test_targets_are_encoded_in_numeric_label_order() -> None:
    train = pd.DataFrame({"x": range(12), "target": [2, 10, 1] * 4})
    transform = _fit(train)
    assert transform.classes == ["1", "2", "10"]  # type: ignore[attr-defined]
    assert encode_target(transform, pd.Series([10, 1])).tolist() == [2, 0]  # type: ignore[arg-type]


def _noise_problem(seed: int = 0) -> tuple[object, EncodedSplit, EncodedSplit]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(400, 5)), columns=list("abcde"))
    frame["target"] = rng.integers(0, 2, 400)  # pure noise: validation loss plateaus quickly
    transform = _fit(frame.iloc[:300])
    split = lambda part: EncodedSplit(encode_raw(transform, part), encode_target(transform, part["target"]))  # noqa: E731
    return transform, split(frame.iloc[:300]), split(frame.iloc[300:])


def test_early_stopping_stops_on_a_plateau_and_restores_the_best_weights() -> None:
    transform, train, validation = _noise_problem()
    architecture = Architecture(inputs=5, outputs=2, hidden=[64, 64])
    config = TrainingConfig(learning_rate=0.01, batch_size=32, epochs=200, early_stopping_patience=5, seed=3)
    model = build_model(transform, architecture, train, config.seed)  # type: ignore[arg-type]
    outcome = train_model(model, train, validation, config)
    assert outcome.stopped_early
    assert outcome.epochs_run < 60
    assert outcome.epochs_run == outcome.best_epoch + 5
    assert evaluate(model, validation)["loss"] == pytest.approx(
        outcome.history[outcome.best_epoch - 1].validation["loss"], rel=1e-5
    )
    assert evaluate(model, validation)["loss"] < outcome.history[-1].validation["loss"]


def test_training_is_deterministic_for_a_seed() -> None:
    transform, train, validation = _noise_problem()
    architecture = Architecture(inputs=5, outputs=2, hidden=[16], dropout=0.2, batch_norm=True)
    config = TrainingConfig(learning_rate=0.01, batch_size=16, epochs=5, seed=11, early_stopping_patience=None)
    weights = []
    for _ in range(2):
        model = build_model(transform, architecture, train, config.seed)  # type: ignore[arg-type]
        train_model(model, train, validation, config)
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_class_weights_change_what_is_learned() -> None:
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(rng.normal(size=(300, 2)), columns=["a", "b"])
    frame["target"] = (rng.uniform(size=300) < 0.1).astype(int)
    transform = _fit(frame)
    split = EncodedSplit(encode_raw(transform, frame), encode_target(transform, frame["target"]))
    config = TrainingConfig(learning_rate=0.05, batch_size=64, epochs=20, early_stopping_patience=None)
    predicted_rare = []
    for weights in (None, [1.0, 20.0]):
        model = build_model(transform, Architecture(inputs=2, outputs=2, hidden=[8]), split, 0)
        train_model(model, split, split, config, class_weights=weights)
        with torch.no_grad():
            predicted_rare.append(int(model(torch.from_numpy(split.raw)).argmax(1).sum()))
    assert predicted_rare[1] > predicted_rare[0]


def test_a_diverging_run_raises_instead_of_returning_nan_metrics() -> None:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(200, 3)) * 1e3, columns=["a", "b", "c"])
    frame["target"] = frame["a"] * 1e4
    transform = fit_transform(
        frame,
        [],
        DatasetSpec(uri="builtin://diabetes", task="regression"),
        FeaturesSpec(scaling="none"),
        DataQualitySpec(),
    )
    split = EncodedSplit(encode_raw(transform, frame), encode_target(transform, frame["target"]))
    config = TrainingConfig(learning_rate=10.0, optimizer="sgd", batch_size=16, epochs=20, seed=0)
    model = build_model(transform, Architecture(inputs=3, outputs=1, hidden=[32, 32], task="regression"), split, 0)
    with pytest.raises(TrainingDivergedError, match="learning rate 10 with sgd is too high"):
        train_model(model, split, split, config)


def test_metrics_of_non_finite_outputs_are_nan() -> None:
    from optiloop.jobs.metrics import task_metrics

    metrics = task_metrics("regression", np.array([1.0, 2.0]), np.array([np.nan, 1.0]))
    assert set(metrics) == {"rmse", "mae", "r2"}
    assert all(np.isnan(v) for v in metrics.values())


def test_numeric_categories_are_one_category_whatever_their_number_type() -> None:
    from optiloop.api.spec import DatasetSpec as Dataset
    from optiloop.jobs.quality import check_quality

    frame = pd.DataFrame({"grade": [1, 2, np.nan, 1, 2, 1] * 10, "x": np.arange(60.0), "target": [0, 1] * 30})
    assert frame["grade"].dtype == "float64"  # pandas turned the integers into floats
    dataset = Dataset(uri="builtin://iris", categorical_columns=["grade"])
    cleaned = check_quality(frame, dataset, DataQualitySpec.model_validate({"minRows": 10}))
    transform = fit_transform(cleaned.frame, cleaned.categorical, dataset, FeaturesSpec(), DataQualitySpec())
    assert transform.columns[0].categories == ["1", "2"]
    served = encode_raw(transform, pd.DataFrame({"grade": [1, 1.0, "1", 2, 3], "x": [0.0] * 5}))
    assert served[:, 0].tolist() == [0.0, 0.0, 0.0, 1.0, -1.0]
