"""How category values are named, shared by the data-quality stage, the feature transform and serving."""

from __future__ import annotations

import numpy as np


def category_key(value: object) -> str:
    """The name a category value is known by, so that ``1``, ``1.0`` and ``"1"`` are one category.

    Pandas turns an integer column holding gaps into floats, which would otherwise name the
    category ``"1.0"`` in training and ``"1"`` when a client sends the integer 1.
    """
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_):
        number = float(value)
        if number.is_integer():
            return str(int(number))
    return str(value)
