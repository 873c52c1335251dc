"""Compression steps, one class each behind the :class:`Step` protocol.

A step of ``spec.compression.steps`` says *what kind* of compression to try (prune, distill,
quantize); which concrete steps that means depends on the model family the chain has reached,
and :func:`steps_for` is the one place that decides it:

- an MLP: structured or unstructured pruning, distillation into a narrower MLP, and int8 or
  fp16 quantization of its ONNX graph;
- a linear model (an MLP without hidden layers): unstructured pruning, distillation and
  quantization; structured pruning has no hidden neuron to remove and is skipped;
- a LightGBM ensemble: a prune step gives two candidates, its first boosting rounds only
  (:class:`FewerTrees`) and the same settings retrained with fewer leaves per tree
  (:class:`FewerLeaves`); a distill step trains a small MLP student on the ensemble's outputs;
  quantization is skipped with the reason, since ONNX Runtime's tree operator compares and adds
  in float32 whatever precision the thresholds are stored in, so there is nothing to speed up.

Every step makes a :class:`Made`: the model and the ONNX graph that would be served. The
compression stage measures each one; nothing here assumes a step helps.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np
from torch import nn

from ..api.jobs import TrainingConfig
from ..api.spec import CompressionStep, DistillStep, PruneStep, QuantizeStep
from . import distill as distillation
from . import prune as pruning
from .errors import CompressionError
from .models import TabularModel
from .onnx_export import quantize_dynamic_int8, quantize_static_int8, to_fp16_storage
from .training import EncodedSplit, train_model
from .trees import AnyModel, TreeModel, build_tree_model, settings_of

Precision = Literal["fp32", "fp16", "int8"]

FINE_TUNE_LR_FACTOR = 0.3
"""Fine-tuning after pruning starts from the tuned learning rate scaled down: the weights are
already good, so large steps would undo more than they repair."""


@dataclass(frozen=True)
class StepContext:
    """What a step may learn from: the training and validation rows, the tuned training settings,
    the class weights the tuned model was trained with (or None), and the run's seed."""

    train: EncodedSplit
    validation: EncodedSplit
    training: TrainingConfig
    class_weights: list[float] | None
    seed: int


@dataclass(frozen=True)
class Made:
    """A step's result: the model its graph computes, the graph, its precision, and whether later
    steps start from this model (a new model does; a quantized graph of the same model does not)."""

    model: AnyModel
    onnx_bytes: bytes
    precision: Precision
    continues_chain: bool


Exporter = Callable[[AnyModel], bytes]
"""A model's fp32 ONNX graph (cached by the caller, so a model is exported once)."""


class Step(Protocol):
    """One concrete compression step."""

    @property
    def name(self) -> str:
        """The candidate's name after its step number (``prune-structured`` -> ``1-prune-structured``)."""
        ...

    def describe(self) -> str:
        """A few words for the report's chain of steps."""
        ...

    def apply(self, model: AnyModel, export: Exporter, context: StepContext) -> Made:
        """Compress ``model``; raise :class:`CompressionError` (or a library's error) when it cannot."""
        ...


def _percent(amount: float) -> str:
    return f"{math.floor(amount * 100 + 0.5)}%"


# --- MLP pruning -------------------------------------------------------------


def _fine_tune_config(training: TrainingConfig, epochs: int) -> TrainingConfig:
    patience = training.early_stopping_patience
    return training.model_copy(
        update={
            "epochs": epochs,
            "learning_rate": training.learning_rate * FINE_TUNE_LR_FACTOR,
            "early_stopping_patience": None if patience is None else min(patience, epochs),
        }
    )


def _fine_tune(model: TabularModel, settings: PruneStep, context: StepContext) -> None:
    if settings.fine_tune_epochs > 0:
        train_model(
            model,
            context.train,
            context.validation,
            _fine_tune_config(context.training, settings.fine_tune_epochs),
            class_weights=context.class_weights,
        )


def _mlp(model: AnyModel, what: str) -> TabularModel:
    if not isinstance(model, TabularModel):
        raise CompressionError(f"{what} applies to a neural network, not to a {model.architecture.family} model")
    return model


