"""A proxy in front of the test API server that misbehaves on request, as an overloaded or
restarting API server does: it answers 503 or 429 (with ``Retry-After``) for a while, it
cuts every open watch stream, and it holds chosen requests back for a while (a slow server).
Clients reach it over plain HTTP on loopback; it forwards to the real API server over TLS,
streaming watch answers as they come.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from tests.support.control_plane import ControlPlane

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}


class FaultyApiProxy:
    """``with FaultyApiProxy(plane) as proxy``: ``proxy.kubeconfig(path)`` reaches the API through
    it; ``fail(503, seconds=3)``, ``cut_watches()`` and ``slow("POST", "/events", 2)`` misbehave;
    ``faults`` counts the requests answered with an error, ``cuts`` the watch streams cut and
    ``slowed`` the requests held back."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        upstream = urlsplit(plane.url)
        self.upstream = (upstream.hostname or "127.0.0.1", upstream.port or 443)
        self.context = ssl.create_default_context(cafile=str(plane.ca_file))
        self.faults = 0
        self.cuts = 0
        self.slowed = 0
        self._slow: list[tuple[str, str, float]] = []  # method, path part, seconds
        self._failing: tuple[int, float, int | None] | None = None  # status, until, Retry-After
        self._watches: set[tuple[socket.socket, http.client.HTTPSConnection]] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultyApiProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut_watches()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def kubeconfig(self, path: Path) -> Path:
        """The control plane's admin kubeconfig, pointed at this proxy."""
        config = yaml.safe_load(self.plane.kubeconfig.read_text())
        config["clusters"][0]["cluster"] = {"server": self.url}
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def fail(self, status: int, seconds: float, retry_after: int | None = None) -> None:
        """Answer every request with ``status`` for the next ``seconds``."""
        with self._lock:
            self._failing = (status, time.monotonic() + seconds, retry_after)

    def slow(self, method: str, path_part: str, seconds: float) -> None:
        """Hold every ``method`` request whose path contains ``path_part`` for ``seconds`` before
        forwarding it (forwarded even if the client has gone, as a server that got it would)."""
        with self._lock:
            self._slow.append((method, path_part, seconds))

    def take_delay(self, method: str, path: str) -> float:
        """How long to hold the request at hand, counted when held."""
        with self._lock:
            delay = sum(s for m, part, s in self._slow if m == method and part in path)
            self.slowed += delay > 0
            return delay

    def take_fault(self) -> tuple[int, int | None] | None:
        """The status (and Retry-After) to answer the request at hand with, counted; None to forward it."""
        with self._lock:
            if self._failing is None or time.monotonic() >= self._failing[1]:
                return None
            self.faults += 1
            return self._failing[0], self._failing[2]

    def cut_watches(self) -> int:
        """Close every open watch stream at both ends; returns how many were cut."""
        with self._lock:
            watches, self._watches = self._watches, set()
            self.cuts += len(watches)
        for client, upstream in watches:
            for sock in (client, upstream.sock):
                try:
                    if sock is not None:
                        sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by its other end
        return len(watches)

    def _watching(self, client: socket.socket, upstream: http.client.HTTPSConnection, on: bool) -> None:
        with self._lock:
            (self._watches.add if on else self._watches.discard)((client, upstream))


def _handler(proxy: FaultyApiProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the API server's audit log has the requests

        def do_GET(self) -> None:
            self._forward()

        def do_POST(self) -> None:
            self._forward()

        def do_PUT(self) -> None:
            self._forward()

        def do_PATCH(self) -> None:
            self._forward()

        def do_DELETE(self) -> None:
            self._forward()

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            delay = proxy.take_delay(self.command, self.path)
            if delay:
                time.sleep(delay)
            fault = proxy.take_fault()
            if fault is not None:
                self._answer_error(*fault)
                return
            upstream = http.client.HTTPSConnection(*proxy.upstream, context=proxy.context, timeout=600)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            try:
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                answer = upstream.getresponse()
                if "watch=true" in self.path or "watch=1" in self.path:
                    self._stream(upstream, answer)
                else:
                    self._relay(answer, answer.read())
            except (OSError, http.client.HTTPException):
                self.close_connection = True  # cut: the client sees its connection end
            finally:
                upstream.close()

        def _answer_error(self, status: int, retry_after: int | None) -> None:
            reason = _REASONS.get(status, "InternalError")
            message = f"injected by the test proxy: {reason}"
            status_body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status}
            payload = json.dumps({**status_body, "message": message, "reason": reason}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if retry_after is not None:
                self.send_header("Retry-After", str(retry_after))
            self.end_headers()
            self.wfile.write(payload)

        def _relay(self, answer: http.client.HTTPResponse, data: bytes) -> None:
            self.send_response(answer.status, answer.reason)
            for key, value in answer.getheaders():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, upstream: http.client.HTTPSConnection, answer: http.client.HTTPResponse) -> None:
            # The stream's end is the connection's end, as for any HTTP/1.1 answer without length.
            self.close_connection = True
            self.send_response(answer.status, answer.reason)
            for key, value in answer.getheaders():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            proxy._watching(self.connection, upstream, True)
            try:
                while chunk := answer.read1(65536):
                    self.wfile.write(chunk)
                    self.wfile.flush()
            finally:
                proxy._watching(self.connection, upstream, False)

    return Handler
