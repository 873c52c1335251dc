"""The compression stage: build candidates from the tuned model, measure them in ONNX Runtime,
keep the best one that passes the gates, and export it as the model directory to serve.

Run by the cluster's compression Job and by the local runner::

    python -m optiloop.jobs.compress --input stage-input.json   # or OPTILOOP_STAGE_INPUT='{...}'

``spec.compression.steps`` run in order. A prune or distill step starts from the latest torch
model (the previous prune or distill result, or the tuned model) and yields a new one; a
quantize step turns the latest torch model into an ONNX candidate and leaves the chain where it
was, so ``[prune, quantize, distill, quantize]`` quantizes the pruned model and then the
student distilled from it. The uncompressed baseline is always a candidate.

Every candidate is measured as the ONNX graph that would be served: task metrics on the test
split from ONNX Runtime's outputs, p50/p95 latency at batch size 1 and at
``compression.latencyBatchSize``, file size and parameters. Outputs go below
``r<revision>/compression/`` (``report.json`` and every candidate's ONNX file) and
``r<revision>/model/`` (the served model directory, see :mod:`optiloop.jobs.export`).

Exit codes: 0 done (also when no candidate passed and the baseline is exported: the report
says so), 2 invalid input, 1 anything else.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from torch import nn

from ..api.jobs import CandidateReport, CompressionReport, StageInput, TrainingConfig, TuningResult
from ..api.spec import DEFAULT_METRIC, CompressionStep, Metric, ModelOptimizationSpec
from ..errors import OptiloopError
from . import distill as distillation
from . import prune as pruning
from .checkpoint import load_model
from .errors import CompressionError
from .export import run_export
from .gates import select
from .latency import measure_round_robin, open_session
from .metrics import task_metrics
from .models import TabularModel, count_parameters
from .onnx_export import export_onnx, quantize_dynamic_int8, quantize_static_int8, to_fp16_storage
from .outcome import compression_outcome, failed_outcome, report_outcome
from .prepare import PreparedData, prepare_data
from .stage import EXIT_FAILURE, EXIT_INVALID, EXIT_OK, configure_threads, stage_input_or_report
from .storage import ArtifactStore, StageWriter, completion_marker, open_store
from .training import EncodedSplit, train_model
from .trees import AnyModel, TreeModel, export_tree_onnx

FINE_TUNE_LR_FACTOR = 0.3
"""Fine-tuning after pruning starts from the tuned learning rate scaled down: the weights are
already good, so large steps would undo more than they repair."""


Precision = Literal["fp32", "fp16", "int8"]


@dataclass
class Candidate:
    """A candidate before measurement: its ONNX graph and the torch model it came from."""

    name: str
    steps: list[str]
    precision: Precision
    model: AnyModel
    onnx_bytes: bytes | None = None
    error: str | None = None


def primary_metric(spec: ModelOptimizationSpec) -> Metric:
    """The metric the drop gate judges: the first task-quality objective, else the task's default."""
    for objective in spec.objectives():
        if objective.metric not in ("latencyMs", "parameters"):
            return objective.metric
    return DEFAULT_METRIC[spec.dataset.task]


def _fine_tune_config(training: TrainingConfig, epochs: int) -> TrainingConfig:
    patience = training.early_stopping_patience
    return training.model_copy(
        update={
            "epochs": epochs,
            "learning_rate": training.learning_rate * FINE_TUNE_LR_FACTOR,
            "early_stopping_patience": None if patience is None else min(patience, epochs),
        }
    )


def _fewer_trees(model: TreeModel, amount: float) -> TreeModel:
    """A tree ensemble's pruning: its first boosting rounds only (``amount`` of them dropped);
    the earliest trees carry the most signal, and the gates judge what the rest were worth."""
    rounds = model.rounds()
    keep = max(1, round(rounds * (1.0 - amount)))
    if keep >= rounds:
        raise CompressionError(f"pruning {amount:g} of {rounds} boosting rounds leaves all of them")
    return model.truncated(keep)


def _apply_torch_step(step: CompressionStep, model: AnyModel, data: PreparedData, training: TrainingConfig) -> AnyModel:
    train, validation = data.splits["train"], data.splits["validation"]
    if isinstance(model, TreeModel) and step.prune is not None:
        return _fewer_trees(model, step.prune.amount)
    if step.prune is not None:
        assert isinstance(model, TabularModel)
        settings = step.prune
        masked: list[nn.Linear] = []
        if settings.method == "structured":
            result = pruning.prune_structured(model, settings.amount, settings.scope)
        else:
            result = copy.deepcopy(model)
            masked = pruning.prune_unstructured(result, settings.amount, settings.scope)
        if settings.fine_tune_epochs > 0:
            train_model(
                result,
                train,
                validation,
                _fine_tune_config(training, settings.fine_tune_epochs),
                class_weights=data.weights_for(training),
            )
        pruning.make_permanent(masked)
        return result
    assert step.distill is not None
    outcome = distillation.distill(model, step.distill, train, validation, training, data.weights_for(training))
    return outcome.model


