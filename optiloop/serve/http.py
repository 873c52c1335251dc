"""The predictor's HTTP front end: HTTP/1.1 on asyncio (uvloop), parsed by httptools.

Routes (``<name>`` is the model's name; v2 also accepts ``/versions/<revision>`` after it):

- ``POST /v1/models/<name>:predict`` and ``POST /v2/models/<name>/infer`` (JSON, with or
  without a content type, or v2's binary tensor extension);
- ``GET /v2/models/<name>`` (model metadata), ``GET /v2`` (server metadata);
- liveness ``/`` and ``/v2/health/live``; readiness ``/v2/health/ready``,
  ``/v2/models/<name>/ready`` and ``/v1/models/<name>`` (503 until a model is loaded);
- ``GET /metrics`` (Prometheus).

Nothing else: no model repository (load/unload) endpoints, so no client can take the model
away. A body over ``OPTILOOP_MAX_BODY_BYTES`` is refused with 413 before it is read (from its
Content-Length, or as soon as a chunked body passes the limit), and the connection is closed;
a request over ``OPTILOOP_MAX_ROWS`` rows gets 413 before its values are decoded. Every
malformed request is a 400 naming what is wrong, counted as ``invalid``; only the server's
own failures are 500 and ``error``.

Why not an ASGI framework: at batch 1 a request's time went mostly to the web stack (KServe's
FastAPI, then uvicorn's per-request task, scope and header checks), not to ONNX Runtime. Here a
small request is answered inside the event loop's read callback and written with one ``write``;
a large one (over :data:`OFFLOAD_BYTES`) runs on a worker thread so liveness and other
connections keep being answered (docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import httptools
import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from .encoding import RequestError, TooLargeError
from .predictor import OnnxPredictor
from .tensors import encode_response, parse_request

LOG = logging.getLogger("optiloop.serve")
MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest request body unless ``OPTILOOP_MAX_BODY_BYTES`` says otherwise."""
MAX_HEAD_BYTES = 64 * 1024
"""Largest request line plus headers; more is answered 431 and the connection closed."""
OFFLOAD_BYTES = 256 * 1024
"""Bodies larger than this are decoded and run on a worker thread; smaller ones run inline (faster)."""
IDLE_SECONDS = 60.0
"""A connection that sends nothing for this long is closed."""
LINGER_SECONDS = 2.0
"""After a refusal the connection reads (and drops) what the client still sends for this long, so
that the client, still sending its body, reads the 413 rather than a reset."""
SERVER_NAME = "optiloop"
EXTENSIONS = ["binary_tensor_data"]
JSON = [(b"content-type", b"application/json")]
Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, bytes, Headers]


