"""A real Prometheus (Debian's binary) on loopback, scraping given targets every second."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
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
def running_prometheus(targets: list[str], interval: str = "1s") -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (``host:port``) at ``interval``; stopped on exit."""
    binary = prometheus_bin()
    if binary is None:
        raise FileNotFoundError("prometheus is not installed (make install installs Debian's package)")
    workdir = Path(tempfile.mkdtemp(prefix="optiloop-prometheus-"))
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "scrape_configs:\n"
        "  - job_name: optiloop\n"
        "    static_configs:\n"
        f"      - targets: {json.dumps(targets)}\n"
    )
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    server = Prometheus(f"http://127.0.0.1:{port}")
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
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
