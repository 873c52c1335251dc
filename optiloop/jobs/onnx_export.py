"""Torch -> ONNX with the preprocessing folded in, and ONNX-level compression.

The exported graph takes the encoded raw features (one float column per raw input: numbers,
category codes, NaN for missing) and returns ``predictions`` (class index or value) and, for
classification, ``probabilities``. The batch axis is dynamic; the opset is pinned.

Quantization and half precision work on the ONNX graph, because ONNX Runtime is what serves
the model: dynamic int8 (weights int8, activations quantized per call), static int8
(activation ranges calibrated on training rows, QDQ format), and fp16 storage (weights kept
in half precision and widened once when the session loads, halving the file).
"""

from __future__ import annotations

import copy
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from .models import TabularModel

OPSET = 17
INPUT_NAME = "features"
PREPROCESSING_SCOPE = "/model/preprocess/"


class ServingModule(nn.Module):
    """What the exported graph computes: predictions (and probabilities) from encoded raw rows."""

    def __init__(self, model: TabularModel) -> None:
        super().__init__()
        self.model = model
        self.classification = model.task == "classification"

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(raw)
        if self.classification:
            probabilities = torch.softmax(out, dim=1)
            return probabilities.argmax(dim=1), probabilities
        return (out,)


def fold_batch_norm(model: TabularModel) -> TabularModel:
    """A copy with every eval-mode batch norm folded into the Linear before it.

    In inference a batch norm is an affine map per neuron, so the Linear can absorb it: the
    exported graph loses one node per layer and its parameters, and computes the same thing.
    """
    folded = copy.deepcopy(model).eval()
    layers = list(folded.mlp.layers)
    with torch.no_grad():
        for index, layer in enumerate(layers):
            if not isinstance(layer, nn.BatchNorm1d) or index == 0 or not isinstance(layers[index - 1], nn.Linear):
                continue
            linear = layers[index - 1]
            assert isinstance(linear, nn.Linear)
            assert layer.running_var is not None
            assert layer.running_mean is not None
            factor = layer.weight / torch.sqrt(layer.running_var + layer.eps)
            linear.weight.mul_(factor.unsqueeze(1))
            linear.bias.copy_((linear.bias - layer.running_mean) * factor + layer.bias)
            layers[index] = nn.Identity()
    folded.mlp.layers = nn.Sequential(*layers)
    return folded


def output_names(task: str) -> list[str]:
    """ONNX output names for ``task``."""
    return ["predictions", "probabilities"] if task == "classification" else ["predictions"]


def export_onnx(model: TabularModel) -> bytes:
    """The model as a checked ONNX graph (opset :data:`OPSET`, dynamic batch axis)."""
    # Export restores the wrapper's training flag afterwards (recursively), so it must be built
    # in eval mode, or the model would come back in training mode.
    serving = ServingModule(fold_batch_norm(model)).eval()
    names = output_names(model.task)
    buffer = io.BytesIO()
    example = torch.zeros(2, len(model.transform.columns))
    model.eval()
    with warnings.catch_warnings():
        # torch 2.13 deprecates the TorchScript exporter; its replacement needs onnxscript, which
        # would add a heavy dependency for a graph this simple.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        torch.onnx.export(
            serving,
            (example,),
            buffer,  # type: ignore[arg-type]
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in names}},
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


class _QuietQuantizer:
    """ONNX Runtime's quantizer logs advice on the root logger for every call; keep it out of job logs."""

    def __enter__(self) -> None:
        self._level = logging.root.level
        logging.root.setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: Any) -> None:
        self._warnings.__exit__(*exc)
        logging.root.setLevel(self._level)


def _network_nodes(proto: onnx.ModelProto) -> list[str]:
    """Names of the nodes outside the preprocessing (the ones worth quantizing)."""
    return [node.name for node in proto.graph.node if not node.name.startswith(PREPROCESSING_SCOPE)]


def _preprocessing_nodes(proto: onnx.ModelProto) -> list[str]:
    return [node.name for node in proto.graph.node if node.name.startswith(PREPROCESSING_SCOPE)]


def quantize_dynamic_int8(model: bytes) -> bytes:
    """Dynamic int8: int8 weights for the network's matrix products; preprocessing stays fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load_from_string(model)
    with tempfile.TemporaryDirectory(prefix="optiloop-quant-") as tmp:
        source, target = Path(tmp, "model.onnx"), Path(tmp, "quantized.onnx")
        source.write_bytes(model)
        with _QuietQuantizer():
            quantize_dynamic(
                source,
                target,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["Gemm", "MatMul"],
                nodes_to_exclude=_preprocessing_nodes(proto),
            )
        return target.read_bytes()


class _Calibration:
    """Feeds calibration rows to ONNX Runtime's static quantizer in small batches."""

    def __init__(self, rows: np.ndarray, batch_size: int = 64) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch.astype(np.float32)}


def quantize_static_int8(model: bytes, calibration_rows: np.ndarray) -> bytes:
    """Static int8 (QDQ): weights and activations int8, activation ranges from ``calibration_rows``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if len(calibration_rows) == 0:
        raise ValueError("static quantization needs at least one calibration row")
    proto = onnx.load_from_string(model)
    with tempfile.TemporaryDirectory(prefix="optiloop-quant-") as tmp:
        source, target = Path(tmp, "model.onnx"), Path(tmp, "quantized.onnx")
        source.write_bytes(model)
        with _QuietQuantizer():
            quantize_static(
                source,
                target,
                _Calibration(np.nan_to_num(calibration_rows)),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["Gemm", "MatMul"],
                nodes_to_quantize=[n for n in _network_nodes(proto) if n],
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibTensorRangeSymmetric": False},
            )
        return target.read_bytes()


def to_fp16_storage(model: bytes, min_elements: int = 16) -> bytes:
    """Store the network's float weights in half precision, widened back by a Cast node.

    CPUs run fp32 matrix products faster than fp16 ones, so computation stays fp32; ONNX
    Runtime folds the casts once when the session loads. Small tensors and the
    preprocessing's constants stay fp32 (their precision matters more than their bytes).
    """
    proto = onnx.load_from_string(model)
    consumers: dict[str, set[str]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.name)
    keep = set(_preprocessing_nodes(proto))
    converted = []
    for initializer in proto.graph.initializer:
        array = numpy_helper.to_array(initializer)
        users = consumers.get(initializer.name, set())
        if array.dtype != np.float32 or array.size < min_elements or not users or users & keep:
            continue
        name = initializer.name
        half_name = f"{name}__fp16"
        initializer.CopyFrom(numpy_helper.from_array(array.astype(np.float16), half_name))
        converted.append(
            helper.make_node("Cast", [half_name], [name], name=f"cast_{half_name}", to=onnx.TensorProto.FLOAT)
        )
    # Casts go first so every consumer still finds its input defined before use.
    nodes = converted + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()
