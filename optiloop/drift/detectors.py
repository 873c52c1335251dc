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

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

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


class Detector(Protocol):
    """A configured drift test over one reference sample (what the monitor and ``check`` use)."""

    names: list[str]

    def evaluate(self, window: np.ndarray) -> DriftResult:
        """Test ``window`` (rows x features, encoded like the reference) against the reference."""
        ...


class _Timed:
    """What every detector does around its test: float32 input, Alibi's warnings silenced, the
    window's size and the seconds spent recorded on the result."""

    def __init__(self, names: list[str], p_value: float) -> None:
        self.names, self.p_value = names, p_value

    def evaluate(self, window: np.ndarray) -> DriftResult:
        started = time.perf_counter()
        window = window.astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = self._test(window)
        result.seconds = time.perf_counter() - started
        return result

    def _test(self, window: np.ndarray) -> DriftResult:
        raise NotImplementedError

    def _feature_wise(
        self, p_values: np.ndarray, distances: np.ndarray, is_drift: bool, threshold: float, samples: int
    ) -> DriftResult:
        """A result from per-feature p-values and distances (a missing p-value counts as 1)."""
        p_values = np.nan_to_num(p_values, nan=1.0)
        return DriftResult(
            is_drift=is_drift,
            p_value=float(p_values.min()),
            threshold=threshold,
            distance=float(np.nan_to_num(distances, nan=0.0).max()),
            feature_p_values={name: float(p) for name, p in zip(self.names, p_values, strict=True)},
            samples=samples,
        )


class TabularDetector(_Timed):
    """``tabular``: Alibi's TabularDrift, Kolmogorov-Smirnov on numeric features and chi-square on
    categorical ones, with Alibi's own correction across features."""

    def __init__(
        self,
        reference: np.ndarray,
        names: list[str],
        categorical: list[int],
        p_value: float,
        correction: str,
        seed: int,
    ) -> None:
        from alibi_detect.cd import TabularDrift

        del seed  # the test is deterministic
        super().__init__(names, p_value)
        self.detector = TabularDrift(
            reference, p_val=p_value, categories_per_feature=dict.fromkeys(categorical), correction=correction
        )

    def _test(self, window: np.ndarray) -> DriftResult:
        data = self.detector.predict(window, drift_type="batch")["data"]
        p_values = np.asarray(data["p_val"], dtype=float)
        distances = np.asarray(data["distance"], dtype=float)
        threshold = np.asarray(data["threshold"], dtype=float)
        # With FDR and no feature past its cut-off, Alibi returns every cut-off; the strictest one
        # (the Bonferroni level, as :func:`corrected` reports) is the threshold nothing passed.
        cut_off = float(threshold) if threshold.ndim == 0 else float(threshold.min())
        return self._feature_wise(p_values, distances, bool(data["is_drift"]), cut_off, len(window))


class _SplitDetector(_Timed):
    """One Alibi detector for the numeric columns (:meth:`_numeric`) and a chi-square one for the
    categorical columns; the correction is applied over all features together by :func:`corrected`."""

    def __init__(
        self,
        reference: np.ndarray,
        names: list[str],
        categorical: list[int],
        p_value: float,
        correction: str,
        seed: int,
    ) -> None:
        from alibi_detect.cd import ChiSquareDrift

        del seed  # the tests are deterministic
        super().__init__(names, p_value)
        self.correction = correction
        self.numeric = [i for i in range(reference.shape[1]) if i not in set(categorical)]
        self.categorical = list(categorical)
        self.parts: list[tuple[list[int], Any]] = []
        if self.numeric:
            self.parts.append((self.numeric, self._numeric(reference[:, self.numeric])))
        if self.categorical:
            self.parts.append((self.categorical, ChiSquareDrift(reference[:, self.categorical], p_val=p_value)))

    def _numeric(self, reference: np.ndarray) -> Any:
        raise NotImplementedError

    def _test(self, window: np.ndarray) -> DriftResult:
        p_values, distances = np.ones(window.shape[1]), np.zeros(window.shape[1])
        for columns, part in self.parts:
            data = part.predict(window[:, columns], drift_type="feature")["data"]
            p_values[columns] = np.asarray(data["p_val"], dtype=float)
            distances[columns] = np.asarray(data["distance"], dtype=float)
        is_drift, threshold = corrected(p_values, self.p_value, self.correction)
        return self._feature_wise(p_values, distances, is_drift, threshold, len(window))


