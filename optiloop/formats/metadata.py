"""The parts of ``metadata.json`` that every reader needs: the features in input order and the
lineage. The predictor validates the whole document with ``optiloop.api.jobs.ModelMetadata``;
the drift monitor, which cannot import the API (pydantic 1 there), reads it here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import FormatError

FEATURE_KINDS = ("numeric", "categorical")


@dataclass(frozen=True)
class FeatureColumn:
    """One raw input of the model: its name, kind and (categorical) training categories."""

    name: str
    kind: str
    categories: tuple[str, ...] = ()


def feature_columns(metadata: Mapping[str, Any], where: str = "metadata.json") -> list[FeatureColumn]:
    """The model's features from a parsed ``metadata.json``; the error names the field."""
    features = metadata.get("features")
    if not isinstance(features, list) or not features:
        raise FormatError(f"{where}: features must be a non-empty list")
    columns: list[FeatureColumn] = []
    for index, feature in enumerate(features):
        if not isinstance(feature, Mapping):
            raise FormatError(f"{where}: features[{index}] must be an object")
        name, kind = feature.get("name"), feature.get("kind", "numeric")
        if not isinstance(name, str) or not name:
            raise FormatError(f"{where}: features[{index}].name must be a non-empty string")
        if kind not in FEATURE_KINDS:
            raise FormatError(f"{where}: features[{index}].kind must be numeric or categorical, not {kind!r}")
        categories = feature.get("categories", [])
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise FormatError(f"{where}: features[{index}].categories must be a list of strings")
        columns.append(FeatureColumn(name, str(kind), tuple(categories)))
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise FormatError(f"{where}: feature names repeat")
    return columns


def lineage(metadata: Mapping[str, Any], where: str = "metadata.json") -> tuple[str, int]:
    """The resource name and revision the model was exported for."""
    found = metadata.get("lineage", {})
    if not isinstance(found, Mapping):
        raise FormatError(f"{where}: lineage must be an object")
    resource, revision = found.get("resource", ""), found.get("revision", 0)
    if not isinstance(resource, str) or isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        raise FormatError(f"{where}: lineage.resource must be a string and lineage.revision a non-negative integer")
    return resource, revision
