"""Generated malformed requests (v1 JSON, v2 JSON, v2 binary) never make the predictor answer 5xx,
never hang it, never count as the model's error, and do not grow its memory without bound."""

from __future__ import annotations

import http.client
import json
import random
import struct
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.serve.conftest import Served, predictor
from tests.support.model_dirs import city_model, write_model_directory

REQUESTS = 240
VALID_V1 = {"instances": [[0.5, 1.0, "rome"], [-1.0, None, "oslo"]]}
VALID_V2 = {
    "id": "f",
    "inputs": [
        {"name": "a", "shape": [2], "datatype": "FP32", "data": [0.5, -1.0]},
        {"name": "b", "shape": [2, 1], "datatype": "FP64", "data": [1.0, 2.0]},
        {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["rome", "oslo"]},
    ],
    "parameters": {"binary_data_output": True},
}
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    2**63,
    -(2**63) - 1,
    1e308,
    -1e308,
    1e-320,
    "",
    "x" * 300,
    [],
    {},
    [[[]]],
    "NaN",
    -1,
    0,
    3.5,
    {"a": 1},
    ["rome"],
    "\u0000",
    "\ud7ff",
]
RAW_BODIES: list[bytes] = [
    b"",
    b"{",
    b"[]",
    b"null",
    b"0",
    b'"text"',
    b'{"instances": NaN}',
    b'{"instances": [[Infinity, 1, "a"]]}',
    b"\xff\xfe\x00",
    b"[" * 5000 + b"]" * 5000,
    b'{"instances": ' + b"[" * 100 + b"]" * 100 + b"}",
    b'{"inputs": [{"name": "a", "shape": [1e300], "datatype": "FP32", "data": []}]}',
    b'{"inputs": [{"name": "a", "shape": [4294967296, 4294967296], "datatype": "FP32", "data": [1]}]}',
]


def mutate(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """``value`` with one part replaced, removed or broken."""
    if isinstance(value, dict) and value and depth < 6:
        key = rng.choice(sorted(value))
        copy = dict(value)
        choice = rng.random()
        if choice < 0.2:
            del copy[key]
        elif choice < 0.3:
            copy[key + "_"] = copy.pop(key)
        else:
            copy[key] = mutate(rng, value[key], depth + 1)
        return copy
    if isinstance(value, list) and value and depth < 6:
        copy = list(value)
        choice = rng.random()
        index = rng.randrange(len(copy))
        if choice < 0.2:
            del copy[index]
        elif choice < 0.3:
            copy.append(copy[index])
        else:
            copy[index] = mutate(rng, copy[index], depth + 1)
        return copy
    return rng.choice(ODD_VALUES)


def binary_request(rng: random.Random) -> tuple[bytes, dict[str, str]]:
    """A v2 binary-extension request with a wrong size, length or header somewhere."""
    floats = struct.pack("<2f", 0.5, -1.0)
    cities = b"".join(struct.pack("<I", len(c)) + c for c in (b"rome", b"oslo"))
    header = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": len(floats)}},
            {"name": "b", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]},
            {"name": "city", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(cities)}},
        ]
    }
    payload = floats + cities
    kind = rng.randrange(6)
    if kind == 0:
        header = mutate(rng, header)
    elif kind == 1:
        payload = payload[: rng.randrange(len(payload))]
    elif kind == 2:
        payload = payload + bytes(rng.randrange(1, 9))
    elif kind == 3:
        cities = struct.pack("<I", 2**31) + b"rome"
        payload = floats + cities
    text = json.dumps(header).encode()
    length = len(text)
    if kind == 4:
        length = rng.choice([-1, len(text) + 1000, 0, len(text) - 3])
    headers = {"Inference-Header-Content-Length": str(length), "Content-Type": "application/octet-stream"}
    if kind == 5:
        headers["Inference-Header-Content-Length"] = rng.choice(["x", "", "1e3", " 12"])
    return text + payload, headers


def cases(rng: random.Random) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    v1 = "/v1/models/cities:predict"
    v2 = "/v2/models/cities/infer"
    for body in RAW_BODIES:
        yield v1, body, {}
        yield v2, body, {"Content-Type": "application/json"}
    produced = 2 * len(RAW_BODIES)
    while produced < REQUESTS:
        kind = produced % 3
        if kind == 0:
            yield v1, json.dumps(mutate(rng, VALID_V1)).encode(), {}
        elif kind == 1:
            yield v2, json.dumps(mutate(rng, VALID_V2)).encode(), {"Content-Type": "application/json"}
        else:
            body, headers = binary_request(rng)
            yield v2, body, headers
        produced += 1


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = write_model_directory(tmp_path_factory.mktemp("fuzz") / "model", city_model())
    with predictor(root, "cities", tmp_path_factory.mktemp("logs") / "fuzz.log") as server:
        yield server


def test_malformed_requests_get_4xx_without_hanging_or_growing_memory(served: Served) -> None:
    process = psutil.Process(served.process.pid)
    host = served.url.removeprefix("http://")
    before = process.memory_info().rss
    answered: dict[int, int] = {}
    sent = 0
    failures: list[Any] = []
    for path, body, headers in cases(random.Random(21)):
        connection = http.client.HTTPConnection(host, timeout=10)  # a hang fails the test here
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        if response.status >= 500:
            failures.append((path, body[:300], headers, response.status))
        answered[response.status] = answered.get(response.status, 0) + 1
        sent += 1
    after = process.memory_info().rss
    assert failures == []
    assert sent >= 200
    assert answered.get(400, 0) >= 150, answered  # they really were malformed
    assert after - before < 200 * 1024 * 1024, (before, after)
    _, text = served.get("/metrics")
    errors = [
        line
        for line in text.decode().splitlines()
        if line.startswith("optiloop_predictor_requests_total") and 'outcome="error"' in line and line[-4:] != " 0.0"
    ]
    assert errors == [], errors
    assert served.post("/v1/models/cities:predict", VALID_V1)[0] == 200
