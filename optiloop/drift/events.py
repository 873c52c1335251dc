"""Inference requests as KServe's payload logger sends them, and as plain JSON.

KServe's logger (``logger.mode: request``) posts each request to the monitor as a CloudEvent:
in binary mode the ``ce-*`` headers carry the attributes and the body is the request itself;
in structured mode (``application/cloudevents+json``) the body is the event with the request
under ``data`` (or ``data_base64``). The request is v1 (``{"instances": [...]}``) or v2
(``{"inputs": [{"name", "shape", "datatype", "data"}]}``). Responses logged by
``logger.mode: all`` carry no inputs and are acknowledged without being counted.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

RESPONSE_TYPE_SUFFIX = "response"


class EventError(ValueError):
    """The event or request cannot be read; the message is the reason sent back with 400."""


@dataclass
class Request:
    """Rows of one logged request (lists in feature order or objects), or none for a response."""

    rows: list[Any]
    event_id: str | None = None
    is_response: bool = False


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventError(f"{what} is not JSON: {exc}") from None


def _v2_rows(inputs: Any, names: list[str]) -> list[Any]:
    if not isinstance(inputs, list) or not inputs:
        raise EventError('"inputs" must be a non-empty list of tensors')
    tensors = []
    for tensor in inputs:
        if not isinstance(tensor, Mapping) or "data" not in tensor or "shape" not in tensor:
            raise EventError("each v2 input needs name, shape, datatype and data")
        try:
            array = np.asarray(tensor["data"], dtype=object).reshape([int(s) for s in tensor["shape"]])
        except (ValueError, TypeError) as exc:
            raise EventError(
                f"input {tensor.get('name')!r}: data does not fit shape {tensor['shape']}: {exc}"
            ) from None
        tensors.append((str(tensor.get("name", "")), array))
    if len(tensors) == 1 and tensors[0][1].ndim == 2 and tensors[0][0] not in names:
        return [list(row) for row in tensors[0][1].tolist()]
    by_name = {name: array.reshape(len(array), -1)[:, 0] if array.ndim == 2 else array for name, array in tensors}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise EventError(f"v2 request lacks inputs {', '.join(map(repr, missing[:5]))}")
    lengths = {len(by_name[name]) for name in names}
    if len(lengths) != 1:
        raise EventError(f"v2 inputs have different numbers of rows: {sorted(lengths)}")
    return [[by_name[name][i] for name in names] for i in range(lengths.pop())]


def request_rows(document: Any, names: list[str]) -> list[Any]:
    """Rows of a v1 or v2 inference request body."""
    if not isinstance(document, Mapping):
        raise EventError('the request must be a JSON object with "instances" (v1) or "inputs" (v2)')
    if "instances" in document:
        rows = document["instances"]
        if not isinstance(rows, list) or not rows:
            raise EventError('"instances" must be a non-empty list of rows')
        return rows
    if "inputs" in document:
        return _v2_rows(document["inputs"], names)
    raise EventError('the request has neither "instances" (v1) nor "inputs" (v2)')


def parse_event(headers: Mapping[str, str], body: bytes, names: list[str]) -> Request:
    """A logged request from a CloudEvent in binary or structured mode (or a bare request body)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    content_type = lowered.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/cloudevents+json":
        event = _json(body, "the structured CloudEvent")
        if not isinstance(event, Mapping) or "specversion" not in event:
            raise EventError("a structured CloudEvent needs specversion, id, source and type")
        event_type, event_id = str(event.get("type", "")), event.get("id")
        if "data_base64" in event:
            try:
                data = _json(base64.b64decode(event["data_base64"], validate=True), "the event's data_base64")
            except (ValueError, TypeError) as exc:
                raise EventError(f"data_base64 is not base64: {exc}") from None
        else:
            data = event.get("data")
            if isinstance(data, str):
                data = _json(data.encode(), "the event's data")
    else:
        event_type, event_id = lowered.get("ce-type", ""), lowered.get("ce-id")
        data = _json(body, "the request body")
    if event_type.endswith(RESPONSE_TYPE_SUFFIX):
        return Request([], event_id, is_response=True)
    return Request(request_rows(data, names), event_id)