class KSDetector(_SplitDetector):
    """``ks``: Kolmogorov-Smirnov on numeric features, chi-square on categorical ones."""

    def _numeric(self, reference: np.ndarray) -> Any:
        from alibi_detect.cd import KSDrift

        return KSDrift(reference, p_val=self.p_value)


class CVMDetector(_SplitDetector):
    """``cvm``: Cramér-von Mises on numeric features, chi-square on categorical ones."""

    def _numeric(self, reference: np.ndarray) -> Any:
        from alibi_detect.cd import CVMDrift

        return CVMDrift(reference, p_val=self.p_value)


class MMDDetector(_Timed):
    """``mmd``: maximum mean discrepancy on standardized features, reference and window capped
    (:data:`MMD_MAX_REFERENCE`, :data:`MMD_MAX_WINDOW`) by a seeded sample."""

    def __init__(
        self,
        reference: np.ndarray,
        names: list[str],
        categorical: list[int],
        p_value: float,
        correction: str,
        seed: int,
    ) -> None:
        from alibi_detect.cd import MMDDrift

        del categorical, correction  # one multivariate test: every feature standardized, no per-feature correction

        super().__init__(names, p_value)
        self.rng = np.random.default_rng(seed)
        if len(reference) > MMD_MAX_REFERENCE:
            reference = reference[np.sort(self.rng.choice(len(reference), MMD_MAX_REFERENCE, replace=False))]
        self.mean = reference.mean(axis=0)
        self.scale = np.where(reference.std(axis=0) > 1e-12, reference.std(axis=0), 1.0)
        self.detector = MMDDrift(
            (reference - self.mean) / self.scale,
            backend="pytorch",
            p_val=p_value,
            n_permutations=MMD_PERMUTATIONS,
            device="cpu",
        )

    def _test(self, window: np.ndarray) -> DriftResult:
        if len(window) > MMD_MAX_WINDOW:
            window = window[np.sort(self.rng.choice(len(window), MMD_MAX_WINDOW, replace=False))]
        data = self.detector.predict((window - self.mean) / self.scale)["data"]
        return DriftResult(
            is_drift=bool(data["is_drift"]),
            p_value=float(data["p_val"]),
            threshold=float(data["threshold"]),
            distance=float(data["distance"]),
            samples=len(window),
        )


Factory = Callable[[np.ndarray, list[str], list[int], float, str, int], Detector]
"""A detector class: (reference, names, categorical columns, p-value, correction, seed) -> detector."""

KINDS: dict[str, Factory] = {
    "tabular": TabularDetector,
    "ks": KSDetector,
    "cvm": CVMDetector,
    "mmd": MMDDetector,
}
"""Each detector kind of ``spec.monitoring.detector`` and its class."""
DETECTORS = tuple(KINDS)


def make_detector(
    kind: str,
    reference: np.ndarray,
    names: list[str],
    categorical: list[int],
    p_value: float = 0.05,
    correction: str = "bonferroni",
    seed: int = 0,
) -> Detector:
    """The detector ``kind`` (one of :data:`DETECTORS`) over ``reference`` (rows x features)."""
    if kind not in DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, not {kind!r}")
    if len(reference) < 2:
        raise ValueError("the reference sample needs at least 2 rows")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Alibi's notes on backends and defaults
        return KINDS[kind](reference.astype(np.float32), names, categorical, p_value, correction, seed)


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
