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
from .search import Choice, FloatParam, IntParam, Param


def _int(r: IntRange) -> Param:
    return Choice((r.min,)) if r.min == r.max else IntParam(r.min, r.max, r.log)


def _float(r: FloatRange) -> Param:
    return Choice((r.min,)) if r.min == r.max else FloatParam(r.min, r.max, r.log)


def _middle(r: IntRange | FloatRange) -> float:
    """The middle of a range (geometric for logarithmic ones)."""
    return float((r.min * r.max) ** 0.5 if r.log else (r.min + r.max) / 2)


def search_space(spec: ModelOptimizationSpec, class_weights: bool = False) -> dict[str, Param]:
    """Parameters tuning samples for ``spec`` (whether to weigh classes too, when the
    data-quality stage set ``class_weights``)."""
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
    if class_weights:
        space["class_weighted"] = Choice((False, True))
    families = spec.model.families()
    space["family"] = Choice(families)
    if "lightgbm" in families:
        trees = spec.model.trees
        # A grid is the product of every parameter's points; only leaves joins it, the other
        # tree settings sit at the middle of their ranges (early stopping picks the rounds).
        grid = spec.tuning.algorithm == "grid"
        space.update(
            {
                "trees": Choice((trees.trees.max,)) if grid else _int(trees.trees),
                "leaves": _int(trees.leaves),
                "tree_learning_rate": Choice((_middle(trees.learning_rate),)) if grid else _float(trees.learning_rate),
                "min_child_samples": Choice((round(_middle(trees.min_child_samples)),))
                if grid
                else _int(trees.min_child_samples),
                "feature_fraction": Choice((_middle(trees.feature_fraction),))
                if grid
                else _float(trees.feature_fraction),
                "l2": Choice((_middle(trees.l2),)) if grid else _float(trees.l2),
            }
        )
    if arch.dropout is not None:
        space["dropout"] = _float(arch.dropout)
    if hyper.weight_decay is not None:
        space["weight_decay"] = _float(hyper.weight_decay)
    return space


def first_trials(space: dict[str, Param], families: tuple[str, ...]) -> list[dict[str, Any]]:
    """Starting points tried before the sampler's own choices when several families compete:
    LightGBM near its library defaults, a linear model (the untuned baselines tuning must beat)
    and an MLP, so even a short search has measured every family. Values are clipped into the
    spec's ranges."""
    if len(families) < 2 or "family" not in space:
        return []

    def fit(name: str, value: float) -> Any:
        param = space.get(name)
        if isinstance(param, Choice):
            return param.options[0]
        if isinstance(param, IntParam):
            return int(min(max(round(value), param.low), param.high))
        if isinstance(param, FloatParam):
            return float(min(max(value, param.low), param.high))
        return value

    starts: list[dict[str, Any]] = []
    if "lightgbm" in families:
        trees = {"trees": 500, "leaves": 31, "tree_learning_rate": 0.1, "min_child_samples": 20}
        trees |= {"feature_fraction": 1.0, "l2": 0.0}
        starts.append({"family": "lightgbm", **{name: fit(name, value) for name, value in trees.items()}})
    if "linear" in families:
        starts.append({"family": "linear", "learning_rate": fit("learning_rate", 1e-2)})
    if "mlp" in families:
        starts.append({"family": "mlp"})  # its architecture from the sampler
    return starts


def decode(
    params: dict[str, Any], spec: ModelOptimizationSpec, transform: FeatureTransform
) -> tuple[Architecture, TrainingConfig]:
    """The architecture and training configuration a trial's parameters stand for."""
    # Studies begun before families existed hold MLP trials without a family parameter.
    family = params.get("family", "mlp")
    layers = int(params["layers"])
    free = [int(params[f"width_{i}"]) for i in range(layers)] if params["shape"] == "free" else None
    task = spec.dataset.task
    outputs = len(transform.classes) if task == "classification" else 1
    if family == "lightgbm":
        architecture = Architecture(
            family="lightgbm",
            inputs=len(transform.columns),  # trees read the encoded raw features directly
            outputs=outputs,
            hidden=[],
            task=task,
            trees=int(params["trees"]),
            leaves=int(params["leaves"]),
            min_child_samples=int(params["min_child_samples"]),
            feature_fraction=float(params["feature_fraction"]),
            l2=float(params["l2"]),
        )
    else:
        architecture = Architecture(
            family=family,
            inputs=transform.input_width,
            outputs=outputs,
            hidden=[] if family == "linear" else hidden_widths(layers, int(params["width"]), params["shape"], free),
            activation=params["activation"],
            dropout=float(params.get("dropout", spec.regularization.dropout or 0.0)),
            batch_norm=bool(params["batch_norm"]) and family == "mlp",
            task=task,
        )
    stopping = spec.regularization.early_stopping
    training = TrainingConfig(
        learning_rate=float(params["tree_learning_rate" if family == "lightgbm" else "learning_rate"]),
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
        class_weighted=bool(params.get("class_weighted", True)),
    )
    return architecture, training
