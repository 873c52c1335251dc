"""A classifier's decision rule on uneven classes: class-weighted probabilities are calibrated back,
the threshold is chosen for the user's metric (a majority-class answer cannot win the default),
and the served graph answers and reports exactly what the rule says."""

from __future__ import annotations

import numpy as np
import pytest

from optiloop.api.jobs import Architecture, Decision, FeatureTransform
from optiloop.api.spec import DataQualitySpec, DatasetSpec, FeaturesSpec
from optiloop.jobs.decision import calibrate, choose_decision, decide, decision_metric, fold_into_graph
from optiloop.jobs.features import encode_raw, encode_target, fit_transform
from optiloop.jobs.latency import open_session
from optiloop.jobs.metrics import label_score as score
from optiloop.jobs.onnx_export import export_onnx, quantize_dynamic_int8
from optiloop.jobs.training import EncodedSplit, build_model, predict
from optiloop.jobs.trees import AnyModel, TreeSettings, build_tree_model, export_tree_onnx
from tests.jobs.test_trees import _frame


def _rare_positives(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels with about 3% positives and a score that separates them only partly."""
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(size=rows) < 0.03).astype(np.int64)
    signal = rng.normal(size=rows) + 1.5 * labels
    return labels, signal


def _weighted_probabilities(signal: np.ndarray, weight: float) -> np.ndarray:
    """What a logistic model trained with the positives weighted by ``weight`` says: odds times ``weight``."""
    logit = 1.5 * signal - 4.5 + np.log(weight)
    positive = 1.0 / (1.0 + np.exp(-logit))
    return np.column_stack([1.0 - positive, positive])


def test_the_default_decision_metric_is_one_a_majority_answer_cannot_win() -> None:
    assert decision_metric(None, imbalanced=False) == "accuracy"
    assert decision_metric(None, imbalanced=True) == "balancedAccuracy"
    assert decision_metric("rocAuc", imbalanced=False) == "balancedAccuracy"
    assert decision_metric("f1", imbalanced=True) == "f1"
    labels = np.array([0] * 97 + [1] * 3)
    majority = np.zeros(100, dtype=np.int64)
    assert score("accuracy", labels, majority, 2) == pytest.approx(0.97)
    assert score("balancedAccuracy", labels, majority, 2) == pytest.approx(0.5)
    assert score("f1", labels, majority, 2) == 0.0


def test_weighted_probabilities_are_calibrated_back_and_the_threshold_serves_accuracy() -> None:
    labels, signal = _rare_positives(20_000, 0)
    weights = [0.5 / 0.97, 0.5 / 0.03]  # the stage's "reweight": total / (classes * count)
    weighted = _weighted_probabilities(signal, weights[1] / weights[0])
    # Argmax of the weighted model flags far too many rows: worse than always answering "no".
    assert score("accuracy", labels, weighted.argmax(axis=1), 2) < float(np.mean(labels == 0)) - 0.1

    rule = choose_decision(labels, weighted, weights, "accuracy")
    calibrated = calibrate(weighted, rule.logit_offsets)
    np.testing.assert_allclose(calibrated, _weighted_probabilities(signal, 1.0), atol=1e-9)
    assert score("accuracy", labels, decide(calibrated, rule), 2) >= float(np.mean(labels == 0))

    balanced = choose_decision(labels, weighted, weights, "balancedAccuracy")
    assert balanced.threshold is not None
    assert rule.threshold is not None
    assert balanced.threshold < rule.threshold  # rarer class answered more often
    assert score("balancedAccuracy", labels, decide(calibrated, balanced), 2) > 0.7


def test_ties_keep_the_plain_most_probable_answer() -> None:
    labels = np.array([0, 1, 0, 1])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    rule = choose_decision(labels, probabilities, None, "accuracy")
    assert rule.threshold == 0.5
    assert rule.logit_offsets == [0.0, 0.0]


def _encoded(classes: int) -> tuple[FeatureTransform, EncodedSplit, np.ndarray]:
    train, test = _frame(600, 0, classes), _frame(300, 1, classes)
    dataset = DatasetSpec(uri="builtin://iris", task="classification", categorical_columns=["city"])
    transform = fit_transform(train, ["city"], dataset, FeaturesSpec(), DataQualitySpec())
    rows = EncodedSplit(encode_raw(transform, train), encode_target(transform, train["target"]))
    return transform, rows, encode_raw(transform, test)


@pytest.mark.parametrize("family", ["lightgbm", "mlp", "mlp-int8"])
@pytest.mark.parametrize("classes", [2, 3])
def test_the_served_graph_answers_and_reports_what_the_rule_says(family: str, classes: int) -> None:
    transform, rows, raw = _encoded(classes)
    architecture = Architecture(
        family="lightgbm" if family == "lightgbm" else "mlp",
        inputs=transform.input_width,
        outputs=classes,
        hidden=[] if family == "lightgbm" else [8],
        task="classification",
    )
    model: AnyModel
    if family == "lightgbm":
        model = build_tree_model(transform, architecture, rows.raw, rows.target, None, TreeSettings(trees=30), 0)
        graph = export_tree_onnx(model)
    else:
        model = build_model(transform, architecture, rows, 0)
        graph = export_onnx(model)
    rule = Decision(
        metric="accuracy",
        logit_offsets=[-np.log(2.0 + c) for c in range(classes)],
        class_scales=[0.3, 0.7] if classes == 2 else [1.0, 1.0, 1.0],
        threshold=0.3 if classes == 2 else None,
    )
    folded = fold_into_graph(graph, rule)
    if family == "mlp-int8":
        folded = quantize_dynamic_int8(folded)
    predictions, probabilities = open_session(folded, 1).run(None, {"features": raw})
    expected = calibrate(predict(model, raw), rule.logit_offsets)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5 if family != "mlp-int8" else 0.05)
    # The answer is the rule applied to the probabilities the graph itself serves.
    np.testing.assert_array_equal(predictions, decide(probabilities, rule))
