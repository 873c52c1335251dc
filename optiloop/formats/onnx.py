"""A structural check that bytes are an ONNX model, without importing ONNX.

An ONNX file is a protobuf ``ModelProto``. Walking its top-level fields (valid wire types,
lengths that stay inside the file) and requiring ``ir_version`` (field 1) and ``graph``
(field 7) tells a model from a truncated copy, a pickle or a text file renamed ``.onnx``, so
the reader can name the file instead of letting the runtime fail with a traceback.
"""

from __future__ import annotations

IR_VERSION_FIELD = 1
GRAPH_FIELD = 7
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it; ValueError when it runs off the end."""
    value, shift = 0, 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError(f"a varint at byte {position} runs past the end")
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        shift += 7
        if not byte & 0x80:
            return value, position


def onnx_problem(data: bytes) -> str | None:
    """Why ``data`` is not an ONNX model, or None when its top level reads as one."""
    if not data:
        return "the file is empty"
    seen: set[int] = set()
    position = 0
    try:
        while position < len(data):
            start = position
            tag, position = _varint(data, position)
            field, wire = tag >> 3, tag & 7
            if field == 0:
                return f"field number 0 at byte {start}"
            if wire == _VARINT:
                _, position = _varint(data, position)
            elif wire == _FIXED64:
                position += 8
            elif wire == _FIXED32:
                position += 4
            elif wire == _LENGTH:
                length, position = _varint(data, position)
                position += length
            else:
                return f"wire type {wire} at byte {start} does not occur in ONNX models"
            if position > len(data):
                return f"field {field} at byte {start} runs past the end of the file (truncated?)"
            if field in (IR_VERSION_FIELD, GRAPH_FIELD) and wire != (_VARINT if field == IR_VERSION_FIELD else _LENGTH):
                return f"field {field} at byte {start} has the wrong wire type for a ModelProto"
            seen.add(field)
    except ValueError as exc:
        return str(exc)
    if IR_VERSION_FIELD not in seen:
        return "no ir_version"
    if GRAPH_FIELD not in seen:
        return "no graph"
    return None
