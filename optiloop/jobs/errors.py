"""Errors the pipeline stages raise; each message names the file, column or rule at fault."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import OptiloopError

if TYPE_CHECKING:
    from ..api.jobs import DataQualityReport


class StorageError(OptiloopError):
    """An artifact or data file cannot be read or written."""


class DataError(OptiloopError):
    """The dataset cannot be loaded or does not fit the spec (file, format, columns)."""


class DataQualityError(OptiloopError):
    """A data-quality gate failed; ``report`` says which rules and columns."""

    def __init__(self, message: str, report: DataQualityReport) -> None:
        super().__init__(message)
        self.report = report


class TrainingDivergedError(OptiloopError):
    """The loss became NaN or infinite; the run is abandoned (a tuning trial counts as failed)."""


class TuningError(OptiloopError):
    """The search could not produce a model (for example, every trial failed)."""


class CompressionError(OptiloopError):
    """The compression or export stage cannot produce a model to serve (missing inputs, an
    exported graph that disagrees with torch)."""
