"""A classifier's decision rule: calibrated probabilities and a threshold chosen for the user's metric.

Two things go wrong with uneven classes when the loss is weighted by class and the answer is the
most probable class. The weighted model's probabilities overstate the rare classes (weighting a
class by ``w`` multiplies its odds by ``w``), so the served probabilities are off; and the
implied threshold is whatever the weights made it, not the one the user's metric wants, which is
how a reweighted model scored 0.922 accuracy where always answering the majority scores 0.967.

The rule fixes both, in this order:

1. **Calibration.** The weighting is undone on the logits (``logit - log w``), which gives back
   the probabilities of the unweighted data (the prior correction for weighted cross-entropy and
   weighted boosting alike). These are the probabilities served.
2. **Threshold.** For two classes, the positive class is answered when its calibrated
   probability exceeds a threshold picked on held-out (out-of-fold) predictions to maximize
   the decision metric: the user's metric when it depends on the
   threshold (accuracy, f1), else balanced accuracy, which a model that always answers the
   majority cannot win (0.5 for two classes). Ties go to the threshold nearest 0.5, so the
   plain most-probable answer is kept unless another threshold really scores better, and it is
   kept outright when the held-out predictions rank the classes no better than chance (a
   threshold found then fits noise). With more than two classes only the calibration applies.

Both are folded into the exported graph (:func:`fold_into_graph`): the served ``predictions``
follow the threshold, the served ``probabilities`` stay calibrated, and neither the predictor nor
the drift monitor changes.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..api.jobs import Architecture, Decision, FeatureTransform, TrainingConfig
from ..api.spec import DEFAULT_METRIC, Metric, ModelOptimizationSpec, Objective, Task
from .fitting import fit_and_score, fold_indices
from .metrics import label_score, task_metrics
from .training import EncodedSplit, evaluate, predict
from .trees import AnyModel

DECISION_METRICS = ("accuracy", "f1", "balancedAccuracy")
"""Metrics a threshold is chosen for; any other user metric gets balanced accuracy."""

MAX_THRESHOLDS = 512
"""Thresholds tried at most (quantiles of the held-out probabilities): enough resolution for
splits of any size, and bounded work."""


COST_METRICS = ("latencyMs", "parameters")

MIN_DECISION_FOLDS = 3
"""Fewest folds of the out-of-fold predictions a threshold is chosen on."""


def user_metric(spec: ModelOptimizationSpec) -> Metric | None:
    """The first task-quality metric among the user's own objectives (None when they set none)."""
    return next((o.metric for o in spec.tuning.objectives or [] if o.metric not in COST_METRICS), None)


def run_objectives(spec: ModelOptimizationSpec, imbalanced: bool) -> list[Objective]:
    """The objectives a run tunes and reports: the user's, else ROC AUC on uneven classes (a model
    that always answers the majority scores 0.5 on it, where it would win accuracy; it judges the
    probabilities, which stay calibrated, not one threshold), else the task's default."""
    if spec.tuning.objectives:
        return list(spec.tuning.objectives)
    if spec.dataset.task == "classification" and imbalanced:
        return [Objective(metric="rocAuc")]
    return [Objective(metric=DEFAULT_METRIC[spec.dataset.task])]


def primary_of(objectives: list[Objective], task: Task) -> Metric:
    """The first task-quality metric of ``objectives`` (the task's default when there is none)."""
    return next((o.metric for o in objectives if o.metric not in COST_METRICS), DEFAULT_METRIC[task])


def decision_metric(user_metric: Metric | None, imbalanced: bool) -> str:
    """The metric the threshold is chosen for: the user's when it depends on the threshold,
    balanced accuracy when the user chose another (ROC AUC, say) or none on uneven classes, and
    accuracy (the default) otherwise."""
    if user_metric in ("accuracy", "f1"):
        return user_metric
    if user_metric is not None or imbalanced:
        return "balancedAccuracy"
    return "accuracy"


def calibration_offsets(class_weights: list[float] | None, classes: int) -> list[float]:
    """Per-class logit offsets undoing a training loss weighted by ``class_weights`` (zeros without)."""
    if not class_weights:
        return [0.0] * classes
    return [-math.log(weight) for weight in class_weights]


def calibrate(probabilities: np.ndarray, offsets: list[float]) -> np.ndarray:
    """``probabilities`` with the logit ``offsets`` applied (softmax(logit + offset), row-normalized)."""
    scaled = np.asarray(probabilities, dtype=np.float64) * np.exp(np.asarray(offsets, dtype=np.float64))
    return scaled / scaled.sum(axis=1, keepdims=True)


