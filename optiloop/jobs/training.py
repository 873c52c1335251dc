"""Train one model: AdamW or SGD, optional cosine schedule, class weights, gradient clipping,
and early stopping on a validation quantity that restores the best weights. A loss that
turns NaN or infinite raises :class:`TrainingDivergedError`.

Deterministic for a given seed and thread count: the seed fixes initialization and batch
order. ``on_epoch`` sees every epoch's validation results; a tuner uses it to report and
to prune (by raising), which ends training at once.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..api.jobs import Architecture, FeatureTransform, TrainingConfig
from .errors import TrainingDivergedError
from .metrics import improvement, task_metrics
from .models import TabularModel
from .trees import AnyModel


@dataclass
class EncodedSplit:
    """A split ready for torch: encoded raw features and encoded targets."""

    raw: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.raw)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    validation: dict[str, float]


@dataclass
class TrainOutcome:
    """The trained model (best weights restored) and how training went."""

    model: TabularModel
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def validation(self) -> dict[str, float]:
        return self.history[self.best_epoch - 1].validation if self.history else {}


def build_model(
    transform: FeatureTransform, architecture: Architecture, train: EncodedSplit, seed: int
) -> TabularModel:
    """A freshly initialized model; regression targets are standardized with training statistics."""
    torch.manual_seed(seed)
    mean, std = 0.0, 1.0
    if architecture.task == "regression":
        mean, std = float(train.target.mean()), float(train.target.std()) or 1.0
    return TabularModel(transform, architecture, mean, std)


def predict(model: AnyModel, raw: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Probabilities (classification) or values (regression) for encoded raw rows."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(raw), batch_size):
            out = model(torch.from_numpy(raw[start : start + batch_size]))
            outputs.append(torch.softmax(out, dim=1) if model.task == "classification" else out)
    return torch.cat(outputs).numpy()


def loss_function(task: str, class_weights: list[float] | None) -> nn.Module:
    """Cross-entropy (optionally class-weighted) for classification, mean squared error for regression."""
    if task == "classification":
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        return nn.CrossEntropyLoss(weight=weight)
    return nn.MSELoss()


def scaled_target(model: AnyModel, target: np.ndarray) -> torch.Tensor:
    """Targets as the loss sees them: class indices, or standardized regression values."""
    if model.task == "classification":
        return torch.from_numpy(target).long()
    return ((torch.from_numpy(target).float() - model.target_mean) / model.target_std).unsqueeze(-1)


def evaluate(model: AnyModel, split: EncodedSplit, loss_fn: nn.Module | None = None) -> dict[str, float]:
    """Task metrics on ``split`` plus the loss the model is trained on."""
    loss_fn = loss_fn or loss_function(model.task, None)
    model.eval()
    with torch.inference_mode():
        raw = torch.from_numpy(split.raw)
        scaled = model.forward_scaled(raw)
        loss = float(loss_fn(scaled, scaled_target(model, split.target)))
    outputs = predict(model, split.raw)
    return {"loss": loss, **task_metrics(model.task, split.target, outputs)}


def train_model(
    model: TabularModel,
    train: EncodedSplit,
    validation: EncodedSplit,
    config: TrainingConfig,
    *,
    class_weights: list[float] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    batch_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    keep_best: bool = True,
) -> TrainOutcome:
    """Train ``model`` in place and return it with its history; the best epoch's weights are kept.

    ``batch_loss(outputs, index)`` replaces the task loss when given: it gets the model's
    (scaled) outputs for the training rows at ``index``. Distillation uses it to add the
    teacher's soft targets; validation and early stopping still use the true labels.
    ``keep_best=False`` keeps the last epoch's weights instead (for a retraining whose
    ``validation`` rows are also training rows, so the best validation epoch means nothing).
    """
    loss_fn = loss_function(model.task, class_weights)
    parameters = model.mlp.parameters()
    if config.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            parameters, lr=config.learning_rate, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(
            parameters, lr=config.learning_rate, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
        )
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
        if config.schedule == "cosine"
        else None
    )
    generator = torch.Generator().manual_seed(config.seed)
    raw = torch.from_numpy(train.raw)
    target = scaled_target(model, train.target)
    eval_loss = loss_function(model.task, None)
    higher_better = config.monitor != "loss" and improvement(config.monitor, 1.0, 0.0) > 0

    outcome = TrainOutcome(model)
    best_score = -math.inf if higher_better else math.inf
    best_state = copy.deepcopy(model.state_dict())
    since_best = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(raw), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            if len(index) < 2 and len(order) > 1:  # batch norm cannot train on a single row
                continue
            optimizer.zero_grad(set_to_none=True)
            outputs = model.forward_scaled(raw[index])
            loss = batch_loss(outputs, index) if batch_loss else loss_fn(outputs, target[index])
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"training diverged at epoch {epoch} (loss {float(loss.detach())}); "
                    f"learning rate {config.learning_rate:g} with {config.optimizer} is too high for this model"
                )
            loss.backward()
            if config.gradient_clip_norm:
                nn.utils.clip_grad_norm_(model.mlp.parameters(), config.gradient_clip_norm)
            optimizer.step()
            total += float(loss.detach()) * len(index)
            seen += len(index)
        if scheduler is not None:
            scheduler.step()

        record = EpochRecord(epoch, total / max(seen, 1), evaluate(model, validation, eval_loss))
        outcome.history.append(record)
        score = record.validation[config.monitor]
        gain = (score - best_score) if higher_better else (best_score - score)
        if not math.isfinite(best_score) or gain > config.early_stopping_min_delta:
            best_score, outcome.best_epoch, since_best = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        if on_epoch is not None:
            on_epoch(record)
        if config.early_stopping_patience is not None and since_best >= config.early_stopping_patience:
            outcome.stopped_early = epoch < config.epochs
            break
    if keep_best:
        model.load_state_dict(best_state)
    else:
        outcome.best_epoch = len(outcome.history)
    model.eval()
    return outcome