def _quantize(
    step: CompressionStep, model: AnyModel, onnx_bytes: bytes, train: EncodedSplit, seed: int
) -> tuple[bytes, Precision]:
    assert step.quantize is not None
    mode = step.quantize.mode
    if isinstance(model, TreeModel):
        # Trees compare and add; there is no matrix product for int8 or fp16 to speed up.
        raise CompressionError(f"{mode} does not apply to a tree ensemble (it has no matrix products)")
    if mode == "dynamicInt8":
        return quantize_dynamic_int8(onnx_bytes), "int8"
    if mode == "staticInt8":
        rows = np.random.default_rng(seed).permutation(len(train.raw))[: step.quantize.calibration_samples]
        return quantize_static_int8(onnx_bytes, train.raw[np.sort(rows)]), "int8"
    return to_fp16_storage(onnx_bytes), "fp16"


def _describe(step: CompressionStep) -> str:
    if step.prune is not None:
        return pruning.describe(step.prune)
    if step.distill is not None:
        return distillation.describe(step.distill)
    assert step.quantize is not None
    return f"quantize {step.quantize.mode}"


def _name(index: int, step: CompressionStep) -> str:
    if step.prune is not None:
        return f"{index}-prune-{step.prune.method}"
    if step.quantize is not None:
        return f"{index}-quantize-{step.quantize.mode.lower()}"
    return f"{index}-distill"


def build_candidates(
    spec: ModelOptimizationSpec,
    baseline: AnyModel,
    data: PreparedData,
    training: TrainingConfig,
    on_candidate: Callable[[Candidate], None] | None = None,
) -> list[Candidate]:
    """The baseline and one candidate per compression step, each exported to ONNX.

    A step that fails (a student that diverges, a quantizer that rejects the graph) becomes a
    candidate with its error instead of ending the stage: the other candidates still count.
    """
    exported: dict[int, bytes] = {}

    def onnx_of(model: AnyModel) -> bytes:
        if id(model) not in exported:
            exported[id(model)] = export_tree_onnx(model) if isinstance(model, TreeModel) else export_onnx(model)
        return exported[id(model)]

    candidates = [Candidate("baseline", [], "fp32", baseline, onnx_of(baseline))]
    if on_candidate is not None:
        on_candidate(candidates[0])
    current, chain = baseline, list[str]()
    for index, step in enumerate(spec.compression.steps, start=1):
        name, steps = _name(index, step), [*chain, _describe(step)]
        try:
            if step.quantize is not None:
                quantized, precision = _quantize(
                    step, current, onnx_of(current), data.splits["train"], spec.dataset.seed
                )
                candidate = Candidate(name, steps, precision, current, quantized)
            else:
                current, chain = _apply_torch_step(step, current, data, training), steps
                candidate = Candidate(name, steps, "fp32", current, onnx_of(current))
        except (OptiloopError, RuntimeError, ValueError, onnx.checker.ValidationError) as exc:
            candidate = Candidate(name, steps, "fp32", current, error=f"{type(exc).__name__}: {exc}")
        candidates.append(candidate)
        if on_candidate is not None:
            on_candidate(candidate)
    return candidates


def evaluate_candidate(
    candidate: Candidate, test: EncodedSplit, task: str, threads: int
) -> tuple[CandidateReport, Any]:
    """Metrics, size and parameters of one candidate from ONNX Runtime's outputs, and its session
    (None when it could not run)."""
    report = CandidateReport(
        name=candidate.name,
        steps=candidate.steps,
        precision=candidate.precision,
        hidden=list(candidate.model.architecture.hidden),
        parameters=count_parameters(candidate.model),
        nonzero_parameters=count_parameters(candidate.model)
        if isinstance(candidate.model, TreeModel)
        else pruning.nonzero_parameters(candidate.model.mlp),
        error=candidate.error,
    )
    if candidate.onnx_bytes is None:
        return report, None
    try:
        session = open_session(candidate.onnx_bytes, threads)
        outputs = session.run(None, {"features": test.raw})  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's pybind errors share no base class but Exception
        return report.model_copy(update={"error": f"ONNX Runtime could not run it: {exc}"}), None
    scores = np.asarray(outputs[1] if task == "classification" else outputs[0])
    metrics = task_metrics(task, test.target, scores)  # type: ignore[arg-type]
    return report.model_copy(update={"size_bytes": len(candidate.onnx_bytes), "test_metrics": metrics}), session


def measure_candidates(
    candidates: list[Candidate], test: EncodedSplit, task: str, batch_size: int, threads: int
) -> list[CandidateReport]:
    """Every candidate's report, with latency timed round-robin so that all face the same conditions."""
    evaluated = [evaluate_candidate(candidate, test, task, threads) for candidate in candidates]
    sessions = {report.name: session for report, session in evaluated if session is not None}
    latency = measure_round_robin(sessions, test.raw, sorted({1, batch_size})) if sessions else {}
    return [
        report.model_copy(update={"latency": latency[report.name]}) if report.name in latency else report
        for report, _ in evaluated
    ]


