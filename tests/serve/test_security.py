"""The predictor exposes only what serving needs and bounds what a client can make it do: no model
repository (unload) endpoints, readiness false without a model, 413 for bodies and rows over the
configured limits before parsing, 400 (counted invalid, never error) for every malformed input,
and 404s that log no traceback."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optiloop.serve.http import App, serve_http
from optiloop.serve.predictor import OnnxPredictor
from tests.serve.conftest import Served, numeric_model, predictor
from tests.support.control_plane import wait_for
from tests.support.model_dirs import city_model, write_model_directory

BODY_LIMIT = 20_000
ROW_LIMIT = 50


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = write_model_directory(tmp_path_factory.mktemp("security") / "model", city_model())
    log = tmp_path_factory.mktemp("logs") / "predictor.log"
    env = {"OPTILOOP_MAX_BODY_BYTES": str(BODY_LIMIT), "OPTILOOP_MAX_ROWS": str(ROW_LIMIT)}
    with predictor(root, "cities", log, env) as server:
        yield server


@pytest.fixture(scope="module")
def numeric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = write_model_directory(tmp_path_factory.mktemp("numeric") / "model", numeric_model())
    with predictor(root, "numbers", tmp_path_factory.mktemp("logs") / "numeric.log") as server:
        yield server


def counts(server: Served) -> dict[str, float]:
    _, text = server.get("/metrics")
    samples = {}
    for line in text.decode().splitlines():
        if line.startswith("optiloop_predictor_requests_total{"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def outcome(server: Served, name: str, protocol: str, result: str) -> float:
    key = f'optiloop_predictor_requests_total{{model="{name}",outcome="{result}",protocol="{protocol}",revision="1"}}'
    return counts(server).get(key, 0.0)


ROW = [0.5, 1.0, "rome"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/repository/models/cities/unload"),
        ("POST", "/v2/repository/models/cities/load"),
        ("POST", "/v2/repository/index"),
    ],
)
def test_model_repository_endpoints_are_not_served(served: Served, method: str, path: str) -> None:
    status, answer, _ = served.post(path, b"{}")
    assert status == 404, answer
    assert served.post("/v1/models/cities:predict", {"instances": [ROW]})[0] == 200  # the model is still there
    assert served.get("/v2/health/ready")[0] == 200


def test_server_metadata_does_not_advertise_the_repository_extension(served: Served) -> None:
    status, answer = served.get("/v2")
    assert status == 200
    assert answer["name"] == "optiloop"
    assert "model_repository" not in answer["extensions"]
    assert "binary_tensor_data" in answer["extensions"]


def test_a_404_logs_no_traceback(served: Served) -> None:
    assert served.get("/v2/models/elsewhere/ready")[0] == 404
    assert served.post("/v1/models/elsewhere:predict", {"instances": [ROW]})[0] == 404
    time.sleep(0.2)
    assert "Traceback" not in served.log.read_text()


def test_a_body_over_the_limit_is_refused_from_its_content_length(served: Served) -> None:
    before = outcome(served, "cities", "v1", "invalid")
    # Declared size over the limit, but only a few bytes sent: the answer must not wait for the rest.
    connection = http.client.HTTPConnection(served.url.removeprefix("http://"), timeout=10)
    connection.putrequest("POST", "/v1/models/cities:predict")
    connection.putheader("Content-Length", str(BODY_LIMIT * 1000))
    connection.endheaders(b'{"instances": [')
    response = connection.getresponse()
    assert response.status == 413
    assert "OPTILOOP_MAX_BODY_BYTES" in json.loads(response.read())["error"]
    connection.close()
    assert outcome(served, "cities", "v1", "invalid") == before + 1
    assert outcome(served, "cities", "v1", "error") == 0


def test_a_chunked_body_is_cut_at_the_limit(served: Served) -> None:
    connection = http.client.HTTPConnection(served.url.removeprefix("http://"), timeout=10)

    def chunks() -> Iterator[bytes]:
        yield b'{"instances": ['
        for _ in range(1000):  # about 50 KB, over the 20 KB limit; the server stops reading early
            yield b'[0.5, 1.0, "rome"],' * 3

    connection.request("POST", "/v2/models/cities/infer", body=chunks(), encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413
    connection.close()


def test_rows_over_the_limit_get_413_on_both_protocols(served: Served) -> None:
    status, answer, _ = served.post("/v1/models/cities:predict", {"instances": [ROW] * (ROW_LIMIT + 1)})
    assert status == 413, answer
    assert "OPTILOOP_MAX_ROWS" in answer["error"]
    rows = ROW_LIMIT + 1
    request = {"inputs": [{"name": "a", "shape": [rows], "datatype": "FP32", "data": [0.0] * rows}]}
    status, answer, _ = served.post("/v2/models/cities/infer", request)
    assert status == 413, answer


def tensors(a: dict[str, Any]) -> dict[str, Any]:
    return {
        "inputs": [
            a,
            {"name": "b", "shape": [1], "datatype": "FP32", "data": [1.0]},
            {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["rome"]},
        ]
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (tensors({"name": "a", "shape": [1], "datatype": "INT8", "data": [300]}), "out of the range of INT8"),
        (tensors({"name": "a", "shape": [1], "datatype": "INT64", "data": [2**70]}), "must be integers"),
        (tensors({"name": "a", "shape": [1], "datatype": "UINT8", "data": [-1]}), "out of the range of UINT8"),
        (tensors({"name": "a", "shape": [1], "datatype": "INT32", "data": [True]}), "must be integers"),
        (tensors({"name": "a", "shape": [1], "datatype": "FP32", "data": [1e39]}), "out of the range of FP32"),
        (tensors({"name": "a", "shape": [1], "datatype": "FP32", "data": ["1.5"]}), "must be numbers"),
        (tensors({"name": "a", "shape": [1], "datatype": "BOOL", "data": [True]}), "expected numbers, got booleans"),
        (tensors({"name": "a", "shape": [2], "datatype": "FP32", "data": [1.0]}), "1 values for shape [2]"),
        (tensors({"name": "a", "shape": [1], "datatype": "FP33", "data": [1.0]}), "datatype must be one of"),
        (tensors({"name": "a", "shape": [-1], "datatype": "FP32", "data": [1.0]}), "non-negative integers"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [NaN]}]}', "not JSON"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [Infinity]}]}', "not JSON"),
        ({"inputs": []}, '"inputs"'),
        (
            {
                "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
                "outputs": [{"name": "z"}],
            },
            "unknown outputs",
        ),
    ],
)
def test_malformed_v2_values_are_400_and_counted_invalid(served: Served, body: Any, message: str) -> None:
    status, answer, _ = served.post("/v2/models/cities/infer", body)
    assert status == 400, answer
    assert message in answer["error"]
    assert outcome(served, "cities", "v2", "error") == 0


def test_booleans_are_refused_on_v1s_fast_path_as_on_the_checked_path(numeric: Served) -> None:
    assert numeric.post("/v1/models/numbers:predict", {"instances": [[1.0, 2.0]]})[0] == 200
    for rows in ([[True, 2.0]], [[1.0, False]], [[1, 2], [True, 3]]):
        status, answer, _ = numeric.post("/v1/models/numbers:predict", {"instances": rows})
        assert status == 400, (rows, answer)
        assert "expected a number" in answer["error"]
    status, answer, _ = numeric.post("/v1/models/numbers:predict", {"instances": [[1e39, 2.0]]})
    assert status == 400, answer
    assert outcome(numeric, "numbers", "v1", "error") == 0


def test_readiness_is_false_while_no_model_is_loaded(tmp_path: Path) -> None:
    root = write_model_directory(tmp_path / "model", city_model())
    app = App(OnnxPredictor("cities", root, threads=1), 1 << 20, lambda: b"")
    sock = socket.create_server(("127.0.0.1", 0))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve_http(app, sock, stop),), daemon=True)
    thread.start()
    fake = Served(f"http://127.0.0.1:{sock.getsockname()[1]}", None, tmp_path / "none.log", 0)  # type: ignore[arg-type]
    try:
        wait_for(lambda: fake.get("/v2/health/live")[0] == 200, timeout=20, what="the server to answer")
        assert fake.get("/v2/health/ready") == (503, {"ready": False})
        assert fake.get("/v2/models/cities/ready")[0] == 503
        status, answer = fake.get("/v1/models/cities")
        assert (status, answer["ready"]) == (503, False)
        assert fake.post("/v1/models/cities:predict", {"instances": [ROW]})[0] == 503
        app.predictor.load()
        assert fake.get("/v2/health/ready") == (200, {"ready": True})
        assert fake.post("/v1/models/cities:predict", {"instances": [ROW]})[0] == 200
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=20)
        loop.close()
        sock.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", b"431"),
        (b"POST /v1/models/cities:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
    ],
)
def test_malformed_http_is_answered_with_4xx_and_the_connection_closed(
    served: Served, raw: bytes, status: bytes
) -> None:
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(raw)
        answer = b""
        while chunk := connection.recv(65536):  # the server closes the connection: no hang
            answer += chunk
    assert answer.split(b" ")[1] == status, answer[:200]
    assert served.get("/v2/health/live")[0] == 200
