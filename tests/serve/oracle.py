"""What every conformance test compares a client's answer with: ONNX Runtime in this process on the
served model file, and the rows both sides are given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.support.model_dirs import city_frame

if TYPE_CHECKING:
    from tests.serve.conftest import Served


class Model:
    """A served model directory, its ONNX session in this process, and its server."""

    def __init__(self, root: Path, served: Served) -> None:
        self.root = root
        self.served = served
        self.metadata = json.loads((root / "metadata.json").read_text())
        self.session = ort.InferenceSession(str(root / "model.onnx"), providers=["CPUExecutionProvider"])

    def expected(self, matrix: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Labels and probabilities straight from ONNX Runtime for an encoded input matrix."""
        indices, probabilities = self.session.run(None, {self.metadata["inputName"]: matrix.astype(np.float32)})
        return [self.metadata["classes"][int(i)] for i in np.ravel(indices)], probabilities

    def http(self) -> httpclient.InferenceServerClient:
        return httpclient.InferenceServerClient(self.served.url.removeprefix("http://"))

    def grpc(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(f"127.0.0.1:{self.served.grpc_port}")


def numeric_rows() -> np.ndarray:
    frame = city_frame(64, 5)
    return frame[["a", "b"]].fillna(0.25).to_numpy(dtype=np.float32)


def city_columns() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = city_frame(40, 6)
    return (
        frame["a"].to_numpy(np.float32),
        frame["b"].fillna(1.5).to_numpy(np.float32),
        frame["city"].to_numpy(dtype=object),
    )


def check(model: Model, matrix: np.ndarray, labels: Any, probabilities: Any) -> None:
    want_labels, want_probabilities = model.expected(matrix)
    np.testing.assert_allclose(probabilities, want_probabilities, rtol=1e-6, atol=1e-7)
    decoded = [value.decode() if isinstance(value, bytes) else str(value) for value in np.ravel(labels)]
    assert decoded == want_labels


def city_matrix(model: Model, a: np.ndarray, b: np.ndarray, city: np.ndarray) -> np.ndarray:
    """The encoded input matrix of the city model: categories become their index in the metadata."""
    categories = next(f["categories"] for f in model.metadata["features"] if f["name"] == "city")
    codes = np.array([categories.index(value) for value in city], dtype=np.float32)
    return np.stack([a, b, codes], axis=1)
