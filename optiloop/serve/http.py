"""The predictor's HTTP front end: a plain ASGI application, served by uvicorn.

Routes (``<name>`` is the model's name; v2 also accepts ``/versions/<revision>`` after it):

- ``POST /v1/models/<name>:predict`` and ``POST /v2/models/<name>/infer`` (JSON, with or
  without a content type, or v2's binary tensor extension);
- ``GET /v2/models/<name>`` (model metadata), ``GET /v2`` (server metadata);
- liveness ``/`` and ``/v2/health/live``; readiness ``/v2/health/ready``,
  ``/v2/models/<name>/ready`` and ``/v1/models/<name>`` (503 until a model is loaded);
- ``GET /metrics`` (Prometheus).

Nothing else: no model repository (load/unload) endpoints, so no client can take the model
away. A body over ``OPTILOOP_MAX_BODY_BYTES`` is refused with 413 before it is read (from its
Content-Length, or as soon as a chunked body passes the limit); a request over
``OPTILOOP_MAX_ROWS`` rows gets 413 before its values are decoded. Every malformed request is
a 400 naming what is wrong, counted as ``invalid``; only the server's own failures are 500
and ``error``. KServe's FastAPI stack is not used: routing, validation and response models
cost more than ONNX Runtime's inference at batch 1 (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from .encoding import RequestError, TooLargeError
from .predictor import OnnxPredictor
from .tensors import encode_response, parse_request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LOG = logging.getLogger("optiloop.serve")
MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest request body unless ``OPTILOOP_MAX_BODY_BYTES`` says otherwise."""
OFFLOAD_BYTES = 256 * 1024
"""Bodies larger than this are decoded and run on a worker thread, so liveness and small
requests keep being answered while a large batch runs; smaller ones run inline (faster)."""
SERVER_NAME = "optiloop"
EXTENSIONS = ["binary_tensor_data"]
JSON = [(b"content-type", b"application/json")]