class HttpError(Exception):
    """An answer other than 200 decided before the model runs."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> Answer:
    return status, orjson.dumps({"error": message}), JSON


class App:
    """Routing and answers for one predictor, independent of the connection handling."""

    def __init__(self, predictor: OnnxPredictor, max_body_bytes: int, metrics: Callable[[], bytes]) -> None:
        self.predictor = predictor
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.name = predictor.name
        self.v1_prefix = f"/v1/models/{predictor.name}"
        self.v2_prefix = f"/v2/models/{predictor.name}"
        self.v1_path = self.v1_prefix + ":predict"

    def infer_protocol(self, method: str, path: str) -> str | None:
        """``"v1"`` or ``"v2"`` when this is an inference request (its body is then read), else None."""
        if method != "POST":
            return None
        if path == self.v1_path:
            return "v1"
        try:
            if path.startswith(self.v2_prefix) and self._v2_tail(path) == "/infer":
                return "v2"
        except HttpError:
            return None
        return None

    def answer(self, method: str, path: str) -> Answer:
        """The answer to any request that is not inference (its body, if any, is not read)."""
        try:
            if method in ("GET", "HEAD"):
                return self._get(path)
            if self._known(path):
                raise HttpError(405, f"{method} is not allowed on {path}")
            raise HttpError(404, f"no such endpoint: {path} (this server serves model {self.name!r})")
        except HttpError as exc:
            return _error(exc.status, str(exc))
        except Exception:
            # Ours, not the client's: a 500 with the traceback in the log, never a 400 from the parser.
            LOG.exception("%s %s failed", method, path)
            return _error(500, "the server failed on this request; see its log")

    def refuse(self, protocol: str, status: int, message: str) -> Answer:
        """Count a request refused before its body was read (413), and answer it."""
        if self.predictor.metrics is not None:
            self.predictor.metrics.count(protocol, "invalid")
        return _error(status, message)

    def infer(self, protocol: str, headers: Headers, body: bytes) -> Answer:
        """Run one inference request; every outcome is counted and answered, nothing raises."""
        predictor = self.predictor
        metrics = predictor.metrics
        if not predictor.ready or metrics is None:
            return _error(503, f"model {self.name!r} is not loaded")
        started = time.perf_counter()
        try:
            answer = self._v1(body) if protocol == "v1" else self._v2(body, _header_length(headers))
        except TooLargeError as exc:
            metrics.count(protocol, "invalid")
            return _error(413, str(exc))
        except RequestError as exc:
            metrics.count(protocol, "invalid")
            return _error(400, str(exc))
        except Exception:
            metrics.count(protocol, "error")
            LOG.exception("%s request failed", protocol)
            return _error(500, "the predictor failed on this request; see its log")
        metrics.count(protocol, "ok")
        metrics.latency[protocol].observe(time.perf_counter() - started)
        return answer

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

    def _get(self, path: str) -> Answer:
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

    def _v1(self, body: bytes) -> Answer:
        matrix = self.predictor.v1_numbers(body)
        if matrix is None:
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise RequestError(f"the request body is not JSON: {exc}") from None
            # No JSON literal true/false anywhere: rows of numbers may take the encoder's fast path.
            may_hold_booleans = b"true" in body or b"false" in body
            matrix = self.predictor.v1_matrix(payload, may_hold_booleans)
        outputs = self.predictor.run(matrix)
        return 200, orjson.dumps(self.predictor.v1_answer(outputs), option=orjson.OPT_SERIALIZE_NUMPY), JSON

    def _v2(self, body: bytes, header_length: int | None) -> Answer:
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


def _header_length(headers: Headers) -> int | None:
    for key, value in headers:
        if key == b"inference-header-content-length":
            try:
                length = int(value)
            except ValueError:
                length = -1
            if length < 0:
                raise RequestError("Inference-Header-Content-Length must be a non-negative integer")
            return length
    return None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("optiloop")
    except PackageNotFoundError:
        return "0"


_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


def _response(status: int, body: bytes, headers: Headers, close: bool, head_only: bool = False) -> bytes:
    """The whole response as bytes, so it leaves in one write (no Nagle wait between head and body)."""
    lines = [b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\n" % (status, _REASONS.get(status, b"Unknown"), len(body))]
    for name, value in headers:
        lines.append(name + b": " + value + b"\r\n")
    if close:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    if not head_only:
        lines.append(body)
    return b"".join(lines)


class HttpProtocol(asyncio.Protocol):
    """One client connection: parses requests with httptools and answers them in order."""

    def __init__(self, app: App, connections: set[HttpProtocol]) -> None:
        self.app = app
        self.connections = connections
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.queue: collections.deque[tuple[str, str, str, Headers, bytes, bool]] = collections.deque()
        self.busy = False
        self.closing = False
        self.idle: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: Headers = []
        self.head_bytes = 0
        self.chunks: list[bytes] = []
        self.body_bytes = 0
        self.protocol: str | None = None
        self.refused = False

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is no subclass)
        self.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.closing = True
        if self.idle is not None:
            self.idle.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # after a refusal: dropped, unparsed
        self._arm_idle()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not served")
        except httptools.HttpParserError as exc:
            if not self.refused:
                self._fail(400, f"malformed HTTP request: {exc}")

    def _arm_idle(self) -> None:
        if self.closing:
            return
        if self.idle is not None:
            self.idle.cancel()
        self.idle = self.loop.call_later(IDLE_SECONDS, self.close)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _fail(self, status: int, message: str) -> None:
        """Answer and close: what follows on this connection cannot be trusted to be a request."""
        self._linger(_response(*_error(status, message), close=True))

    def _linger(self, response: bytes) -> None:
        """Send ``response``, end our side, drop what still comes in, close after :data:`LINGER_SECONDS`."""
        self.refused = True
        if self.transport is None or self.closing:
            return
        self.closing = True
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.idle is not None:
            self.idle.cancel()
        self.idle = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    # --- httptools callbacks

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD_BYTES:
            self._fail(431, f"the request line and headers are over {MAX_HEAD_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_HEAD_BYTES:
            self._fail(431, f"the request line and headers are over {MAX_HEAD_BYTES} bytes")
            return
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.refused:
            return
        method = self.parser.get_method().decode("latin-1")
        try:
            path = httptools.parse_url(self.url).path.decode("utf-8")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            self._fail(400, "the request's URL cannot be read")
            return
        self.method, self.path = method, path
        self.protocol = self.app.infer_protocol(method, path)
        if self.protocol is None:
            return
        limit = self.app.max_body_bytes
        for key, value in self.headers:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                message = f"the body has {int(value)} bytes; the limit is {limit} (OPTILOOP_MAX_BODY_BYTES)"
                self._refuse(message)
                return
            if key == b"expect" and value.lower() == b"100-continue" and self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _refuse(self, message: str) -> None:
        assert self.protocol is not None
        self._linger(_response(*self.app.refuse(self.protocol, 413, message), close=True))

    def on_body(self, body: bytes) -> None:
        if self.refused or self.protocol is None:
            return  # a body on a request that does not read one is ignored
        self.body_bytes += len(body)
        if self.body_bytes > self.app.max_body_bytes:
            limit = self.app.max_body_bytes
            self._refuse(f"the body is over the limit of {limit} bytes (OPTILOOP_MAX_BODY_BYTES)")
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.refused:
            return
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        keep_alive = self.parser.should_keep_alive()
        self.queue.append((self.method, self.path, self.protocol or "", self.headers, body, keep_alive))
        self._reset()
        self._drain()

    # --- answering, in request order

    def _drain(self) -> None:
        while self.queue and not self.busy and not self.closing:
            method, path, protocol, headers, body, keep_alive = self.queue.popleft()
            if not protocol:
                self._write(self.app.answer(method, path), keep_alive, method == "HEAD")
            elif len(body) <= OFFLOAD_BYTES:
                self._write(self.app.infer(protocol, headers, body), keep_alive)
            else:
                self.busy = True
                assert self.transport is not None
                self.transport.pause_reading()
                future = self.loop.run_in_executor(None, self.app.infer, protocol, headers, body)
                future.add_done_callback(functools.partial(self._offloaded, keep_alive=keep_alive))

    def _offloaded(self, done: asyncio.Future[Answer], *, keep_alive: bool) -> None:
        self.busy = False
        if self.closing:
            return
        self._write(done.result(), keep_alive)
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
        self._drain()

    def _write(self, answer: Answer, keep_alive: bool, head_only: bool = False) -> None:
        if self.transport is None or self.closing:
            return
        self.transport.write(_response(*answer, close=not keep_alive, head_only=head_only))
        if not keep_alive:
            self.close()


async def serve_http(app: App, sock: Any, stop: asyncio.Event) -> None:
    """Answer on the listening socket ``sock`` until ``stop`` is set; then close every connection."""
    loop = asyncio.get_running_loop()
    connections: set[HttpProtocol] = set()
    server = await loop.create_server(lambda: HttpProtocol(app, connections), sock=sock, backlog=2048)
    try:
        await stop.wait()
    finally:
        server.close()
        for connection in list(connections):
            connection.close()
        await server.wait_closed()
