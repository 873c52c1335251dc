"""How category values are named: the rule lives in :mod:`optiloop.formats.categories`, shared
with the drift monitor; the data-quality stage, the feature transform and the predictor import
it from here too."""

from __future__ import annotations

from ..formats.categories import category_key

__all__ = ["category_key"]
