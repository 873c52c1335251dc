"""The tuning stage: search the spec's space, retrain the best configuration, write the outputs.

Run by the cluster's tuning Job and by the local runner::

    python -m optiloop.jobs.tune --input stage-input.json     # or OPTILOOP_STAGE_INPUT='{...}'

It prepares the data first (:mod:`.prepare`: ``r<revision>/data/`` and ``features/``), then runs
the study (:mod:`.search`, with the objective of :mod:`.objective`) and, on worker 0, retrains the
winner on training + validation rows. Outputs go below ``r<revision>/tuning/``: study journal,
trials, best result, the retrained model in safetensors (:mod:`.checkpoint`), its preprocessing,
and a reference sample of raw training inputs for the drift monitor. Each finished sub-stage has
a completion marker, so a rerun skips it; the study itself is persistent, so a restarted search
continues.

Exit codes: 0 done, 2 invalid input, 3 data-quality gate failed, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..api.jobs import (
    STAGE_INPUT_ENV,
    Architecture,
    Decision,
    StageInput,
    StageOutcome,
    TrainingConfig,
    TrialRecord,
    TuningResult,
)
from ..api.spec import ModelOptimizationSpec, natural_direction
from ..errors import OptiloopError
from ..formats.model_dir import REFERENCE_FILE
from .checkpoint import MODEL_FILE, save_model
from .choice import LOSS_ATTR, choose
from .decision import (
    choose_decision,
    decision_metric,
    delivered_warnings,
    evaluate_decided,
    held_out_probabilities,
    is_identity,
    primary_of,
    run_objectives,
    user_metric,
)
from .errors import DataQualityError, TuningError
from .fitting import fit_and_score
from .linear import fit_linear
from .models import count_parameters
from .objective import FOLDS_ATTR, ROUNDS_ATTR, VALIDATION_ATTR, TuningProgress, make_objective
from .outcome import failed_outcome, report_outcome, tuning_outcome
from .prepare import PreparedData, prepare_data, reference_sample, run_data_quality, run_features, train_and_validation
from .search import WORKER_ATTR, Budget, SearchResult, search
from .space import decode, first_trials, search_space
from .stage import (
    EXIT_DATA_QUALITY,
    EXIT_FAILURE,
    EXIT_INVALID,
    EXIT_OK,
    configure_threads,
    dump,
    stage_input_or_report,
)
from .storage import ArtifactStore, StageWriter, completion_marker, open_store
from .training import build_model, train_model
from .trees import AnyModel, build_tree_model, settings_of

STUDY_URL_ENV = "OPTILOOP_STUDY_STORAGE_URL"


class _StudyStorage:
    """Where the study lives: RDB URL, a journal beside the artifacts, or (S3) a local journal
    mirrored to the bucket after every trial so a restarted single worker can resume."""

    def __init__(self, stage: StageInput, store: ArtifactStore) -> None:
        self.store = store
        self.key = f"r{stage.revision}/tuning/study.journal"
        self.mirror: Path | None = None
        settings = stage.spec.tuning.study_storage
        if settings.type == "rdb":
            url = os.environ.get(STUDY_URL_ENV)
            if not url:
                raise TuningError(
                    f"tuning.studyStorage is rdb but {STUDY_URL_ENV} is not set "
                    "(the operator fills it from studyStorage.urlSecretRef)"
                )
            self.location: str = url
            return
        local = store.local_path(self.key)
        if local is not None:
            self.location = str(local)
            return
        if stage.worker_count > 1:
            raise TuningError(
                "several tuning workers cannot share a journal on s3://; set tuning.studyStorage.type to rdb"
            )
        self.mirror = Path(tempfile.mkdtemp(prefix="optiloop-study-")) / "study.journal"
        if store.exists(self.key):
            self.mirror.write_bytes(store.read_bytes(self.key))
        self.location = str(self.mirror)

    def after_trial(self, *_: Any) -> None:
        if self.mirror is not None:
            self.store.write_bytes(self.key, self.mirror.read_bytes())

    def close(self) -> None:
        if self.mirror is not None:
            shutil.rmtree(self.mirror.parent, ignore_errors=True)


def _trial_record(trial: Any) -> TrialRecord:
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        values=list(trial.values) if trial.values is not None else None,
        params=dict(trial.params),
        duration_seconds=duration,
        epochs_run=trial.user_attrs.get("epochs_run"),
        worker=trial.user_attrs.get(WORKER_ATTR),
        validation_loss=trial.user_attrs.get(LOSS_ATTR),
    )


def _wait_for_other_workers(result: SearchResult, timeout: float) -> None:
    from optuna.trial import TrialState

    deadline = time.monotonic() + timeout
    while result.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) and time.monotonic() < deadline:
        time.sleep(2.0)
    result.trials = result.study.get_trials(deepcopy=False)


def _importances(result: SearchResult) -> dict[str, float]:
    import optuna

    if result.count(optuna.trial.TrialState.COMPLETE) < 4:
        return {}
    # Optuna's default evaluator ranks parameters by how they lead to *low* targets.
    sign = -1.0 if result.directions[0] == "maximize" else 1.0
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")  # handled by `sign`
            importances = optuna.importance.get_param_importances(result.study, target=lambda t: sign * t.values[0])
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
    return {name: float(value) for name, value in importances.items()}


def run_tuning(stage: StageInput, store: ArtifactStore, progress: TuningProgress | None = None) -> TuningResult | None:
    """Search, then (worker 0) retrain the best configuration and write the outputs.

    Workers other than 0 only contribute trials and return None. ``progress`` hears of every
    epoch and trial of this worker.
    """
    prefix = f"r{stage.revision}/tuning"
    if completion_marker(store, prefix):
        return TuningResult.model_validate_json(store.read_bytes(f"{prefix}/result.json"))
    data = prepare_data(stage, store)
    study_name = f"{stage.name}-r{stage.revision}"
    storage = _StudyStorage(stage, store)
    try:
        return _search_and_finish(stage, store, data, storage, study_name, progress)
    finally:
        storage.close()


def retrain_on_all(data: PreparedData, architecture: Architecture, training: TrainingConfig, epochs: int) -> AnyModel:
    """The chosen configuration retrained on training + validation rows for the ``epochs`` (or
    boosting rounds) its early-stopped run found best: every labelled row outside the test split
    teaches the model that is delivered (the validation split has done its job of choosing)."""
    both = train_and_validation(data)
    if architecture.family == "lightgbm":
        settings = settings_of(architecture, training.learning_rate, epochs)
        return build_tree_model(
            data.transform,
            architecture,
            both.raw,
            both.target,
            None,
            settings,
            training.seed,
            data.weights_for(training),
        )
    model = build_model(data.transform, architecture, both, training.seed)
    if architecture.family == "linear":
        fit_linear(model, both, data.weights_for(training), training.seed)
        return model
    config = training.model_copy(update={"epochs": epochs, "early_stopping_patience": None})
    train_model(
        model, both, data.splits["validation"], config, class_weights=data.weights_for(training), keep_best=False
    )
    return model


def choose_decision_for(
    spec: ModelOptimizationSpec, data: PreparedData, architecture: Architecture, training: TrainingConfig, folds: int
) -> Decision | None:
    """The delivered classifier's decision rule (see :mod:`optiloop.jobs.decision`), chosen on
    held-out predictions of the winning configuration; None when nothing calls for one (even
    classes, no class weights, no f1 asked for): then the served graph answers the most probable
    class, as trained."""
    if spec.dataset.task != "classification":
        return None
    weights, chosen = data.weights_for(training), user_metric(spec)
    if not (data.imbalanced or weights or chosen == "f1"):
        return None
    labels, probabilities = held_out_probabilities(
        data.transform, architecture, training, data.splits["train"], data.splits["validation"], folds, weights
    )
    decision = choose_decision(labels, probabilities, weights, decision_metric(chosen, data.imbalanced))
    return None if is_identity(decision) else decision


def _trial_callback(progress: TuningProgress, direction: str) -> Callable[[Any, Any], None]:
    def report(study: Any, trial: Any) -> None:
        values = [t.values[0] for t in study.get_trials(deepcopy=False) if t.values]
        best = (max(values) if direction == "maximize" else min(values)) if values else None
        progress.trial(_trial_record(trial), best)

    return report


def _search_and_finish(
    stage: StageInput,
    store: ArtifactStore,
    data: PreparedData,
    storage: _StudyStorage,
    study_name: str,
    progress: TuningProgress | None,
) -> TuningResult | None:
    from optuna.trial import TrialState

    spec = stage.spec
    prefix = f"r{stage.revision}/tuning"
    objectives = run_objectives(spec, data.imbalanced)
    metrics = [o.metric for o in objectives]
    directions = [o.direction or natural_direction(o.metric) for o in objectives]
    callbacks: list[Callable[[Any, Any], None]] = [storage.after_trial]
    if progress is not None:
        callbacks.append(_trial_callback(progress, directions[0]))
    space = search_space(spec, class_weights=data.class_weights is not None)
    result = search(
        make_objective(stage, data, progress),
        space,
        budget=Budget(spec.tuning.max_trials, spec.tuning.timeout_seconds),
        algorithm=spec.tuning.algorithm,
        directions=directions,
        pruner=spec.tuning.pruner,
        max_resource=spec.tuning.search.epochs.max,
        storage=storage.location,
        study_name=study_name,
        seed=spec.tuning.seed if spec.tuning.seed is not None else spec.dataset.seed,
        grid_points=spec.tuning.grid_points,
        worker=stage.worker_index,
        parallel=stage.worker_count > 1,
        callbacks=callbacks,
        # A grid enumerates its own points; queued extras would fall outside it.
        first_trials=[] if spec.tuning.algorithm == "grid" else first_trials(space, spec.model.families()),
    )
    if stage.worker_index != 0:
        return None
    if stage.worker_count > 1:
        _wait_for_other_workers(result, timeout=float(spec.tuning.timeout_seconds))
    best = choose(result.trials, result.best_trials, metrics, directions)
    if not best:
        raise TuningError(f"no trial of study {study_name} completed ({len(result.trials)} ran); see trials.json")

    architecture, training = decode(best[0].params, spec, data.transform)
    rounds, validation_metrics = best[0].user_attrs.get(ROUNDS_ATTR), best[0].user_attrs.get(VALIDATION_ATTR)
    if not isinstance(rounds, int) or not isinstance(validation_metrics, dict):
        # A trial from a study begun by an older version: score the configuration again.
        scored = fit_and_score(
            data.transform,
            architecture,
            training,
            data.splits["train"],
            data.splits["validation"],
            data.weights_for(training),
        )
        rounds, validation_metrics = scored.rounds, scored.scores
    model = retrain_on_all(data, architecture, training, max(rounds, 1))
    primary = primary_of(objectives, spec.dataset.task)
    decision = choose_decision_for(spec, data, architecture, training, int(best[0].user_attrs.get(FOLDS_ATTR, 1)))
    tuning = TuningResult(
        study_name=study_name,
        objectives=metrics,
        directions=directions,
        best_trial=_trial_record(best[0]),
        pareto_front=[_trial_record(t) for t in best] if len(directions) > 1 else [],
        trials_completed=result.count(TrialState.COMPLETE),
        trials_pruned=result.count(TrialState.PRUNED),
        trials_failed=result.count(TrialState.FAIL),
        architecture=architecture,
        training=training,
        validation_metrics=validation_metrics,
        validation_folds=int(best[0].user_attrs.get(FOLDS_ATTR, 1)),
        test_metrics=evaluate_decided(model, data.splits["test"], decision),
        parameters=count_parameters(model),
        param_importances=_importances(result),
        elapsed_seconds=result.elapsed_seconds,
        warnings=delivered_warnings(
            model,
            data.splits["test"],
            data.splits["train"].target,
            [str(c) for c in data.transform.classes],
            decision,
            [primary] + ([decision.metric] if decision is not None else []),
        ),
        decision=decision,
        primary_metric=primary,
    )
    with StageWriter(store, prefix, {"stage": "tuning"}) as out:
        out.write_bytes(MODEL_FILE, save_model(model))
        out.write_bytes("preprocessing.json", dump(data.transform))
        out.write_json("trials.json", [_trial_record(t).model_dump(mode="json", by_alias=True) for t in result.trials])
        out.write_json(REFERENCE_FILE, reference_sample(data.raw_train, data.transform, spec.dataset.seed))
        out.write_bytes("result.json", dump(tuning))
    storage.after_trial()
    return tuning


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optiloop.jobs.tune", description="Run optiloop's tuning stage.")
    parser.add_argument("--input", type=Path, help=f"stage input JSON (default: ${STAGE_INPUT_ENV})")
    parser.add_argument(
        "--stage", choices=("data", "features", "tuning"), default="tuning", help="run up to this sub-stage"
    )
    args = parser.parse_args(argv)
    stage = stage_input_or_report(args.input)
    if stage is None:
        return EXIT_INVALID
    configure_threads()
    try:
        store = open_store(stage.artifacts)
        if args.stage == "data":
            summary: dict[str, Any] = {"dataQuality": run_data_quality(stage, store).passed}
        elif args.stage == "features":
            summary = {"features": run_features(stage, store).input_width}
        else:
            tuned = run_tuning(stage, store)
            if tuned is None:
                summary = {"worker": stage.worker_index}
                report_outcome(StageOutcome(stage="tuning", succeeded=True, reason="WorkerFinished"))
            else:
                summary = {"bestTrial": tuned.best_trial.number, "testMetrics": tuned.test_metrics}
                for warning in tuned.warnings:
                    print(f"warning: {warning}", file=sys.stderr)
                report_outcome(tuning_outcome(tuned))
    except DataQualityError as exc:
        print(str(exc), file=sys.stderr)
        report_outcome(failed_outcome("tuning", "DataQualityFailed", str(exc)))
        return EXIT_DATA_QUALITY
    except OptiloopError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        report_outcome(failed_outcome("tuning", "StageFailed", f"{type(exc).__name__}: {exc}"))
        return EXIT_FAILURE
    print(json.dumps(summary))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
