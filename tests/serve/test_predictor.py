"""optiloop's predictor, started on loopback: v1 and v2 answers match the
model, malformed requests get 400 with a reason and never take the server down, metrics appear."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest

from optiloop.jobs.features import encode_raw
from optiloop.jobs.training import predict
from tests.serve.conftest import Served, predictor
from tests.support.control_plane import free_port
from tests.support.model_dirs import city_frame, city_model, write_model_directory


class Server:
    def __init__(self, served: Served, model: Any) -> None:
        self.url = served.url
        self.served = served
        self.model = model

    def post(self, path: str, body: bytes | dict[str, Any], content_type: str = "application/json") -> tuple[int, Any]:
        status, answer, _ = self.served.post(path, body, {"content-type": content_type})
        return status, answer

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    model = city_model()
    root = write_model_directory(tmp_path_factory.mktemp("serve") / "model", model)
    log = tmp_path_factory.mktemp("logs") / "predictor.log"
    with predictor(root, "cities", log) as served:
        yield Server(served, model)


ROWS = [[0.5, None, "rome"], [-1.0, 2.0, "paris"], [2.0, 4.5, "oslo"]]


def expected(server: Server) -> np.ndarray:
    frame = pd.DataFrame(ROWS, columns=["a", "b", "city"])
    return predict(server.model, encode_raw(server.model.transform, frame))


def test_v1_predictions_and_probabilities_match_the_model(server: Server) -> None:
    status, body = server.post("/v1/models/cities:predict", {"instances": ROWS})
    assert status == 200, body
    probabilities = expected(server)
    np.testing.assert_allclose(body["probabilities"], probabilities, atol=1e-5)
    assert body["predictions"] == [["x", "y", "z"][i] for i in probabilities.argmax(axis=1)]


def test_v1_accepts_objects_and_bodies_sent_as_form_data(server: Server) -> None:
    objects = [dict(zip(["a", "b", "city"], row, strict=True)) for row in ROWS]
    status, body = server.post("/v1/models/cities:predict", json.dumps({"instances": objects}).encode(), "text/plain")
    assert status == 200, body
    np.testing.assert_allclose(body["probabilities"], expected(server), atol=1e-5)


def test_v2_per_feature_tensors_and_one_matrix(server: Server) -> None:
    per_feature = {
        "id": "r1",
        "inputs": [
            {"name": "a", "shape": [3], "datatype": "FP32", "data": [r[0] for r in ROWS]},
            {"name": "b", "shape": [3, 1], "datatype": "FP64", "data": [0.0, 2.0, 4.5]},
            {"name": "city", "shape": [3], "datatype": "BYTES", "data": [r[2] for r in ROWS]},
        ],
    }
    status, body = server.post("/v2/models/cities/infer", per_feature)
    assert status == 200, body
    assert body["id"] == "r1"
    assert body["model_name"] == "cities"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["probabilities"]["shape"] == [3, 3]
    assert outputs["predictions"]["datatype"] == "BYTES"
    rows = [[r[0], 0.0 if r[1] is None else r[1], r[2]] for r in ROWS]
    frame = pd.DataFrame(rows, columns=["a", "b", "city"])
    want = predict(server.model, encode_raw(server.model.transform, frame))
    np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (3, 3)), want, atol=1e-5)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/models/cities:predict", b"not json at all", "the request body is not JSON"),
        ("/v1/models/cities:predict", {"rows": ROWS}, '"instances"'),
        ("/v1/models/cities:predict", {"instances": [[1, 2]]}, "row 0: 2 values, the model takes 3"),
        ("/v1/models/cities:predict", {"instances": [[1, "two", "rome"]]}, "feature 'b': expected a number"),
        ("/v1/models/cities:predict", {"instances": [{"a": 1, "town": "rome"}]}, "unknown features 'town'"),
        (
            "/v2/models/cities/infer",
            {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]},
            "the model takes [N, 3]",
        ),
        (
            "/v2/models/cities/infer",
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]}]},
            "",
        ),
    ],
)
def test_malformed_requests_get_400_with_a_reason(server: Server, path: str, body: Any, message: str) -> None:
    status, answer = server.post(path, body)
    assert status == 400, answer
    assert message in answer["error"]
    assert server.post("/v1/models/cities:predict", {"instances": ROWS[:1]})[0] == 200  # still serving


def test_a_plain_text_body_that_is_not_json_gets_400(server: Server) -> None:
    status, answer = server.post("/v1/models/cities:predict", b"a,b,city\n1,2,rome", "text/plain")
    assert status == 400
    assert "the request body is not JSON" in answer["error"]


def test_metrics_count_requests_by_outcome(server: Server) -> None:
    server.post("/v1/models/cities:predict", {"instances": ROWS})
    server.post("/v1/models/cities:predict", {"instances": [[1]]})
    status, text = server.get("/metrics")
    assert status == 200
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line and line[0] != "#"
    }
    assert samples['optiloop_predictor_requests_total{model="cities",outcome="ok",protocol="v1",revision="1"}'] >= 1
    invalid = 'optiloop_predictor_requests_total{model="cities",outcome="invalid",protocol="v1",revision="1"}'
    assert samples[invalid] >= 1
    assert samples['optiloop_predictor_batch_size_count{model="cities"}'] >= 1
    assert samples['optiloop_predictor_inference_seconds_count{model="cities",protocol="v1",revision="1"}'] >= 1


def test_liveness_and_model_readiness(server: Server) -> None:
    assert server.get("/")[0] == 200
    status, text = server.get("/v1/models/cities")
    assert status == 200
    assert json.loads(text)["ready"] is True
    assert server.get("/v2/models/cities/ready")[0] == 200


def test_serving_a_directory_holding_a_pickle_fails_with_the_file_named(tmp_path: Path) -> None:
    root = write_model_directory(tmp_path / "model", city_model())
    (root / "model.pkl").write_bytes(b"\x80\x04.")
    result = subprocess.run(
        [sys.executable, "-m", "optiloop.cli", "serve", str(root), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "model.pkl: only ONNX, JSON and Triton config files are served" in result.stderr
    assert "Traceback" not in result.stderr


def test_rows_are_scored_in_the_order_sent(server: Server) -> None:
    frame = city_frame(50, 3)
    rows = [[r.a, None if np.isnan(r.b) else r.b, r.city] for r in frame.itertuples()]
    status, body = server.post("/v1/models/cities:predict", {"instances": rows})
    assert status == 200
    want = predict(server.model, encode_raw(server.model.transform, frame[["a", "b", "city"]]))
    np.testing.assert_allclose(body["probabilities"], want, atol=1e-5)


def test_several_worker_processes_share_the_port_and_add_up_their_metrics(tmp_path: Path) -> None:
    root = write_model_directory(tmp_path / "model", city_model())
    with predictor(root, "cities", tmp_path / "workers.log", {"OPTILOOP_WORKERS": "2"}) as served:
        children = psutil.Process(served.process.pid).children()
        assert sum("spawn_main" in " ".join(child.cmdline()) for child in children) == 2
        for _ in range(20):  # a new connection each time, so both processes get some
            assert served.post("/v1/models/cities:predict", {"instances": ROWS})[0] == 200
        _, text = served.get("/metrics")
    key = 'optiloop_predictor_requests_total{model="cities",outcome="ok",protocol="v1",revision="1"}'
    assert f"{key} 20.0" in text.decode().splitlines()
    assert served.process.returncode == 0  # SIGTERM stops the workers and then the supervisor, cleanly


def test_a_large_request_is_answered_from_a_worker_thread_in_order(server: Server) -> None:
    rows = [[float(i % 7), None, "rome"] for i in range(20_000)]  # about 400 KB: over OFFLOAD_BYTES
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=60)
    connection.request("POST", "/v1/models/cities:predict", json.dumps({"instances": rows}).encode())
    response = connection.getresponse()
    assert response.status == 200
    assert len(json.loads(response.read())["predictions"]) == 20_000
    # The same keep-alive connection goes on serving small requests inline afterwards.
    connection.request("POST", "/v1/models/cities:predict", json.dumps({"instances": ROWS}).encode())
    response = connection.getresponse()
    assert response.status == 200
    assert len(json.loads(response.read())["predictions"]) == 3
    connection.close()
