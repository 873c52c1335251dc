"""optiloop's predictor: one verified model directory, served with ONNX Runtime.

Turns checked requests (v1 instances, or v2 tensors from :mod:`optiloop.serve.tensors`) into
the model's input matrix, runs it, and builds the answer: classification answers with class
labels and probabilities, regression with values. It knows nothing of HTTP or gRPC; the
front ends (:mod:`optiloop.serve.http`, :mod:`optiloop.serve.grpc_service`) call it and
count every request in ``optiloop_predictor_requests_total`` by outcome: ``ok``, ``invalid``
(the client's mistake: 400 or 413) or ``error`` (ours: 500, what canary analysis counts).

    model = OnnxPredictor("iris", "/mnt/models")
    model.load()
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import Counter, Histogram

from ..formats.metrics import PREDICTOR_INFERENCE_SECONDS, PREDICTOR_REQUESTS
from .encoding import MAX_ROWS, FeatureEncoder, RequestError
from .model_dir import ModelDirectory, load_model_directory
from .settings import positive_env
from .tensors import Output, Tensor

REQUESTS = Counter(
    PREDICTOR_REQUESTS,
    "Prediction requests by protocol and outcome (ok, invalid, error); the operator judges canaries on these.",
    ["model", "revision", "protocol", "outcome"],
)
LATENCY = Histogram(
    PREDICTOR_INFERENCE_SECONDS,
    "Time to encode a request, run ONNX Runtime and build the response.",
    ["model", "revision", "protocol"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_SIZE = Histogram(
    "optiloop_predictor_batch_size",
    "Rows per request.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384),
)
THREADS_ENV = "OPTILOOP_THREADS"
ROWS_ENV = "OPTILOOP_MAX_ROWS"
OUTCOMES = ("ok", "invalid", "error")
PROTOCOLS = ("v1", "v2", "grpc")


class Metrics:
    """This predictor's metric children, resolved once: ``labels()`` costs more than a request's parsing."""

    def __init__(self, model: str, revision: str) -> None:
        self.requests = {
            (protocol, outcome): REQUESTS.labels(model, revision, protocol, outcome)
            for protocol in PROTOCOLS
            for outcome in OUTCOMES
        }
        self.latency = {protocol: LATENCY.labels(model, revision, protocol) for protocol in PROTOCOLS}
        self.batch = BATCH_SIZE.labels(model)

    def count(self, protocol: str, outcome: str) -> None:
        self.requests[protocol, outcome].inc()


class OnnxPredictor:
    """Serves one optiloop model directory with ONNX Runtime."""

    def __init__(
        self, name: str, model_dir: str | Path, threads: int | None = None, max_rows: int | None = None
    ) -> None:
        self.name = name
        self.model_dir = Path(model_dir)
        self.threads = threads or positive_env(THREADS_ENV, 0) or len(os.sched_getaffinity(0))
        self.max_rows = max_rows or positive_env(ROWS_ENV, MAX_ROWS)
        self.ready = False
        self.directory: ModelDirectory | None = None
        self.encoder: FeatureEncoder | None = None
        self.session: Any = None
        self.revision = ""
        self.metrics: Metrics | None = None
        self.model_metadata: dict[str, Any] = {}
        self.classes = np.array([], dtype=object)

    def load(self) -> bool:
        """Verify the model directory and open the ONNX Runtime session; raises what is wrong."""
        import onnxruntime as ort

        directory = load_model_directory(self.model_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(directory.onnx_bytes, options, providers=["CPUExecutionProvider"])
        metadata = directory.metadata
        graph_input = session.get_inputs()[0]
        if graph_input.name != metadata.input_name or graph_input.shape[-1] != len(metadata.features):
            raise ValueError(
                f"{self.model_dir}: the ONNX input {graph_input.name}{graph_input.shape} does not match "
                f"metadata.json ({metadata.input_name}, {len(metadata.features)} features)"
            )
        graph_outputs = {output.name: output for output in session.get_outputs()}
        missing = [name for name in metadata.output_names if name not in graph_outputs]
        if missing:
            raise ValueError(f"{self.model_dir}: the ONNX graph has no output {missing[0]!r} named in metadata.json")
        self.directory, self.session = directory, session
        # The revision label tells a canary's requests from the stable revision's.
        self.revision = str(metadata.lineage.revision)
        self.encoder = FeatureEncoder(metadata, self.max_rows)
        self.metrics = Metrics(self.name, self.revision)
        self.model_metadata = self._describe(graph_outputs)
        self.classes = np.array(metadata.classes, dtype=object)  # once, not per request
        self.ready = True
        return True

    def _describe(self, graph_outputs: dict[str, Any]) -> dict[str, Any]:
        """v2 model metadata: the inputs clients send and the outputs they get, batch axis -1."""
        assert self.directory is not None
        metadata = self.directory.metadata
        width = len(metadata.features)
        if all(feature.kind == "numeric" for feature in metadata.features):
            # One float matrix, exactly the ONNX graph's input.
            inputs = [{"name": metadata.input_name, "datatype": "FP32", "shape": [-1, width]}]
        else:
            # Categories travel as their raw values (strings), so one tensor per feature.
            inputs = [
                {"name": f.name, "datatype": "FP32" if f.kind == "numeric" else "BYTES", "shape": [-1]}
                for f in metadata.features
            ]
        outputs = []
        if metadata.task == "classification":
            outputs.append({"name": "predictions", "datatype": "BYTES", "shape": [-1]})
            classes = graph_outputs["probabilities"].shape[-1]
            size = classes if isinstance(classes, int) else len(metadata.classes)
            outputs.append({"name": "probabilities", "datatype": "FP32", "shape": [-1, size]})
        else:
            outputs.append({"name": "predictions", "datatype": "FP32", "shape": [-1]})
        return {
            "name": self.name,
            "versions": [self.revision],
            "platform": "onnxruntime_onnx",
            "inputs": inputs,
            "outputs": outputs,
        }

    def run(self, matrix: np.ndarray) -> list[Output]:
        """The model's answer to an input matrix: predictions (labels or values) and probabilities."""
        assert self.directory is not None
        assert self.metrics is not None
        metadata = self.directory.metadata
        self.metrics.batch.observe(len(matrix))
        results = self.session.run(None, {metadata.input_name: matrix})
        if metadata.task == "classification":
            labels = self.classes[results[0].astype(np.intp).ravel()]
            return [Output("predictions", "BYTES", labels), Output("probabilities", "FP32", results[1])]
        return [Output("predictions", "FP32", results[0].astype(np.float32).ravel())]

    def v1_numbers(self, body: bytes) -> np.ndarray | None:
        """The input matrix of a v1 body made only of rows of numbers, else None (see
        :meth:`FeatureEncoder.numbers`); raises :class:`RequestError` for values out of range."""
        assert self.encoder is not None
        return self.encoder.numbers(body)

    def v1_matrix(self, payload: Any, may_hold_booleans: bool) -> np.ndarray:
        """A decoded v1 body -> input matrix (raises :class:`RequestError`)."""
        assert self.encoder is not None
        if not isinstance(payload, dict) or "instances" not in payload:
            raise RequestError('a v1 request is a JSON object with "instances": a list of rows')
        return self.encoder.rows(payload["instances"], may_hold_booleans)

    def v2_matrix(self, tensors: list[Tensor]) -> np.ndarray:
        """Decoded v2 input tensors -> input matrix (raises :class:`RequestError`)."""
        assert self.encoder is not None
        return self.encoder.tensors([(tensor.name, tensor.array) for tensor in tensors])

    def v1_answer(self, outputs: list[Output]) -> dict[str, Any]:
        """v1's answer: ``predictions`` and, for classification, ``probabilities``."""
        answer: dict[str, Any] = {"predictions": outputs[0].array.tolist()}
        if len(outputs) > 1:
            answer["probabilities"] = outputs[1].array
        return answer
