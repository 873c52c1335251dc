"""The local run: every stage of the cluster's loop, in order, on this machine.

    outcome = run_local(manifest, out=Path("optiloop-runs/iris"), view=LogView(sys.stderr))

The stages are one table (:data:`STAGES`): data quality, features, tuning, compression and
export (the job stages themselves), then a smoke test of the exported model through the real
predictor on loopback, then a drift baseline: the drift monitor's check of the held-out test
split against the reference, run in the drift environment. Each stage leaves a completion
marker, so a rerun resumes after the last finished stage (the tuning study itself resumes trial
by trial). The run ends by writing ``r<revision>/report.html``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..api import ModelOptimization
from ..api.jobs import StageInput
from ..jobs.compress import run_compression
from ..jobs.prepare import read_split, run_data_quality, run_features
from ..jobs.stage import configure_threads
from ..jobs.storage import LocalStore, StageWriter, is_complete
from ..jobs.tune import run_tuning
from . import report
from .checks import evaluation, smoke_test
from .drift import drift_baseline, drift_python
from .outcome import RunOutcome
from .progress import View

DRIFT_MISSING = (
    "skipped: the drift environment is missing. Create it with `make install` (or "
    "`python3.11 -m venv .venv-drift && .venv-drift/bin/pip install -r requirements/drift.lock "
    "&& .venv-drift/bin/pip install --no-deps -e .`), or point OPTILOOP_DRIFT_PYTHON at its python."
)


@dataclass
class Run:
    """One local run in progress: what every stage reads, and the outcome it fills."""

    model: ModelOptimization
    stage: StageInput
    store: LocalStore
    view: View
    outcome: RunOutcome
    threads: int
    _test: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def prefix(self) -> str:
        return f"r{self.stage.revision}"

    @property
    def test_split(self) -> pd.DataFrame:
        """The held-out test split, as the data stage wrote it."""
        if self._test is None:
            self._test = read_split(self.store, self.stage.revision, "test")
        return self._test

    def recorded(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A local stage's result: reused from ``<prefix>/<key>/result.json`` when that finished,
        else computed and written with a completion marker."""
        where = f"{self.prefix}/{key}"
        if is_complete(self.store, where):
            return dict(json.loads(self.store.read_bytes(f"{where}/result.json")))
        result = compute()
        with StageWriter(self.store, where, {"stage": key.rsplit("/", 1)[-1]}) as out:
            out.write_json("result.json", result)
        return result


@dataclass(frozen=True)
class Stage:
    """One row of the local run: what the view calls it, where its completion marker lives
    (below ``r<revision>/``), and how it starts, runs and is summed up."""

    label: str
    key: str
    detail: Callable[[Run], str]
    run: Callable[[Run], None]
    """Runs the stage (or reuses its finished outputs) and records what it made in the outcome."""
    summary: Callable[[RunOutcome], str]
    unavailable: Callable[[Run], str | None] = lambda _: None
    """Why the stage cannot run on this machine (it is then skipped with that note, which the
    function also records in the outcome for the report), or None."""


# --- the stages --------------------------------------------------------------------------------


def _data(run: Run) -> None:
    run.outcome.data = run_data_quality(run.stage, run.store)


def _data_summary(outcome: RunOutcome) -> str:
    assert outcome.data is not None
    data, rows = outcome.data, outcome.data.split_rows
    return (
        f"passed; {data.rows_after} rows, {len(data.columns_after)} features, "
        f"split {rows.get('train', 0)}/{rows.get('validation', 0)}/{rows.get('test', 0)}"
    )


def _features(run: Run) -> None:
    run.outcome.transform = run_features(run.stage, run.store, run.outcome.data)


def _features_summary(outcome: RunOutcome) -> str:
    assert outcome.transform is not None
    return f"{outcome.transform.input_width} model inputs"


def _tuning_detail(run: Run) -> str:
    tuning = run.model.spec.tuning
    return f"{tuning.algorithm}, up to {tuning.max_trials} trials, {run.threads} threads"


def _tuning(run: Run) -> None:
    run.outcome.tuning = run_tuning(run.stage, run.store, progress=run.view)
    run.outcome.trials = json.loads(run.store.read_bytes(f"{run.prefix}/tuning/trials.json"))


