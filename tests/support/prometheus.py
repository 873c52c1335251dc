"""A real Prometheus (Debian's binary) on loopback, scraping given targets every second."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.control_plane import _die_with_parent, free_port, wait_for


def prometheus_bin() -> str | None:
    return shutil.which("prometheus")


@dataclass
class Prometheus:
    url: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant-query results (``data.result``) of ``promql``."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        return list(body["data"]["result"])


@contextmanager
def running_prometheus(
    targets: list[str],
    interval: str = "1s",
    labels: dict[str, str] | None = None,
    file_sd: Path | None = None,
    port: int | None = None,
) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (``host:port``) at ``interval``, with ``labels`` on every series,
    plus the targets listed in ``file_sd`` (Prometheus re-reads it); stopped on exit."""
    config = (
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "scrape_configs:\n"
        "  - job_name: optiloop\n"
        "    static_configs:\n"
        f"      - targets: {json.dumps(targets)}\n"
        f"        labels: {json.dumps(labels or {})}\n"
        + (
            "  - job_name: optiloop-files\n"
            "    file_sd_configs:\n"
            f"      - files: [{json.dumps(str(file_sd))}]\n"
            "        refresh_interval: 1s\n"
            if file_sd is not None
            else ""
        )
    )
    address = f"127.0.0.1:{port or free_port()}"
    workdir = Path(tempfile.mkdtemp(prefix="optiloop-prometheus-"))
    try:
        with prometheus_process(config, address, f"http://{address}", workdir) as server:
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def prometheus_process(
    config: str, listen: str, url: str, workdir: Path, prefix: Sequence[str] = (), binary: str | None = None
) -> Iterator[Prometheus]:
    """Prometheus (Debian's unless ``binary`` names another) with the configuration ``config``,
    listening on ``listen`` and reached at ``url``, its data and log in ``workdir``; ``prefix`` runs it
    elsewhere (an ``nsenter`` into a test node's network namespace). Waits until it is ready, and
    stops it on exit."""
    binary = binary or prometheus_bin()
    if binary is None:
        raise FileNotFoundError("prometheus is not installed (make install installs Debian's package)")
    config_file = workdir / "prometheus.yml"
    config_file.write_text(config)
    log = (workdir / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            *prefix,
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={listen}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    server = Prometheus(url)
    try:
        wait_for(
            lambda: process.poll() is None and urllib.request.urlopen(f"{server.url}/-/ready", timeout=2).status == 200,
            timeout=30,
            what=f"Prometheus to become ready (log: {workdir / 'prometheus.log'})",
        )
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


class PrometheusStandIn:
    """An HTTP server that answers instant queries the way Prometheus does, with values a test sets.

    Drift queries (on ``optiloop_drift_detected``) answer ``drift``; canary queries answer
    ``error_rate``, ``latency_ms`` and ``served`` (requests served in the window; None: an empty
    vector). ``mode`` "down" answers 503,
    "garbage" answers a body that is not Prometheus' JSON; ``stop()`` refuses connections.
    """

    def __init__(self) -> None:
        import http.server
        import threading

        self.drift: float | None = 0.0
        self.error_rate: float | None = 0.0
        self.latency_ms: float | None = None
        self.served: float | None = 100.0
        self.mode = "up"
        self.flap = False
        self.queries: list[str] = []
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("query", [""])[0]
                stand_in.queries.append(query)
                if stand_in.mode == "down":
                    self._send(503, b"service unavailable")
                elif stand_in.mode == "garbage":
                    self._send(200, b"<html>not prometheus</html>")
                else:
                    self._send(200, json.dumps(stand_in.answer(query)).encode())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, query: str) -> dict[str, Any]:
        if "optiloop_drift_detected" in query:
            if self.flap:
                # Around the threshold: drifting on every other evaluation.
                self.drift = 0.0 if self.drift else 1.0
            value = self.drift
        elif "histogram_quantile" in query:
            value = self.latency_ms
        elif "increase(" in query:
            value = self.served
        else:
            value = self.error_rate
        result = [] if value is None else [{"metric": {}, "value": [0, str(value)]}]
        return {"status": "success", "data": {"resultType": "vector", "result": result}}

    def drift_queries(self) -> int:
        return sum("optiloop_drift_detected" in q for q in self.queries)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
