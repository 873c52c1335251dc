"""The compression stage: build candidates from the tuned model, measure them in ONNX Runtime,
keep the best one that passes the gates, and export it as the model directory to serve.

Run by the cluster's compression Job and by the local runner::

    python -m optiloop.jobs.compress --input stage-input.json   # or OPTILOOP_STAGE_INPUT='{...}'

``spec.compression.steps`` run in order, each as the concrete steps it means for the model
family the chain has reached (:mod:`optiloop.jobs.steps`: for a tree ensemble a prune step gives
fewer trees and fewer leaves, and quantization is skipped with the reason). A prune or distill
step starts from the latest model (the previous prune or distill result, or the tuned model) and
yields a new one; a quantize step turns the latest model into an ONNX candidate and leaves the
chain where it was, so ``[prune, quantize, distill, quantize]`` quantizes the pruned model and
then the student distilled from it. The uncompressed baseline is always a candidate.

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
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..api.jobs import CandidateReport, CompressionReport, Decision, StageInput, TrainingConfig, TuningResult
from ..api.spec import DEFAULT_METRIC, Metric, ModelOptimizationSpec
from ..errors import OptiloopError
from . import prune as pruning
from .checkpoint import load_model
from .decision import calibrate, fold_into_graph
from .errors import CompressionError
from .export import run_export
from .gates import select
from .latency import measure_round_robin, open_session
from .metrics import task_metrics
from .models import count_parameters
from .onnx_export import export_onnx
from .outcome import compression_outcome, failed_outcome, report_outcome
from .prepare import PreparedData, prepare_data
from .stage import EXIT_FAILURE, EXIT_INVALID, EXIT_OK, configure_threads, stage_input_or_report
from .steps import Precision, StepContext, steps_for
from .storage import ArtifactStore, StageWriter, completion_marker, open_store
from .training import EncodedSplit
from .trees import AnyModel, TreeModel, export_tree_onnx


@dataclass
class Candidate:
    """A candidate before measurement: its ONNX graph and the model it came from."""

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


def build_candidates(
    spec: ModelOptimizationSpec,
    baseline: AnyModel,
    data: PreparedData,
    training: TrainingConfig,
    on_candidate: Callable[[Candidate], None] | None = None,
    decision: Decision | None = None,
) -> list[Candidate]:
    """The baseline and the candidates of every compression step, each exported to ONNX.

    A spec step becomes one or more concrete steps for the family the chain has reached
    (:func:`~optiloop.jobs.steps.steps_for`); each gives one candidate. Later steps start from
    the first candidate of a step that made a new model (a quantized graph leaves the chain where
    it was). A step that fails or does not apply (a student that diverges, a quantizer that
    rejects the graph, int8 for a tree ensemble) becomes a candidate with its error or reason
    instead of ending the stage: the other candidates still count. A classifier's ``decision``
    (calibration and threshold, from tuning) is folded into every graph before it is quantized
    or measured, so each candidate is judged as it would answer.
    """
    exported: dict[int, bytes] = {}

    def onnx_of(model: AnyModel) -> bytes:
        if id(model) not in exported:
            graph = export_tree_onnx(model) if isinstance(model, TreeModel) else export_onnx(model)
            exported[id(model)] = fold_into_graph(graph, decision)
        return exported[id(model)]

    context = StepContext(
        train=data.splits["train"],
        validation=data.splits["validation"],
        training=training,
        class_weights=data.weights_for(training),
        seed=spec.dataset.seed,
    )
    candidates = [Candidate("baseline", [], "fp32", baseline, onnx_of(baseline))]
    if on_candidate is not None:
        on_candidate(candidates[0])
    current, chain = baseline, list[str]()
    for index, spec_step in enumerate(spec.compression.steps, start=1):
        next_model, next_chain = current, chain
        for step in steps_for(spec_step, current):
            name, steps = f"{index}-{step.name}", [*chain, step.describe()]
            try:
                made = step.apply(current, onnx_of, context)
                candidate = Candidate(name, steps, made.precision, made.model, made.onnx_bytes)
                if made.continues_chain and next_model is current:
                    next_model, next_chain = made.model, steps
            except (OptiloopError, RuntimeError, ValueError, onnx.checker.ValidationError) as exc:
                candidate = Candidate(name, steps, "fp32", current, error=f"{type(exc).__name__}: {exc}")
            candidates.append(candidate)
            if on_candidate is not None:
                on_candidate(candidate)
        current, chain = next_model, next_chain
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
    # A classifier's answers are the graph's own predictions (they follow its decision threshold).
    answers = np.asarray(outputs[0]) if task == "classification" else None
    metrics = task_metrics(task, test.target, scores, answers)  # type: ignore[arg-type]
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


def check_parity(
    model: AnyModel,
    onnx_bytes: bytes,
    rows: np.ndarray,
    rtol: float = PARITY_TOLERANCE,
    decision: Decision | None = None,
) -> None:
    """Raise :class:`CompressionError` unless ONNX Runtime matches torch on ``rows`` (fp32 graphs),
    within ``rtol`` of the outputs' scale (see :func:`parity_tolerance`); a classifier's
    probabilities calibrated by ``decision`` as its graph's are."""
    import torch

    model.eval()
    session = open_session(onnx_bytes, 1)
    exported = session.run(None, {"features": rows})  # type: ignore[attr-defined]
    with torch.inference_mode():
        out = model(torch.from_numpy(rows))
        expected = (torch.softmax(out, dim=1) if model.task == "classification" else out).numpy()
    if model.task == "classification" and decision is not None:
        expected = calibrate(expected, decision.logit_offsets)
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
    candidates = build_candidates(
        spec, baseline, data, tuning.training, on_candidate=on_candidate, decision=tuning.decision
    )
    for candidate in candidates:
        if candidate.precision == "fp32" and candidate.onnx_bytes is not None:
            try:
                check_parity(candidate.model, candidate.onnx_bytes, test.raw[:256], decision=tuning.decision)
            except CompressionError as exc:
                if candidate.name == "baseline":
                    raise
                candidate.onnx_bytes, candidate.error = None, str(exc)
    measured = measure_candidates(candidates, test, spec.dataset.task, spec.compression.latency_batch_size, threads)
    metric = tuning.primary_metric or primary_metric(spec)
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
