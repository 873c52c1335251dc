"""Reading a model directory for serving: the shared reader, then the full metadata schema.

The directory format and its checks (completion marker with SHA-256s, no links, nothing
outside, only ONNX, JSON and Triton config files, ONNX files that are ONNX) belong to
:mod:`optiloop.formats.model_dir`; this module adds what only the predictor needs: the metadata
validated as :class:`optiloop.api.jobs.ModelMetadata` and an error in optiloop's hierarchy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ..api.jobs import ModelMetadata
from ..errors import OptiloopError
from ..formats.errors import FormatError
from ..formats.model_dir import ALLOWED_SUFFIXES, COMPLETE_MARKER, METADATA_FILE, read_model_directory

__all__ = [
    "ALLOWED_SUFFIXES",
    "COMPLETE_MARKER",
    "METADATA_FILE",
    "ModelDirectory",
    "ModelDirectoryError",
    "load_model_directory",
]

log = logging.getLogger(__name__)


class ModelDirectoryError(OptiloopError):
    """The model directory cannot be served; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ModelDirectory:
    """A verified model directory: its metadata and the ONNX model's bytes."""

    path: Path
    metadata: ModelMetadata
    onnx_bytes: bytes


def load_model_directory(path: str | Path) -> ModelDirectory:
    """Verify ``path`` and read its metadata and ONNX model; raise :class:`ModelDirectoryError`."""
    try:
        files = read_model_directory(path, model=True)
    except FormatError as exc:
        raise ModelDirectoryError(str(exc)) from None
    for name in files.skipped:
        log.warning("%s: skipped %s, a temporary file left by an interrupted write", files.root, name)
    try:
        metadata = ModelMetadata.model_validate_json(files.read(METADATA_FILE))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise ModelDirectoryError(f"{files.root / METADATA_FILE}: {problems}") from None
    return ModelDirectory(files.root, metadata, files.read(files.model_file))
