"""Which trial wins: ranked on a smooth validation score, ties broken toward the smaller model.

The user's metric (accuracy, say) is coarse on a small validation split: many trials tie on it,
and the first of them used to win by trial number. The validation loss (cross-entropy for
classification, mean squared error of the standardized target for regression) moves with
every prediction, so it separates trials that the metric cannot, and it is what the model was
trained to lower. With a single quality objective the winner is the trial with the lowest
validation loss; with several objectives the Pareto front stays as it is and the loss only
orders trials that tie on the first objective. Equal losses go to the trial with fewer
parameters, then the lower trial number, so a rerun chooses the same trial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from optuna.trial import FrozenTrial, TrialState

from ..api.spec import Metric

LOSS_ATTR = "validation_loss"
"""User attribute holding a trial's validation loss (the smooth score)."""
PARAMETERS_ATTR = "parameters"
"""User attribute holding a trial's parameter count (the tie-break)."""
COST_METRICS = frozenset({"latencyMs", "parameters"})


def _smooth(trial: FrozenTrial) -> float:
    loss = trial.user_attrs.get(LOSS_ATTR)
    return float(loss) if isinstance(loss, int | float) and math.isfinite(loss) else math.inf


def _size(trial: FrozenTrial) -> float:
    size = trial.user_attrs.get(PARAMETERS_ATTR)
    return float(size) if isinstance(size, int | float) else math.inf


def rank_key(trial: FrozenTrial, metric: Metric, direction: str) -> tuple[float, ...]:
    """Sort key (lowest first) of a completed trial for a single objective ``metric``.

    A quality metric is ranked on the validation loss and reported, not ranked on; trials
    without a recorded loss (from a study begun by an older version) fall back to the metric.
    Latency and size objectives are ranked on themselves.
    """
    assert trial.values is not None
    sign = -1.0 if direction == "maximize" else 1.0
    value = sign * trial.values[0]
    if metric in COST_METRICS:
        return (value, _smooth(trial), _size(trial), float(trial.number))
    smooth = _smooth(trial)
    if math.isinf(smooth):
        return (math.inf, value, _size(trial), float(trial.number))
    return (smooth, value, _size(trial), float(trial.number))


def choose(
    trials: Sequence[FrozenTrial],
    pareto_front: Sequence[FrozenTrial],
    metrics: Sequence[Metric],
    directions: Sequence[str],
) -> list[FrozenTrial]:
    """The winner first: for one objective the best trial by :func:`rank_key` (just that one);
    for several, the Pareto front ordered by the first objective, then loss, then size."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    if not complete:
        return []
    if len(metrics) == 1:
        return [min(complete, key=lambda t: rank_key(t, metrics[0], directions[0]))]
    sign = -1.0 if directions[0] == "maximize" else 1.0
    return sorted(
        pareto_front, key=lambda t: (sign * (t.values or [math.inf])[0], _smooth(t), _size(t), float(t.number))
    )
