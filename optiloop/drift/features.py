"""Turning request rows and the training reference into the matrix the detectors compare.

Numeric features stay numbers (missing values take the reference's median, so a gap is not
mistaken for drift in the numbers; the share of gaps is not tested). Categorical features
become their code in the model's category list; a value unseen in training gets one extra
code and a missing value another, so a surge of new or missing categories shows up as drift
in the chi-square test instead of being folded into a known category.

Category names follow :func:`optiloop.formats.categories.category_key`, the rule training and
the predictor use.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..formats.categories import category_key
from ..formats.metadata import FeatureColumn
from ..formats.rows import RowError, row_values

__all__ = ["FeatureSpace", "RowError", "category_key"]


@dataclass
class FeatureSpace:
    """The model's raw inputs, in input order, as ``metadata.json`` describes them."""

    names: list[str]
    kinds: list[str]
    categories: list[list[str]]
    fill: list[float] = field(default_factory=list)
    _codes: list[dict[str, float]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._codes = [{c: float(i) for i, c in enumerate(cats)} for cats in self.categories]
        self.index = {name: i for i, name in enumerate(self.names)}
        if not self.fill:
            self.fill = [0.0] * len(self.names)

    @classmethod
    def from_columns(cls, columns: Sequence[FeatureColumn]) -> FeatureSpace:
        """From the features of a verified ``metadata.json``."""
        return cls([c.name for c in columns], [c.kind for c in columns], [list(c.categories) for c in columns])

    @property
    def categorical(self) -> list[int]:
        """Indices of the categorical features."""
        return [i for i, kind in enumerate(self.kinds) if kind == "categorical"]

    def unseen_code(self, column: int) -> float:
        return float(len(self.categories[column]))

    def missing_code(self, column: int) -> float:
        return float(len(self.categories[column]) + 1)

    def value(self, row: int, column: int, value: Any) -> float:
        """One raw value as a detector input."""
        name = self.names[column]
        if self.kinds[column] == "categorical":
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return self.missing_code(column)
            if isinstance(value, list | dict):
                raise RowError(f"row {row}, feature {name!r}: expected a category value, got {type(value).__name__}")
            if isinstance(value, bytes):
                value = value.decode("utf-8", errors="replace")
            return self._codes[column].get(category_key(value), self.unseen_code(column))
        if value is None:
            return self.fill[column]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise RowError(f"row {row}, feature {name!r}: expected a number or null, got {type(value).__name__}")
        try:
            number = float(value)
        except OverflowError:
            raise RowError(f"row {row}, feature {name!r}: the value is beyond a float's range") from None
        if math.isnan(number):
            return self.fill[column]
        if math.isinf(number):  # an infinite value would poison every statistic of the window
            raise RowError(f"row {row}, feature {name!r}: {number} is not a finite number")
        return number

    def encode(self, rows: Sequence[Any]) -> np.ndarray:
        """Rows (lists in feature order, or objects keyed by feature name) -> float matrix."""
        width = len(self.names)
        matrix = np.empty((len(rows), width), dtype=np.float64)
        for r, row in enumerate(rows):
            values = row_values(r, row, self.names, self.index)
            for c, value in enumerate(values):
                matrix[r, c] = self.value(r, c, value)
        return matrix

    def with_fill_from(self, reference: np.ndarray) -> FeatureSpace:
        """This space with numeric gaps filled by the reference's per-feature median."""
        fill = []
        for c, kind in enumerate(self.kinds):
            column = reference[:, c] if len(reference) else np.array([])
            finite = column[np.isfinite(column)]
            fill.append(float(np.median(finite)) if kind == "numeric" and finite.size else 0.0)
        return FeatureSpace(self.names, self.kinds, self.categories, fill)
