"""Gates and selection of compression candidates: pure functions over measured candidates.

Every candidate is judged against the uncompressed baseline on the primary metric, and on
its own p95 latency at batch size 1 and its file size. Among the candidates that pass, the
selection policy picks one; ties go to the smaller, then to the earlier candidate, so the
same measurements always give the same winner. When nothing passes, the baseline is chosen
and the result says why each candidate failed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..api.jobs import CandidateReport
from ..api.spec import CompressionGates, Metric
from .metrics import improvement

LATENCY_TIE = 0.03
"""Latencies within 3% of the fastest count as equal: closer than that is measurement noise."""


_SELECTION_WORDS = {"fastest": "fastest", "smallest": "smallest", "mostAccurate": "most accurate"}


@dataclass(frozen=True)
class Selection:
    """The judged candidates, the winner, and one paragraph saying why."""

    candidates: list[CandidateReport]
    chosen: str
    fallback: bool
    message: str


def _format_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def metric_drop(metric: Metric, candidate: float, baseline: float, mode: str) -> float:
    """How much worse ``candidate`` is than ``baseline`` (negative when better), in the gate's mode."""
    drop = -improvement(metric, candidate, baseline)
    if mode == "relative" and baseline != 0:
        return drop / abs(baseline)
    return drop


def judge(candidate: CandidateReport, baseline: CandidateReport, gates: CompressionGates, metric: Metric) -> list[str]:
    """The gates ``candidate`` fails, each with its measured value and limit (empty when it passes)."""
    if candidate.error is not None:
        return [f"could not be built or measured: {candidate.error}"]
    failed = []
    value, reference = candidate.test_metrics.get(metric, math.nan), baseline.test_metrics.get(metric, math.nan)
    if not math.isfinite(value):
        failed.append(f"{metric} is not a number")
    elif math.isfinite(reference):
        drop = metric_drop(metric, value, reference, gates.metric_drop_mode)
        if drop > gates.max_metric_drop + 1e-12:
            unit = "" if gates.metric_drop_mode == "absolute" else " of the baseline"
            failed.append(
                f"{metric} {value:.4g} is {drop:.4g}{unit} worse than the baseline's {reference:.4g} "
                f"(limit {gates.max_metric_drop:g}{unit})"
            )
    single = candidate.latency_at(1)
    if gates.max_latency_p95_ms is not None:
        if single is None:
            failed.append("latency at batch size 1 was not measured")
        elif single.p95_ms > gates.max_latency_p95_ms:
            failed.append(f"p95 latency {single.p95_ms:.3g} ms at batch size 1 (limit {gates.max_latency_p95_ms:g} ms)")
    if gates.max_size_bytes is not None and candidate.size_bytes > gates.max_size_bytes:
        failed.append(f"size {_format_bytes(candidate.size_bytes)} (limit {_format_bytes(gates.max_size_bytes)})")
    return failed


def _p95(candidate: CandidateReport) -> float:
    single = candidate.latency_at(1)
    return single.p95_ms if single is not None else math.inf


def _winner(passing: list[tuple[int, CandidateReport]], selection: str, metric: Metric) -> CandidateReport:
    def smaller_then_earlier(entry: tuple[int, CandidateReport]) -> tuple[int, int]:
        return entry[1].size_bytes, entry[0]

    if selection == "fastest":
        fastest = min(_p95(c) for _, c in passing)
        tied = [e for e in passing if _p95(e[1]) <= fastest * (1.0 + LATENCY_TIE)]
        return min(tied, key=smaller_then_earlier)[1]
    if selection == "smallest":
        return min(passing, key=lambda e: (e[1].size_bytes, _p95(e[1]), e[0]))[1]
    best = max(passing, key=lambda e: improvement(metric, e[1].test_metrics[metric], 0.0))[1].test_metrics[metric]
    tied = [e for e in passing if e[1].test_metrics[metric] == best]
    return min(tied, key=smaller_then_earlier)[1]


def _comparison(chosen: CandidateReport, baseline: CandidateReport, metric: Metric) -> str:
    parts = [f"{metric} {chosen.test_metrics.get(metric, math.nan):.4g} (baseline {baseline.test_metrics[metric]:.4g})"]
    if chosen.name != baseline.name:
        base_p95, p95 = _p95(baseline), _p95(chosen)
        if math.isfinite(base_p95) and math.isfinite(p95) and p95 > 0:
            parts.append(f"p95 {p95:.3g} ms at batch 1 ({base_p95 / p95:.2g}x the baseline's speed)")
        if chosen.size_bytes:
            parts.append(f"{_format_bytes(chosen.size_bytes)} ({baseline.size_bytes / chosen.size_bytes:.2g}x smaller)")
    return ", ".join(parts)


def select(candidates: list[CandidateReport], gates: CompressionGates, metric: Metric, selection: str) -> Selection:
    """Judge every candidate (the first is the baseline) and pick the winner."""
    if not candidates or candidates[0].error is not None:
        raise ValueError("the baseline candidate must come first and must have been measured")
    baseline = candidates[0]
    judged = []
    for candidate in candidates:
        failed = judge(candidate, baseline, gates, metric)
        value = candidate.test_metrics.get(metric, math.nan)
        drop = metric_drop(metric, value, baseline.test_metrics.get(metric, math.nan), gates.metric_drop_mode)
        judged.append(
            candidate.model_copy(
                update={
                    "failed_gates": failed,
                    "passed": not failed,
                    "metric_drop": drop if math.isfinite(drop) else 0.0,
                }
            )
        )
    passing = [(index, c) for index, c in enumerate(judged) if c.passed]
    if not passing:
        reasons = "; ".join(f"{c.name}: {', '.join(c.failed_gates)}" for c in judged)
        return Selection(
            judged, baseline.name, True, f"no candidate passed the gates, deploying the baseline. {reasons}"
        )
    winner = _winner(passing, selection, metric)
    message = (
        f"chose {winner.name}, the {_SELECTION_WORDS.get(selection, selection)} of {len(passing)} passing "
        f"candidates out of {len(judged)}: "
        f"{_comparison(winner, baseline, metric)}"
    )
    return Selection(judged, winner.name, False, message)
