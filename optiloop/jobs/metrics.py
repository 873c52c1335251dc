"""Task metrics, computed the same way for trials, final models and compression candidates."""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

from ..api.spec import Task

HIGHER_IS_BETTER = {"accuracy", "f1", "rocAuc", "r2", "balancedAccuracy"}


def label_score(metric: str, labels: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """``metric`` of class predictions: accuracy, f1 (binary: of the second class; else macro) or
    balanced accuracy (mean recall over the classes present in ``labels``: 1/classes for a model
    that always answers one class)."""
    labels = np.asarray(labels).astype(np.int64)
    predicted = np.asarray(predicted).astype(np.int64)
    if metric == "accuracy":
        return float(np.mean(labels == predicted)) if len(labels) else math.nan
    recalls, f1s = [], []
    for c in range(classes):
        actual, said = labels == c, predicted == c
        hits = float(np.sum(actual & said))
        recall = hits / float(actual.sum()) if actual.any() else math.nan
        precision = hits / float(said.sum()) if said.any() else 0.0
        recalls.append(recall)
        f1s.append(0.0 if hits == 0 else 2 * precision * recall / (precision + recall))
    if metric == "f1":
        return f1s[1] if classes == 2 else float(np.mean(f1s))
    present = [r for r in recalls if not math.isnan(r)]
    return float(np.mean(present)) if present else math.nan


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray | None = None
) -> dict[str, float]:
    """accuracy, f1 (binary, or macro for several classes), balanced accuracy and ROC AUC
    (one-vs-rest macro); the answers are ``predicted`` when given (a graph with a decision
    threshold), else the most probable class."""
    classes = probabilities.shape[1]
    if predicted is None:
        predicted = probabilities.argmax(axis=1)
    result = {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "f1": float(skm.f1_score(labels, predicted, average="binary" if classes == 2 else "macro", zero_division=0)),
        "balancedAccuracy": label_score("balancedAccuracy", labels, predicted, classes),
    }
    try:
        if classes == 2:
            result["rocAuc"] = float(skm.roc_auc_score(labels, probabilities[:, 1]))
        else:
            result["rocAuc"] = float(
                skm.roc_auc_score(labels, probabilities, multi_class="ovr", labels=list(range(classes)))
            )
    except ValueError:  # a split that lacks a class has no AUC
        result["rocAuc"] = float("nan")
    return result


def regression_metrics(targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """rmse, mae and r2."""
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(targets, predictions))),
        "mae": float(skm.mean_absolute_error(targets, predictions)),
        "r2": float(skm.r2_score(targets, predictions)),
    }


def task_metrics(
    task: Task, targets: np.ndarray, outputs: np.ndarray, predicted: np.ndarray | None = None
) -> dict[str, float]:
    """Metrics for ``task`` from model outputs (probabilities for classification, with the
    answers ``predicted`` when they are not the most probable class); all NaN when the outputs
    are not finite, so a broken model scores as failed instead of raising."""
    if not np.all(np.isfinite(outputs)):
        names = ("accuracy", "f1", "balancedAccuracy", "rocAuc") if task == "classification" else ("rmse", "mae", "r2")
        return dict.fromkeys(names, float("nan"))
    if task == "classification":
        return classification_metrics(targets, outputs, predicted)
    return regression_metrics(targets, outputs)


def improvement(metric: str, new: float, best: float) -> float:
    """How much better ``new`` is than ``best`` (positive is better), whatever the direction."""
    return new - best if metric in HIGHER_IS_BETTER else best - new
