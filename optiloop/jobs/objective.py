"""The tuning stage's objective: train one sampled configuration and score it.

:func:`make_objective` turns the spec's objectives into the function the search engine
(:mod:`.search`) calls once per trial: decode the sampled parameters, train (on the validation
split, or across folds), report every epoch to the pruner, and return one value per objective
(a validation metric, the measured latency, or the parameter count). What the winner's
retraining needs later (its rounds, folds and metrics) is noted on the trial.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from ..api.jobs import StageInput, TrialRecord
from .choice import LOSS_ATTR, PARAMETERS_ATTR
from .decision import run_objectives
from .fitting import choose_folds, cross_validate, fit_and_score
from .models import count_parameters
from .prepare import PreparedData, train_and_validation
from .search import Reporter
from .space import decode
from .trees import AnyModel

ROUNDS_ATTR = "rounds"
"""User attribute: epochs or boosting rounds the trial's model kept (the winner is retrained with them)."""
FOLDS_ATTR = "folds"
"""User attribute: folds the trial was scored with (1: the validation split)."""
VALIDATION_ATTR = "validation_metrics"
"""User attribute: the trial's validation (or out-of-fold) metrics."""


class TuningProgress(Protocol):
    """What a caller (the local runner's live view) hears while the search runs."""

    def epoch(self, trial: int, epoch: int, value: float) -> None:
        """A trial finished an epoch; ``value`` is its first objective on the validation split."""

    def trial(self, record: TrialRecord, best: float | None) -> None:
        """A trial ended (complete, pruned or failed); ``best`` is the best first objective so far."""


def measure_latency_ms(model: torch.nn.Module, inputs: int, repeats: int = 50) -> float:
    """Median eager-torch latency of one row, in milliseconds."""
    model.eval()
    row = torch.zeros(1, inputs)
    with torch.inference_mode():
        for _ in range(5):
            model(row)
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(row)
            timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1000.0)


def objective_values(
    model: AnyModel, validation: dict[str, float], metrics: Sequence[str], raw_inputs: int
) -> list[float]:
    """One value per objective metric: validation metrics, measured latency, or parameter count."""
    values = []
    for metric in metrics:
        if metric == "latencyMs":
            values.append(measure_latency_ms(model, raw_inputs))
        elif metric == "parameters":
            values.append(float(count_parameters(model)))
        else:
            values.append(float(validation[metric]))
    return values


def make_objective(
    stage: StageInput, data: PreparedData, progress: TuningProgress | None = None
) -> Callable[[dict[str, Any], Reporter], list[float]]:
    """The objective the search calls per trial (``progress`` hears of every epoch)."""
    spec = stage.spec
    metrics = [o.metric for o in run_objectives(spec, data.imbalanced)]
    train, validation = data.splits["train"], data.splits["validation"]

    folds = choose_folds(len(train) + len(validation), spec.model.folds)
    both = train_and_validation(data)

    def objective(params: dict[str, Any], reporter: Reporter) -> list[float]:
        architecture, training = decode(params, spec, data.transform)

        def report(step: int, scores: dict[str, float]) -> None:
            value = scores.get(metrics[0], float("nan"))
            if progress is not None:
                progress.epoch(reporter.number, step, value)
            reporter(step, value)

        if folds > 1:
            scored = cross_validate(
                data.transform, architecture, training, both, folds, data.weights_for(training), on_fold=report
            )
        else:
            scored = fit_and_score(
                data.transform,
                architecture,
                training,
                train,
                validation,
                data.weights_for(training),
                on_epoch=lambda record: report(record.epoch, record.validation),
            )
            if architecture.family != "mlp":  # fitted in one step: no epochs were reported
                report(1, scored.scores)
        reporter.note("epochs_run", scored.rounds)
        reporter.note(ROUNDS_ATTR, scored.rounds)
        reporter.note(FOLDS_ATTR, folds)
        reporter.note(LOSS_ATTR, float(scored.scores.get("loss", float("nan"))))
        reporter.note(VALIDATION_ATTR, {k: float(v) for k, v in scored.scores.items()})
        reporter.note(PARAMETERS_ATTR, count_parameters(scored.model))
        return objective_values(scored.model, scored.scores, metrics, len(data.transform.columns))

    return objective
