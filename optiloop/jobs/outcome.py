"""What a stage Job tells the operator when it ends: a :class:`StageOutcome` in the pod's
termination message.

The pod writes it to ``$OPTILOOP_RESULT_FILE`` (the operator sets it to the container's
``terminationMessagePath``); outside a cluster the variable is unset and nothing is written.
Kubernetes keeps at most 4 KiB, so parameters and then the message are shortened to fit.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..api.jobs import TERMINATION_MESSAGE_LIMIT, CompressionReport, OutcomeReason, StageOutcome, TuningResult
from ..api.status import BestTrial, ModelMetrics, ObjectiveValue, ParameterValue

RESULT_FILE_ENV = "OPTILOOP_RESULT_FILE"
_MESSAGE_LIMIT = 2048


def tuning_outcome(result: TuningResult) -> StageOutcome:
    """The outcome of a finished search: its best trial."""
    trial = result.best_trial
    best = BestTrial(
        number=trial.number,
        values=[ObjectiveValue(metric=m, value=v) for m, v in zip(result.objectives, trial.values or [], strict=False)],
        params=[ParameterValue(name=k, value=str(v)[:256]) for k, v in sorted(trial.params.items())][:64],
        trials_completed=result.trials_completed,
        pareto_front_size=len(result.pareto_front) if len(result.objectives) > 1 else None,
    )
    return StageOutcome(stage="tuning", succeeded=True, reason="Succeeded", best_trial=best)


def compression_outcome(report: CompressionReport) -> StageOutcome:
    """The outcome of compression: the chosen candidate's measurements."""
    chosen = report.chosen_candidate
    single = chosen.latency_at(1)
    model = ModelMetrics(
        candidate=chosen.name[:128],
        primary_metric=report.primary_metric,
        primary_value=chosen.test_metrics.get(report.primary_metric, float("nan")),
        latency_p50_ms=single.p50_ms if single else None,
        latency_p95_ms=single.p95_ms if single else None,
        size_bytes=chosen.size_bytes,
        parameters=chosen.parameters,
        gates_passed=not report.fallback,
    )
    return StageOutcome(
        stage="compression", succeeded=True, reason="Succeeded", message=report.message[:_MESSAGE_LIMIT], model=model
    )


def failed_outcome(stage: str, reason: OutcomeReason, message: str) -> StageOutcome:
    """The outcome of a stage that stopped, with the reason the operator puts in its condition."""
    return StageOutcome.model_validate(
        {"stage": stage, "succeeded": False, "reason": reason, "message": message[:_MESSAGE_LIMIT]}
    )


def termination_message(outcome: StageOutcome) -> str:
    """``outcome`` as JSON of at most 4 KiB: trial parameters go first, then the message shrinks."""
    text = outcome.model_dump_json(by_alias=True, exclude_none=True)
    if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
        return text
    if outcome.best_trial is not None and outcome.best_trial.params:
        trimmed = outcome.model_copy(update={"best_trial": outcome.best_trial.model_copy(update={"params": []})})
        return termination_message(trimmed)
    excess = len(text.encode()) - TERMINATION_MESSAGE_LIMIT
    message = outcome.message.encode()[: max(0, len(outcome.message.encode()) - excess - 8)]
    shorter = outcome.model_copy(update={"message": message.decode(errors="ignore") + "..."})
    return shorter.model_dump_json(by_alias=True, exclude_none=True)


def report_outcome(outcome: StageOutcome) -> None:
    """Write ``outcome`` where Kubernetes reads the termination message, when running in a Job."""
    path = os.environ.get(RESULT_FILE_ENV)
    if not path:
        return
    Path(path).write_text(termination_message(outcome), encoding="utf-8")