@dataclass(frozen=True)
class StructuredPrune:
    """Remove the least important hidden neurons (a really smaller, faster dense model), then fine-tune."""

    settings: PruneStep
    name: str = "prune-structured"

    def describe(self) -> str:
        return pruning.describe(self.settings)

    def apply(self, model: AnyModel, export: Exporter, context: StepContext) -> Made:
        smaller = pruning.prune_structured(_mlp(model, "structured pruning"), self.settings.amount, self.settings.scope)
        _fine_tune(smaller, self.settings, context)
        return Made(smaller, export(smaller), "fp32", continues_chain=True)


@dataclass(frozen=True)
class UnstructuredPrune:
    """Zero the smallest weights (masks held through fine-tuning); dense kernels gain nothing,
    which the measurement shows."""

    settings: PruneStep
    name: str = "prune-unstructured"

    def describe(self) -> str:
        return pruning.describe(self.settings)

    def apply(self, model: AnyModel, export: Exporter, context: StepContext) -> Made:
        result = copy.deepcopy(_mlp(model, "unstructured pruning"))
        masked: list[nn.Linear] = pruning.prune_unstructured(result, self.settings.amount, self.settings.scope)
        _fine_tune(result, self.settings, context)
        pruning.make_permanent(masked)
        return Made(result, export(result), "fp32", continues_chain=True)


# --- tree ensembles ----------------------------------------------------------


def _trees(model: AnyModel, what: str) -> TreeModel:
    if not isinstance(model, TreeModel):
        raise CompressionError(f"{what} applies to a tree ensemble, not to a {model.architecture.family} model")
    return model


@dataclass(frozen=True)
class FewerTrees:
    """A tree ensemble's first boosting rounds only (``amount`` of them dropped, no retraining):
    the earliest trees carry the most signal, and the gates judge what the rest were worth."""

    amount: float
    name: str = "prune-trees"

    def describe(self) -> str:
        return f"prune trees {_percent(self.amount)}"

    def apply(self, model: AnyModel, export: Exporter, context: StepContext) -> Made:
        ensemble = _trees(model, "keeping fewer trees")
        rounds = ensemble.rounds()
        keep = max(1, round(rounds * (1.0 - self.amount)))
        if keep >= rounds:
            raise CompressionError(f"pruning {self.amount:g} of {rounds} boosting rounds leaves all of them")
        fewer = ensemble.truncated(keep)
        return Made(fewer, export(fewer), "fp32", continues_chain=True)


@dataclass(frozen=True)
class FewerLeaves:
    """The ensemble's settings retrained with ``amount`` fewer leaves per tree (shallower trees,
    so each prediction walks fewer nodes) and at most as many rounds: the rounds chosen by early
    stopping on the validation rows, then the model refitted on training + validation rows for
    that many rounds, as the tuned model was."""

    amount: float
    name: str = "prune-leaves"

    def describe(self) -> str:
        return f"prune leaves {_percent(self.amount)}"

    def apply(self, model: AnyModel, export: Exporter, context: StepContext) -> Made:
        ensemble = _trees(model, "fewer leaves")
        architecture = ensemble.architecture
        settings = settings_of(architecture, context.training.learning_rate)
        leaves = max(2, round(settings.leaves * (1.0 - self.amount)))
        if leaves >= settings.leaves:
            raise CompressionError(f"trees of {settings.leaves} leaves cannot lose {self.amount:g} of them")
        # At most the teacher's rounds: fewer leaves per tree and no more trees, so the candidate
        # is smaller whatever early stopping picks (more rounds of smaller trees would be a
        # different model, not a compressed one).
        searching = replace(settings, leaves=leaves, trees=ensemble.rounds())
        smaller = architecture.model_copy(update={"leaves": leaves})
        probe = build_tree_model(
            ensemble.transform,
            smaller,
            context.train.raw,
            context.train.target,
            (context.validation.raw, context.validation.target),
            searching,
            context.seed,
            context.class_weights,
        )
        rounds = probe.rounds()
        both_raw = np.concatenate([context.train.raw, context.validation.raw])
        both_target = np.concatenate([context.train.target, context.validation.target])
        final = build_tree_model(
            ensemble.transform,
            smaller.model_copy(update={"trees": rounds}),
            both_raw,
            both_target,
            None,
            replace(searching, trees=rounds),
            context.seed,
            context.class_weights,
        )
        return Made(final, export(final), "fp32", continues_chain=True)


