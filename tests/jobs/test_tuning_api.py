"""The public search API: every algorithm runs, budgets hold, studies resume, pruners prune, fronts are Pareto."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from optiloop.jobs.errors import TuningError
from optiloop.jobs.search import Budget, Choice, FloatParam, IntParam, Reporter, grid_values, search

SPACE = {"x": FloatParam(-4.0, 4.0), "n": IntParam(1, 8), "kind": Choice(("a", "b"))}


def bowl(params: dict[str, Any], report: Reporter) -> float:
    return (params["x"] - 1.0) ** 2 + (params["n"] - 3) ** 2 * 0.1 + (0.5 if params["kind"] == "b" else 0.0)


@pytest.mark.parametrize("algorithm", ["grid", "random", "tpe", "gp", "cmaes"])
def test_each_algorithm_finds_a_good_point_within_budget(algorithm: str) -> None:
    result = search(bowl, SPACE, budget=Budget(16), algorithm=algorithm, directions=["minimize"], seed=1, grid_points=3)  # type: ignore[arg-type]
    finished = result.count(TrialState.COMPLETE)
    assert finished <= 16
    assert result.best_trials[0].values[0] < 4.0


def test_grid_stops_when_exhausted() -> None:
    space = {"x": FloatParam(0.0, 1.0), "kind": Choice(("a", "b"))}
    result = search(
        lambda p, r: p["x"], space, budget=Budget(100), algorithm="grid", directions=["minimize"], grid_points=3
    )
    assert result.count(TrialState.COMPLETE) == 6
    assert grid_values(FloatParam(1e-4, 1e-2, log=True), 3) == pytest.approx([1e-4, 1e-3, 1e-2])


def test_multi_objective_front_is_pareto_optimal_and_sorted() -> None:
    def two(params: dict[str, Any], report: Reporter) -> tuple[float, float]:
        return params["x"], params["x"] + 0.1 * params["n"]  # a larger x costs more: a real trade-off

    result = search(two, SPACE, budget=Budget(30), algorithm="nsga2", directions=["maximize", "minimize"], seed=0)
    front = result.best_trials
    assert len(front) >= 2
    assert [t.values[0] for t in front] == sorted((t.values[0] for t in front), reverse=True)
    completed = [t for t in result.trials if t.state == TrialState.COMPLETE]
    for member in front:  # nothing strictly dominates a member of the front
        assert not any(o.values[0] > member.values[0] and o.values[1] < member.values[1] for o in completed)


def test_median_pruner_stops_bad_trials_early() -> None:
    def curve(params: dict[str, Any], report: Reporter) -> float:
        for step in range(20):
            report(step, params["x"] * step)
        return params["x"] * 20

    result = search(
        curve,
        {"x": FloatParam(0.0, 1.0)},
        budget=Budget(30),
        algorithm="random",
        directions=["maximize"],
        pruner="median",
        max_resource=20,
        seed=0,
    )
    assert result.count(TrialState.PRUNED) > 0
    assert result.count(TrialState.COMPLETE) + result.count(TrialState.PRUNED) == 30


def test_pruning_with_several_objectives_is_refused() -> None:
    with pytest.raises(TuningError, match="single objective"):
        search(bowl, SPACE, budget=Budget(2), directions=["minimize", "minimize"], pruner="median")


def test_a_study_resumes_from_its_journal(tmp_path: Path) -> None:
    journal = tmp_path / "study.journal"
    first = search(bowl, SPACE, budget=Budget(5), directions=["minimize"], storage=journal, study_name="s", seed=0)
    assert len(first.trials) == 5
    again = search(bowl, SPACE, budget=Budget(8), directions=["minimize"], storage=journal, study_name="s", seed=0)
    assert [t.number for t in again.trials] == list(range(8))
    assert [t.params for t in again.trials[:5]] == [t.params for t in first.trials]
    done = search(bowl, SPACE, budget=Budget(8), directions=["minimize"], storage=journal, study_name="s", seed=0)
    assert len(done.trials) == 8


def test_failed_trials_do_not_use_up_the_budget() -> None:
    calls = {"n": 0}

    def flaky(params: dict[str, Any], report: Reporter) -> float:
        calls["n"] += 1
        return float("nan") if calls["n"] % 3 == 0 else params["x"]

    result = search(flaky, SPACE, budget=Budget(6), directions=["minimize"], seed=0)
    assert result.count(TrialState.COMPLETE) == 6
    assert result.count(TrialState.FAIL) >= 2


def test_an_objective_that_always_fails_ends() -> None:
    result = search(lambda p, r: float("nan"), SPACE, budget=Budget(4), directions=["minimize"], seed=0)
    assert result.count(TrialState.FAIL) == 12
    assert result.best_trials == []


def test_a_trial_a_killed_process_created_but_never_tagged_is_failed_on_resume(tmp_path: Path) -> None:
    journal = tmp_path / "study.journal"
    first = search(bowl, SPACE, budget=Budget(2), directions=["minimize"], storage=journal, study_name="s", seed=0)
    first.study.ask()  # as if the process died right after creating a trial (Ctrl-C during sampling)
    resumed = search(bowl, SPACE, budget=Budget(4), directions=["minimize"], storage=journal, study_name="s", seed=0)
    states = [t.state for t in resumed.trials]
    assert TrialState.RUNNING not in states
    assert states.count(TrialState.COMPLETE) == 4


def test_with_several_workers_a_fresh_untagged_trial_is_left_to_its_owner(tmp_path: Path) -> None:
    journal = tmp_path / "study.journal"
    first = search(bowl, SPACE, budget=Budget(1), directions=["minimize"], storage=journal, study_name="s", seed=0)
    first.study.ask()  # another worker's trial, created a moment ago and not yet tagged
    again = search(
        bowl, SPACE, budget=Budget(3), directions=["minimize"], storage=journal, study_name="s", seed=0, parallel=True
    )
    assert [t.state for t in again.trials].count(TrialState.RUNNING) == 1
