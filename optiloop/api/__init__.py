"""The ModelOptimization API (``optiloop.dev/v1alpha1``): the contract every part of optiloop shares.

The pydantic models here are the single source of truth: the CRD in ``crds/`` is
rendered from them (``python -m optiloop.api.crd``), the operator and the local runner
validate with them, and job inputs and outputs are typed by them.

Example::

    from optiloop.api import load_manifest
    mo = load_manifest(Path("examples/minimal.yaml"))
    print(mo.spec.tuning.max_trials)
"""

from ._base import ApiModel, Rule
from .resource import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    ModelOptimization,
    ObjectMeta,
    parse_manifest,
)
from .spec import ModelOptimizationSpec
from .status import Condition, ModelOptimizationStatus
from .validation import FieldError, ManifestError, load_documents, load_manifest, manifest_errors

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "ApiModel",
    "Condition",
    "FieldError",
    "ManifestError",
    "ModelOptimization",
    "ModelOptimizationSpec",
    "ModelOptimizationStatus",
    "ObjectMeta",
    "Rule",
    "load_documents",
    "load_manifest",
    "manifest_errors",
    "parse_manifest",
]
