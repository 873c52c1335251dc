"""optiloop's KServe predictor: a ``kserve.Model`` over ONNX Runtime.

Serves v1 (``POST /v1/models/<name>:predict``) and v2 (``POST /v2/models/<name>/infer``) on
KServe's ModelServer, with its liveness and readiness endpoints and ``/metrics``. Requests
carry raw feature values (see :mod:`optiloop.serve.encoding`); classification answers with
class labels and probabilities, regression with values. A request that does not fit the
model is answered 400 with the reason; it is counted, never a crash.

    model = OnnxPredictor("iris", "/mnt/models")
    model.load()
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from cloudevents.http import CloudEvent
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from prometheus_client import Counter, Histogram

from .encoding import FeatureEncoder, RequestError, labels
from .model_dir import ModelDirectory, load_model_directory

REQUESTS = Counter(
    "optiloop_predictor_requests_total",
    "Prediction requests by protocol and outcome (ok, invalid, error); the operator judges canaries on these.",
    ["model", "revision", "protocol", "outcome"],
)
LATENCY = Histogram(
    "optiloop_predictor_inference_seconds",
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


class OnnxPredictor(Model):  # type: ignore[misc]
    """Serves one optiloop model directory with ONNX Runtime."""

    def __init__(self, name: str, model_dir: str | Path, threads: int | None = None) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.threads = threads or int(os.environ.get(THREADS_ENV, "0")) or len(os.sched_getaffinity(0))
        self.directory: ModelDirectory | None = None
        self.encoder: FeatureEncoder | None = None
        self.session: Any = None
        self.revision = ""

    def load(self) -> bool:
        """Verify the model directory and open the ONNX Runtime session."""
        import onnxruntime as ort

        directory = load_model_directory(self.model_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(directory.onnx_bytes, options, providers=["CPUExecutionProvider"])
        expected = len(directory.metadata.features)
        shape = session.get_inputs()[0].shape
        if session.get_inputs()[0].name != directory.metadata.input_name or shape[-1] != expected:
            raise ValueError(
                f"{self.model_dir}: the ONNX input {session.get_inputs()[0].name}{shape} does not match "
                f"metadata.json ({directory.metadata.input_name}, {expected} features)"
            )
        self.directory, self.session = directory, session
        # The revision label tells a canary's requests from the stable revision's.
        self.revision = str(directory.metadata.lineage.revision)
        self.encoder = FeatureEncoder(directory.metadata)
        self.ready = True
        return True

    def _run(self, matrix: np.ndarray) -> tuple[list[Any], np.ndarray | None]:
        assert self.directory is not None
        metadata = self.directory.metadata
        outputs = self.session.run(None, {metadata.input_name: matrix})
        probabilities = outputs[1] if metadata.task == "classification" else None
        return labels(metadata, outputs[0]), probabilities

    def predict(self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None) -> Any:
        protocol = "v2" if isinstance(payload, InferRequest) else "v1"
        started = time.perf_counter()
        try:
            response = self._predict_v2(payload) if isinstance(payload, InferRequest) else self._predict_v1(payload)
        except (RequestError, InvalidInput) as exc:
            REQUESTS.labels(self.name, self.revision, protocol, "invalid").inc()
            raise InvalidInput(str(exc)) from None
        except Exception:
            REQUESTS.labels(self.name, self.revision, protocol, "error").inc()
            raise
        REQUESTS.labels(self.name, self.revision, protocol, "ok").inc()
        LATENCY.labels(self.name, self.revision, protocol).observe(time.perf_counter() - started)
        return response

    def _predict_v1(self, payload: Any) -> dict[str, Any]:
        assert self.encoder is not None
        if isinstance(payload, CloudEvent):
            payload = payload.data
        if isinstance(payload, bytes | str):
            # KServe passes bodies through undecoded when the content type is not JSON (curl -d).
            try:
                payload = json.loads(payload)
            except ValueError as exc:
                raise RequestError(f"the request body is not JSON: {exc}") from None
        if not isinstance(payload, dict) or "instances" not in payload:
            raise RequestError('a v1 request is a JSON object with "instances": a list of rows')
        matrix = self.encoder.rows(payload["instances"])
        BATCH_SIZE.labels(self.name).observe(len(matrix))
        predictions, probabilities = self._run(matrix)
        response: dict[str, Any] = {"predictions": predictions}
        if probabilities is not None:
            response["probabilities"] = probabilities.tolist()
        return response

    def _predict_v2(self, request: InferRequest) -> InferResponse:
        assert self.encoder is not None
        assert self.directory is not None
        if not request.inputs:
            raise RequestError('a v2 request needs at least one entry in "inputs"')
        try:
            tensors = [(tensor.name, tensor.as_numpy()) for tensor in request.inputs]
        except (ValueError, TypeError) as exc:
            raise RequestError(f"inputs cannot be read as tensors: {exc}") from None
        matrix = self.encoder.tensors(tensors)
        BATCH_SIZE.labels(self.name).observe(len(matrix))
        predictions, probabilities = self._run(matrix)
        metadata = self.directory.metadata
        rows = len(matrix)
        if metadata.task == "classification":
            outputs = [InferOutput("predictions", [rows], "BYTES", [str(label) for label in predictions])]
        else:
            outputs = [InferOutput("predictions", [rows], "FP32", predictions)]
        if probabilities is not None:
            outputs.append(
                InferOutput("probabilities", list(probabilities.shape), "FP32", probabilities.ravel().tolist())
            )
        return InferResponse(response_id=request.id or "", model_name=self.name, infer_outputs=outputs)
