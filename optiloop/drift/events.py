"""KServe's logged inference requests, checked strictly before any row reaches the window.

KServe's logger (``logger.mode: request`` or ``all``) posts each request to the monitor as a
CloudEvent 1.0: in binary mode the ``ce-*`` headers carry the attributes and the body is the
request itself; in structured mode (``application/cloudevents+json``) the body is the event with
the request under ``data`` (or ``data_base64``). The request is v1 (``{"instances": [...]}``) or
v2 (``{"inputs": [{"name", "shape", "datatype", "data"}]}``). Logged responses carry no inputs
and are acknowledged without being counted.

Everything a client controls is checked here and refused with :class:`EventError` (answered
400): missing or wrong CloudEvent attributes, JSON with ``NaN``/``Infinity`` or integers too long
to be numbers, nesting deeper than a tensor's shape, shapes that are not lists of small
non-negative integers, data that does not fill its shape. KServe names the InferenceService in
the ``inferenceservicename`` extension (its ``source`` is the agent's own URL, the same for every
InferenceService); when the monitor is told which InferenceServices are its own, events naming
any other (or none) are refused with :class:`ForbiddenEventError` (answered 403).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ..formats.rows import RowError, instances, tensor_layout

SPEC_VERSION = "1.0"
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
SERVICE_EXTENSION = "inferenceservicename"
NAMESPACE_EXTENSION = "namespace"
MAX_INTEGER_DIGITS = 30
"""Longer integer literals are refused: no feature value or dimension needs more digits."""
MAX_DIMENSIONS = 8
MAX_ELEMENTS = 50_000_000
SCALARS = (str, int, float, type(None))


class EventError(ValueError):
    """The event or request cannot be read; the message is the reason sent back with 400."""


class ForbiddenEventError(EventError):
    """The event comes from an InferenceService this monitor does not watch (answered 403)."""


@dataclass
class Request:
    """Rows of one logged request (lists in feature order or objects), or none for a response."""

    rows: list[Any]
    event_id: str | None = None
    is_response: bool = False
    service: str | None = None


def _describe(value: Any) -> str:
    """A short, safe description of a client's value (a repr of deep nesting could recurse)."""
    if isinstance(value, str | int | float | bool) or value is None:
        return repr(value)[:80]
    if isinstance(value, list | dict):
        return f"a {type(value).__name__} of {len(value)} items"
    return type(value).__name__


def _constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows; send null for a missing value")


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits is too long to be a feature value or dimension")
    return int(text)


def _float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:40]} is too large to be a finite number")
    return number


def loads(body: bytes | str, what: str) -> Any:
    """Strict JSON: no NaN or Infinity, no oversized numbers, no nesting deep enough to recurse."""
    try:
        return json.loads(body, parse_constant=_constant, parse_int=_integer, parse_float=_float)
    except RecursionError:
        raise EventError(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventError(f"{what} is not JSON: {exc}") from None


def _shape(tensor: Mapping[str, Any], name: str) -> list[int]:
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_DIMENSIONS
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_ELEMENTS for s in shape)
    ):
        limits = f"1 to {MAX_DIMENSIONS} non-negative integers"
        raise EventError(f"input {name!r}: shape must be a list of {limits}, got {_describe(shape)}")
    return shape


_END = object()


def _tensor_values(data: Any, name: str, shape: list[int]) -> list[Any]:
    """``data`` flat: v2 allows a flat list or a row-major nesting that follows ``shape`` exactly.

    Iterative, so nesting costs no recursion; anything but numbers, strings and null is refused.
    """
    if not isinstance(data, list):
        raise EventError(f"input {name!r}: data must be a list")
    if all(isinstance(item, SCALARS) for item in data):
        return list(data)  # the common flat case; its length is checked against the shape
    misfit = f"input {name!r}: nested data does not follow shape {shape}"
    if len(data) != shape[0]:
        raise EventError(misfit)
    flat: list[Any] = []
    stack = [(iter(data), 1)]
    while stack:
        items, level = stack[-1]
        item = next(items, _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            if level >= len(shape):
                raise EventError(f"input {name!r}: data is nested deeper than its shape")
            if len(item) != shape[level]:
                raise EventError(misfit)
            stack.append((iter(item), level + 1))
        elif isinstance(item, SCALARS):
            if level != len(shape):
                raise EventError(misfit)
            flat.append(item)
        else:
            raise EventError(f"input {name!r}: data holds {type(item).__name__}, not numbers, strings or null")
    return flat


def _v2_rows(inputs: Any, names: list[str]) -> list[Any]:
    if not isinstance(inputs, list) or not inputs:
        raise EventError('"inputs" must be a non-empty list of tensors')
    tensors: list[tuple[str, list[int], list[Any]]] = []
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, Mapping) or "data" not in tensor or "shape" not in tensor:
            raise EventError(f"inputs[{index}]: each v2 input needs name, shape, datatype and data")
        name = tensor.get("name", "")
        if not isinstance(name, str) or not isinstance(tensor.get("datatype", ""), str):
            raise EventError(f"inputs[{index}]: name and datatype must be strings")
        shape = _shape(tensor, name)
        values = _tensor_values(tensor["data"], name, shape)
        expected = math.prod(shape)
        if len(values) != expected:
            raise EventError(f"input {name!r}: data does not fit shape {shape} ({len(values)} values)")
        tensors.append((name, shape, values))
    try:
        layout = tensor_layout([(name, shape) for name, shape, _ in tensors], names)
    except RowError as exc:
        raise EventError(str(exc)) from None
    if layout.matrix is not None:
        values = tensors[layout.matrix][2]
        width = len(names)
        return [values[r * width : (r + 1) * width] for r in range(layout.rows)]
    columns = [tensors[position][2] for position in layout.columns]
    return [[column[i] for column in columns] for i in range(layout.rows)]


