"""What the drift monitor reads: CloudEvents from KServe's logger in both modes with v1 and v2
bodies, rows mapped to features, and a bounded window that slides or tumbles; everything else
(events that are not KServe's, other InferenceServices' events, JSON with non-finite or oversized
numbers, deep nesting, shapes that are not shapes) is refused with a reason."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from optiloop.drift.events import EventError, ForbiddenEventError, parse_event
from optiloop.drift.features import FeatureSpace, RowError, category_key
from optiloop.drift.window import Window
from optiloop.formats.errors import FormatError
from optiloop.formats.metadata import FeatureColumn
from optiloop.formats.reference import reference_document, reference_rows

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
        (
            BINARY,
            json.dumps(
                {"inputs": [{**V2["inputs"][0], "shape": [2, 1], "data": [[1.0], [3.0]]}, *V2["inputs"][1:]]}
            ).encode(),
        ),
        (
            BINARY,
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "m",
                            "shape": [2, 3],
                            "datatype": "BYTES",
                            "data": [[1.0, 2.0, "oslo"], [3.0, None, "rome"]],
                        }
                    ]
                }
            ).encode(),
        ),
    ],
    ids=["binary-v1", "binary-v2", "structured-v1", "structured-v2", "structured-base64", "v2-nested", "v2-matrix"],
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
        (BINARY, b'{"inputs": [{"name": "a", "shape": [1], "data": [1]}]}', "missing inputs 'b', 'city'"),
        (STRUCTURED, b'{"data": {}}', "attribute specversion is missing or empty"),
        (STRUCTURED, structured(V1).replace(b'"id": "abc", ', b""), "attribute id is missing"),
        (STRUCTURED, structured(V1).replace(b'"1.0"', b'"0.3"'), "attribute specversion must be '1.0'"),
        (STRUCTURED, structured(V1).replace(b"inference.request", b"anything"), "attribute type must be"),
        (
            STRUCTURED,
            b'{"specversion": "1.0", "id": "a", "source": "s", "type": "org.kubeflow.serving.inference.request", '
            b'"data_base64": 7}',
            "data_base64 must be a string",
        ),
        (STRUCTURED, b"[", "the structured CloudEvent is not JSON"),
        ({"content-type": "application/json"}, json.dumps(V1).encode(), "header ce-specversion is missing"),
        ({k: v for k, v in BINARY.items() if k != "ce-source"}, json.dumps(V1).encode(), "header ce-source is missing"),
        ({**BINARY, "ce-type": "com.example.retrain"}, json.dumps(V1).encode(), "header ce-type must be"),
        (BINARY, b'{"instances": [[1, 2, "oslo"]], "x": 1' + b"0" * 40 + b"}", "integer of 41 digits is too long"),
        (BINARY, b'{"instances": [[1e999, 2, "oslo"]]}', "too large to be a finite number"),
        (BINARY, b'{"instances": [[Infinity, 2, "oslo"]]}', "Infinity is not a number JSON allows"),
        (BINARY, b'{"instances": [[NaN, 2, "oslo"]]}', "NaN is not a number JSON allows"),
        (BINARY, b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (BINARY, b'{"inputs": [{"name": "m", "shape": [Infinity, 4], "data": [1]}]}', "Infinity is not a number"),
        (BINARY, b'{"inputs": [{"name": "m", "shape": [1e30, 4], "data": [1]}]}', "shape must be a list of"),
        (BINARY, b'{"inputs": [{"name": "a", "shape": [], "data": [1]}]}', "shape must be a list of 1 to 8"),
        (BINARY, b'{"inputs": [{"name": "a", "shape": [-1], "data": [1]}]}', "shape must be a list of"),
        (BINARY, b'{"inputs": [{"name": "a", "shape": [true], "data": [1]}]}', "shape must be a list of"),
        (BINARY, b'{"inputs": [{"name": "a", "shape": "2", "data": [1, 2]}]}', "shape must be a list of"),
        (BINARY, b'{"inputs": [{"name": "a", "shape": [1], "data": [[[[1]]]]}]}', "nested deeper than its shape"),
        (BINARY, b'{"inputs": [{"name": "a", "shape": [1], "data": [{"x": 1}]}]}', "data holds dict"),
        (BINARY, b'{"inputs": [{"name": "m", "shape": [1, 3], "data": [1, 2, [3]]}]}', "does not follow shape"),
        (BINARY, b'{"inputs": [{"name": "m", "shape": [2, 2], "data": [[1, 2, 3], [4]]}]}', "does not follow shape"),
        (
            BINARY,
            b'{"inputs": [{"name": "a", "shape": [2, 2], "data": [1, 2, 3, 4]}, {"name": "b", "shape": [2], '
            b'"data": [1, 2]}, {"name": "city", "shape": [2], "data": ["x", "y"]}]}',
            "input 'a' has shape",
        ),
        (BINARY, b'{"inputs": [{"name": 7, "shape": [1], "data": [1]}]}', "name and datatype must be strings"),
        (BINARY, b'{"inputs": [{"name": "m", "shape": [0, 3], "data": []}]}', "non-zero number of rows"),
    ],
)
def test_malformed_events_give_a_reason(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(EventError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_event(headers, body, NAMES)


def test_events_of_other_inference_services_are_forbidden_when_the_monitor_knows_its_own() -> None:
    body = json.dumps(V1).encode()
    assert parse_event(BINARY, body, NAMES, services=["iris"], namespace="team-a").service == "iris"
    assert len(parse_event(STRUCTURED, structured(V1), NAMES).rows) == 2  # without the option, any service
    with pytest.raises(ForbiddenEventError, match="inferenceservicename 'other' is not an InferenceService"):
        parse_event({**BINARY, "ce-inferenceservicename": "other"}, body, NAMES, services=["iris", "iris-r2"])
    with pytest.raises(ForbiddenEventError, match="inferenceservicename None is not"):
        parse_event(STRUCTURED, structured(V1), NAMES, services=["iris"])
    with pytest.raises(ForbiddenEventError, match="namespace 'team-b' is not this monitor's namespace"):
        parse_event({**BINARY, "ce-namespace": "team-b"}, body, NAMES, services=["iris"], namespace="team-a")


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([[1.0, 2.0]], "row 0: 2 values, the model takes 3"),
        ([[1.0, "x", "oslo"]], "row 0, feature 'b': expected a number or null, got str"),
        ([{"a": 1, "town": "oslo"}], "row 0: unknown features 'town'"),
        ([[1.0, 2.0, ["oslo"]]], "feature 'city': expected a category value"),
        (["row"], "row 0: expected a list of 3 values or an object"),
        ([[10**400, 2.0, "oslo"]], "feature 'a': the value is beyond a float's range"),
        ([[float("inf"), 2.0, "oslo"]], "feature 'a': inf is not a finite number"),
        ([[1.0, 2.0, 10**400]], None),  # a huge integer category is merely unseen
    ],
)
def test_rows_that_do_not_fit_name_the_row_and_feature(rows: list[object], reason: str | None) -> None:
    if reason is None:
        assert SPACE.encode(rows)[0, 2] == SPACE.unseen_code(2)
        return
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


def test_reference_documents_round_trip_and_refuse_rows_that_do_not_fit() -> None:
    columns = [FeatureColumn("a", "numeric"), FeatureColumn("city", "categorical", ("oslo",))]
    document = reference_document(columns, [[1.5, "oslo"], [None, "rome"]])
    assert reference_rows(json.dumps(document).encode(), columns) == [[1.5, "oslo"], [None, "rome"]]
    with pytest.raises(FormatError, match="reference row 0 has 1 values, the model takes 2"):
        reference_document(columns, [[1.5]])
    with pytest.raises(FormatError, match=r"reference\.json: its columns must be the model's features in order"):
        reference_rows(json.dumps({**document, "columns": ["city", "a"]}).encode(), columns)
    with pytest.raises(FormatError, match=r"reference\.json: row 1 must be a list of 2 values"):
        reference_rows(json.dumps({**document, "rows": [[1, "x"], "row"]}).encode(), columns)
