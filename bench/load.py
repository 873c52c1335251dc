"""Closed-loop HTTP load from ``wrk``, the same client for every server the benchmarks compare.

The benchmarks used to drive servers from Python (``http.client`` in client processes). On a
2-core machine that client cost as much CPU per request as a single-row inference on the server
side, so it measured the client as much as the server, and it weighed most on the fastest servers.
``wrk`` (C, epoll, Debian's package, installed by ``make install``) costs a few microseconds per
request: what it measures is the server.

Each of ``connections`` connections keeps one request in flight (a closed loop, like the clients
of a model server); the requests are read from files and sent in turn, so rows vary across
requests. The Lua script below is handed to ``wrk``; its ``done`` hook prints one JSON line with
the counts and the latency percentiles, which :func:`run_wrk` reads. Any answer other than 2xx or
3xx, and any socket error, fails the run: a benchmark of refused requests measures nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SCRIPT = r"""
local requests = {}
local next_request = 0

function init(args)
  local path = args[1]
  local content_type = args[2]
  local header_length = args[3]
  for i = 4, #args do
    local file = assert(io.open(args[i], "rb"))
    local body = file:read("*a")
    file:close()
    local headers = { ["Content-Type"] = content_type }
    if header_length ~= "-" then
      headers["Inference-Header-Content-Length"] = header_length
    end
    requests[#requests + 1] = wrk.format("POST", path, headers, body)
  end
  next_request = math.random(#requests) - 1
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_us": %.1f, "p99_us": %.1f}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Request:
    """One POST request the load repeats: its path, body and headers."""

    path: str
    body: bytes
    content_type: str
    header_length: int | None = None
    """The v2 binary extension's ``Inference-Header-Content-Length``, when the body has a binary part."""


def wrk_binary() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk is not installed: run `make install` (or `apt-get install wrk`)")
    return binary


def run_wrk(
    port: int,
    requests: list[Request],
    connections: int,
    seconds: float,
    threads: int = 2,
    host: str = "127.0.0.1",
    inside: Sequence[str] = (),
    workdir: Path | None = None,
) -> dict[str, float]:
    """Requests answered, requests per second and p50/p99 latency (ms) of ``connections``
    closed-loop connections sending ``requests`` in turn to ``host:port`` for ``seconds``.
    ``inside`` prefixes the command (``nsenter`` into a node's namespaces), and ``workdir`` is where
    its files go, which that command must see."""
    if not requests:
        raise ValueError("no requests to send")
    shapes = {(request.path, request.content_type, request.header_length) for request in requests}
    if len(shapes) != 1:
        raise ValueError("the requests of one load must share their path and headers")
    path, content_type, header_length = shapes.pop()
    with tempfile.TemporaryDirectory(prefix="optiloop-wrk-", dir=workdir) as work:
        script = Path(work) / "requests.lua"
        script.write_text(SCRIPT)
        bodies = []
        for index, request in enumerate(requests):
            body = Path(work) / f"body-{index}"
            body.write_bytes(request.body)
            bodies.append(str(body))
        command = [
            *inside,
            wrk_binary(),
            f"--threads={min(threads, connections)}",
            f"--connections={connections}",
            f"--duration={max(1, round(seconds))}s",
            "--timeout=30s",
            f"--script={script}",
            f"http://{host}:{port}",
            "--",
            path,
            content_type,
            "-" if header_length is None else str(header_length),
            *bodies,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    if summary["status_errors"] or summary["socket_errors"]:
        raise RuntimeError(
            f"{summary['status_errors']} answers were not 2xx/3xx and {summary['socket_errors']} requests hit "
            f"socket errors (wrk on {host}:{port}): the server refused the load"
        )
    seconds_taken = summary["duration_us"] / 1e6
    return {
        "requests": summary["requests"],
        "rps": summary["requests"] / seconds_taken,
        "p50_ms": summary["p50_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
    }
