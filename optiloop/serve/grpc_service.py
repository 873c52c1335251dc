"""The Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``) for the predictor.

Uses the message and service definitions KServe ships (the same ``inference`` package that
Triton's clients speak), served by grpcio on its own thread pool beside the HTTP server.
Inputs come as typed ``contents`` or as ``raw_input_contents`` (what ``tritonclient.grpc``
sends); answers go back as ``raw_output_contents``, as Triton does. Errors map to gRPC
codes: a malformed request is ``INVALID_ARGUMENT`` (counted ``invalid``), one over a limit
``RESOURCE_EXHAUSTED`` (``invalid``), another model ``NOT_FOUND``, a failure of ours
``INTERNAL`` (``error``).
"""

from __future__ import annotations

import logging
import time
from concurrent import futures
from typing import Any

import grpc  # type: ignore[import-untyped]  # grpcio ships no type information
import numpy as np
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from .encoding import RequestError, TooLargeError
from .predictor import OnnxPredictor
from .tensors import Output, Tensor, decode_tensor

LOG = logging.getLogger("optiloop.serve")
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""Which typed field of ``InferTensorContents`` carries each datatype (FP16 has none: raw only)."""


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The v2 gRPC methods for one predictor."""

    def __init__(self, predictor: OnnxPredictor, version: str) -> None:
        self.predictor = predictor
        self.version = version

    def _model(self, name: str, version: str, context: grpc.ServicerContext) -> None:
        if name != self.predictor.name:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"no model {name!r} here (this server serves {self.predictor.name!r})"
            )
        if version and version != self.predictor.revision:
            context.abort(grpc.StatusCode.NOT_FOUND, f"model {name!r} has no version {version!r}")
        if not self.predictor.ready:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"model {name!r} is not loaded")

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (the protocol's names)
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.predictor.ready)

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        known = request.name == self.predictor.name and request.version in ("", self.predictor.revision)
        return pb.ModelReadyResponse(ready=known and self.predictor.ready)

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        from .http import EXTENSIONS, SERVER_NAME

        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self.version, extensions=EXTENSIONS)

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._model(request.name, request.version, context)
        described = self.predictor.model_metadata
        return pb.ModelMetadataResponse(
            name=described["name"],
            versions=described["versions"],
            platform=described["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**tensor) for tensor in described["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**tensor) for tensor in described["outputs"]],
        )

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._model(request.model_name, request.model_version, context)
        predictor = self.predictor
        assert predictor.metrics is not None
        started = time.perf_counter()
        try:
            response = self._infer(request)
        except TooLargeError as exc:
            predictor.metrics.count("grpc", "invalid")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except RequestError as exc:
            predictor.metrics.count("grpc", "invalid")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception:
            predictor.metrics.count("grpc", "error")
            LOG.exception("gRPC request failed")
            context.abort(grpc.StatusCode.INTERNAL, "the predictor failed on this request; see its log")
        predictor.metrics.count("grpc", "ok")
        predictor.metrics.latency["grpc"].observe(time.perf_counter() - started)
        return response

    def _infer(self, request: Any) -> Any:
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise RequestError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
        if not request.inputs:
            raise RequestError("a request needs at least one input")
        tensors = []
        names: set[str] = set()
        for index, item in enumerate(request.inputs):
            where = f"input {item.name!r}" if item.name else f"inputs[{index}]"
            if not item.name or item.name in names:
                raise RequestError(f"{where}: every input needs a name of its own")
            names.add(item.name)
            shape = list(item.shape)
            if raw:
                array = decode_tensor(where, item.datatype, shape, self.predictor.max_rows, raw=raw[index])
            else:
                field = CONTENTS_FIELD.get(item.datatype)
                if field is None:
                    raise RequestError(f"{where}: datatype {item.datatype!r} cannot travel in contents; send raw bytes")
                values = list(getattr(item.contents, field))
                array = decode_tensor(where, item.datatype, shape, self.predictor.max_rows, values=values)
            tensors.append(Tensor(item.name, array))
        wanted = [output.name for output in request.outputs]
        outputs = self.predictor.run(self.predictor.v2_matrix(tensors))
        unknown = sorted(set(wanted) - {output.name for output in outputs})
        if unknown:
            raise RequestError(f"unknown outputs {', '.join(map(repr, unknown[:5]))}")
        chosen = [output for output in outputs if not wanted or output.name in wanted]
        return pb.ModelInferResponse(
            model_name=self.predictor.name,
            model_version=self.predictor.revision,
            id=request.id,
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(
                    name=output.name, datatype=output.datatype, shape=list(output.array.shape)
                )
                for output in chosen
            ],
            raw_output_contents=[_raw(output) for output in chosen],
        )


def _raw(output: Output) -> bytes:
    if output.array.dtype == object:
        parts = []
        for value in output.array.ravel().tolist():
            encoded = value if isinstance(value, bytes) else str(value).encode()
            parts.append(len(encoded).to_bytes(4, "little") + encoded)
        return b"".join(parts)
    return np.ascontiguousarray(output.array).tobytes()


def start_grpc(predictor: OnnxPredictor, host: str, port: int, max_message_bytes: int) -> grpc.Server:
    """Start the gRPC service on ``host:port`` (``SO_REUSEPORT``, as grpcio does on Linux)."""
    from .http import _version

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", 256 * 1024 * 1024),
            ("grpc.so_reuseport", 1),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(predictor, _version()), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    server.start()
    return server
