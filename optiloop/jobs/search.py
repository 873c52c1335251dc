"""optiloop's search engine: Optuna behind one function any objective can use.

    def objective(params, report):
        for epoch in range(10):
            report(epoch, score)            # may raise Pruned
        return score

    result = search(objective, {"lr": FloatParam(1e-4, 1e-1, log=True)}, algorithm="tpe",
                    budget=Budget(max_trials=30), storage="study.journal")

Studies live in persistent storage (a journal file, or an RDB URL such as
``postgresql+psycopg://...``), so a restarted search continues where it stopped and
several workers, each calling :func:`search` with its own ``worker`` index, share one
study without repeating trials.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import OptiloopError
from .errors import TuningError

Algorithm = Literal["grid", "random", "tpe", "gp", "cmaes", "nsga2"]
PrunerName = Literal["none", "median", "successiveHalving", "hyperband"]
Direction = Literal["maximize", "minimize"]
Pruned = optuna.TrialPruned
"""Raised by the reporter when the pruner stops a trial; let it propagate."""

WORKER_ATTR = "worker"
MAX_ATTEMPTS_PER_TRIAL = 3
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class IntParam:
    """Integers from ``low`` to ``high`` inclusive."""

    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class FloatParam:
    """Reals from ``low`` to ``high``."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of ``options`` (numbers, strings or booleans)."""

    options: tuple[Any, ...]


Param = IntParam | FloatParam | Choice
SearchSpace = Mapping[str, Param]


class Reporter:
    """Handed to the objective: ``report(step, value)`` feeds the pruner (and may raise
    :data:`Pruned`); ``note(key, value)`` records a fact about the trial in the study."""

    def __init__(self, trial: optuna.Trial, single_objective: bool) -> None:
        self._trial = trial
        self._single = single_objective

    def __call__(self, step: int, value: float) -> None:
        if self._single and math.isfinite(value):
            self._trial.report(value, step)
            if self._trial.should_prune():
                raise Pruned()

    def note(self, key: str, value: Any) -> None:
        self._trial.set_user_attr(key, value)

    @property
    def number(self) -> int:
        """The trial's number in the study."""
        return int(self._trial.number)


Objective = Callable[[dict[str, Any], Reporter], "float | Sequence[float]"]


@dataclass(frozen=True)
class Budget:
    """How much searching is allowed: trials across all workers, and wall-clock seconds per worker."""

    max_trials: int
    timeout_seconds: float | None = None


@dataclass
class SearchResult:
    """The study after the search, and a summary of it."""

    study: optuna.Study
    directions: list[Direction]
    elapsed_seconds: float
    trials: list[FrozenTrial] = field(default_factory=list)

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.trials)

    @property
    def best_trials(self) -> list[FrozenTrial]:
        """The best trial, or for several objectives the Pareto front sorted by the first one."""
        if self.count(TrialState.COMPLETE) == 0:
            return []
        if len(self.directions) == 1:
            return [self.study.best_trial]
        front = list(self.study.best_trials)
        sign = -1.0 if self.directions[0] == "maximize" else 1.0
        return sorted(front, key=lambda t: (sign * t.values[0], t.number))


def grid_values(param: Param, points: int) -> list[Any]:
    """The grid a continuous range is reduced to (log-spaced for log ranges)."""
    if isinstance(param, Choice):
        return list(param.options)
    space = np.geomspace if param.log else np.linspace
    values = space(param.low, param.high, points)
    if isinstance(param, IntParam):
        return sorted({round(float(v)) for v in values})
    return [float(v) for v in values]


def make_sampler(
    algorithm: Algorithm, space: SearchSpace, *, seed: int | None, grid_points: int, max_trials: int, parallel: bool
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``algorithm``, tuned for small budgets."""
    startup = max(3, min(10, max_trials // 4))
    if algorithm == "grid":
        return optuna.samplers.GridSampler({name: grid_values(p, grid_points) for name, p in space.items()}, seed=seed)
    if algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if algorithm == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup, multivariate=True, constant_liar=parallel
        )
    if algorithm == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
    if algorithm == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, max_trials // 4)))


def make_pruner(name: PrunerName, max_resource: int) -> optuna.pruners.BasePruner:
    """The Optuna pruner for ``name``; resources are epochs."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=max(2, max_resource // 10))
    if name == "successiveHalving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, max_resource // 16))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, max_resource // 16), max_resource=max_resource)
    return optuna.pruners.NopPruner()


def open_storage(storage: str | Path | optuna.storages.BaseStorage | None) -> optuna.storages.BaseStorage | None:
    """A journal file path, an RDB URL, an Optuna storage object, or None (in memory)."""
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    text = str(storage)
    if "://" in text:
        return _open_rdb(text)
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    Path(text).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(text, lock_obj=JournalFileOpenLock(text)))


