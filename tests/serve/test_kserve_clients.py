"""KServe's own Python clients (InferenceRESTClient on v1 and v2 with JSON and binary tensors, and
InferenceGRPCClient) can call the predictor, and every answer equals ONNX Runtime run in this process
on the same model file.

Every call is made once, in one child process (importing KServe's client takes seconds), and each
test checks its own answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.serve.kserve_calls import run
from tests.serve.oracle import Model, check, city_columns, city_matrix, numeric_rows


def rest(model: Model, name: str, request: Any, protocol: str = "v2") -> dict[str, Any]:
    return {"client": "rest", "protocol": protocol, "target": model.served.url, "model": name, "request": request}


def grpc(model: Model, name: str, request: Any) -> dict[str, Any]:
    target = f"127.0.0.1:{model.served.grpc_port}"
    return {"client": "grpc", "protocol": "v2", "target": target, "model": name, "request": request}


def matrix(rows: np.ndarray, binary: bool = False, **extra: Any) -> dict[str, Any]:
    tensor = {"name": "features", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}
    return {"tensors": [{**tensor, "binary": binary}], **extra}


WRONG_WIDTH = np.zeros((2, 5), dtype=np.float32)
WANTED = [{"name": "probabilities", "binary": True}]


def city_tensors() -> list[dict[str, Any]]:
    a, b, city = city_columns()
    return [
        {"name": "a", "shape": [len(a)], "datatype": "FP32", "data": a.tolist()},
        {"name": "b", "shape": [len(b)], "datatype": "FP32", "data": b.tolist()},
        {"name": "city", "shape": [len(city)], "datatype": "BYTES", "data": [str(v) for v in city]},
    ]


@pytest.fixture(scope="module")
def answers(numbers: Model, cities: Model) -> dict[str, Any]:
    """Every call of this module by label, made with KServe's clients."""
    calls: dict[str, dict[str, Any]] = {
        "rest health": rest(numbers, "numbers", "health"),
        "grpc health": grpc(numbers, "numbers", "health"),
        "rest wanted": rest(numbers, "numbers", matrix(numeric_rows()[:8], True, outputs=WANTED)),
        "grpc wanted": grpc(numbers, "numbers", matrix(numeric_rows()[:8], outputs=WANTED)),
        "rest cities json": rest(cities, "cities", {"tensors": city_tensors()}),
        "rest cities binary": rest(cities, "cities", {"tensors": [{**t, "binary": True} for t in city_tensors()]}),
        "grpc cities": grpc(cities, "cities", {"tensors": city_tensors()}),
        "rest wrong width": rest(numbers, "numbers", matrix(WRONG_WIDTH, True)),
        "rest unknown model": rest(numbers, "elsewhere", matrix(WRONG_WIDTH, True)),
        "grpc wrong width": grpc(numbers, "numbers", matrix(WRONG_WIDTH)),
    }
    for batch in (1, 64):
        rows = numeric_rows()[:batch]
        calls[f"v1 {batch}"] = rest(numbers, "numbers", {"instances": rows.tolist()}, protocol="v1")
        calls[f"rest json {batch}"] = rest(numbers, "numbers", matrix(rows, False, id=f"j{batch}"))
        calls[f"rest binary {batch}"] = rest(numbers, "numbers", matrix(rows, True, id=f"b{batch}"))
        calls[f"grpc {batch}"] = grpc(numbers, "numbers", matrix(rows, id=f"g{batch}"))
    return dict(zip(calls, run(list(calls.values())), strict=True))


def test_health_and_readiness_through_kserve_clients(answers: dict[str, Any]) -> None:
    assert answers["rest health"] == [True, True, True]
    assert answers["grpc health"] == [True, True, True]


@pytest.mark.parametrize("batch", [1, 64])
def test_rest_v1_instances_answer_like_onnx_runtime(numbers: Model, answers: dict[str, Any], batch: int) -> None:
    answer = answers[f"v1 {batch}"]
    check(numbers, numeric_rows()[:batch], answer["predictions"], answer["probabilities"])


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize(("label", "prefix"), [("rest json", "j"), ("rest binary", "b"), ("grpc", "g")])
def test_v2_json_binary_and_grpc_answer_like_onnx_runtime(
    numbers: Model, answers: dict[str, Any], batch: int, label: str, prefix: str
) -> None:
    answer = answers[f"{label} {batch}"]
    assert answer["id"] == f"{prefix}{batch}"
    check(numbers, numeric_rows()[:batch], answer["outputs"]["predictions"], answer["outputs"]["probabilities"])


@pytest.mark.parametrize("label", ["rest wanted", "grpc wanted"])
def test_requested_outputs_return_only_those_outputs(numbers: Model, answers: dict[str, Any], label: str) -> None:
    outputs = answers[label]["outputs"]
    assert list(outputs) == ["probabilities"]
    want = numbers.expected(numeric_rows()[:8])[1]
    np.testing.assert_allclose(outputs["probabilities"], want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("label", ["rest cities json", "rest cities binary", "grpc cities"])
def test_per_feature_tensors_with_categories(cities: Model, answers: dict[str, Any], label: str) -> None:
    outputs = answers[label]["outputs"]
    check(cities, city_matrix(cities, *city_columns()), outputs["predictions"], outputs["probabilities"])


def test_errors_reach_kserve_clients_as_their_own_error_types(answers: dict[str, Any]) -> None:
    assert answers["rest wrong width"]["status"] == 400
    assert "features" in answers["rest wrong width"]["text"]
    assert answers["rest unknown model"]["status"] == 404
    assert answers["grpc wrong width"]["status"] == "StatusCode.INVALID_ARGUMENT"