PARITY_TOLERANCE = 1e-4
"""How far ONNX Runtime may stray from torch, relative to the output's scale: float32 keeps about
seven significant digits, so a regression target in the millions legitimately differs by
tenths between two correct float32 computations, while probabilities live in [0, 1]."""


def parity_tolerance(expected: np.ndarray, rtol: float = PARITY_TOLERANCE) -> float:
    """The allowed absolute difference for outputs ``expected``: ``rtol`` times their scale (at least 1)."""
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max(initial=0.0)))
    return rtol * scale


def check_parity(model: AnyModel, onnx_bytes: bytes, rows: np.ndarray, rtol: float = PARITY_TOLERANCE) -> None:
    """Raise :class:`CompressionError` unless ONNX Runtime matches torch on ``rows`` (fp32 graphs),
    within ``rtol`` of the outputs' scale (see :func:`parity_tolerance`)."""
    import torch

    model.eval()
    session = open_session(onnx_bytes, 1)
    exported = session.run(None, {"features": rows})  # type: ignore[attr-defined]
    with torch.inference_mode():
        out = model(torch.from_numpy(rows))
        expected = (torch.softmax(out, dim=1) if model.task == "classification" else out).numpy()
    got = exported[1] if model.task == "classification" else exported[0]
    worst = float(np.max(np.abs(np.asarray(got) - expected), initial=0.0))
    tolerance = parity_tolerance(expected, rtol)
    if not worst <= tolerance:
        raise CompressionError(
            f"the exported ONNX model differs from torch by {worst:.3g} "
            f"(tolerance {tolerance:.3g}: {rtol:g} of the outputs' scale)"
        )


def run_compression(
    stage: StageInput, store: ArtifactStore, on_candidate: Callable[[Candidate], None] | None = None
) -> CompressionReport:
    """Build, measure and judge the candidates; write the report and export the chosen model."""
    prefix = f"r{stage.revision}/compression"
    if completion_marker(store, prefix):
        report = CompressionReport.model_validate_json(store.read_bytes(f"{prefix}/report.json"))
        run_export(stage, store, report)
        return report
    started = time.monotonic()
    spec = stage.spec
    tuning_prefix = f"r{stage.revision}/tuning"
    if not completion_marker(store, tuning_prefix):
        raise CompressionError(f"the tuning stage of revision {stage.revision} has not finished ({tuning_prefix})")
    tuning = TuningResult.model_validate_json(store.read_bytes(f"{tuning_prefix}/result.json"))
    baseline = load_model(store, tuning_prefix)
    data = prepare_data(stage, store)
    threads = configure_threads()
    test = data.splits["test"]
    candidates = build_candidates(spec, baseline, data, tuning.training, on_candidate=on_candidate)
    for candidate in candidates:
        if candidate.precision == "fp32" and candidate.onnx_bytes is not None:
            try:
                check_parity(candidate.model, candidate.onnx_bytes, test.raw[:256])
            except CompressionError as exc:
                if candidate.name == "baseline":
                    raise
                candidate.onnx_bytes, candidate.error = None, str(exc)
    measured = measure_candidates(candidates, test, spec.dataset.task, spec.compression.latency_batch_size, threads)
    metric = primary_metric(spec)
    if measured[0].error is not None:
        raise CompressionError(f"the uncompressed baseline could not be measured: {measured[0].error}")
    selection = select(measured, spec.compression.gates, metric, spec.compression.selection)
    report = CompressionReport(
        primary_metric=metric,
        selection=spec.compression.selection,
        gates=spec.compression.gates,
        chosen=selection.chosen,
        fallback=selection.fallback,
        message=selection.message,
        candidates=selection.candidates,
        threads=threads,
        elapsed_seconds=time.monotonic() - started,
    )
    with StageWriter(store, prefix, {"stage": "compression"}) as out:
        for candidate in candidates:
            if candidate.onnx_bytes is not None:
                out.write_bytes(f"candidates/{candidate.name}.onnx", candidate.onnx_bytes)
        out.write_bytes("report.json", report.model_dump_json(by_alias=True, indent=2).encode())
    run_export(stage, store, report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m optiloop.jobs.compress",
        description="Run optiloop's compression stage and export the chosen model.",
    )
    parser.add_argument("--input", type=Path, help="stage input JSON (default: $OPTILOOP_STAGE_INPUT)")
    args = parser.parse_args(argv)
    stage = stage_input_or_report(args.input, "compression")
    if stage is None:
        return EXIT_INVALID
    try:
        report = run_compression(stage, open_store(stage.artifacts))
    except OptiloopError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        report_outcome(failed_outcome("compression", "StageFailed", f"{type(exc).__name__}: {exc}"))
        return EXIT_FAILURE
    report_outcome(compression_outcome(report))
    print(json.dumps({"chosen": report.chosen, "fallback": report.fallback, "message": report.message}))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
