"""Reading the manifest for a local run: the YAML one would apply, plus ``--set`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..api import ManifestError, ModelOptimization, load_documents, manifest_errors
from ..api.validation import FieldError, validation_context


def _parse_path(path: str) -> list[str | int]:
    """``spec.compression.steps[0].prune.amount`` -> ``["spec", "compression", "steps", 0, "prune", "amount"]``."""
    parts: list[str | int] = []
    for piece in path.split("."):
        name, _, rest = piece.partition("[")
        if name:
            parts.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            if not index.isdigit():
                raise ValueError(f"{path}: {index!r} is not a list index")
            parts.append(int(index))
            rest = rest.removeprefix("[")
    if not parts:
        raise ValueError("empty path")
    return parts


def apply_override(document: dict[str, Any], assignment: str) -> None:
    """Apply one ``path=value`` (the value is read as YAML: ``4``, ``true``, ``[a, b]``, ``{x: 1}``)."""
    path, sep, text = assignment.partition("=")
    if not sep or not path:
        raise ValueError(f"--set {assignment!r}: expected PATH=VALUE, for example spec.tuning.maxTrials=8")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError as exc:
        raise ValueError(f"--set {path}: the value is not valid YAML ({exc})") from None
    parts = _parse_path(path)
    node: Any = document
    for position, part in enumerate(parts[:-1]):
        following = parts[position + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ValueError(f"--set {path}: index {part} is out of range")
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise ValueError(f"--set {path}: {'.'.join(map(str, parts[:position]))} is not a mapping")
        node = node.setdefault(part, [] if isinstance(following, int) else {})
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last > len(node):
            raise ValueError(f"--set {path}: index {last} is out of range")
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ValueError(f"--set {path}: the parent is not a mapping")


def load_run_manifest(path: Path, overrides: list[str]) -> ModelOptimization:
    """The one ModelOptimization in ``path`` with ``overrides`` applied, validated like the API server."""
    documents = load_documents(path)
    if len(documents) != 1:
        raise ManifestError(str(path), [FieldError("", f"holds {len(documents)} resources; a local run takes one")])
    document = documents[0]
    for assignment in overrides:
        try:
            apply_override(document, assignment)
        except ValueError as exc:
            raise ManifestError(str(path), [FieldError("", str(exc))]) from None
    if (error := resolve_local_dataset(document, path.parent)) is not None:
        raise ManifestError(str(path), [error])
    errors = manifest_errors(document, local_run=True)
    if errors:
        raise ManifestError(str(path), errors)
    return ModelOptimization.model_validate(document, context=validation_context(local_run=True))


DATASET_FIELD = "spec.dataset.uri"


def resolve_local_dataset(document: Any, folder: Path) -> FieldError | None:
    """Turn a local dataset (``file://`` URI or a plain path, relative to the manifest's
    ``folder`` unless absolute) into an absolute ``file:///`` URI, in place; an error naming
    the field when the file is not there. Other URIs (``s3://``, ``pvc://``, ``builtin://``) are
    left alone."""
    spec = document.get("spec") if isinstance(document, dict) else None
    dataset = spec.get("dataset") if isinstance(spec, dict) else None
    if not isinstance(dataset, dict):
        return None
    uri = dataset.get("uri")
    if not isinstance(uri, str) or not uri or ("://" in uri and not uri.startswith("file://")):
        return None
    given = Path(uri.removeprefix("file://")).expanduser()
    target = (given if given.is_absolute() else folder / given).resolve()
    if not target.is_file():
        where = "" if given.is_absolute() else f" (relative to the manifest's folder {folder.resolve()})"
        return FieldError(DATASET_FIELD, f"{uri!r}: no such file {target}{where}")
    # Not Path.as_uri(): storage reads the path after file:// as it is, without percent-decoding.
    dataset["uri"] = f"file://{target}"
    return None
