"""The ``ModelOptimization`` resource as a whole: identity, metadata, spec and status."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from ._base import ApiModel, Rule
from .spec import ModelOptimizationSpec
from .status import ModelOptimizationStatus

GROUP = "optiloop.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelOptimization"
PLURAL = "modeloptimizations"
SINGULAR = "modeloptimization"
SHORT_NAMES = ("mopt",)
CATEGORIES = ("optiloop",)

MAX_NAME_LENGTH = 40
"""Longest resource name: child names such as ``<name>-compress-r<revision>`` must stay
within the 63 characters Kubernetes allows for Job and Service names and label values."""
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


class ObjectMeta(ApiModel):
    """The part of ``metadata`` optiloop reads; the server's other fields pass through."""

    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Resource name."""
    namespace: Annotated[str, Field(max_length=63)] | None = None
    """Namespace."""
    labels: dict[str, str] = {}
    """Labels."""
    annotations: dict[str, str] = {}
    """Annotations."""
    generation: int | None = None
    """Set by the API server; bumped on every spec change."""
    uid: str | None = None
    """Set by the API server."""


class ModelOptimization(ApiModel):
    """One model's optimization loop: data checks, tuning, compression, serving, drift and retraining."""

    api_version: Literal["optiloop.dev/v1alpha1"] = Field("optiloop.dev/v1alpha1", alias="apiVersion")
    """Always ``optiloop.dev/v1alpha1``."""
    kind: Literal["ModelOptimization"] = "ModelOptimization"
    """Always ``ModelOptimization``."""
    metadata: ObjectMeta
    """Standard object metadata."""
    spec: ModelOptimizationSpec
    """The desired loop."""
    status: ModelOptimizationStatus | None = None
    """Observed state, written by the operator."""

    cross_field_rules = (
        Rule(
            f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
            f"must be at most {MAX_NAME_LENGTH} characters, so the names of the Jobs and Services "
            "derived from it stay within Kubernetes' limits",
            lambda m: len(m.metadata.name) <= MAX_NAME_LENGTH,
            "metadata.name",
        ),
        Rule(
            f"self.metadata.name.matches('{NAME_PATTERN}')",
            "must start with a lower-case letter and hold only lower-case letters, digits and '-' (it names a Service)",
            lambda m: re.fullmatch(NAME_PATTERN, m.metadata.name) is not None,
            "metadata.name",
        ),
    )


def parse_manifest(document: dict[str, Any]) -> ModelOptimization:
    """Validate one manifest (as loaded from YAML) into a :class:`ModelOptimization`."""
    return ModelOptimization.model_validate(document)