def request_rows(document: Any, names: list[str]) -> list[Any]:
    """Rows of a v1 or v2 inference request body."""
    if not isinstance(document, Mapping):
        raise EventError('the request must be a JSON object with "instances" (v1) or "inputs" (v2)')
    if "instances" in document:
        try:
            return instances(document["instances"])
        except RowError as exc:
            raise EventError(str(exc)) from None
    if "inputs" in document:
        return _v2_rows(document["inputs"], names)
    raise EventError('the request has neither "instances" (v1) nor "inputs" (v2)')


def _attribute(attributes: Mapping[str, Any], name: str, where: str) -> str:
    value = attributes.get(name)
    if not isinstance(value, str) or not value.strip():
        raise EventError(f"not a KServe inference event: {where}{name} is missing or empty")
    return value


def _envelope(attributes: Mapping[str, Any], where: str) -> tuple[str, str]:
    """The event's type and id, once the required CloudEvent attributes are all there."""
    if _attribute(attributes, "specversion", where) != SPEC_VERSION:
        raise EventError(f"{where}specversion must be {SPEC_VERSION!r}, got {_describe(attributes['specversion'])}")
    event_id = _attribute(attributes, "id", where)
    _attribute(attributes, "source", where)
    event_type = _attribute(attributes, "type", where)
    if event_type not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise EventError(f"{where}type must be {REQUEST_TYPE!r} (or the response type), got {_describe(event_type)}")
    return event_type, event_id


def _check_service(
    attributes: Mapping[str, Any], services: Collection[str], namespace: str | None, where: str
) -> str | None:
    service = attributes.get(SERVICE_EXTENSION)
    for extension in (SERVICE_EXTENSION, NAMESPACE_EXTENSION):
        if not isinstance(attributes.get(extension, ""), str):
            raise EventError(f"{where}{extension} must be a string, got {_describe(attributes[extension])}")
    if not services:
        return service
    if service not in services:
        raise ForbiddenEventError(
            f"{where}{SERVICE_EXTENSION} {_describe(service)} is not an InferenceService this monitor watches"
        )
    sent_namespace = attributes.get(NAMESPACE_EXTENSION)
    if namespace is not None and sent_namespace not in (None, "", namespace):
        raise ForbiddenEventError(
            f"{where}{NAMESPACE_EXTENSION} {_describe(sent_namespace)} is not this monitor's namespace"
        )
    return str(service)


def parse_event(
    headers: Mapping[str, str],
    body: bytes,
    names: list[str],
    services: Collection[str] = (),
    namespace: str | None = None,
) -> Request:
    """A logged request from a CloudEvent in binary or structured mode; EventError otherwise.

    ``services``, when given, are the InferenceServices whose events are taken (others: 403).
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    content_type = lowered.get("content-type", "").split(";")[0].strip().lower()
    if content_type == STRUCTURED_CONTENT_TYPE:
        where = "attribute "
        event = loads(body, "the structured CloudEvent")
        if not isinstance(event, Mapping):
            raise EventError("a structured CloudEvent must be a JSON object with specversion, id, source and type")
        event_type, event_id = _envelope(event, where)
        service = _check_service(event, services, namespace, where)
        if event_type == RESPONSE_TYPE:
            return Request([], event_id, is_response=True, service=service)
        if "data_base64" in event:
            encoded = event["data_base64"]
            if not isinstance(encoded, str):
                raise EventError("data_base64 must be a string")
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise EventError(f"data_base64 is not base64: {exc}") from None
            data = loads(raw, "the event's data_base64")
        else:
            data = event.get("data")
            if isinstance(data, str):
                data = loads(data, "the event's data")
    else:
        attributes = {key[3:]: value for key, value in lowered.items() if key.startswith("ce-")}
        where = "header ce-"
        event_type, event_id = _envelope(attributes, where)
        service = _check_service(attributes, services, namespace, where)
        if event_type == RESPONSE_TYPE:
            return Request([], event_id, is_response=True, service=service)
        data = loads(body, "the request body")
    return Request(request_rows(data, names), event_id, service=service)