def decide(probabilities: np.ndarray, decision: Decision | None) -> np.ndarray:
    """Class indices that a graph with ``decision`` folded in answers for calibrated ``probabilities``."""
    if decision is None:
        return np.asarray(probabilities).argmax(axis=1)
    return (np.asarray(probabilities, dtype=np.float64) * np.asarray(decision.class_scales)).argmax(axis=1)


def ranks_better_than_chance(labels: np.ndarray, scores: np.ndarray, z: float = 2.0) -> bool:
    """Whether ``scores`` rank the second class above the first clearly better than chance: ROC
    AUC more than ``z`` standard errors above 0.5 (its spread when scores and labels are
    unrelated, ``sqrt((n0 + n1 + 1) / (12 n0 n1))``)."""
    labels = np.asarray(labels).astype(np.int64)
    n1, n0 = int(np.sum(labels == 1)), int(np.sum(labels == 0))
    if n1 == 0 or n0 == 0:
        return False
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(labels, scores))
    return auc > 0.5 + z * math.sqrt((n0 + n1 + 1) / (12.0 * n0 * n1))


def _scales(threshold: float) -> list[float]:
    # Class 1 wins argmax(p * scales) exactly when p1 * (1 - t) > p0 * t, i.e. when p1 > t.
    return [threshold, 1.0 - threshold]


def choose_decision(
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_weights: list[float] | None,
    metric: str,
) -> Decision:
    """The rule for held-out ``labels`` and the (uncalibrated) ``probabilities`` a model trained
    with ``class_weights`` gave them (see the module's docstring)."""
    classes = probabilities.shape[1]
    offsets = calibration_offsets(class_weights, classes)
    calibrated = calibrate(probabilities, offsets)
    if classes != 2 or len(labels) == 0:
        return Decision(metric=metric, logit_offsets=offsets, class_scales=[1.0] * classes, threshold=None)
    positive = calibrated[:, 1]
    if not ranks_better_than_chance(labels, positive):
        # Any threshold found here would fit noise (on pure noise one answered the rare class
        # for every row); the plain most probable class is the honest answer, and the run's
        # warnings say what it amounts to.
        return Decision(metric=metric, logit_offsets=offsets, class_scales=_scales(0.5), threshold=0.5)
    cuts = np.unique(positive)
    if len(cuts) > MAX_THRESHOLDS:
        cuts = np.unique(np.quantile(positive, np.linspace(0.0, 1.0, MAX_THRESHOLDS)))
    # Midpoints between neighbouring probabilities, plus 0.5 itself (the plain argmax).
    candidates = np.unique(np.concatenate([[0.5], (cuts[:-1] + cuts[1:]) / 2.0]))
    best, best_value = 0.5, -math.inf
    for threshold in sorted(candidates.tolist(), key=lambda t: (abs(t - 0.5), t)):
        predicted = (positive > threshold).astype(np.int64)
        value = label_score(metric, labels, predicted, classes)
        if value > best_value + 1e-12:
            best, best_value = threshold, value
    return Decision(metric=metric, logit_offsets=offsets, class_scales=_scales(best), threshold=best)


def is_identity(decision: Decision | None) -> bool:
    """Whether ``decision`` changes nothing (no offsets, equal scales)."""
    if decision is None:
        return True
    return all(o == 0.0 for o in decision.logit_offsets) and len(set(decision.class_scales)) <= 1


