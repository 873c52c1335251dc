"""Triton's own clients (tritonclient over HTTP and gRPC, JSON and binary tensors) can discover and call
the predictor, and every answer equals ONNX Runtime run in this process on the same model file."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.serve.oracle import Model, check, city_columns, city_matrix, numeric_rows


def test_model_metadata_lists_every_input_and_output_over_both_protocols(numbers: Model, cities: Model) -> None:
    expected_outputs = [
        {"name": "predictions", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    http_numbers = numbers.http().get_model_metadata("numbers")
    assert http_numbers["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 2]}]
    assert http_numbers["outputs"] == expected_outputs
    assert http_numbers["versions"] == ["1"]
    http_cities = cities.http().get_model_metadata("cities")
    assert http_cities["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1]},
        {"name": "b", "datatype": "FP32", "shape": [-1]},
        {"name": "city", "datatype": "BYTES", "shape": [-1]},
    ]
    grpc_metadata = numbers.grpc().get_model_metadata("numbers", as_json=True)
    assert grpc_metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "2"]}]
    assert [o["name"] for o in grpc_metadata["outputs"]] == ["predictions", "probabilities"]
    assert numbers.http().is_server_ready()
    assert numbers.http().is_model_ready("numbers")
    assert numbers.grpc().is_server_live()
    assert numbers.grpc().is_model_ready("numbers")
    assert "model_repository" not in numbers.http().get_server_metadata()["extensions"]


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
@pytest.mark.parametrize("batch", [1, 64])
def test_http_json_and_binary_answers_equal_onnx_runtime(
    numbers: Model, binary_in: bool, binary_out: bool, batch: int
) -> None:
    rows = numeric_rows()[:batch]
    features = httpclient.InferInput("features", list(rows.shape), "FP32")
    features.set_data_from_numpy(rows, binary_data=binary_in)
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=binary_out) for name in ("predictions", "probabilities")
    ]
    result = numbers.http().infer("numbers", [features], outputs=outputs, request_id="r7")
    assert result.get_response()["id"] == "r7"
    check(numbers, rows, result.as_numpy("predictions"), result.as_numpy("probabilities"))


def test_http_default_request_without_requested_outputs(numbers: Model) -> None:
    """What tritonclient sends by default: binary input, no outputs listed, binary_data_output set."""
    rows = numeric_rows()[:3]
    features = httpclient.InferInput("features", list(rows.shape), "FP32")
    features.set_data_from_numpy(rows)
    result = numbers.http().infer("numbers", [features])
    check(numbers, rows, result.as_numpy("predictions"), result.as_numpy("probabilities"))


@pytest.mark.parametrize("binary", [False, True])
def test_http_per_feature_tensors_with_categories(cities: Model, binary: bool) -> None:
    a, b, city = city_columns()
    inputs = []
    for name, values, datatype in (("a", a, "FP32"), ("b", b, "FP32"), ("city", city, "BYTES")):
        tensor = httpclient.InferInput(name, [len(values)], datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    result = cities.http().infer("cities", inputs)
    check(cities, city_matrix(cities, a, b, city), result.as_numpy("predictions"), result.as_numpy("probabilities"))


@pytest.mark.parametrize("batch", [1, 64])
def test_grpc_answers_equal_onnx_runtime(numbers: Model, batch: int) -> None:
    rows = numeric_rows()[:batch]
    features = grpcclient.InferInput("features", list(rows.shape), "FP32")
    features.set_data_from_numpy(rows)
    result = numbers.grpc().infer("numbers", [features], request_id="g1")
    assert result.get_response().id == "g1"
    check(numbers, rows, result.as_numpy("predictions"), result.as_numpy("probabilities"))


def test_grpc_per_feature_tensors_and_requested_outputs(cities: Model) -> None:
    a, b, city = city_columns()
    inputs = []
    for name, values, datatype in (("a", a, "FP32"), ("b", b, "FP32"), ("city", city, "BYTES")):
        tensor = grpcclient.InferInput(name, [len(values)], datatype)
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    outputs = [grpcclient.InferRequestedOutput("probabilities")]
    result = cities.grpc().infer("cities", inputs, outputs=outputs)
    _, want = cities.expected(city_matrix(cities, a, b, city))
    np.testing.assert_allclose(result.as_numpy("probabilities"), want, rtol=1e-6, atol=1e-7)
    assert result.as_numpy("predictions") is None


def test_grpc_malformed_requests_are_invalid_argument_and_counted_invalid(numbers: Model) -> None:
    rows = np.array([[1, 2]], dtype=np.int64)
    tensor = grpcclient.InferInput("features", [1, 3], "INT64")
    tensor.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.int64))
    with pytest.raises(InferenceServerException) as raised:
        numbers.grpc().infer("numbers", [tensor])
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "the model takes [N, 2]" in raised.value.message()
    tensor = grpcclient.InferInput("features", [1, 2], "INT64")
    tensor.set_data_from_numpy(rows)
    with pytest.raises(InferenceServerException) as raised:
        numbers.grpc().infer("elsewhere", [tensor])
    assert raised.value.status() == "StatusCode.NOT_FOUND"
    _, text = numbers.served.get("/metrics")
    key = 'optiloop_predictor_requests_total{model="numbers",outcome="invalid",protocol="grpc",revision="1"}'
    assert any(line.startswith(key) and not line.endswith(" 0.0") for line in text.decode().splitlines())
