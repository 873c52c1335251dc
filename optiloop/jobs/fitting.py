"""Fit one configuration of any family and score it: on the validation split, or by k-fold
cross-validation over training + validation rows when the data is small.

On a few hundred rows a single validation split of a few dozen rows cannot tell good
configurations from lucky ones; k folds score every labelled row outside the test split once,
out of fold, at k times the cost, which small data can afford. The scores are the task
metrics of the pooled out-of-fold predictions and the row-weighted mean validation loss; the
boosting rounds or epochs to retrain with are the folds' mean.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..api.jobs import Architecture, FeatureTransform, TrainingConfig
from .linear import fit_linear
from .metrics import task_metrics
from .training import EncodedSplit, EpochRecord, build_model, evaluate, predict, train_model
from .trees import AnyModel, build_tree_model, settings_of

AUTO_FOLDS = ((500, 5), (2000, 3))
"""(most rows, folds): cross-validation when training + validation rows are at most this many."""


def choose_folds(rows: int, setting: int | None) -> int:
    """Folds to score with: the spec's ``model.folds`` when given (1 = the validation split),
    else 5 up to 500 rows, 3 up to 2,000, and the validation split above."""
    if setting is not None:
        return max(1, min(setting, rows // 2))
    for limit, folds in AUTO_FOLDS:
        if rows <= limit:
            return folds
    return 1


@dataclass
class Scored:
    """A fitted model, its validation scores and the rounds (or epochs) it kept."""

    model: AnyModel
    scores: dict[str, float]
    rounds: int


def fit_and_score(
    transform: FeatureTransform,
    architecture: Architecture,
    training: TrainingConfig,
    train: EncodedSplit,
    validation: EncodedSplit,
    class_weights: list[float] | None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> Scored:
    """Train on ``train`` with early stopping on ``validation`` (the linear family in closed
    form); score on ``validation``."""
    if architecture.family == "lightgbm":
        trees = build_tree_model(
            transform,
            architecture,
            train.raw,
            train.target,
            (validation.raw, validation.target),
            settings_of(architecture, training.learning_rate),
            training.seed,
            class_weights,
        )
        return Scored(trees, evaluate(trees, validation), trees.rounds())
    model = build_model(transform, architecture, train, training.seed)
    if architecture.family == "linear":
        fit_linear(model, train, class_weights, training.seed)
        return Scored(model, evaluate(model, validation), 1)
    outcome = train_model(model, train, validation, training, class_weights=class_weights, on_epoch=on_epoch)
    return Scored(model, dict(outcome.validation), max(outcome.best_epoch, 1))


def _subset(split: EncodedSplit, index: np.ndarray) -> EncodedSplit:
    return EncodedSplit(split.raw[index], split.target[index])


def fold_indices(rows: EncodedSplit, folds: int, task: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) row indices per fold; stratified by class when every class allows it."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if task == "classification" and np.bincount(rows.target.astype(np.int64)).min(initial=0) >= folds:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        return list(splitter.split(rows.raw, rows.target))
    return list(KFold(folds, shuffle=True, random_state=seed).split(rows.raw))


def cross_validate(
    transform: FeatureTransform,
    architecture: Architecture,
    training: TrainingConfig,
    rows: EncodedSplit,
    folds: int,
    class_weights: list[float] | None,
    on_fold: Callable[[int, dict[str, float]], None] | None = None,
) -> Scored:
    """Score by ``folds``-fold cross-validation on ``rows``; ``on_fold(k, scores so far)`` hears
    of each fold (a pruner may stop the trial there). The model returned is the last fold's."""
    task = architecture.task
    width = architecture.outputs if task == "classification" else 1
    outputs = np.zeros((len(rows), width), dtype=np.float64)
    seen = np.zeros(len(rows), dtype=bool)
    loss_sum, rounds = 0.0, []
    scored: Scored | None = None
    for number, (train_index, valid_index) in enumerate(fold_indices(rows, folds, task, training.seed), start=1):
        validation = _subset(rows, valid_index)
        scored = fit_and_score(transform, architecture, training, _subset(rows, train_index), validation, class_weights)
        predicted = predict(scored.model, validation.raw)
        outputs[valid_index] = predicted.reshape(len(valid_index), width)
        seen[valid_index] = True
        loss_sum += scored.scores["loss"] * len(valid_index)
        rounds.append(scored.rounds)
        if on_fold is not None:
            on_fold(number, _pooled(task, rows, outputs, seen, loss_sum))
    assert scored is not None
    return Scored(scored.model, _pooled(task, rows, outputs, seen, loss_sum), max(1, round(float(np.mean(rounds)))))


def _pooled(task: str, rows: EncodedSplit, outputs: np.ndarray, seen: np.ndarray, loss_sum: float) -> dict[str, float]:
    """Metrics of the out-of-fold predictions made so far, and their mean loss."""
    predicted = outputs[seen] if task == "classification" else outputs[seen, 0]
    metrics = task_metrics(task, rows.target[seen], predicted)  # type: ignore[arg-type]
    return {"loss": loss_sum / max(int(seen.sum()), 1), **metrics}
