"""Latency of an ONNX model in ONNX Runtime, measured the way it will be served.

Each measurement warms the session up, then times single calls until both a minimum number of
repetitions and a minimum duration are reached (bounded by a maximum), and reports p50 and p95.

Several candidates are compared with :func:`measure_round_robin`: each is timed in turn, for
several rounds, and the timings are pooled. On a small machine a candidate measured right
after training (or after another runtime's threads were busy) would otherwise pay for its
neighbour's spinning threads and frequency changes, and lose to noise.
"""

from __future__ import annotations

import time

import numpy as np

from ..api.jobs import LatencyStats


def open_session(model: bytes, threads: int) -> object:
    """An ONNX Runtime CPU session with full graph optimization and ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def batch_of(rows: np.ndarray, batch_size: int) -> np.ndarray:
    """``batch_size`` rows taken from ``rows`` in order, repeating them when there are too few."""
    repeats = -(-batch_size // max(len(rows), 1))
    return np.ascontiguousarray(np.tile(rows, (repeats, 1))[:batch_size], dtype=np.float32)


def _timings(
    session: object, batch: np.ndarray, warmup: int, min_repetitions: int, min_seconds: float, max_repetitions: int
) -> list[float]:
    feed = {"features": batch}
    run = session.run  # type: ignore[attr-defined]
    for _ in range(warmup):
        run(None, feed)
    timings: list[float] = []
    started = time.perf_counter()
    while len(timings) < max_repetitions and (
        len(timings) < min_repetitions or time.perf_counter() - started < min_seconds
    ):
        start = time.perf_counter()
        run(None, feed)
        timings.append(time.perf_counter() - start)
    return timings


def _stats(batch_size: int, timings: list[float]) -> LatencyStats:
    p50, p95 = np.percentile(np.array(timings) * 1000.0, [50, 95])
    return LatencyStats(batch_size=batch_size, p50_ms=float(p50), p95_ms=float(p95), repetitions=len(timings))


def measure(
    session: object,
    rows: np.ndarray,
    batch_size: int,
    *,
    warmup: int = 10,
    min_repetitions: int = 50,
    min_seconds: float = 0.2,
    max_repetitions: int = 5000,
) -> LatencyStats:
    """p50 and p95 latency of one ``session.run`` on ``batch_size`` rows."""
    batch = batch_of(rows, batch_size)
    return _stats(batch_size, _timings(session, batch, warmup, min_repetitions, min_seconds, max_repetitions))


def measure_round_robin(
    sessions: dict[str, object],
    rows: np.ndarray,
    batch_sizes: list[int],
    *,
    rounds: int = 3,
    min_seconds: float = 0.1,
    min_repetitions: int = 20,
) -> dict[str, list[LatencyStats]]:
    """Latency of every session at every batch size, timed in turns over ``rounds`` and pooled."""
    pooled: dict[tuple[str, int], list[float]] = {(name, size): [] for name in sessions for size in batch_sizes}
    batches = {size: batch_of(rows, size) for size in batch_sizes}
    for _ in range(rounds):
        for name, session in sessions.items():
            for size in batch_sizes:
                pooled[name, size] += _timings(session, batches[size], 5, min_repetitions, min_seconds, 5000)
    return {name: [_stats(size, pooled[name, size]) for size in batch_sizes] for name in sessions}
