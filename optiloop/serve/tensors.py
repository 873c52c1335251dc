"""Open Inference Protocol v2 tensors: requests -> arrays and arrays -> responses; pure functions.

A v2 request is a JSON object (the "inference header") optionally followed by the binary
tensor extension's raw bytes: the header's length is then given by the
``Inference-Header-Content-Length`` HTTP header, and every input whose ``parameters`` carry
``binary_data_size`` takes that many bytes, in input order. Every value is checked against
its declared datatype and shape here (an ``INT8`` of 300, a bool sent as a number, a shape
that does not match the data), so the predictor only ever sees well-formed arrays and every
malformed request is a :class:`~optiloop.serve.encoding.RequestError` (400).

Answers go back as JSON, or with the binary extension when the request asks for it
(``parameters.binary_data_output``, or ``binary_data`` on a requested output).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from .encoding import RequestError, TooLargeError

NUMPY_TYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
"""v2 datatypes with a fixed width, in little-endian order on the wire (as NumPy's on x86/ARM)."""
DATATYPES = frozenset(NUMPY_TYPES) | {"BYTES"}


@dataclass
class Tensor:
    """One decoded input: its name and values, shaped as declared."""

    name: str
    array: np.ndarray


@dataclass
class V2Request:
    """A checked v2 request."""

    id: str
    inputs: list[Tensor]
    binary_outputs: bool = False
    """Answer every output with the binary extension (``binary_data_output``)."""
    outputs: dict[str, bool] = field(default_factory=dict)
    """Outputs asked for by name, each with whether it goes back as binary; empty means all."""


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RequestError(f"{where} must be a JSON object")
    return value


def _flag(parameters: Mapping[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise RequestError(f"{where}.{key} must be true or false")
    return value


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise RequestError(f"{where}.shape must be a non-empty list of sizes")
    for size in value:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise RequestError(f"{where}.shape must hold non-negative integers, got {value!r}"[:200])
    return tuple(value)


def _flatten(data: Any, where: str) -> list[Any]:
    """JSON data may be flat or nested in the tensor's shape; the values in row-major order."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > 32:
                    raise RequestError(f"{where}.data is nested too deeply")
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _from_json(values: list[Any], datatype: str, where: str) -> np.ndarray:
    """JSON values as an array of ``datatype``, refusing what does not fit it."""
    if datatype == "BYTES":
        if not all(isinstance(value, str | bytes) for value in values):
            raise RequestError(f"{where}: BYTES data must be strings")
        return np.array(values, dtype=object)
    types = set(map(type, values))
    if datatype == "BOOL":
        if types - {bool}:
            raise RequestError(f"{where}: BOOL data must be true or false")
        return np.array(values, dtype=np.bool_)
    dtype = NUMPY_TYPES[datatype]
    if dtype.kind == "f":
        if types - {int, float}:
            raise RequestError(f"{where}: {datatype} data must be numbers (true, false, strings and null are refused)")
        array = np.array(values, dtype=np.float64)
        if not np.isfinite(array).all():
            raise RequestError(f"{where}: {datatype} data must be finite numbers")
        cast = array.astype(dtype)
        if not np.isfinite(cast).all():
            raise RequestError(f"{where}: a value is out of the range of {datatype}")
        return cast
    if types - {int}:
        raise RequestError(f"{where}: {datatype} data must be integers (true, false, fractions and null are refused)")
    info = np.iinfo(dtype)
    if values and (min(values) < info.min or max(values) > info.max):
        raise RequestError(f"{where}: a value is out of the range of {datatype} ({info.min} to {info.max})")
    return np.array(values, dtype=dtype)


def _from_bytes(raw: memoryview, datatype: str, count: int, where: str) -> np.ndarray:
    if datatype == "BYTES":
        values: list[bytes] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise RequestError(f"{where}: BYTES data ends inside a length prefix")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise RequestError(f"{where}: a BYTES element runs past the input's binary_data_size")
            values.append(bytes(raw[offset : offset + length]))
            offset += length
        if len(values) != count:
            raise RequestError(f"{where}: {len(values)} BYTES elements for a shape of {count}")
        return np.array(values, dtype=object)
    dtype = NUMPY_TYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise RequestError(
            f"{where}: binary_data_size is {len(raw)} bytes; shape and {datatype} need {count * dtype.itemsize}"
        )
    array = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and array.view(np.uint8).max(initial=0) > 1:
        raise RequestError(f"{where}: BOOL bytes must be 0 or 1")
    if dtype.kind == "f" and np.isinf(array).any():
        raise RequestError(f"{where}: infinite values are not accepted")
    return array


def decode_tensor(
    where: str,
    datatype: Any,
    shape_value: Any,
    max_rows: int,
    values: Any = None,
    raw: memoryview | bytes | None = None,
) -> np.ndarray:
    """One input's values (JSON-like ``values`` or little-endian ``raw`` bytes) as an array of its
    declared datatype and shape; refuses anything that does not fit (:class:`RequestError`), and a
    first axis over ``max_rows`` (:class:`TooLargeError`) before decoding a value."""
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise RequestError(f"{where}: datatype must be one of {', '.join(sorted(DATATYPES))}, got {datatype!r}"[:300])
    shape = _shape(shape_value, where)
    if shape[0] > max_rows:
        raise TooLargeError(f"{where}: {shape[0]} rows in one request; the limit is {max_rows} (OPTILOOP_MAX_ROWS)")
    count = math.prod(shape)
    if raw is not None:
        array = _from_bytes(memoryview(raw), datatype, count, where)
    else:
        flat = _flatten(values, where)
        if len(flat) != count:
            raise RequestError(f"{where}: {len(flat)} values for shape {list(shape)} ({count} values)")
        array = _from_json(flat, datatype, where)
    return array.reshape(shape)


def parse_request(header: bytes | memoryview, binary: memoryview, max_rows: int) -> V2Request:
    """A v2 request from its JSON header and binary section (empty when not binary)."""
    try:
        body = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError('a v2 request is a JSON object with "inputs"')
    request_id = body.get("id", "")
    if not isinstance(request_id, str):
        raise RequestError('"id" must be a string')
    parameters = _mapping(body.get("parameters"), "parameters")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError('a v2 request needs a non-empty list "inputs"')
    tensors: list[Tensor] = []
    offset = 0
    names: set[str] = set()
    for index, item in enumerate(inputs):
        where = f"inputs[{index}]"
        if not isinstance(item, dict):
            raise RequestError(f"{where} must be a JSON object with name, shape, datatype and data")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise RequestError(f"{where}.name must be a non-empty string")
        where = f"input {name!r}"
        if name in names:
            raise RequestError(f"{where} is sent twice")
        names.add(name)
        datatype = item.get("datatype")
        input_parameters = _mapping(item.get("parameters"), f"{where}.parameters")
        size = input_parameters.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise RequestError(f"{where}: binary_data_size must be a non-negative integer")
            if "data" in item:
                raise RequestError(f"{where} has both data and binary_data_size")
            if offset + size > len(binary):
                raise RequestError(f"{where}: binary_data_size runs past the end of the body")
            array = decode_tensor(where, datatype, item.get("shape"), max_rows, raw=binary[offset : offset + size])
            offset += size
        else:
            if "data" not in item:
                raise RequestError(f"{where} has no data (and no binary_data_size)")
            array = decode_tensor(where, datatype, item.get("shape"), max_rows, values=item["data"])
        tensors.append(Tensor(name, array))
    if offset != len(binary):
        raise RequestError(f"{len(binary) - offset} bytes after the inputs' binary data are not claimed by any input")
    outputs: dict[str, bool] = {}
    requested = body.get("outputs")
    if requested is not None:
        if not isinstance(requested, list):
            raise RequestError('"outputs" must be a list')
        for index, item in enumerate(requested):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise RequestError(f"outputs[{index}] must be an object with a name")
            output_parameters = _mapping(item.get("parameters"), f"outputs[{index}].parameters")
            outputs[item["name"]] = _flag(output_parameters, "binary_data", f"outputs[{index}].parameters")
    return V2Request(request_id, tensors, _flag(parameters, "binary_data_output", "parameters"), outputs)


@dataclass
class Output:
    """One output tensor of an answer."""

    name: str
    datatype: str
    array: np.ndarray


def _bytes_payload(array: np.ndarray) -> bytes:
    if array.dtype == object:
        parts = []
        for value in array.ravel().tolist():
            encoded = value if isinstance(value, bytes) else str(value).encode()
            parts.append(struct.pack("<I", len(encoded)) + encoded)
        return b"".join(parts)
    return np.ascontiguousarray(array).tobytes()


def encode_response(
    model: str, version: str, request: V2Request, outputs: Sequence[Output]
) -> tuple[bytes, int | None]:
    """The answer's body, and the JSON header's length when binary data follows it (else None)."""
    unknown = sorted(set(request.outputs) - {output.name for output in outputs})
    if unknown:
        raise RequestError(
            f"unknown outputs {', '.join(map(repr, unknown[:5]))}; the model answers {[o.name for o in outputs]}"
        )
    chosen = [output for output in outputs if not request.outputs or output.name in request.outputs]
    entries: list[dict[str, Any]] = []
    binary: list[bytes] = []
    for output in chosen:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": list(output.array.shape)}
        if request.outputs.get(output.name, request.binary_outputs):
            payload = _bytes_payload(output.array)
            entry["parameters"] = {"binary_data_size": len(payload)}
            binary.append(payload)
        elif output.array.dtype == object:
            entry["data"] = [str(value) for value in output.array.ravel().tolist()]
        else:
            entry["data"] = output.array.ravel()
        entries.append(entry)
    header = orjson.dumps(
        {"model_name": model, "model_version": version, "id": request.id, "outputs": entries},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    if not binary:
        return header, None
    return header + b"".join(binary), len(header)
