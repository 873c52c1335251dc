"""Validate manifests client-side and report every error by its field path.

The messages name the field the way ``kubectl`` and the API server do
(``spec.tuning.maxTrials: must be at least parallelTrials``), so a user sees the same
complaint from ``optiloop validate`` as from ``kubectl apply``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ._base import RULE_ERROR
from .resource import API_VERSION, KIND, ModelOptimization
from .uris import LOCAL_RUN_CONTEXT

_FRIENDLY = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
}


@dataclass(frozen=True)
class FieldError:
    """One problem in a manifest: where it is (``spec.tuning.maxTrials``) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ManifestError(Exception):
    """A manifest file that cannot be read or holds invalid resources."""

    def __init__(self, source: str, errors: Sequence[FieldError]) -> None:
        self.source = source
        self.errors = list(errors)
        super().__init__("\n".join(f"{source}: {e}" for e in self.errors))


def format_path(loc: Iterable[int | str]) -> str:
    """``("spec", "steps", 0, "prune")`` -> ``spec.steps[0].prune``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


# Pydantic appends the failing member of a union (``int | str``) to an error's location;
# none of our fields has such a name, so these parts are dropped and the errors merged.
_UNION_MEMBER_TAGS = {"int", "str", "float", "bool"}


def _field_errors(exc: ValidationError) -> list[FieldError]:
    by_path: dict[str, list[str]] = {}
    for err in exc.errors():
        loc = [part for part in err["loc"] if part not in _UNION_MEMBER_TAGS]
        message = err["msg"]
        if loc and loc[-1] == "[key]":
            loc.pop()
            message = f"not an allowed key: {message[0].lower()}{message[1:]}"
        if err["type"] == RULE_ERROR:
            ctx = err.get("ctx") or {}
            if ctx.get("field"):
                loc.extend(str(ctx["field"]).split("."))
            message = str(ctx.get("message", message))
        else:
            message = _FRIENDLY.get(err["type"], message).removeprefix("Value error, ")
        messages = by_path.setdefault(format_path(loc), [])
        if message not in messages:
            messages.append(message)
    return [FieldError(path, "; or ".join(messages)) for path, messages in by_path.items()]


def manifest_errors(document: Any, *, local_run: bool = False) -> list[FieldError]:
    """Every problem in one ModelOptimization manifest; empty when it is valid.

    ``local_run``: validate for ``optiloop run``, which also takes a ``file:///`` dataset."""
    if not isinstance(document, dict):
        return [FieldError("", f"a manifest must be a mapping, not {type(document).__name__}")]
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        return [
            FieldError(
                "apiVersion" if document.get("apiVersion") != API_VERSION else "kind",
                f"expected apiVersion {API_VERSION} and kind {KIND}, got "
                f"{document.get('apiVersion')!r} and {document.get('kind')!r}",
            )
        ]
    try:
        ModelOptimization.model_validate(document, context=validation_context(local_run=local_run))
    except ValidationError as exc:
        return _field_errors(exc)
    return []


def validation_context(*, local_run: bool) -> dict[str, Any]:
    """The pydantic context for validating a manifest in a cluster or for ``optiloop run``."""
    return {LOCAL_RUN_CONTEXT: local_run}


def load_documents(path: Path) -> list[Any]:
    """The YAML documents of a file, empty ones skipped; a clear error when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(str(path), [FieldError("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(str(path), [FieldError("", f"cannot read the file: {exc}")]) from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(str(path), [FieldError("", f"not valid YAML: {exc}")]) from None
    if not documents:
        raise ManifestError(str(path), [FieldError("", "the file holds no YAML document")])
    return documents


def load_manifest(path: Path) -> ModelOptimization:
    """Read and validate a file holding exactly one ModelOptimization."""
    documents = load_documents(path)
    if len(documents) != 1:
        raise ManifestError(str(path), [FieldError("", f"expected one manifest, found {len(documents)}")])
    errors = manifest_errors(documents[0])
    if errors:
        raise ManifestError(str(path), errors)
    return ModelOptimization.model_validate(documents[0])
