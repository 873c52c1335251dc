"""A finished model directory made to fail at inference on some rows: the fault a canary's
analysis exists to catch (a model that loads, passes its readiness check on ordinary rows, and
then fails on part of the live traffic).

The model's graph gets a guard in front of it: when any row's value of one feature is above a
bound, a ``Gather`` indexes past the end of a one-element constant and ONNX Runtime refuses the
whole run, which the predictor answers with 500 and counts as its own ``error``. Rows at or below
the bound go through unchanged (the guard adds zero). The directory is rewritten with the export
stage's writer, so its completion marker lists the new files' hashes, as a finished one does.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper, numpy_helper

from optiloop.formats.model_dir import (
    METADATA_FILE,
    MODEL_FILE,
    LocalDirectory,
    read_model_directory,
    write_model_directory,
)

PAST_THE_END = 1_000_000
"""The index the guard gathers at when a row is above the bound; the constant has one element."""
_FLOAT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64"}


def failing_above(onnx_bytes: bytes, feature: int, bound: float) -> bytes:
    """The model in ``onnx_bytes`` with a guard: any batch with a row whose column ``feature`` of
    the (single, float) input is above ``bound`` fails in ONNX Runtime; other batches give the
    model's own outputs."""
    import numpy as np

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    (source,) = graph.input
    element = source.type.tensor_type.elem_type
    if element not in _FLOAT_TYPES:
        raise ValueError(f"input {source.name!r} is of ONNX type {element}, not float or double")
    dtype = _FLOAT_TYPES[element]
    guarded = f"{source.name}_guarded"
    for node in graph.node:
        node.input[:] = [guarded if name == source.name else name for name in node.input]
    for output in graph.output:
        if output.name == source.name:
            raise ValueError(f"input {source.name!r} is also an output; nothing to guard")

    def constant(name: str, value: object, of: str) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(value, dtype=of), name)

    graph.initializer.extend([
        constant("guard_column", feature, "int64"),
        constant("guard_bound", bound, dtype),
        constant("guard_past_the_end", PAST_THE_END, "int64"),
        constant("guard_one_value", [0.0], dtype),
        constant("guard_zero", 0.0, dtype),
    ])  # fmt: skip
    guard = [
        helper.make_node("Gather", [source.name, "guard_column"], ["guard_values"], axis=1),
        helper.make_node("Greater", ["guard_values", "guard_bound"], ["guard_above"]),
        helper.make_node("Cast", ["guard_above"], ["guard_above_number"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["guard_above_number"], ["guard_any_above"], keepdims=0),
        helper.make_node("Mul", ["guard_any_above", "guard_past_the_end"], ["guard_index"]),
        # Out of range when any row is above the bound: ONNX Runtime fails the run here.
        helper.make_node("Gather", ["guard_one_value", "guard_index"], ["guard_gathered"], axis=0),
        helper.make_node("Mul", ["guard_gathered", "guard_zero"], ["guard_nothing"]),
        helper.make_node("Add", [source.name, "guard_nothing"], [guarded]),
    ]
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(guard + nodes)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_directory_fail_above(root: Path, feature: int, bound: float) -> None:
    """Rewrite the finished model directory at ``root`` so that its model (and the Triton copy of
    it) fails on batches with a row above ``bound`` in column ``feature``; its metadata and
    reference stay, and the marker is written last as the export stage does."""
    found = read_model_directory(root, model=True)
    files = dict(found.contents)
    faulty = failing_above(files[found.model_file], feature, bound)
    for name in list(files):
        if name == found.model_file or name.endswith(f"/{MODEL_FILE}"):
            files[name] = faulty
    metadata = json.loads(files[METADATA_FILE])
    metadata["sizeBytes"] = len(faulty)
    files[METADATA_FILE] = json.dumps(metadata, indent=2).encode()
    info = {key: value for key, value in found.marker.items() if key != "files"}
    write_model_directory(LocalDirectory(root), files, info)
