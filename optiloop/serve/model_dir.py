"""Reading a model directory safely: only finished directories, only ONNX and JSON.

A model directory is served only when its completion marker (``_COMPLETE.json``, written last
by the export stage) is present and every file it lists still has the recorded SHA-256, so a
half-copied or half-written directory is never taken for a model. Files that could execute
code when loaded (pickles, torch checkpoints, joblib dumps, anything not ONNX, JSON or Triton's
text config) and entries that point outside the directory are refused, whatever lists them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from ..api.jobs import ModelMetadata
from ..errors import OptiloopError

# The export stage's completion marker (optiloop.jobs.storage writes it); read here again because
# the predictor must not depend on the jobs package (import-linter contract), and because a served
# directory needs checks a stage does not: allowed file types and paths that stay inside.
COMPLETE_MARKER = "_COMPLETE.json"
METADATA_FILE = "metadata.json"
ALLOWED_SUFFIXES = frozenset({".onnx", ".json", ".pbtxt"})


class ModelDirectoryError(OptiloopError):
    """The model directory cannot be served; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ModelDirectory:
    """A verified model directory: its metadata and the ONNX model's bytes."""

    path: Path
    metadata: ModelMetadata
    onnx_bytes: bytes


def _inside(root: Path, relative: str) -> Path:
    """``root / relative`` when it stays inside ``root``; raise otherwise."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise ModelDirectoryError(f"{root}: entry {relative!r} points outside the model directory")
    target = (root / pure).resolve()
    if not target.is_relative_to(root):
        raise ModelDirectoryError(f"{root}: {relative} resolves to {target}, outside the model directory")
    return target


def _check_entries(root: Path) -> None:
    for entry in sorted(root.rglob("*")):
        relative = entry.relative_to(root).as_posix()
        if entry.is_symlink():
            _inside(root, relative)  # a link is fine only if it stays inside
        if entry.is_dir():
            continue
        if entry.suffix.lower() not in ALLOWED_SUFFIXES:
            raise ModelDirectoryError(
                f"{entry}: only ONNX, JSON and Triton config files are served; {entry.suffix or 'this file'} "
                "is refused (pickles and checkpoints can run code when loaded)"
            )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_marker(root: Path) -> set[str]:
    marker_path = root / COMPLETE_MARKER
    if not marker_path.is_file():
        raise ModelDirectoryError(
            f"{root}: no {COMPLETE_MARKER}; the export did not finish (or the copy is incomplete), so it is not served"
        )
    try:
        files = json.loads(marker_path.read_text())["files"]
        listed = {str(name): str(info["sha256"]) for name, info in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelDirectoryError(f"{marker_path}: not a completion marker ({exc})") from None
    for name, digest in listed.items():
        path = _inside(root, name)
        if not path.is_file():
            raise ModelDirectoryError(f"{root}: {name} is listed in {COMPLETE_MARKER} but missing")
        if _sha256(path) != digest:
            raise ModelDirectoryError(f"{path}: content differs from what the export wrote (SHA-256 mismatch)")
    if METADATA_FILE not in listed:
        raise ModelDirectoryError(f"{root}: {COMPLETE_MARKER} does not list {METADATA_FILE}")
    return set(listed)


def load_model_directory(path: str | Path) -> ModelDirectory:
    """Verify ``path`` and read its metadata and ONNX model; raise :class:`ModelDirectoryError`."""
    root = Path(path).resolve()
    if not root.is_dir():
        raise ModelDirectoryError(f"{path}: not a directory")
    _check_entries(root)
    listed = _check_marker(root)
    try:
        metadata = ModelMetadata.model_validate_json((root / METADATA_FILE).read_bytes())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise ModelDirectoryError(f"{root / METADATA_FILE}: {problems}") from None
    model_path = _inside(root, metadata.model_file)
    if model_path.suffix.lower() != ".onnx" or not model_path.is_file():
        raise ModelDirectoryError(f"{root / METADATA_FILE}: modelFile {metadata.model_file!r} is not an ONNX file here")
    if PurePosixPath(metadata.model_file).as_posix() not in listed:
        raise ModelDirectoryError(f"{root}: {metadata.model_file} is not listed in {COMPLETE_MARKER}")
    return ModelDirectory(root, metadata, model_path.read_bytes())
