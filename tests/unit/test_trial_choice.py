"""Tuning's winner is the trial with the lowest validation loss, not the first one to tie on a
coarse metric, and equal losses go to the smaller model, the same way on every rerun."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import FloatDistribution

from optiloop.api.spec import ModelOptimizationSpec
from optiloop.jobs.choice import LOSS_ATTR, PARAMETERS_ATTR, choose
from optiloop.jobs.fitting import choose_folds
from optiloop.jobs.space import first_trials, search_space

MINIMAL = {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://claim/iris"}}


def _trial(number: int, values: list[float], loss: float | None, parameters: int) -> optuna.trial.FrozenTrial:
    attrs: dict[str, Any] = {PARAMETERS_ATTR: parameters}
    if loss is not None:
        attrs[LOSS_ATTR] = loss
    trial = optuna.trial.create_trial(
        params={"x": float(number)},
        distributions={"x": FloatDistribution(0, 100)},
        values=values,
        user_attrs=attrs,
    )
    trial.number = number
    return trial


def test_trials_tied_on_accuracy_are_separated_by_validation_loss() -> None:
    trials = [_trial(0, [0.95], 0.30, 100), _trial(1, [0.95], 0.12, 5000), _trial(2, [0.95], 0.20, 50)]
    assert choose(trials, [], ["accuracy"], ["maximize"])[0].number == 1


def test_the_loss_outranks_a_lucky_accuracy() -> None:
    """Accuracy on a small split is noisy; the smoother loss decides, accuracy is only reported."""
    trials = [_trial(0, [0.97], 0.40, 100), _trial(1, [0.96], 0.10, 100)]
    assert choose(trials, [], ["accuracy"], ["maximize"])[0].number == 1


def test_equal_losses_go_to_the_smaller_model_then_the_earlier_trial() -> None:
    trials = [_trial(0, [3.0], 0.5, 900), _trial(1, [3.0], 0.5, 200), _trial(2, [3.0], 0.5, 200)]
    assert choose(trials, [], ["rmse"], ["minimize"])[0].number == 1
    assert choose(list(reversed(trials)), [], ["rmse"], ["minimize"])[0].number == 1


def test_trials_from_an_older_study_without_a_loss_rank_on_the_metric() -> None:
    trials = [_trial(0, [0.90], None, 100), _trial(1, [0.93], None, 100)]
    assert choose(trials, [], ["accuracy"], ["maximize"])[0].number == 1


def test_a_latency_objective_is_ranked_on_latency() -> None:
    trials = [_trial(0, [2.0], 0.1, 100), _trial(1, [1.0], 0.9, 100)]
    assert choose(trials, [], ["latencyMs"], ["minimize"])[0].number == 1


def test_several_objectives_keep_the_pareto_front_ordered_by_the_first_then_the_loss() -> None:
    front = [_trial(0, [0.9, 10.0], 0.3, 10), _trial(1, [0.95, 50.0], 0.4, 50), _trial(2, [0.95, 40.0], 0.2, 40)]
    chosen = choose(front, front, ["accuracy", "parameters"], ["maximize", "minimize"])
    assert [t.number for t in chosen] == [2, 1, 0]


def test_no_completed_trial_means_no_winner() -> None:
    assert choose([], [], ["accuracy"], ["maximize"]) == []


def test_small_data_is_cross_validated_unless_the_spec_says_otherwise() -> None:
    """A few hundred rows get 5 folds, up to two thousand 3, more the validation split; model.folds wins."""
    assert choose_folds(400, None) == 5
    assert choose_folds(1500, None) == 3
    assert choose_folds(50_000, None) == 1
    assert choose_folds(400, 1) == 1
    assert choose_folds(400, 10) == 10
    assert choose_folds(6, 10) == 3  # never more folds than pairs of rows


def test_each_family_starts_from_a_known_good_point_inside_the_spec_ranges() -> None:
    """LightGBM near its defaults, a linear model and an MLP run first when families compete;
    a pinned family is left to the sampler, and a range that excludes a default clips it."""
    spec = ModelOptimizationSpec.model_validate({**MINIMAL, "model": {"trees": {"leaves": {"min": 4, "max": 16}}}})
    space = search_space(spec)
    starts = first_trials(space, spec.model.families())
    assert [s["family"] for s in starts] == ["lightgbm", "linear", "mlp"]
    assert starts[0]["leaves"] == 16  # LightGBM's default 31, clipped into the spec's range
    pinned = ModelOptimizationSpec.model_validate({**MINIMAL, "model": {"family": "mlp"}})
    assert first_trials(search_space(pinned), pinned.model.families()) == []