def fold_into_graph(onnx_bytes: bytes, decision: Decision | None) -> bytes:
    """A classifier graph with ``decision`` in it: the offsets added to the logits that feed the
    ``probabilities`` softmax, and ``predictions`` the argmax of the probabilities times the
    class scales. Graphs without a ``probabilities`` output (regression) come back unchanged."""
    if is_identity(decision):
        return onnx_bytes
    assert decision is not None
    proto = onnx.load_from_string(onnx_bytes)
    graph = proto.graph
    if "probabilities" not in {o.name for o in graph.output}:
        return onnx_bytes
    softmax = next(node for node in graph.node if "probabilities" in node.output)
    argmax = next(node for node in graph.node if "predictions" in node.output)
    if softmax.op_type != "Softmax" or argmax.op_type != "ArgMax":
        raise ValueError(f"unexpected classifier head: {softmax.op_type} -> {argmax.op_type}")
    classes = len(decision.class_scales)
    graph.initializer.extend(
        [
            helper.make_tensor("decision_offsets", TensorProto.FLOAT, [classes], decision.logit_offsets),
            helper.make_tensor("decision_scales", TensorProto.FLOAT, [classes], decision.class_scales),
        ]
    )
    logits = softmax.input[0]
    calibrate_node = helper.make_node("Add", [logits, "decision_offsets"], ["calibrated_logits"], name="calibrate")
    softmax.input[0] = "calibrated_logits"
    weigh = helper.make_node("Mul", ["probabilities", "decision_scales"], ["decision_scores"], name="threshold")
    argmax.input[0] = "decision_scores"
    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        if node is softmax:
            graph.node.append(calibrate_node)
        graph.node.append(node)
        if node is softmax:
            graph.node.append(weigh)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def held_out_probabilities(
    transform: FeatureTransform,
    architecture: Architecture,
    training: TrainingConfig,
    train: EncodedSplit,
    validation: EncodedSplit,
    folds: int,
    class_weights: list[float] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of rows the configuration did not learn from, out-of-fold over
    training + validation rows with ``folds`` folds (the folds the trials were scored with, at
    least :data:`MIN_DECISION_FOLDS`): a threshold picked on the validation split alone would
    rest on a handful of rare-class rows (5 of 180 at 3% positives)."""
    folds = max(folds, MIN_DECISION_FOLDS)
    rows = EncodedSplit(np.concatenate([train.raw, validation.raw]), np.concatenate([train.target, validation.target]))
    outputs = np.zeros((len(rows), architecture.outputs), dtype=np.float64)
    for train_index, valid_index in fold_indices(rows, folds, "classification", training.seed):
        held = EncodedSplit(rows.raw[valid_index], rows.target[valid_index])
        learn = EncodedSplit(rows.raw[train_index], rows.target[train_index])
        scored = fit_and_score(transform, architecture, training, learn, held, class_weights)
        outputs[valid_index] = predict(scored.model, held.raw)
    return rows.target, outputs


def majority_score(metric: str, train_labels: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """``metric`` on ``labels`` of a model that always answers the most frequent training class
    (ROC AUC: 0.5, since such a model ranks nothing)."""
    if metric == "rocAuc":
        return 0.5
    majority = int(np.bincount(np.asarray(train_labels).astype(np.int64), minlength=classes).argmax())
    return label_score(metric, labels, np.full(len(labels), majority, dtype=np.int64), classes)


def evaluate_decided(model: AnyModel, split: EncodedSplit, decision: Decision | None) -> dict[str, float]:
    """:func:`~optiloop.jobs.training.evaluate` as the served graph would score: probabilities
    calibrated and answers thresholded by ``decision`` (the loss stays the training loss)."""
    scores = evaluate(model, split)
    if decision is None or model.task != "classification":
        return scores
    probabilities = calibrate(predict(model, split.raw), decision.logit_offsets)
    return {
        "loss": scores["loss"],
        **task_metrics("classification", split.target, probabilities, decide(probabilities, decision)),
    }


def delivered_warnings(
    model: AnyModel,
    test: EncodedSplit,
    train_labels: np.ndarray,
    class_names: list[str],
    decision: Decision | None,
    metrics: list[str],
) -> list[str]:
    """What the delivered classifier does on the test split that a user would not expect: a class
    it never answers, or a score on one of ``metrics`` (the run's primary metric and the
    threshold's) below always answering the most frequent training class."""
    if model.task != "classification" or len(test) == 0:
        return []
    classes = len(class_names)
    probabilities = predict(model, test.raw)
    if decision is not None:
        probabilities = calibrate(probabilities, decision.logit_offsets)
    answers = decide(probabilities, decision)
    warnings: list[str] = []
    never = [class_names[i] for i in sorted(set(test.target.astype(np.int64).tolist()) - set(answers.tolist()))]
    if never:
        warnings.append(f"the model never predicts class {', '.join(map(str, never[:5]))} on the test split")
    majority = class_names[int(np.bincount(np.asarray(train_labels).astype(np.int64), minlength=classes).argmax())]
    scores = task_metrics("classification", test.target, probabilities, answers)
    for metric in dict.fromkeys(metrics):
        value, trivial = scores.get(metric, math.nan), majority_score(metric, train_labels, test.target, classes)
        if value < trivial:
            warnings.append(
                f"test {metric} {value:.4f} is below always answering the most frequent class "
                f"{majority!s} ({trivial:.4f})"
            )
    return warnings
