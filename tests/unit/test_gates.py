"""Compression gates and selection: which candidate wins for a given table of measurements."""

from __future__ import annotations

import math

import pytest

from optiloop.api.jobs import CandidateReport, LatencyStats
from optiloop.api.spec import CompressionGates
from optiloop.jobs.gates import metric_drop, select


def candidate(name: str, metric: float, p95: float, size: int, error: str | None = None) -> CandidateReport:
    return CandidateReport(
        name=name,
        test_metrics={"accuracy": metric, "rmse": metric},
        latency=[LatencyStats(batch_size=1, p50_ms=p95 / 2, p95_ms=p95, repetitions=50)],
        size_bytes=size,
        error=error,
    )


BASELINE = candidate("baseline", 0.95, 1.0, 1000)

TABLE = [
    # (description, candidates after the baseline, gates, selection, expected winner, fallback)
    (
        "fastest passing wins",
        [candidate("a", 0.945, 0.5, 500), candidate("b", 0.948, 0.3, 800)],
        {},
        "fastest",
        "b",
        False,
    ),
    ("too large a drop fails", [candidate("a", 0.93, 0.1, 100)], {}, "fastest", "baseline", False),
    (
        "smallest passing wins",
        [candidate("a", 0.945, 0.5, 500), candidate("b", 0.948, 0.3, 800)],
        {},
        "smallest",
        "a",
        False,
    ),
    (
        "most accurate wins",
        [candidate("a", 0.96, 0.5, 500), candidate("b", 0.955, 0.3, 800)],
        {},
        "mostAccurate",
        "a",
        False,
    ),
    (
        "most accurate tie goes to the smaller",
        [candidate("a", 0.96, 0.5, 900), candidate("b", 0.96, 0.3, 800)],
        {},
        "mostAccurate",
        "b",
        False,
    ),
    (
        "latency within 3% is a tie, the smaller wins",
        [candidate("a", 0.95, 0.300, 900), candidate("b", 0.95, 0.305, 400)],
        {},
        "fastest",
        "b",
        False,
    ),
    (
        "equal size and latency: the earlier wins",
        [candidate("a", 0.95, 0.3, 400), candidate("b", 0.95, 0.3, 400)],
        {},
        "fastest",
        "a",
        False,
    ),
    (
        "latency gate removes the fast-but-not-enough",
        [candidate("a", 0.95, 0.6, 400)],
        {"maxLatencyP95Ms": 0.5},
        "smallest",
        "baseline",
        True,
    ),
    (
        "size gate",
        [candidate("a", 0.95, 0.2, 600), candidate("b", 0.95, 0.1, 300)],
        {"maxSizeBytes": 500},
        "fastest",
        "b",
        False,
    ),
    (
        "nothing passes: baseline, fallback",
        [candidate("a", 0.90, 0.1, 100)],
        {"maxSizeBytes": 500},
        "fastest",
        "baseline",
        True,
    ),
    (
        "relative drop of 2% allowed",
        [candidate("a", 0.932, 0.1, 100)],
        {"maxMetricDrop": 0.02, "metricDropMode": "relative"},
        "fastest",
        "a",
        False,
    ),
    (
        "relative drop beyond the limit",
        [candidate("a", 0.92, 0.1, 100)],
        {"maxMetricDrop": 0.02, "metricDropMode": "relative"},
        "fastest",
        "baseline",
        False,
    ),
    ("a broken candidate never wins", [candidate("a", 0.99, 0.01, 10, error="boom")], {}, "fastest", "baseline", False),
    ("a NaN metric never wins", [candidate("a", math.nan, 0.01, 10)], {}, "fastest", "baseline", False),
]


@pytest.mark.parametrize(
    ("description", "others", "gates", "selection", "winner", "fallback"), TABLE, ids=[t[0] for t in TABLE]
)
def test_selection_table(
    description: str,
    others: list[CandidateReport],
    gates: dict[str, object],
    selection: str,
    winner: str,
    fallback: bool,
) -> None:
    result = select([BASELINE, *others], CompressionGates.model_validate(gates), "accuracy", selection)
    assert (result.chosen, result.fallback) == (winner, fallback), description
    assert [c.name for c in result.candidates] == ["baseline", *[c.name for c in others]]
    assert all(c.passed == (not c.failed_gates) for c in result.candidates)


