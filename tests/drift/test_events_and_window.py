"""What the drift monitor reads: CloudEvents from KServe's logger in both modes with v1 and v2
bodies, rows mapped to features, and a bounded window that slides or tumbles."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from optiloop.drift.events import EventError, parse_event
from optiloop.drift.features import FeatureSpace, RowError, category_key
from optiloop.drift.window import Window

NAMES = ["a", "b", "city"]
SPACE = FeatureSpace(NAMES, ["numeric", "numeric", "categorical"], [[], [], ["oslo", "lima"]], [0.0, 7.0, 0.0])
V1 = {"instances": [[1.0, 2.0, "oslo"], [3.0, None, "rome"]]}
V2 = {
    "inputs": [
        {"name": "a", "shape": [2], "datatype": "FP32", "data": [1.0, 3.0]},
        {"name": "b", "shape": [2, 1], "datatype": "FP32", "data": [2.0, None]},
        {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["oslo", "rome"]},
    ]
}
BINARY = {
    "ce-specversion": "1.0",
    "ce-id": "abc",
    "ce-source": "http://localhost:9081/",
    "ce-type": "org.kubeflow.serving.inference.request",
    "ce-inferenceservicename": "iris",
    "content-type": "application/json",
}


def structured(data: object, base64_data: bool = False) -> bytes:
    event: dict[str, object] = {
        "specversion": "1.0",
        "id": "abc",
        "source": "http://localhost:9081/",
        "type": "org.kubeflow.serving.inference.request",
    }
    if base64_data:
        event["data_base64"] = base64.b64encode(json.dumps(data).encode()).decode()
    else:
        event["data"] = data
    return json.dumps(event).encode()


STRUCTURED = {"content-type": "application/cloudevents+json"}


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (BINARY, json.dumps(V1).encode()),
        (BINARY, json.dumps(V2).encode()),
        (STRUCTURED, structured(V1)),
        (STRUCTURED, structured(V2)),
        (STRUCTURED, structured(V1, base64_data=True)),
        ({"content-type": "application/json"}, json.dumps(V1).encode()),
    ],
    ids=["binary-v1", "binary-v2", "structured-v1", "structured-v2", "structured-base64", "plain"],
)
def test_logged_requests_become_the_same_rows(headers: dict[str, str], body: bytes) -> None:
    request = parse_event(headers, body, NAMES)
    assert not request.is_response
    encoded = SPACE.encode(request.rows)
    np.testing.assert_array_equal(encoded, [[1.0, 2.0, 0.0], [3.0, 7.0, 2.0]])  # gap -> fill, unseen -> extra code


def test_logged_responses_are_acknowledged_without_rows() -> None:
    headers = {**BINARY, "ce-type": "org.kubeflow.serving.inference.response"}
    assert parse_event(headers, b'{"predictions": [1]}', NAMES).is_response


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (BINARY, b"not json", "the request body is not JSON"),
        (BINARY, b'{"rows": []}', 'neither "instances" (v1) nor "inputs" (v2)'),
        (BINARY, b'{"instances": []}', "non-empty list"),
        (BINARY, b'{"inputs": [{"name": "a", "shape": [3], "data": [1, 2]}]}', "does not fit shape"),
        (BINARY, b'{"inputs": [{"name": "a", "shape": [1], "data": [1]}]}', "lacks inputs 'b', 'city'"),
        (STRUCTURED, b'{"data": {}}', "needs specversion"),
        (STRUCTURED, b'{"specversion": "1.0", "data_base64": "%%%"}', "not base64"),
        (STRUCTURED, b"[", "the structured CloudEvent is not JSON"),
    ],
)
def test_malformed_events_give_a_reason(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(EventError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_event(headers, body, NAMES)


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([[1.0, 2.0]], "row 0: 2 values, the model takes 3"),
        ([[1.0, "x", "oslo"]], "row 0, feature 'b': expected a number or null, got str"),
        ([{"a": 1, "town": "oslo"}], "row 0: unknown features 'town'"),
        ([[1.0, 2.0, ["oslo"]]], "feature 'city': expected a category value"),
        (["row"], "row 0: expected a list of 3 values or an object"),
    ],
)
def test_rows_that_do_not_fit_name_the_row_and_feature(rows: list[object], reason: str) -> None:
    with pytest.raises(RowError, match=reason):
        SPACE.encode(rows)


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (1, "1"),
        (1.0, "1"),
        ("1", "1"),
        ("1.5", "1.5"),
        (1.5, "1.5"),
        (True, "True"),
        (np.int64(3), "3"),
        (np.float32(2.0), "2"),
    ],
)
def test_category_names_follow_the_shared_rule(value: object, name: str) -> None:
    assert category_key(value) == name


def test_sliding_window_keeps_the_latest_rows_in_order() -> None:
    window = Window(size=4, width=1, mode="sliding", step=2)
    window.add(np.arange(3, dtype=float).reshape(-1, 1))
    assert len(window) == 3
    assert not window.due()
    window.add(np.arange(3, 9, dtype=float).reshape(-1, 1))
    assert window.due()
    np.testing.assert_array_equal(window.take()[:, 0], [5, 6, 7, 8])
    window.add(np.array([[9.0]]))
    assert not window.due()  # one new row, step is 2
    window.add(np.array([[10.0]]))
    assert window.due()
    np.testing.assert_array_equal(window.take()[:, 0], [7, 8, 9, 10])
    assert len(window) == 4  # sliding windows stay full


def test_tumbling_window_empties_after_each_evaluation() -> None:
    window = Window(size=3, width=2, mode="tumbling")
    window.add(np.ones((2, 2)))
    assert not window.due()
    window.add(np.full((2, 2), 2.0))
    assert window.due()
    np.testing.assert_array_equal(window.take()[:, 0], [1, 2, 2])
    assert len(window) == 0
    assert not window.due()


def test_a_huge_batch_never_grows_the_window() -> None:
    window = Window(size=100, width=3)
    window.add(np.random.default_rng(0).normal(size=(10_000, 3)))
    assert len(window) == 100
    assert window.take().shape == (100, 3)
