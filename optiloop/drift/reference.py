"""The training reference of the served revision, read from its model directory.

The export stage writes ``metadata.json`` (features and categories, lineage) and
``reference.json`` (raw training inputs: ``columns``, ``kinds``, ``rows``) into the model
directory of each revision, with ``_COMPLETE.json`` last. The monitor reads only a finished
directory, so it can restart at any time and rebuild everything that matters from it; only
the window of live rows starts empty again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .features import FeatureSpace, RowError

COMPLETE_MARKER = "_COMPLETE.json"


class ReferenceError(ValueError):
    """The model directory cannot provide a reference; the message names the file."""


@dataclass
class Reference:
    """What the monitor compares with: the feature space, the encoded sample, and its revision."""

    space: FeatureSpace
    matrix: np.ndarray
    revision: int
    model: str


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReferenceError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise ReferenceError(f"{path}: cannot be read as JSON ({exc})") from None


def load_reference(model_dir: str | Path) -> Reference:
    """Load and encode the reference sample of a finished model directory."""
    root = Path(model_dir)
    if not (root / COMPLETE_MARKER).is_file():
        raise ReferenceError(f"{root}: no {COMPLETE_MARKER}; the export has not finished, so there is no reference yet")
    metadata = _read_json(root / "metadata.json")
    sample = _read_json(root / "reference.json")
    try:
        space = FeatureSpace.from_metadata(metadata)
    except (ValueError, KeyError, TypeError) as exc:
        raise ReferenceError(f"{root / 'metadata.json'}: {exc}") from None
    if not isinstance(sample, dict) or sample.get("columns") != space.names or not sample.get("rows"):
        raise ReferenceError(
            f"{root / 'reference.json'}: its columns must be the model's features in order and it must hold rows"
        )
    # Missing values in the reference are encoded with the same rules as live ones.
    raw = FeatureSpace(space.names, space.kinds, space.categories, [float("nan")] * len(space.names))
    try:
        encoded = raw.encode(sample["rows"])
    except RowError as exc:
        raise ReferenceError(f"{root / 'reference.json'}: {exc}") from None
    space = space.with_fill_from(encoded)
    matrix = space.encode(sample["rows"])
    lineage = metadata.get("lineage", {})
    return Reference(space, matrix, int(lineage.get("revision", 0)), str(lineage.get("resource", "")))