def test_nothing_passing_names_each_candidates_failed_gate() -> None:
    result = select(
        [
            BASELINE,
            candidate("1-prune-structured", 0.90, 2.0, 900),
            candidate("2-quantize-dynamicint8", 0.95, 2.5, 2000),
        ],
        CompressionGates(max_latency_p95_ms=0.5, max_size_bytes=1500),
        "accuracy",
        "fastest",
    )
    assert result.fallback
    assert result.chosen == "baseline"
    assert "no candidate passed" in result.message
    assert "1-prune-structured: accuracy 0.9 is 0.05 worse" in result.message
    assert "p95 latency 2 ms at batch size 1 (limit 0.5 ms)" in result.message
    assert "2-quantize-dynamicint8: p95 latency 2.5 ms" in result.message
    assert "size 2.0 KB (limit 1.5 KB)" in result.message


def test_error_metrics_are_judged_by_their_increase() -> None:
    base = candidate("baseline", 50.0, 1.0, 1000)
    worse, better = candidate("worse", 52.0, 0.5, 500), candidate("better", 49.0, 0.9, 900)
    gates = CompressionGates(max_metric_drop=0.03, metric_drop_mode="relative")
    result = select([base, worse, better], gates, "rmse", "fastest")
    assert result.chosen == "better"
    assert result.candidates[1].failed_gates
    assert result.candidates[1].metric_drop == pytest.approx(0.04)
    assert result.candidates[2].metric_drop == pytest.approx(-0.02)
    assert metric_drop("accuracy", 0.9, 0.95, "absolute") == pytest.approx(0.05)


def test_the_message_compares_the_winner_with_the_baseline() -> None:
    result = select([BASELINE, candidate("a", 0.949, 0.25, 250)], CompressionGates(), "accuracy", "fastest")
    assert result.message.startswith("chose a, the fastest of 2 passing candidates out of 2")
    assert "4x the baseline's speed" in result.message
    assert "4x smaller" in result.message


def test_a_candidate_exactly_at_each_gate_passes_it_and_one_just_past_fails_naming_value_and_limit() -> None:
    """Gates are inclusive limits: at the limit passes, past it fails with both numbers (and sizes
    in readable units)."""
    from optiloop.jobs.gates import judge

    gates = CompressionGates(max_metric_drop=0.01, max_latency_p95_ms=2.0, max_size_bytes=1536)
    assert judge(candidate("edge", 0.94, 2.0, 1536), BASELINE, gates, "accuracy") == []
    failed = judge(candidate("past", 0.93, 2.5, 1537), BASELINE, gates, "accuracy")
    assert failed == [
        "accuracy 0.93 is 0.02 worse than the baseline's 0.95 (limit 0.01)",
        "p95 latency 2.5 ms at batch size 1 (limit 2 ms)",
        "size 1.5 KB (limit 1.5 KB)",
    ]
    big = CompressionGates(max_size_bytes=3 * 1024**3)
    assert judge(candidate("huge", 0.95, 1.0, 5 * 1024**3), BASELINE, big, "accuracy") == ["size 5.0 GB (limit 3.0 GB)"]
    small = CompressionGates(max_size_bytes=100)
    assert judge(candidate("b", 0.95, 1.0, 200), BASELINE, small, "accuracy") == ["size 200 B (limit 100 B)"]
    relative = CompressionGates(max_metric_drop=0.01, metric_drop_mode="relative")
    [message] = judge(candidate("rel", 0.9, 1.0, 10), BASELINE, relative, "accuracy")
    assert message.endswith("worse than the baseline's 0.95 (limit 0.01 of the baseline)")
    unmeasured = candidate("n", 0.95, 1.0, 10).model_copy(update={"latency": []})
    assert judge(unmeasured, BASELINE, CompressionGates(max_latency_p95_ms=5.0), "accuracy") == [
        "latency at batch size 1 was not measured"
    ]
    assert judge(candidate("nan", math.nan, 1.0, 10), BASELINE, CompressionGates(), "accuracy") == [
        "accuracy is not a number"
    ]
