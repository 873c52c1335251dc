"""Drift detectors: evaluation latency by window size and feature count, and power by shift size.

    .venv-drift/bin/python bench/drift.py            # about 3 minutes on 2 cores
    .venv-drift/bin/python bench/drift.py --quick    # fewer repetitions, for `make bench`

Runs in the drift environment (Alibi Detect 0.11.4) and drives the monitor's own
``optiloop.drift.detectors.make_detector``. Data are seeded standard normals; the reference has 2000
rows. Latency is the median of repeated evaluations of one window. Power is the share of
500-row windows flagged when one of ten features' mean moves by the given number of standard
deviations (shift 0 gives the false-positive rate), each window against a fresh reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from optiloop.drift.detectors import DETECTORS, make_detector  # noqa: E402

WINDOWS = (100, 500, 2000)
FEATURES = (5, 20, 50)
SHIFTS = (0.0, 0.1, 0.25, 0.5, 1.0)


def latency(kind: str, window: int, features: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    names = [f"x{i}" for i in range(features)]
    detector = make_detector(kind, rng.normal(size=(2000, features)), names, [], 0.05, "bonferroni")
    batch = rng.normal(size=(window, features))
    detector.evaluate(batch)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        detector.evaluate(batch)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1000)


def power(kind: str, shift: float, trials: int) -> float:
    rng = np.random.default_rng(1)
    names = [f"x{i}" for i in range(10)]
    flagged = 0
    for _ in range(trials):
        detector = make_detector(kind, rng.normal(size=(2000, 10)), names, [], 0.05, "bonferroni")
        window = rng.normal(size=(500, 10))
        window[:, 3] += shift
        flagged += detector.evaluate(window).is_drift
    return flagged / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "drift.json")
    args = parser.parse_args()
    repeats, trials = (3, 20) if args.quick else (7, 100)
    results: dict[str, Any] = {"latency_ms": {}, "power": {}}
    for kind in DETECTORS:
        for window in WINDOWS:
            for features in FEATURES:
                results["latency_ms"][f"{kind} {window} {features}"] = latency(kind, window, features, repeats)
        print(f"{kind}: latency measured", file=sys.stderr)
    for kind in DETECTORS:
        for shift in SHIFTS:
            results["power"][f"{kind} {shift}"] = power(kind, shift, trials if kind != "mmd" else trials // 4)
        print(f"{kind}: power measured", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))

    print("Evaluation latency (ms, median), reference 2000 rows; columns: window rows x features\n")
    columns = [(w, f) for w in WINDOWS for f in FEATURES]
    print("| detector | " + " | ".join(f"{w}x{f}" for w, f in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for kind in DETECTORS:
        cells = [f"{results['latency_ms'][f'{kind} {w} {f}']:.1f}" for w, f in columns]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    print("\nShare of 500-row windows flagged (10 features, shift in one; p = 0.05, Bonferroni)\n")
    print("| detector | " + " | ".join(f"{s:g} SD" for s in SHIFTS) + " |")
    print("|---|" + "---|" * len(SHIFTS))
    for kind in DETECTORS:
        print(f"| {kind} | " + " | ".join(f"{results['power'][f'{kind} {s}']:.2f}" for s in SHIFTS) + " |")


if __name__ == "__main__":
    main()
