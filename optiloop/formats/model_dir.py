"""The model directory: its file names, its completion marker, one writer and one reader.

Layout (below ``r<revision>/model/``)::

    model.onnx                      the model (``metadata.json``'s modelFile)
    metadata.json                   features, classes, metrics, latency, lineage
    reference.json                  raw training inputs, the drift monitor's reference
    triton/<name>/config.pbtxt      the same model for KServe's ONNX runtime (Triton)
    triton/<name>/1/model.onnx
    _COMPLETE.json                  written last: {"files": {name: {"sha256", "size"}}, ...}

The writer removes the marker first and writes it last, so a directory being replaced or
half-written never looks finished. The reader takes a directory only when the marker lists
every file it reads with the SHA-256 it still has; it refuses symbolic links, entries that
point outside the directory and file types that can run code when loaded (pickles,
checkpoints). A temporary file left by a writer killed mid-write (``.<name>.tmp-<pid>-<hex>``)
is skipped and reported, never taken for part of the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from .errors import FormatError
from .onnx import onnx_problem

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
REFERENCE_FILE = "reference.json"
COMPLETE_MARKER = "_COMPLETE.json"
TRITON_DIR = "triton"
ALLOWED_SUFFIXES = frozenset({".onnx", ".json", ".pbtxt"})
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-\d+-[0-9a-f]+$")
"""Temporary names of atomic writes (:func:`write_atomically`, also ``optiloop.jobs.storage.LocalStore``'s)."""
MAX_MARKER_BYTES = 1024 * 1024


def temporary_name(name: str) -> str:
    """Where an atomic write of ``name`` puts its bytes before the rename."""
    return f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file and a rename, so a reader sees
    the old file, the whole new one, or (after a crash) a temporary name it skips."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temporary_name(path.name))
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256(data: bytes) -> str:
    """The hex SHA-256 the marker records."""
    return hashlib.sha256(data).hexdigest()


def marker_entry(data: bytes) -> dict[str, Any]:
    """One file's entry in the marker."""
    return {"sha256": sha256(data), "size": len(data)}


# ---------------------------------------------------------------------------------------- writing


class Target(Protocol):
    """Where a model directory is written: keys are relative names (an artifact store fits)."""

    def write_bytes(self, key: str, data: bytes) -> None: ...
    def delete(self, key: str) -> None: ...


@dataclass(frozen=True)
class LocalDirectory:
    """A :class:`Target` on the local file system; every file appears whole (write, then rename)."""

    root: Path

    def write_bytes(self, key: str, data: bytes) -> None:
        write_atomically(self.root / safe_relative_name(key, str(self.root)), data)

    def delete(self, key: str) -> None:
        (self.root / safe_relative_name(key, str(self.root))).unlink(missing_ok=True)


def write_model_directory(
    target: Target, files: Mapping[str, bytes], info: Mapping[str, Any] | None = None, prefix: str = ""
) -> dict[str, Any]:
    """Write ``files`` under ``prefix`` and then the marker listing them; returns the marker.

    ``files`` must hold ``metadata.json``; ``info`` adds fields to the marker (the stage, the
    candidate). The old marker goes first, so a crash part-way leaves an unfinished directory.
    """
    if METADATA_FILE not in files:
        raise FormatError(f"a model directory needs {METADATA_FILE}")
    base = prefix.strip("/")
    key = (lambda name: f"{base}/{name}") if base else (lambda name: name)
    target.delete(key(COMPLETE_MARKER))
    entries: dict[str, Any] = {}
    for name, data in files.items():
        safe_relative_name(name, "the model directory")
        target.write_bytes(key(name), data)
        entries[name] = marker_entry(data)
    marker = {"files": entries, **(info or {})}
    target.write_bytes(key(COMPLETE_MARKER), json.dumps(marker, indent=2).encode())
    return marker


# ---------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ModelFiles:
    """A verified model directory: its marker, parsed metadata and the verified bytes asked for."""

    root: Path
    marker: dict[str, Any]
    metadata: dict[str, Any]
    model_file: str
    contents: dict[str, bytes] = field(repr=False)
    skipped: tuple[str, ...] = ()
    """Leftover temporary files that were not read (a writer was killed mid-write)."""

    def read(self, name: str) -> bytes:
        """The verified bytes of ``name`` (one of those asked for when reading)."""
        return self.contents[name]


def safe_relative_name(name: str, where: str) -> PurePosixPath:
    """``name`` (a marker entry) as a relative path that stays inside the model directory;
    :class:`FormatError` naming ``where`` otherwise."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name or "\x00" in name or not pure.parts:
        raise FormatError(f"{where}: entry {name!r} points outside the model directory")
    return pure


def _scan(root: Path) -> list[str]:
    """Walk ``root``: refuse links and unsafe file types; return the temporary files skipped."""
    skipped: list[str] = []
    for directory, subdirectories, names in os.walk(root, followlinks=False):
        for name in sorted([*subdirectories, *names]):
            path = Path(directory) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise FormatError(f"{path}: a symbolic link; a model directory holds plain files only")
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise FormatError(f"{path}: not a regular file")
            if TEMPORARY.match(name):
                skipped.append(path.relative_to(root).as_posix())
            elif path.suffix.lower() not in ALLOWED_SUFFIXES:
                raise FormatError(
                    f"{path}: only ONNX, JSON and Triton config files are served; {path.suffix or 'this file'} "
                    "is refused (pickles and checkpoints can run code when loaded)"
                )
    return skipped


def parse_marker(data: bytes, where: str) -> dict[str, Any]:
    """The completion marker in ``data`` (read from ``where``), checked: a JSON object listing at
    least one file, each with a SHA-256 and a name that stays inside the directory."""
    if len(data) > MAX_MARKER_BYTES:
        raise FormatError(f"{where}: larger than {MAX_MARKER_BYTES} bytes, not a completion marker")
    try:
        marker = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{where}: not JSON ({exc})") from None
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(files, dict) or not files:
        raise FormatError(f"{where}: not a completion marker (no files listed)")
    for name, entry in files.items():
        safe_relative_name(name, where)
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise FormatError(f"{where}: the entry of {name!r} has no SHA-256")
    return dict(marker)


def _marker(root: Path) -> dict[str, Any]:
    path = root / COMPLETE_MARKER
    if not path.is_file():
        raise FormatError(
            f"{root}: no {COMPLETE_MARKER}; the export did not finish (or the copy is incomplete), so it is not used"
        )
    if path.stat().st_size > MAX_MARKER_BYTES:
        raise FormatError(f"{path}: larger than {MAX_MARKER_BYTES} bytes, not a completion marker")
    return parse_marker(path.read_bytes(), str(path))


def _verified(root: Path, name: str, expected: str) -> bytes:
    path = root / safe_relative_name(name, str(root))
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        raise FormatError(f"{root}: {name} is listed in {COMPLETE_MARKER} but missing") from None
    if not stat.S_ISREG(mode):
        raise FormatError(f"{path}: not a regular file")
    # Hash the bytes that are returned, so a file replaced after the check is never used.
    data = path.read_bytes()
    if sha256(data) != expected:
        raise FormatError(f"{path}: content differs from what the export wrote (SHA-256 mismatch)")
    return data


def read_model_directory(path: str | Path, *, model: bool = True, reference: bool = False) -> ModelFiles:
    """Verify the model directory at ``path`` and read its metadata (and model, reference).

    Every file the marker lists is checked against its SHA-256; ``metadata.json``, the model
    named by its ``modelFile`` and (with ``reference``) ``reference.json`` must be listed.
    Raises :class:`FormatError` naming the file and what is wrong.
    """
    given = Path(path)
    if given.is_symlink():
        raise FormatError(f"{given}: a symbolic link; give the model directory itself")
    root = given.resolve()
    if not root.is_dir():
        raise FormatError(f"{path}: not a directory")
    skipped = _scan(root)
    marker = _marker(root)
    listed: dict[str, str] = {
        safe_relative_name(name, str(root)).as_posix(): entry["sha256"] for name, entry in marker["files"].items()
    }
    if METADATA_FILE not in listed:
        raise FormatError(f"{root}: {COMPLETE_MARKER} does not list {METADATA_FILE}")
    contents: dict[str, bytes] = {}
    for name, digest in listed.items():
        contents[name] = _verified(root, name, digest)
    try:
        metadata = json.loads(contents[METADATA_FILE])
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{root / METADATA_FILE}: not JSON ({exc})") from None
    if not isinstance(metadata, dict):
        raise FormatError(f"{root / METADATA_FILE}: must be a JSON object")
    model_file = metadata.get("modelFile", MODEL_FILE)
    if not isinstance(model_file, str):
        raise FormatError(f"{root / METADATA_FILE}: modelFile must be a string")
    model_name = safe_relative_name(model_file, str(root)).as_posix()
    if PurePosixPath(model_name).suffix.lower() != ".onnx":
        raise FormatError(f"{root / METADATA_FILE}: modelFile {model_file!r} is not an ONNX file")
    if model_name not in listed:
        raise FormatError(f"{root}: {model_name} (modelFile) is not listed in {COMPLETE_MARKER}")
    for name in listed:
        if name.lower().endswith(".onnx") and (problem := onnx_problem(contents[name])) is not None:
            raise FormatError(f"{root / name}: not an ONNX model ({problem})")
    if reference and REFERENCE_FILE not in listed:
        raise FormatError(f"{root}: {COMPLETE_MARKER} does not list {REFERENCE_FILE}, the drift reference")
    keep = {METADATA_FILE} | ({model_name} if model else set()) | ({REFERENCE_FILE} if reference else set())
    kept = {name: data for name, data in contents.items() if name in keep}
    return ModelFiles(root, marker, metadata, model_name, kept, tuple(skipped))
