"""The tuning stage: data quality -> features -> search -> retrain the best -> outputs.

Run by the cluster's tuning Job and by the local runner::

    python -m optiloop.jobs.tune --input stage-input.json     # or OPTILOOP_STAGE_INPUT='{...}'

Outputs go below ``<artifacts>/r<revision>/``: ``data/`` (quality report and splits),
``features/`` (the fitted transform), ``tuning/`` (study journal, trials, best result, the
retrained model in safetensors, its preprocessing, and a reference sample of raw training
inputs for the drift monitor). Each finished sub-stage has a completion marker, so a rerun
skips it; the study itself is persistent, so a restarted search continues.

Exit codes: 0 done, 2 invalid input, 3 data-quality gate failed, 1 anything else.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..api.jobs import (
    Architecture,
    DataQualityReport,
    Decision,
    FeatureTransform,
    StageInput,
    StageOutcome,
    TrainingConfig,
    TrialRecord,
    TuningResult,
)
from ..api.spec import ModelOptimizationSpec, natural_direction
from ..errors import OptiloopError
from .choice import LOSS_ATTR, PARAMETERS_ATTR, choose
from .data import load_dataset
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
from .errors import DataQualityError, StorageError, TuningError
from .features import encode_raw, encode_target, fit_transform
from .fitting import choose_folds, cross_validate, fit_and_score
from .linear import fit_linear
from .models import TabularModel, count_parameters
from .outcome import failed_outcome, report_outcome, tuning_outcome
from .quality import check_quality, failure_message
from .space import decode, first_trials, search_space
from .split import split_frame
from .storage import ArtifactStore, StageWriter, completion_marker, open_store
from .training import EncodedSplit, build_model, train_model
from .trees import AnyModel, TreeModel, build_tree_model, settings_of
from .tuning import WORKER_ATTR, Budget, Reporter, SearchResult, search

STAGE_INPUT_ENV = "OPTILOOP_STAGE_INPUT"
STUDY_URL_ENV = "OPTILOOP_STUDY_STORAGE_URL"
THREADS_ENV = "OPTILOOP_THREADS"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
REFERENCE_ROWS = 2000
SPLITS = ("train", "validation", "test")

EXIT_OK, EXIT_FAILURE, EXIT_INVALID, EXIT_DATA_QUALITY = 0, 1, 2, 3


def _dump(model: Any) -> bytes:
    return json.dumps(model.model_dump(mode="json", by_alias=True), indent=2).encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _read_parquet(store: ArtifactStore, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.read_bytes(key)))


# --- data quality ------------------------------------------------------------


def run_data_quality(stage: StageInput, store: ArtifactStore) -> DataQualityReport:
    """Load, check, clean and split the data; raise :class:`DataQualityError` when a gate fails."""
    prefix = f"r{stage.revision}/data"
    if completion_marker(store, prefix):
        return DataQualityReport.model_validate_json(store.read_bytes(f"{prefix}/report.json"))
    spec = stage.spec
    result = check_quality(load_dataset(spec.dataset), spec.dataset, spec.data_quality)
    report = result.report
    report.categorical_columns = result.categorical
    if not report.passed:
        # Written without a completion marker: a rerun checks the data again.
        store.write_bytes(f"{prefix}/report.json", _dump(report))
        raise DataQualityError(failure_message(report), report)
    splits = split_frame(result.frame, spec.dataset, oversample=result.oversample)
    report.split_rows = splits.sizes()
    with StageWriter(store, prefix, {"stage": "data"}) as out:
        for name in SPLITS:
            out.write_bytes(f"{name}.parquet", _parquet(getattr(splits, name)))
        out.write_bytes("report.json", _dump(report))
    return report


# --- features ----------------------------------------------------------------


def run_features(stage: StageInput, store: ArtifactStore, report: DataQualityReport | None = None) -> FeatureTransform:
    """Fit the feature transform on the training split (running the data stage unless its
    ``report`` is given)."""
    prefix = f"r{stage.revision}/features"
    if completion_marker(store, prefix):
        return FeatureTransform.model_validate_json(store.read_bytes(f"{prefix}/preprocessing.json"))
    report = report or run_data_quality(stage, store)
    train = _read_parquet(store, f"r{stage.revision}/data/train.parquet")
    spec = stage.spec
    transform = fit_transform(train, report.categorical_columns, spec.dataset, spec.features, spec.data_quality)
    with StageWriter(store, prefix, {"stage": "features"}) as out:
        out.write_bytes("preprocessing.json", _dump(transform))
    return transform


# --- tuning ------------------------------------------------------------------


@dataclass
class PreparedData:
    """Encoded splits and what training needs besides them."""

    transform: FeatureTransform
    splits: dict[str, EncodedSplit]
    class_weights: list[float] | None
    raw_train: pd.DataFrame
    imbalanced: bool = False
    """Whether the data-quality stage found the classes more uneven than its rule allows."""

    def weights_for(self, training: TrainingConfig) -> list[float] | None:
        """The class weights a configuration trains with (none when it chose not to weigh)."""
        return self.class_weights if training.class_weighted else None


def prepare_data(stage: StageInput, store: ArtifactStore) -> PreparedData:
    """Run (or reuse) the data and feature stages and encode the splits."""
    report = run_data_quality(stage, store)
    transform = run_features(stage, store, report)
    frames = {name: _read_parquet(store, f"r{stage.revision}/data/{name}.parquet") for name in SPLITS}
    splits = {
        name: EncodedSplit(encode_raw(transform, frame), encode_target(transform, frame[transform.target]))
        for name, frame in frames.items()
    }
    weights = None
    if report.class_weights:
        weights = [report.class_weights.get(label, 1.0) for label in transform.classes]
    imbalanced = any(r.rule == "classImbalance" and r.status != "passed" for r in report.rules)
    return PreparedData(transform, splits, weights, frames["train"], imbalanced)


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


class TuningProgress(Protocol):
    """What a caller (the local runner's live view) hears while the search runs."""

    def epoch(self, trial: int, epoch: int, value: float) -> None:
        """A trial finished an epoch; ``value`` is its first objective on the validation split."""

    def trial(self, record: TrialRecord, best: float | None) -> None:
        """A trial ended (complete, pruned or failed); ``best`` is the best first objective so far."""


def make_objective(
    stage: StageInput, data: PreparedData, progress: TuningProgress | None = None
) -> Callable[[dict[str, Any], Reporter], list[float]]:
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


def reference_sample(frame: pd.DataFrame, transform: FeatureTransform, seed: int) -> dict[str, Any]:
    """Raw training inputs (no target) for the drift monitor, as plain JSON."""
    columns = [c.name for c in transform.columns]
    sample = frame[columns].sample(n=min(REFERENCE_ROWS, len(frame)), random_state=seed)
    rows = [
        [None if pd.isna(v) else (v if isinstance(v, str) else float(v)) for v in row]
        for row in sample.itertuples(index=False)
    ]
    kinds = {c.name: c.kind for c in transform.columns}
    return {"columns": columns, "kinds": [kinds[c] for c in columns], "rows": rows}


BOOSTER_KEY = "booster"
"""Safetensors entry holding a tree ensemble's LightGBM text model (UTF-8 bytes)."""


def save_model(model: AnyModel) -> bytes:
    """The model's weights and fitted buffers in safetensors (a tree ensemble's booster as bytes)."""
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    if isinstance(model, TreeModel):
        tensors[BOOSTER_KEY] = torch.frombuffer(bytearray(model.booster_text.encode()), dtype=torch.uint8)
    return bytes(save_tensors(tensors))


def load_model(store: ArtifactStore, prefix: str) -> AnyModel:
    """Rebuild a model saved by the tuning stage (weights from safetensors, never pickle)."""
    result = TuningResult.model_validate_json(store.read_bytes(f"{prefix}/result.json"))
    transform = FeatureTransform.model_validate_json(store.read_bytes(f"{prefix}/preprocessing.json"))
    tensors = load_tensors(store.read_bytes(f"{prefix}/model.safetensors"))
    if result.architecture.family == "lightgbm":
        booster = bytes(tensors[BOOSTER_KEY].numpy().tobytes()).decode()
        trees = TreeModel(
            transform,
            result.architecture,
            booster,
            float(tensors["target_mean"]),
            float(tensors["target_std"]),
        )
        trees.eval()
        return trees
    model = TabularModel(transform, result.architecture)
    model.load_state_dict(tensors)
    model.eval()
    return model


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


ROUNDS_ATTR = "rounds"
"""User attribute: epochs or boosting rounds the trial's model kept (the winner is retrained with them)."""
FOLDS_ATTR = "folds"
"""User attribute: folds the trial was scored with (1: the validation split)."""
VALIDATION_ATTR = "validation_metrics"
"""User attribute: the trial's validation (or out-of-fold) metrics."""


def train_and_validation(data: PreparedData) -> EncodedSplit:
    """Training and validation rows together (cross-validation's rows, and the final model's)."""
    train, validation = data.splits["train"], data.splits["validation"]
    return EncodedSplit(np.concatenate([train.raw, validation.raw]), np.concatenate([train.target, validation.target]))


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
    classes, no class weights, no threshold-dependent metric of the user's): then the served
    graph answers the most probable class, as trained."""
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
        out.write_bytes("model.safetensors", save_model(model))
        out.write_bytes("preprocessing.json", _dump(data.transform))
        out.write_json("trials.json", [_trial_record(t).model_dump(mode="json", by_alias=True) for t in result.trials])
        out.write_json("reference.json", reference_sample(data.raw_train, data.transform, spec.dataset.seed))
        out.write_bytes("result.json", _dump(tuning))
    storage.after_trial()
    return tuning


# --- entry point -------------------------------------------------------------


def read_stage_input(path: Path | None) -> StageInput:
    """The stage input from ``path`` or from the ``OPTILOOP_STAGE_INPUT`` environment variable."""
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise StorageError(f"cannot read the stage input {path}: {exc}") from None
    elif os.environ.get(STAGE_INPUT_ENV):
        text = os.environ[STAGE_INPUT_ENV]
    else:
        raise StorageError(f"no stage input: pass --input FILE or set {STAGE_INPUT_ENV}")
    stage = StageInput.model_validate_json(text)
    # Every pod of an Indexed Job gets the same input; Kubernetes tells each its own index.
    index = os.environ.get(COMPLETION_INDEX_ENV)
    if index is not None:
        stage = stage.model_copy(update={"worker_index": int(index)})
        if stage.worker_index >= stage.worker_count:
            raise StorageError(
                f"{COMPLETION_INDEX_ENV}={index} but the stage input says workerCount={stage.worker_count}"
            )
    return stage


def stage_input_or_report(path: Path | None, stage: str = "tuning") -> StageInput | None:
    """The stage input for an entry point, or None after printing (and reporting to the operator)
    why it is invalid (exit code 2)."""
    try:
        return read_stage_input(path)
    except ValidationError as exc:
        problem = f"invalid stage input: {exc}"
    except OptiloopError as exc:
        problem = str(exc)
    print(problem, file=sys.stderr)
    report_outcome(failed_outcome(stage, "InvalidInput", problem))
    return None


def configure_threads() -> int:
    """Bound torch to the CPUs this process may use (or ``OPTILOOP_THREADS``)."""
    threads = int(os.environ.get(THREADS_ENV, "0")) or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads


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