class HttpError(Exception):
    """An answer other than 200 decided before the model runs."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


class App:
    """The ASGI application for one predictor."""

    def __init__(self, predictor: OnnxPredictor, max_body_bytes: int, metrics: Callable[[], bytes]) -> None:
        self.predictor = predictor
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.name = predictor.name
        self.v1_prefix = f"/v1/models/{predictor.name}"
        self.v2_prefix = f"/v2/models/{predictor.name}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if method == "POST":
                if path == self.v1_prefix + ":predict":
                    await self._infer(scope, receive, send, "v1")
                    return
                if path.startswith(self.v2_prefix) and self._v2_tail(path) == "/infer":
                    await self._infer(scope, receive, send, "v2")
                    return
            elif method in ("GET", "HEAD"):
                status, body, headers = self._get(path)
                await _respond(send, status, body, headers)
                return
            if self._known(path):
                raise HttpError(405, f"{method} is not allowed on {path}")
            raise HttpError(404, f"no such endpoint: {path} (this server serves model {self.name!r})")
        except HttpError as exc:
            await _respond(send, exc.status, _error_body(str(exc)), JSON, close=exc.status == 413)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _v2_tail(self, path: str) -> str | None:
        """What follows ``/v2/models/<name>[/versions/<revision>]``, or None for another model."""
        tail = path[len(self.v2_prefix) :]
        if tail and tail[0] != "/":
            return None
        if tail.startswith("/versions/"):
            version, _, rest = tail[len("/versions/") :].partition("/")
            if version != self.predictor.revision:
                raise HttpError(
                    404, f"model {self.name!r} has no version {version!r} (it serves {self.predictor.revision!r})"
                )
            tail = "/" + rest if rest else ""
        return tail

    def _known(self, path: str) -> bool:
        if path in ("/", "/v2", "/v2/health/live", "/v2/health/ready", "/v1/models", "/metrics", self.v1_prefix):
            return True
        if path == self.v1_prefix + ":predict":
            return True
        return path.startswith(self.v2_prefix) and self._v2_tail(path) in ("", "/ready", "/infer")

    def _get(self, path: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        ready = self.predictor.ready
        readiness = 200 if ready else 503
        if path in ("/", "/v2/health/live"):
            return 200, b'{"live":true}', JSON
        if path == "/v2/health/ready":
            return readiness, orjson.dumps({"ready": ready}), JSON
        if path == "/v2":
            return 200, orjson.dumps({"name": SERVER_NAME, "version": _version(), "extensions": EXTENSIONS}), JSON
        if path == "/metrics":
            return 200, self.metrics(), [(b"content-type", CONTENT_TYPE_LATEST.encode())]
        if path == "/v1/models":
            return 200, orjson.dumps({"models": [self.name]}), JSON
        if path == self.v1_prefix:
            return readiness, orjson.dumps({"name": self.name, "ready": ready}), JSON
        if path.startswith(self.v2_prefix):
            tail = self._v2_tail(path)
            if tail == "/ready":
                return readiness, orjson.dumps({"name": self.name, "ready": ready}), JSON
            if tail == "":
                if not ready:
                    raise HttpError(503, f"model {self.name!r} is not loaded")
                return 200, orjson.dumps(self.predictor.model_metadata), JSON
        if self._known(path):
            raise HttpError(405, f"GET is not allowed on {path}")
        raise HttpError(404, f"no such endpoint: {path} (this server serves model {self.name!r})")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, or 413 as soon as it is known to be over the limit (nothing parsed)."""
        limit = self.max_body_bytes
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise HttpError(400, "Content-Length is not a number") from None
                if length > limit:
                    raise HttpError(413, f"the body has {length} bytes; the limit is {limit} (OPTILOOP_MAX_BODY_BYTES)")
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "the client went away before sending the whole body")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise HttpError(413, f"the body is over the limit of {limit} bytes (OPTILOOP_MAX_BODY_BYTES)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _infer(self, scope: Scope, receive: Receive, send: Send, protocol: str) -> None:
        predictor = self.predictor
        if not predictor.ready or predictor.metrics is None:
            raise HttpError(503, f"model {self.name!r} is not loaded")
        started = time.perf_counter()
        try:
            body = await self._read_body(scope, receive)
        except HttpError:
            predictor.metrics.count(protocol, "invalid")
            raise
        handle = self._v1 if protocol == "v1" else self._v2
        try:
            header_length = _header_length(scope) if protocol == "v2" else None
            if len(body) > OFFLOAD_BYTES:
                status, answer, headers = await asyncio.to_thread(handle, body, header_length)
            else:
                status, answer, headers = handle(body, header_length)
        except TooLargeError as exc:
            predictor.metrics.count(protocol, "invalid")
            raise HttpError(413, str(exc)) from None
        except RequestError as exc:
            predictor.metrics.count(protocol, "invalid")
            raise HttpError(400, str(exc)) from None
        except Exception:
            predictor.metrics.count(protocol, "error")
            LOG.exception("%s request failed", protocol)
            raise HttpError(500, "the predictor failed on this request; see its log") from None
        predictor.metrics.count(protocol, "ok")
        predictor.metrics.latency[protocol].observe(time.perf_counter() - started)
        await _respond(send, status, answer, headers)

    def _v1(self, body: bytes, _: int | None) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"the request body is not JSON: {exc}") from None
        # No JSON literal true/false anywhere: rows of numbers may take the encoder's fast path.
        may_hold_booleans = b"true" in body or b"false" in body
        outputs = self.predictor.run(self.predictor.v1_matrix(payload, may_hold_booleans))
        return 200, orjson.dumps(self.predictor.v1_answer(outputs), option=orjson.OPT_SERIALIZE_NUMPY), JSON

    def _v2(self, body: bytes, header_length: int | None) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        view = memoryview(body)
        if header_length is None:
            header, binary = view, view[len(view) :]
        else:
            if header_length > len(body):
                raise RequestError(f"Inference-Header-Content-Length {header_length} is past the body's end")
            header, binary = view[:header_length], view[header_length:]
        request = parse_request(header, binary, self.predictor.max_rows)
        outputs = self.predictor.run(self.predictor.v2_matrix(request.inputs))
        answer, binary_header = encode_response(self.name, self.predictor.revision, request, outputs)
        if binary_header is None:
            return 200, answer, JSON
        return (
            200,
            answer,
            [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(binary_header).encode()),
            ],
        )


def _header_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"inference-header-content-length":
            try:
                length = int(value)
            except ValueError:
                length = -1
            if length < 0:
                raise RequestError("Inference-Header-Content-Length must be a non-negative integer")
            return length
    return None


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], close: bool = False
) -> None:
    extra = [(b"content-length", str(len(body)).encode())]
    if close:
        # Unread body bytes follow; the connection cannot carry another request.
        extra.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers + extra})
    await send({"type": "http.response.body", "body": body})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("optiloop")
    except PackageNotFoundError:
        return "0"