def _open_rdb(url: str, attempts: int = 6) -> optuna.storages.BaseStorage:
    """Open an RDB study storage, retrying while another worker creates the schema.

    Several tuning pods start at once against an empty database; all try to create
    Optuna's tables and all but one fail on the duplicate. The loser simply retries.
    """
    import random

    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            # Heartbeats let a restarted worker fail trials whose process died mid-trial.
            return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90)
        except SQLAlchemyError as exc:
            if attempt == attempts - 1:
                raise TuningError(
                    f"cannot open the study database: {type(exc).__name__}: {str(exc).splitlines()[0]}"
                ) from None
            time.sleep(0.2 * 2**attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


def _suggest(trial: optuna.Trial, name: str, param: Param) -> Any:
    if isinstance(param, IntParam):
        return trial.suggest_int(name, param.low, param.high, log=param.log)
    if isinstance(param, FloatParam):
        return trial.suggest_float(name, param.low, param.high, log=param.log)
    return trial.suggest_categorical(name, list(param.options))


UNCLAIMED_GRACE_SECONDS = 60.0
"""A live worker tags its new trial within milliseconds; an untagged RUNNING trial older than
this was created by a process that died before it could tag it."""


def _fail_stale_trials(study: optuna.Study, worker: int, parallel: bool) -> int:
    """Fail RUNNING trials that no live process will finish.

    Only one process runs per worker index (an Indexed Job restarts a pod under its own
    index), so a RUNNING trial tagged with our index cannot belong to a live process. A
    process killed between creating a trial and tagging it leaves an untagged one: with a
    single worker nobody else can own it; with several, it is stale once it is older than
    :data:`UNCLAIMED_GRACE_SECONDS`.
    """
    now = datetime.datetime.now()
    stale = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(WORKER_ATTR)
        started = trial.datetime_start or now
        abandoned = owner is None and (now - started).total_seconds() > UNCLAIMED_GRACE_SECONDS
        if owner == worker or not parallel or abandoned:
            stale.append(trial)
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL)
    return len(stale)


def search(
    objective: Objective,
    space: SearchSpace,
    *,
    budget: Budget,
    algorithm: Algorithm = "tpe",
    directions: Sequence[Direction] = ("maximize",),
    pruner: PrunerName = "none",
    max_resource: int = 100,
    storage: str | Path | optuna.storages.BaseStorage | None = None,
    study_name: str = "optiloop",
    seed: int | None = None,
    grid_points: int = 3,
    worker: int = 0,
    parallel: bool = False,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    first_trials: Sequence[Mapping[str, Any]] = (),
) -> SearchResult:
    """Run (or continue) a study until ``budget.max_trials`` trials have finished across all workers.

    ``objective(params, reporter)`` gets the sampled parameters and a :class:`Reporter` for
    per-step values (used by the pruner); it returns one value per direction. A NaN or a raised
    :class:`OptiloopError` marks the trial failed; failed trials do not count against the budget.
    ``first_trials`` (parameters, the rest sampled) are queued when the study is new, on worker 0
    only, so known-good starting points run before the sampler's own choices.
    """
    if len(directions) > 1 and pruner != "none":
        raise TuningError("pruning needs a single objective; set pruner to none")
    started = time.monotonic()
    study = optuna.create_study(
        study_name=study_name,
        storage=open_storage(storage),
        load_if_exists=True,
        directions=list(directions),
        sampler=make_sampler(
            algorithm,
            space,
            seed=None if seed is None else seed + worker,
            grid_points=grid_points,
            max_trials=budget.max_trials,
            parallel=parallel,
        ),
        pruner=make_pruner(pruner, max_resource),
    )
    _fail_stale_trials(study, worker, parallel)
    if worker == 0 and first_trials and not study.get_trials(deepcopy=False):
        for params in first_trials:
            study.enqueue_trial(dict(params), skip_if_exists=True)

    def run_trial(trial: optuna.Trial) -> float | Sequence[float]:
        trial.set_user_attr(WORKER_ATTR, worker)
        params = {name: _suggest(trial, name, param) for name, param in space.items()}
        return objective(params, Reporter(trial, len(directions) == 1))

    # Failed trials do not count against the budget, so rounds repeat until enough trials
    # finished; the attempt cap keeps an objective that always fails from looping forever.
    attempts_left = MAX_ATTEMPTS_PER_TRIAL * budget.max_trials
    while attempts_left > 0:
        before = len(study.get_trials(deepcopy=False))
        remaining = budget.max_trials - len(study.get_trials(deepcopy=False, states=FINISHED_STATES))
        time_left = None if budget.timeout_seconds is None else budget.timeout_seconds - (time.monotonic() - started)
        if remaining <= 0 or (time_left is not None and time_left <= 0):
            break
        study.optimize(
            run_trial,
            n_trials=min(remaining, attempts_left),
            timeout=time_left,
            catch=(OptiloopError, FloatingPointError),
            callbacks=[optuna.study.MaxTrialsCallback(budget.max_trials, states=FINISHED_STATES), *callbacks],
            gc_after_trial=False,
        )
        ran = len(study.get_trials(deepcopy=False)) - before
        attempts_left -= ran
        if ran == 0 or algorithm == "grid":  # an exhausted grid stops the study; asking again would repeat points
            break
    return SearchResult(study, list(directions), time.monotonic() - started, study.get_trials(deepcopy=False))
