"""Inference requests -> rows in feature order: the one reading of v1 instances and v2 inputs.

The predictor (``optiloop.serve.encoding``) and the drift monitor (``optiloop.drift.events``,
``optiloop.drift.features``) both take requests in KServe's two protocols and must agree on which
rows they hold; each then turns the raw values into its own numbers (model inputs, detector
inputs).

v1 (``{"instances": [...]}``): each instance is a list of values in feature order or an object
keyed by feature name (absent keys are missing values, unknown keys are refused). v2 (Open
Inference Protocol): one tensor of shape ``[N, features]`` whose name is not a feature's, or one
tensor per feature, named after it, of shape ``[N]`` or ``[N, 1]``. Anything else raises
:class:`RowError`, whose message names the row, feature or input (both services answer it with
400).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class RowError(ValueError):
    """A request does not fit the model's features; the message names the row, feature or input."""


def preview(value: Any) -> str:
    """A client's value, shortened for a message (a repr of deep nesting is not attempted twice)."""
    try:
        text = repr(value)
    except RecursionError:
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def instances(value: Any) -> list[Any]:
    """The v1 ``instances``: a non-empty list of rows."""
    if not isinstance(value, list) or not value:
        raise RowError('"instances" must be a non-empty list of rows')
    return value


def row_values(row: int, instance: Any, names: Sequence[str], index: Mapping[str, int]) -> Sequence[Any]:
    """One v1 instance's values in feature order (``index``: feature name -> position)."""
    width = len(names)
    if isinstance(instance, Mapping):
        unknown = sorted(set(instance) - set(index), key=str)
        if unknown:
            raise RowError(f"row {row}: unknown features {', '.join(map(repr, unknown[:5]))}")
        return [instance.get(name) for name in names]
    if isinstance(instance, list | tuple):
        if len(instance) != width:
            raise RowError(f"row {row}: {len(instance)} values, the model takes {width}")
        return instance
    raise RowError(f"row {row}: expected a list of {width} values or an object, got {preview(instance)}")


@dataclass(frozen=True)
class TensorLayout:
    """Where a v2 request's rows are: in one ``[N, features]`` tensor, or one tensor per feature."""

    rows: int
    matrix: int | None
    """The position of the one ``[N, features]`` input, or None when every feature has its own."""
    columns: tuple[int, ...] = ()
    """Per feature, in feature order: the position of its input (when ``matrix`` is None)."""


def tensor_layout(inputs: Sequence[tuple[str, Sequence[int]]], names: Sequence[str]) -> TensorLayout:
    """How v2 ``inputs`` (name, shape) hold the model's features ``names``; RowError otherwise.

    A per-feature input of shape ``[N, 1]`` counts as ``[N]``.
    """
    width = len(names)
    known = set(names)
    if len(inputs) == 1 and len(inputs[0][1]) == 2 and inputs[0][0] not in known:
        name, shape = inputs[0]
        if shape[1] != width:
            raise RowError(f"input {name!r} has shape {list(shape)}; the model takes [N, {width}]")
        if shape[0] == 0:
            raise RowError(f"inputs must have the same, non-zero number of rows (got [{shape[0]}])")
        return TensorLayout(shape[0], 0)
    position = {name: i for i, (name, _) in enumerate(inputs)}
    unknown = sorted(set(position) - known)
    missing = [name for name in names if name not in position]
    if unknown or missing:
        raise RowError(
            "send one [N, features] tensor or one tensor per feature; "
            + (f"unknown inputs {', '.join(map(repr, unknown[:5]))} " if unknown else "")
            + (f"missing inputs {', '.join(map(repr, missing[:5]))}" if missing else "")
        )
    lengths = set()
    for name in names:
        shape = inputs[position[name]][1]
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise RowError(f"input {name!r} has shape {list(shape)}; expected [N] or [N, 1]")
        lengths.add(shape[0])
    if len(lengths) != 1 or 0 in lengths:
        raise RowError(f"inputs must have the same, non-zero number of rows (got {sorted(lengths)})")
    return TensorLayout(lengths.pop(), None, tuple(position[name] for name in names))
