"""The spec's search space as a :mod:`tuning` space, and sampled parameters back as a model.

The space is static (every trial samples the same parameters) so every sampler,
including GP and CMA-ES, models all of it; with the ``free`` shape, one width per possible
layer is sampled and the unused ones are ignored.
"""

from __future__ import annotations

from typing import Any

from ..api.jobs import Architecture, FeatureTransform, TrainingConfig
from ..api.spec import FloatRange, IntRange, ModelOptimizationSpec
from .models import hidden_widths
from .tuning import Choice, FloatParam, IntParam, Param


def _int(r: IntRange) -> Param:
    return Choice((r.min,)) if r.min == r.max else IntParam(r.min, r.max, r.log)


def _float(r: FloatRange) -> Param:
    return Choice((r.min,)) if r.min == r.max else FloatParam(r.min, r.max, r.log)


def search_space(spec: ModelOptimizationSpec) -> dict[str, Param]:
    """Parameters tuning samples for ``spec``."""
    arch = spec.model.search
    hyper = spec.tuning.search
    shapes = tuple(s for s in arch.shapes if not (spec.tuning.algorithm == "grid" and s == "free")) or ("constant",)
    space: dict[str, Param] = {
        "layers": _int(arch.layers),
        "width": _int(arch.width),
        "shape": Choice(shapes),
        "activation": Choice(tuple(arch.activations)),
        "batch_norm": Choice(tuple(arch.batch_norm)),
        "learning_rate": _float(hyper.learning_rate),
        "batch_size": Choice(tuple(hyper.batch_size)),
        "optimizer": Choice(tuple(hyper.optimizers)),
        "epochs": _int(hyper.epochs),
        "schedule": Choice(tuple(hyper.schedules)),
    }
    if "free" in shapes:
        for index in range(arch.layers.max):
            space[f"width_{index}"] = _int(arch.width)
    if arch.dropout is not None:
        space["dropout"] = _float(arch.dropout)
    if hyper.weight_decay is not None:
        space["weight_decay"] = _float(hyper.weight_decay)
    return space


def decode(
    params: dict[str, Any], spec: ModelOptimizationSpec, transform: FeatureTransform
) -> tuple[Architecture, TrainingConfig]:
    """The architecture and training configuration a trial's parameters stand for."""
    layers = int(params["layers"])
    free = [int(params[f"width_{i}"]) for i in range(layers)] if params["shape"] == "free" else None
    task = spec.dataset.task
    architecture = Architecture(
        inputs=transform.input_width,
        outputs=len(transform.classes) if task == "classification" else 1,
        hidden=hidden_widths(layers, int(params["width"]), params["shape"], free),
        activation=params["activation"],
        dropout=float(params.get("dropout", spec.regularization.dropout or 0.0)),
        batch_norm=bool(params["batch_norm"]),
        task=task,
    )
    stopping = spec.regularization.early_stopping
    training = TrainingConfig(
        learning_rate=float(params["learning_rate"]),
        batch_size=int(params["batch_size"]),
        optimizer=params["optimizer"],
        weight_decay=float(params.get("weight_decay", spec.regularization.weight_decay or 0.0)),
        epochs=int(params["epochs"]),
        schedule=params["schedule"],
        gradient_clip_norm=spec.regularization.gradient_clip_norm,
        early_stopping_patience=stopping.patience if stopping.enabled else None,
        early_stopping_min_delta=stopping.min_delta,
        monitor=stopping.monitor,
        seed=spec.dataset.seed,
    )
    return architecture, training
