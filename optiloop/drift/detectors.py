"""Alibi Detect's drift detectors, configured from the resource's ``spec.monitoring``.

- ``tabular``: Kolmogorov-Smirnov for numeric features and chi-square for categorical ones.
- ``ks``: Kolmogorov-Smirnov on numeric features, chi-square on categorical ones.
- ``cvm``: Cramér-von Mises on numeric features, chi-square on categorical ones (both KS and
  CVM assume continuous data; on category codes their p-values are meaningless).
- ``mmd``: maximum mean discrepancy with a Gaussian kernel and a permutation test, on
  standardized features. Its cost grows with the square of reference plus window rows, so
  both are capped (:data:`MMD_MAX_REFERENCE`, :data:`MMD_MAX_WINDOW`): beyond that a CPU
  spends seconds per evaluation.

Feature-wise detectors apply the multiple-testing ``correction`` (Bonferroni or FDR) across
features; the reported threshold is the corrected one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DETECTORS = ("tabular", "ks", "cvm", "mmd")
MMD_MAX_REFERENCE = 1000
MMD_MAX_WINDOW = 1000
MMD_PERMUTATIONS = 100


@dataclass
class DriftResult:
    """One evaluation: whether drift was found and the statistics behind it."""

    is_drift: bool
    p_value: float
    """Smallest p-value over features (the MMD test's p-value for ``mmd``)."""
    threshold: float
    """p-value threshold after correction."""
    distance: float
    """Largest feature distance (KS or CVM statistic, chi-square) or the MMD² estimate."""
    feature_p_values: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    seconds: float = 0.0

    def top_offenders(self, count: int = 5) -> list[tuple[str, float]]:
        """The ``count`` features with the smallest p-values."""
        return sorted(self.feature_p_values.items(), key=lambda item: (item[1], item[0]))[:count]

    def as_json(self) -> dict[str, Any]:
        return {
            "isDrift": self.is_drift,
            "pValue": self.p_value,
            "threshold": self.threshold,
            "distance": self.distance,
            "samples": self.samples,
            "featurePValues": self.feature_p_values,
            "seconds": self.seconds,
        }


class Detector:
    """A configured Alibi detector over one reference sample."""

    def __init__(
        self,
        kind: str,
        reference: np.ndarray,
        names: list[str],
        categorical: list[int],
        p_value: float = 0.05,
        correction: str = "bonferroni",
        seed: int = 0,
    ) -> None:
        if kind not in DETECTORS:
            raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, not {kind!r}")
        if len(reference) < 2:
            raise ValueError("the reference sample needs at least 2 rows")
        self.kind, self.names, self.p_value = kind, names, p_value
        reference = reference.astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "mmd":
                self._mmd_setup(reference, seed)
            elif kind == "tabular":
                from alibi_detect.cd import TabularDrift

                self.detector = TabularDrift(
                    reference,
                    p_val=p_value,
                    categories_per_feature=dict.fromkeys(categorical),
                    correction=correction,
                )
            else:
                self._split_setup(kind, reference, categorical, correction)

    def _split_setup(self, kind: str, reference: np.ndarray, categorical: list[int], correction: str) -> None:
        """One Alibi detector for the numeric columns and a chi-square one for the categorical columns;
        the correction is applied over all features together by :func:`corrected`."""
        from alibi_detect.cd import ChiSquareDrift, CVMDrift, KSDrift

        self.correction = correction
        self.numeric = [i for i in range(reference.shape[1]) if i not in set(categorical)]
        self.categorical = list(categorical)
        numeric_type = KSDrift if kind == "ks" else CVMDrift
        self.parts: list[tuple[list[int], Any]] = []
        if self.numeric:
            self.parts.append((self.numeric, numeric_type(reference[:, self.numeric], p_val=self.p_value)))
        if self.categorical:
            self.parts.append((self.categorical, ChiSquareDrift(reference[:, self.categorical], p_val=self.p_value)))

    def _mmd_setup(self, reference: np.ndarray, seed: int) -> None:
        from alibi_detect.cd import MMDDrift

        rng = np.random.default_rng(seed)
        if len(reference) > MMD_MAX_REFERENCE:
            reference = reference[np.sort(rng.choice(len(reference), MMD_MAX_REFERENCE, replace=False))]
        self.mean = reference.mean(axis=0)
        self.scale = np.where(reference.std(axis=0) > 1e-12, reference.std(axis=0), 1.0)
        self.rng = rng
        self.detector = MMDDrift(
            (reference - self.mean) / self.scale,
            backend="pytorch",
            p_val=self.p_value,
            n_permutations=MMD_PERMUTATIONS,
            device="cpu",
        )

    def evaluate(self, window: np.ndarray) -> DriftResult:
        """Test ``window`` against the reference."""
        import time

        started = time.perf_counter()
        window = window.astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.kind == "mmd":
                if len(window) > MMD_MAX_WINDOW:
                    window = window[np.sort(self.rng.choice(len(window), MMD_MAX_WINDOW, replace=False))]
                data = self.detector.predict((window - self.mean) / self.scale)["data"]
                result = DriftResult(
                    is_drift=bool(data["is_drift"]),
                    p_value=float(data["p_val"]),
                    threshold=float(data["threshold"]),
                    distance=float(data["distance"]),
                )
            else:
                if self.kind == "tabular":
                    data = self.detector.predict(window, drift_type="batch")["data"]
                    p_values = np.asarray(data["p_val"], dtype=float)
                    distances = np.asarray(data["distance"], dtype=float)
                    is_drift, threshold = bool(data["is_drift"]), float(data["threshold"])
                else:
                    p_values, distances = np.ones(window.shape[1]), np.zeros(window.shape[1])
                    for columns, part in self.parts:
                        data = part.predict(window[:, columns], drift_type="feature")["data"]
                        p_values[columns] = np.asarray(data["p_val"], dtype=float)
                        distances[columns] = np.asarray(data["distance"], dtype=float)
                    is_drift, threshold = corrected(p_values, self.p_value, self.correction)
                p_values = np.nan_to_num(p_values, nan=1.0)
                result = DriftResult(
                    is_drift=is_drift,
                    p_value=float(p_values.min()),
                    threshold=threshold,
                    distance=float(np.nan_to_num(distances, nan=0.0).max()),
                    feature_p_values={name: float(p) for name, p in zip(self.names, p_values, strict=True)},
                )
        result.samples = len(window)
        result.seconds = time.perf_counter() - started
        return result


def corrected(p_values: np.ndarray, p_value: float, correction: str) -> tuple[bool, float]:
    """Whether any feature drifted after the multiple-testing correction, and the p-value
    threshold it implies: ``p_value / n`` (Bonferroni), or the Benjamini-Hochberg cut-off (FDR)."""
    values = np.sort(np.nan_to_num(np.asarray(p_values, dtype=float), nan=1.0))
    count = len(values)
    if correction == "bonferroni":
        threshold = p_value / count
        return bool(values[0] < threshold), threshold
    limits = p_value * np.arange(1, count + 1) / count
    passing = np.flatnonzero(values <= limits)
    if passing.size == 0:
        return False, p_value / count
    return True, float(limits[passing.max()])
