"""The training reference of the served revision, read from its model directory.

The directory is read and verified by :mod:`optiloop.formats.model_dir`, the reader the
predictor uses too (completion marker, every SHA-256, no links, nothing outside). The monitor
reads only a finished directory, so it can restart at any time and rebuild everything that
matters from it; only the window of live rows starts empty again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..formats.errors import FormatError
from ..formats.metadata import feature_columns, lineage
from ..formats.model_dir import METADATA_FILE, REFERENCE_FILE, read_model_directory
from ..formats.reference import reference_rows
from .features import FeatureSpace, RowError

log = logging.getLogger(__name__)


class ReferenceError(ValueError):
    """The model directory cannot provide a reference; the message names the file."""


@dataclass
class Reference:
    """What the monitor compares with: the feature space, the encoded sample, and its revision."""

    space: FeatureSpace
    matrix: np.ndarray
    revision: int
    model: str


def load_reference(model_dir: str | Path) -> Reference:
    """Verify a finished model directory, then load and encode its reference sample."""
    try:
        files = read_model_directory(model_dir, model=False, reference=True)
        where = str(files.root / METADATA_FILE)
        columns = feature_columns(files.metadata, where)
        resource, revision = lineage(files.metadata, where)
        rows = reference_rows(files.read(REFERENCE_FILE), columns, str(files.root / REFERENCE_FILE))
    except FormatError as exc:
        raise ReferenceError(str(exc)) from None
    for name in files.skipped:
        log.warning("%s: skipped %s, a temporary file left by an interrupted write", files.root, name)
    space = FeatureSpace.from_columns(columns)
    # Missing values in the reference are encoded with the same rules as live ones.
    raw = FeatureSpace(space.names, space.kinds, space.categories, [float("nan")] * len(space.names))
    try:
        encoded = raw.encode(rows)
        space = space.with_fill_from(encoded)
        matrix = space.encode(rows)
    except RowError as exc:
        raise ReferenceError(f"{files.root / REFERENCE_FILE}: {exc}") from None
    return Reference(space, matrix, revision, resource)
