"""Requests -> the model's input matrix, and model outputs -> responses; pure functions.

Both protocols carry raw feature values. Numeric features take numbers (or null for missing);
categorical features take the values as they appear in the data (``"oslo"``, ``3``), which
become their code in ``metadata.features[].categories`` (``1``, ``1.0`` and ``"1"`` are one
category). Anything else raises :class:`RequestError`, which the predictor answers with 400.

v1 (``{"instances": [...]}``): each instance is a list in feature order or an object keyed by
feature name (absent keys are missing values). v2 (Open Inference Protocol): one tensor of
shape ``[N, features]``, or one tensor per feature named after it, of shape ``[N]`` or ``[N, 1]``.
Which rows a request holds is decided by :mod:`optiloop.formats.rows`, which the drift monitor
reads logged requests with too; this module turns their values into the model's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..api.jobs import FeatureInfo, ModelMetadata
from ..formats import rows
from ..formats.categories import category_key
from ..formats.rows import RowError, preview
from .numeric_json import numeric_instances

MAX_ROWS = 100_000
"""Rows one request may carry unless ``OPTILOOP_MAX_ROWS`` says otherwise."""


class RequestError(ValueError):
    """The request does not fit the model; the message says which row and feature (answered 400)."""


class TooLargeError(RequestError):
    """The request is over a configured limit (body bytes or rows); answered 413."""


class FeatureEncoder:
    """Encodes raw values for one model's features."""

    def __init__(self, metadata: ModelMetadata, max_rows: int = MAX_ROWS) -> None:
        self.metadata = metadata
        self.max_rows = max_rows
        self.features = metadata.features
        self.names = [feature.name for feature in self.features]
        self.index = {name: position for position, name in enumerate(self.names)}
        self.codes = [
            {category: float(code) for code, category in enumerate(feature.categories)} for feature in self.features
        ]
        self.refuse_unknown = metadata.unknown_categories == "error"
        self.all_numeric = all(feature.kind == "numeric" for feature in self.features)

    def value(self, row: int, column: int, value: Any) -> float:
        """One raw value as the model's float input."""
        feature: FeatureInfo = self.features[column]
        if value is None:
            return math.nan
        if feature.kind == "numeric":
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                raise RequestError(
                    f"row {row}, feature {feature.name!r}: expected a number or null, got {type(value).__name__} "
                    f"{preview(value)}"
                )
            number = float(value)
            if math.isinf(number):
                raise RequestError(f"row {row}, feature {feature.name!r}: infinite values are not accepted")
            return number
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if isinstance(value, list | dict):
            raise RequestError(f"row {row}, feature {feature.name!r}: expected a category value, got {preview(value)}")
        code = self.codes[column].get(category_key(value))
        if code is None:
            if self.refuse_unknown:
                raise RequestError(f"row {row}, feature {feature.name!r}: unknown category {preview(value)}")
            return -1.0
        return code

    def check_rows(self, rows: int) -> None:
        """Refuse a request of ``rows`` rows over the configured limit (:class:`TooLargeError`)."""
        if rows > self.max_rows:
            raise TooLargeError(f"{rows} rows in one request; the limit is {self.max_rows} (OPTILOOP_MAX_ROWS)")

    def numbers(self, body: bytes) -> np.ndarray | None:
        """A v1 body of rows of plain numbers as the input matrix, parsed without a Python object per
        value; None for any other body, which then takes :meth:`rows` after a full parse."""
        if not self.all_numeric:
            return None
        values = numeric_instances(body, len(self.features))
        if values is None:
            return None
        self.check_rows(len(values))
        with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused just below
            matrix = values.astype(np.float32)
        if not np.isfinite(matrix).all():
            raise RequestError("infinite or out-of-range values are not accepted")
        return matrix

    def rows(self, instances: Any, may_hold_booleans: bool = True) -> np.ndarray:
        """v1 instances -> input matrix.

        ``may_hold_booleans=False`` is the caller's promise that the body has no JSON ``true`` or
        ``false`` literal; only then may rows of numbers take the fast path, because NumPy turns
        ``True`` into ``1`` without a word, where the checked path refuses it.
        """
        try:
            instances = rows.instances(instances)
        except RowError as exc:
            raise RequestError(str(exc)) from None
        self.check_rows(len(instances))
        width = len(self.features)
        if self.all_numeric and not may_hold_booleans and isinstance(instances[0], list):
            # Fast path for the common case: rows of plain numbers become one array in C. Anything
            # else (null, strings, ragged rows) takes the checked path below, which names the culprit.
            try:
                fast = np.asarray(instances)
            except ValueError:
                fast = None
            if fast is not None and fast.dtype.kind in "iuf" and fast.shape == (len(instances), width):
                with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused below
                    matrix = fast.astype(np.float32)
                if fast.dtype.kind == "f" and not np.isfinite(matrix).all():
                    raise RequestError("infinite or out-of-range values are not accepted")
                return matrix
        matrix = np.empty((len(instances), width), dtype=np.float32)
        for row, instance in enumerate(instances):
            try:
                values = rows.row_values(row, instance, self.names, self.index)
            except RowError as exc:
                raise RequestError(str(exc)) from None
            for column, value in enumerate(values):
                matrix[row, column] = self.value(row, column, value)
        return matrix

    def tensors(self, tensors: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
        """v2 input tensors (name, array) -> input matrix."""
        width = len(self.features)
        try:
            layout = rows.tensor_layout([(name, array.shape) for name, array in tensors], self.names)
        except RowError as exc:
            raise RequestError(str(exc)) from None
        self.check_rows(layout.rows)
        if layout.matrix is not None:
            name, array = tensors[layout.matrix]
            if self.all_numeric and array.dtype.kind in "iuf":
                # The common case, one matrix of numbers: converted whole, checked whole.
                matrix = np.ascontiguousarray(array, dtype=np.float32)
                if np.isinf(matrix).any():
                    raise RequestError(f"input {name!r}: infinite or out-of-range values are not accepted")
                return matrix
            columns = [array[:, column] for column in range(width)]
        else:
            columns = [tensors[position][1].reshape(-1) for position in layout.columns]
        matrix = np.empty((layout.rows, width), dtype=np.float32)
        for column, values in enumerate(columns):
            if self.features[column].kind == "numeric" and values.dtype.kind in "iuf":
                matrix[:, column] = values
                if values.dtype.kind == "f" and np.isinf(matrix[:, column]).any():
                    name = self.features[column].name
                    raise RequestError(f"feature {name!r}: infinite or out-of-range values are not accepted")
                continue
            if self.features[column].kind == "numeric" and values.dtype.kind == "b":
                raise RequestError(f"feature {self.features[column].name!r}: expected numbers, got booleans")
            for row, value in enumerate(values.tolist()):
                matrix[row, column] = self.value(row, column, value)
        return matrix
