"""Starting and stopping a real predictor process on loopback for the serving tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from optiloop.api.spec import DataQualitySpec, DatasetSpec, FeaturesSpec
from optiloop.jobs.features import encode_raw, encode_target, fit_transform
from optiloop.jobs.models import TabularModel
from optiloop.jobs.training import EncodedSplit, build_model
from tests.serve.oracle import Model
from tests.support.control_plane import free_port, wait_for
from tests.support.model_dirs import city_frame, city_model, write_model_directory


@dataclass
class Served:
    """A predictor process and how to reach it."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    grpc_port: int

    def post(
        self, path: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        """POST; the status, the decoded JSON answer (or raw bytes) and the response headers."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, _decode(response.read()), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, _decode(error.read()), dict(error.headers)

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _decode(error.read())


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@contextmanager
def predictor(
    root: Path, name: str, log: Path, env: dict[str, str] | None = None, grpc: bool = False
) -> Iterator[Served]:
    """Run ``python -m optiloop.serve`` on ``root`` until the block ends; stops it whatever happens."""
    port = free_port()
    grpc_port = free_port() if grpc else 0
    command = [sys.executable, "-m", "optiloop.serve", "--model-dir", str(root), "--model-name", name]
    command += ["--host", "127.0.0.1", "--http-port", str(port)]
    if grpc:
        command += ["--grpc-port", str(grpc_port)]
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OPTILOOP_THREADS": "1", **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: (
                process.poll() is None and urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2).status == 200
            ),
            timeout=60,
            what=f"the predictor to become ready (log: {log})",
        )
        yield Served(url, process, log, grpc_port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def numeric_model() -> TabularModel:
    """An (untrained) classifier over two numeric features only: served as one [N, 2] matrix."""
    train = city_frame(200, 0).drop(columns=["city"])
    dataset = DatasetSpec(uri="builtin://iris")
    transform = fit_transform(train, [], dataset, FeaturesSpec(), DataQualitySpec())
    split = EncodedSplit(encode_raw(transform, train), encode_target(transform, train["target"]))
    from optiloop.api.jobs import Architecture

    architecture = Architecture(inputs=transform.input_width, outputs=3, hidden=[8])
    return build_model(transform, architecture, split, 0).eval()


@pytest.fixture(scope="module")
def numbers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Model]:
    root = write_model_directory(tmp_path_factory.mktemp("numbers") / "model", numeric_model())
    with predictor(root, "numbers", tmp_path_factory.mktemp("logs") / "numbers.log", grpc=True) as served:
        yield Model(root, served)


@pytest.fixture(scope="module")
def cities(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Model]:
    root = write_model_directory(tmp_path_factory.mktemp("cities") / "model", city_model())
    with predictor(root, "cities", tmp_path_factory.mktemp("logs") / "cities.log", grpc=True) as served:
        yield Model(root, served)


__all__ = ["Served", "free_port", "numeric_model", "predictor"]
