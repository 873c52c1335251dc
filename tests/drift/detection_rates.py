"""Measures the drift detectors' false-positive rate and power; run in the drift environment.

    .venv-drift/bin/python tests/drift/detection_rates.py   # prints JSON

Called by test_detection_rates.py (the test runs in the main environment and asserts) and
reusable by bench/drift.py. Everything is seeded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from optiloop.drift.detectors import Detector, make_detector


def rate(detector: Detector, windows: list[np.ndarray]) -> float:
    return float(np.mean([detector.evaluate(window).is_drift for window in windows]))


def synthetic(references: int, windows: int, size: int, shift: float, seed: int) -> float:
    """Share of ``size``-row windows flagged, with ``shift`` SDs added to one of ten features.

    A p-value's promise holds over fresh reference samples, not for one fixed reference (every
    window is compared with the same reference, so its own sampling error is shared), so the
    rate is averaged over ``references`` references of 2000 rows with ``windows`` windows each.
    """
    rng = np.random.default_rng(seed)
    names = [f"x{i}" for i in range(10)]
    flags = []
    for _ in range(references):
        detector = make_detector("ks", rng.normal(size=(2000, 10)), names, [], p_value=0.05, correction="bonferroni")
        batches = []
        for _ in range(windows):
            window = rng.normal(size=(size, 10))
            window[:, 3] += shift
            batches.append(window)
        flags.append(rate(detector, batches))
    return float(np.mean(flags))


def bundled(windows: int, size: int, seed: int) -> float:
    """False-positive rate on breast_cancer: reference and windows drawn from disjoint halves."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    reference, pool = data[order[: len(data) // 2]], data[order[len(data) // 2 :]]
    names = [f"f{i}" for i in range(data.shape[1])]
    detector = make_detector("tabular", reference, names, [], p_value=0.05, correction="bonferroni")
    return rate(detector, [pool[rng.choice(len(pool), size, replace=False)] for _ in range(windows)])


if __name__ == "__main__":
    print(
        json.dumps(
            {
                "false_positive_rate": synthetic(60, 5, 500, 0.0, 1),
                "power_0_5_sd": synthetic(20, 5, 500, 0.5, 2),
                "power_0_25_sd": synthetic(20, 5, 500, 0.25, 3),
                "false_positive_rate_breast_cancer": bundled(200, 100, 4),
            }
        )
    )
