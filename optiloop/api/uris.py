"""Storage URIs accepted by the API: which schemes, which characters, no traversal.

The same regular expressions back the CEL rules the API server runs and the Python
checks ``optiloop validate`` runs; both use only syntax that RE2 and Python's ``re``
read alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo

from ._base import cel_string

_BUCKET = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
_PATH = r"(/[A-Za-z0-9._~+=%@-]+)*/?"
STORAGE_URI_PATTERN = rf"^(pvc|s3)://{_BUCKET}{_PATH}$"
DATASET_URI_PATTERN = rf"^((pvc|s3)://{_BUCKET}{_PATH}|builtin://[a-z_]+)$"
TRAVERSAL_PATTERN = r"://(.*/)?\.\.?(/|$)"
MAX_URI_LENGTH = 1024

BUILTIN_DATASETS = ("breast_cancer", "digits", "wine", "iris", "diabetes")
"""scikit-learn's bundled datasets, loadable as ``builtin://<name>``."""


_TRAVERSAL_MESSAGE = "must not contain '.' or '..' path segments"


def _shape_message(forms: str) -> str:
    return (
        f"must be a URI of the form {forms} (lower-case bucket or claim, then a path of letters, digits and ._~+=%@-)"
    )


def _checker(pattern: str, forms: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if re.search(TRAVERSAL_PATTERN, value):
            raise ValueError(_TRAVERSAL_MESSAGE)
        if not re.fullmatch(pattern, value):
            raise ValueError(_shape_message(forms))
        return value

    return check


def _cel_rules(pattern: str, forms: str) -> dict[str, Any]:
    return {
        "x-kubernetes-validations": [
            {"rule": f"!self.matches({cel_string(TRAVERSAL_PATTERN)})", "message": _TRAVERSAL_MESSAGE},
            {"rule": f"self.matches({cel_string(pattern)})", "message": _shape_message(forms)},
        ]
    }


_STORAGE_FORMS = "pvc://<claim>/<path> or s3://<bucket>/<key>"
_DATASET_FORMS = "pvc://<claim>/<path>, s3://<bucket>/<key> or builtin://<name>"

LOCAL_RUN_CONTEXT = "optiloop.local-run"
"""Validation context key set by ``optiloop run``: the one place a ``file://`` dataset is allowed."""
LOCAL_FILE_MESSAGE = (
    "file:// names a file on your own machine and works only with `optiloop run`; in a cluster use "
    "pvc://<claim>/<path> or s3://<bucket>/<key>"
)


def _check_dataset(value: str, info: ValidationInfo) -> str:
    if value.startswith("file://"):
        # ``optiloop run`` resolves a local file to an absolute file:// URI before validating.
        if isinstance(info.context, dict) and info.context.get(LOCAL_RUN_CONTEXT) and value.startswith("file:///"):
            return value
        raise ValueError(LOCAL_FILE_MESSAGE)
    return _checker(DATASET_URI_PATTERN, _DATASET_FORMS)(value)


def _dataset_cel_rules() -> dict[str, Any]:
    rules = _cel_rules(DATASET_URI_PATTERN, _DATASET_FORMS)["x-kubernetes-validations"]
    local = {"rule": "!self.startsWith('file://')", "message": LOCAL_FILE_MESSAGE}
    # A file:// URI gets the one message that says what to do instead, not the shape message too.
    shape = {**rules[1], "rule": f"self.startsWith('file://') || {rules[1]['rule']}"}
    return {"x-kubernetes-validations": [local, rules[0], shape]}


StorageURI = Annotated[
    str,
    AfterValidator(_checker(STORAGE_URI_PATTERN, _STORAGE_FORMS)),
    Field(
        min_length=1,
        max_length=MAX_URI_LENGTH,
        json_schema_extra=_cel_rules(STORAGE_URI_PATTERN, _STORAGE_FORMS),
    ),
]
"""Where artifacts live: a PersistentVolumeClaim path or an S3 (or S3-compatible) key."""

DatasetURI = Annotated[
    str,
    AfterValidator(_check_dataset),
    Field(
        min_length=1,
        max_length=MAX_URI_LENGTH,
        json_schema_extra=_dataset_cel_rules(),
    ),
]
"""Where the training data lives; ``builtin://`` names one of scikit-learn's bundled sets, and
``file:///<path>`` (``optiloop run`` only) a file on the machine running it."""


S3_ENDPOINT_PATTERN = r"^https?://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?/?$"
_S3_ENDPOINT_MESSAGE = (
    "must be http(s)://<host>[:<port>] (for example https://minio.storage:9000), with no user, password, "
    "path or query: credentials go in a Secret named by credentialsSecretRef"
)


def _check_s3_endpoint(value: str) -> str:
    if not re.fullmatch(S3_ENDPOINT_PATTERN, value):
        raise ValueError(_S3_ENDPOINT_MESSAGE)
    return value


S3Endpoint = Annotated[
    str,
    AfterValidator(_check_s3_endpoint),
    Field(
        max_length=512,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": f"self.matches({cel_string(S3_ENDPOINT_PATTERN)})", "message": _S3_ENDPOINT_MESSAGE}
            ]
        },
    ),
]
"""Endpoint of an S3-compatible store: scheme, host and port only, never credentials."""
