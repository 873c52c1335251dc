"""Task metrics, computed the same way for trials, final models and compression candidates."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from ..api.spec import Task

HIGHER_IS_BETTER = {"accuracy", "f1", "rocAuc", "r2"}


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """accuracy, f1 (binary, or macro for several classes) and ROC AUC (one-vs-rest macro)."""
    predicted = probabilities.argmax(axis=1)
    classes = probabilities.shape[1]
    result = {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "f1": float(skm.f1_score(labels, predicted, average="binary" if classes == 2 else "macro", zero_division=0)),
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


def task_metrics(task: Task, targets: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """Metrics for ``task`` from model outputs (probabilities for classification); all NaN when
    the outputs are not finite, so a broken model scores as failed instead of raising."""
    if not np.all(np.isfinite(outputs)):
        names = ("accuracy", "f1", "rocAuc") if task == "classification" else ("rmse", "mae", "r2")
        return dict.fromkeys(names, float("nan"))
    if task == "classification":
        return classification_metrics(targets, outputs)
    return regression_metrics(targets, outputs)


def improvement(metric: str, new: float, best: float) -> float:
    """How much better ``new`` is than ``best`` (positive is better), whatever the direction."""
    return new - best if metric in HIGHER_IS_BETTER else best - new
