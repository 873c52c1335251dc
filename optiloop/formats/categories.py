"""How category values are named, shared by training, the predictor and the drift monitor."""

from __future__ import annotations

import numbers


def category_key(value: object) -> str:
    """The name a category value is known by, so that ``1``, ``1.0`` and ``"1"`` are one category.

    Pandas turns an integer column holding gaps into floats, which would otherwise name the
    category ``"1.0"`` in training and ``"1"`` when a client sends the integer 1. NumPy
    scalars register as :mod:`numbers` types, so they are covered without importing NumPy.
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_":
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float's range is named by its digits
            return str(value)
        if number.is_integer():
            return str(int(number))
    return str(value)