# --- distillation ------------------------------------------------------------


@dataclass(frozen=True)
class Distill:
    """Train a smaller MLP on the teacher's outputs and the labels (a tree ensemble's or a linear
    model's student is an MLP on the preprocessed features)."""

    settings: DistillStep
    name: str = "distill"

    def describe(self) -> str:
        return distillation.describe(self.settings)

    def apply(self, model: AnyModel, export: Exporter, context: StepContext) -> Made:
        outcome = distillation.distill(
            model, self.settings, context.train, context.validation, context.training, context.class_weights
        )
        return Made(outcome.model, export(outcome.model), "fp32", continues_chain=True)


# --- quantization ------------------------------------------------------------


@dataclass(frozen=True)
class DynamicInt8:
    """ONNX Runtime's dynamic int8 quantization of the weights (activations quantized per batch)."""

    name: str = "quantize-dynamicint8"

    def describe(self) -> str:
        return "quantize dynamicInt8"

    def apply(self, model: AnyModel, export: Exporter, context: StepContext) -> Made:
        return Made(model, quantize_dynamic_int8(export(model)), "int8", continues_chain=False)


@dataclass(frozen=True)
class StaticInt8:
    """Static int8 quantization, activation ranges calibrated on a seeded sample of training rows."""

    calibration_samples: int
    name: str = "quantize-staticint8"

    def describe(self) -> str:
        return "quantize staticInt8"

    def apply(self, model: AnyModel, export: Exporter, context: StepContext) -> Made:
        rows = np.random.default_rng(context.seed).permutation(len(context.train.raw))[: self.calibration_samples]
        quantized = quantize_static_int8(export(model), context.train.raw[np.sort(rows)])
        return Made(model, quantized, "int8", continues_chain=False)


@dataclass(frozen=True)
class Fp16:
    """Weights stored in half precision (half the file; computed in float32)."""

    name: str = "quantize-fp16"

    def describe(self) -> str:
        return "quantize fp16"

    def apply(self, model: AnyModel, export: Exporter, context: StepContext) -> Made:
        return Made(model, to_fp16_storage(export(model)), "fp16", continues_chain=False)


# --- steps that do not apply -------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A step that cannot help this model: its candidate is listed with the reason and never built."""

    name: str
    description: str
    reason: str

    def describe(self) -> str:
        return self.description

    def apply(self, model: AnyModel, export: Exporter, context: StepContext) -> Made:
        raise CompressionError(f"skipped: {self.reason}")


TREE_QUANTIZATION = (
    "a tree ensemble has no matrix products to run in int8 or fp16: ONNX Runtime's TreeEnsemble "
    "operator compares and adds in float32 whatever the stored precision, so quantizing it "
    "would change the thresholds and gain no speed"
)


def _quantize(settings: QuantizeStep) -> Step:
    if settings.mode == "dynamicInt8":
        return DynamicInt8()
    if settings.mode == "staticInt8":
        return StaticInt8(settings.calibration_samples)
    return Fp16()


def steps_for(step: CompressionStep, model: AnyModel) -> list[Step]:
    """The concrete steps a spec step means for ``model``'s family (see the module's docstring)."""
    if step.prune is not None:
        if isinstance(model, TreeModel):
            return [FewerTrees(step.prune.amount), FewerLeaves(step.prune.amount)]
        if step.prune.method == "unstructured":
            return [UnstructuredPrune(step.prune)]
        if not model.architecture.hidden:
            return [
                Skipped(
                    "prune-structured", pruning.describe(step.prune), "a linear model has no hidden neurons to remove"
                )
            ]
        return [StructuredPrune(step.prune)]
    if step.distill is not None:
        return [Distill(step.distill)]
    assert step.quantize is not None
    quantize = _quantize(step.quantize)
    if isinstance(model, TreeModel):
        return [Skipped(quantize.name, quantize.describe(), TREE_QUANTIZATION)]
    return [quantize]
