"""Fixtures for the drift monitor: its own environment, a model directory with a reference
sample, and the monitor started as a process on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import skip_or_fail
from tests.support.control_plane import _die_with_parent, free_port, wait_for
from tests.support.manifests import REPO_ROOT

DRIFT_PYTHON = REPO_ROOT / ".venv-drift" / "bin" / "python"


@pytest.fixture(scope="session")
def drift_python() -> Path:
    if not DRIFT_PYTHON.exists():
        skip_or_fail(f"the drift environment is missing ({DRIFT_PYTHON}); run make install")
    return DRIFT_PYTHON


def tabular_frame(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Ten numeric features and one categorical one; ``shift`` moves feature x3's mean (in SDs)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=rows) for i in range(10)})
    frame["x3"] += shift
    frame["colour"] = rng.choice(["red", "green", "blue"], size=rows, p=[0.5, 0.3, 0.2])
    frame["target"] = rng.integers(0, 2, size=rows).astype(str)
    return frame


@pytest.fixture(scope="session")
def drift_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory over :func:`tabular_frame`'s features with a 2000-row reference."""
    from optiloop.api.jobs import Architecture
    from optiloop.api.spec import DataQualitySpec, DatasetSpec, FeaturesSpec
    from optiloop.jobs.features import encode_raw, encode_target, fit_transform
    from optiloop.jobs.training import EncodedSplit, build_model
    from tests.support.model_dirs import write_model_directory

    train = tabular_frame(2000, 0)
    dataset = DatasetSpec(uri="builtin://iris", categorical_columns=["colour"])
    transform = fit_transform(train, ["colour"], dataset, FeaturesSpec(), DataQualitySpec())
    split = EncodedSplit(encode_raw(transform, train), encode_target(transform, train["target"]))
    model = build_model(transform, Architecture(inputs=transform.input_width, outputs=2, hidden=[8]), split, 0)
    root = tmp_path_factory.mktemp("drift") / "model"
    return write_model_directory(root, model.eval(), name="shapes", reference=train, revision=3)


@dataclass
class MonitorProcess:
    url: str
    port: int
    log: Path

    def post(self, path: str, body: bytes | Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers=headers or {"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            return str(response.read().decode())

    def sample(self, name: str, scrape: str | None = None, **labels: str) -> float | None:
        """One sample's value from ``scrape`` (one ``/metrics`` answer), or from a fresh scrape."""
        for line in (self.metrics() if scrape is None else scrape).splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return None


def start_monitor(
    drift_python: Path, model_dir: Path, log: Path, *options: str
) -> tuple[subprocess.Popen[bytes], MonitorProcess]:
    """The monitor from the drift environment on a free loopback port, once ready."""
    port = free_port()
    command = [str(drift_python), "-m", "optiloop.drift", "serve", "--model-dir", str(model_dir)]
    command += ["--namespace", "team-a", "--host", "127.0.0.1", "--port", str(port), *options]
    process = subprocess.Popen(
        command,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        preexec_fn=_die_with_parent,
    )
    monitor = MonitorProcess(f"http://127.0.0.1:{port}", port, log)
    wait_for(
        lambda: process.poll() is None and urllib.request.urlopen(monitor.url + "/readyz", timeout=2).status == 200,
        timeout=300,  # importing Alibi Detect takes minutes on a loaded two-core machine
        what=f"the drift monitor to become ready (log: {log})",
    )
    return process, monitor


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def monitor(
    drift_python: Path, drift_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MonitorProcess]:
    log = tmp_path_factory.mktemp("monitor") / "monitor.log"
    process, running = start_monitor(drift_python, drift_model_dir, log, "--window-size", "200")
    try:
        yield running
    finally:
        stop(process)
