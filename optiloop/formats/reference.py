"""``reference.json``: raw training inputs (no target) that the drift monitor compares with.

    {"columns": ["a", "city"], "kinds": ["numeric", "categorical"], "rows": [[1.5, "oslo"], ...]}

Values are JSON numbers, strings, or null for a missing value; columns are the model's features
in input order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .errors import FormatError
from .metadata import FeatureColumn


def reference_document(columns: Sequence[FeatureColumn], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """The ``reference.json`` document for ``rows`` (lists in the order of ``columns``)."""
    width = len(columns)
    for index, row in enumerate(rows):
        if len(row) != width:
            raise FormatError(f"reference row {index} has {len(row)} values, the model takes {width}")
    return {"columns": [c.name for c in columns], "kinds": [c.kind for c in columns], "rows": [list(r) for r in rows]}


def read_reference(data: bytes, where: str = "reference.json") -> tuple[list[str], list[list[Any]]]:
    """The column names and rows of a ``reference.json``; the error names the file."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{where}: not JSON ({exc})") from None
    columns = document.get("columns") if isinstance(document, dict) else None
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise FormatError(f"{where}: its columns must be a list of feature names")
    rows = document.get("rows")
    if not isinstance(rows, list) or not rows:
        raise FormatError(f"{where}: it must hold rows")
    width = len(columns)
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise FormatError(f"{where}: row {index} must be a list of {width} values")
    return columns, rows


def reference_rows(data: bytes, columns: Sequence[FeatureColumn], where: str = "reference.json") -> list[list[Any]]:
    """The rows of a ``reference.json`` written for ``columns``; the error names the file."""
    names, rows = read_reference(data, where)
    if names != [c.name for c in columns]:
        raise FormatError(f"{where}: its columns must be the model's features in order")
    return rows