def _tuning_summary(outcome: RunOutcome) -> str:
    assert outcome.tuning is not None
    best = outcome.tuning.best_trial
    values = ", ".join(f"{m} {v:.4g}" for m, v in zip(outcome.tuning.objectives, best.values or [], strict=False))
    return f"best trial {best.number} of {len(outcome.trials)}: {values}; {outcome.tuning.architecture.summary()}"


def _compression(run: Run) -> None:
    run.outcome.compression = run_compression(
        run.stage, run.store, on_candidate=lambda c: run.view.note(f"  built candidate {c.name}")
    )


def _compression_summary(outcome: RunOutcome) -> str:
    assert outcome.compression is not None
    return outcome.compression.message


def _smoke(run: Run) -> None:
    outcome = run.outcome
    assert outcome.transform is not None
    transform = outcome.transform
    outcome.smoke = run.recorded(
        "run/smoke", lambda: smoke_test(outcome.model_dir, outcome.name, run.test_split, transform)
    )
    outcome.evaluation = evaluation(outcome.model_dir, transform, run.test_split)


def _smoke_summary(outcome: RunOutcome) -> str:
    assert outcome.smoke is not None
    return f"{outcome.smoke['rows']} rows answered in {outcome.smoke['requestMs']:.1f} ms, as ONNX Runtime"


def _drift(run: Run) -> None:
    outcome = run.outcome
    assert outcome.transform is not None
    features = [c.name for c in outcome.transform.columns]
    work = run.store.root / run.prefix / "run"

    def check() -> dict[str, Any]:
        work.mkdir(parents=True, exist_ok=True)
        return drift_baseline(run.model.spec.monitoring, outcome.model_dir, run.test_split[features], work)

    outcome.drift = run.recorded("run/drift", check)


def _drift_missing(run: Run) -> str | None:
    if drift_python() is not None:
        return None
    run.outcome.drift_note = DRIFT_MISSING
    return DRIFT_MISSING


def _drift_summary(outcome: RunOutcome) -> str:
    assert outcome.drift is not None
    drift = outcome.drift
    verdict = "drift" if drift["isDrift"] else "no drift"
    return f"{verdict} (smallest p-value {drift['pValue']:.3g}, threshold {drift['threshold']:.3g})"


STAGES: tuple[Stage, ...] = (
    Stage("data quality", "data", lambda run: str(run.model.spec.dataset.uri), _data, _data_summary),
    Stage("features", "features", lambda _: "", _features, _features_summary),
    Stage("tuning", "tuning", _tuning_detail, _tuning, _tuning_summary),
    Stage(
        "compression",
        "compression",
        lambda run: f"{len(run.model.spec.compression.steps)} steps + baseline",
        _compression,
        _compression_summary,
    ),
    Stage(
        "smoke test",
        "run/smoke",
        lambda _: "the exported model through the predictor on loopback",
        _smoke,
        _smoke_summary,
    ),
    Stage(
        "drift baseline",
        "run/drift",
        lambda run: f"{run.model.spec.monitoring.detector} on the held-out test split",
        _drift,
        _drift_summary,
        unavailable=_drift_missing,
    ),
)


# --- the runner --------------------------------------------------------------------------------


def run_local(model: ModelOptimization, root: Path, view: View, fresh: bool = False, revision: int = 1) -> RunOutcome:
    """Run every stage for ``model`` with artifacts below ``root``, then write the report;
    raises the stage's errors."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the view reports every trial itself
    name = model.metadata.name
    if fresh and (root / f"r{revision}").exists():
        shutil.rmtree(root / f"r{revision}")
    root.mkdir(parents=True, exist_ok=True)
    store = LocalStore(root)
    stage = StageInput(name=name, spec=model.spec, artifacts=str(root), revision=revision)
    run = Run(model, stage, store, view, RunOutcome(name, revision, root), configure_threads())
    for step in STAGES:
        reason = step.unavailable(run)
        if reason is not None:
            view.note(f"{step.label} {reason}")
            continue
        resumed = is_complete(store, f"{run.prefix}/{step.key}")
        view.stage_started(step.label, step.detail(run))
        step.run(run)
        view.stage_finished(step.label, step.summary(run.outcome), resumed)
    run.outcome.report_path = report.write(run.outcome)
    return run.outcome
