"""The predictor and the drift monitor read the same rows from a request, and refuse a misfit with the same reason."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from optiloop.api.jobs import FeatureInfo, ModelLineage, ModelMetadata
from optiloop.drift.events import EventError, parse_event
from optiloop.drift.features import FeatureSpace, RowError
from optiloop.serve.encoding import FeatureEncoder, RequestError

NAMES = ["a", "b", "city"]
EVENT = {
    "ce-specversion": "1.0",
    "ce-id": "1",
    "ce-source": "http://agent/",
    "ce-type": "org.kubeflow.serving.inference.request",
    "content-type": "application/json",
}


def encoder() -> FeatureEncoder:
    metadata = ModelMetadata(
        task="classification",
        target="y",
        output_names=["predictions", "probabilities"],
        features=[
            FeatureInfo(name="a", kind="numeric"),
            FeatureInfo(name="b", kind="numeric"),
            FeatureInfo(name="city", kind="categorical", categories=["lima", "oslo", "rome"]),
        ],
        classes=["x", "y"],
        opset=17,
        precision="fp32",
        test_metrics={},
        size_bytes=1,
        parameters=1,
        lineage=ModelLineage(resource="m", revision=1, study_name="m-r1", trial=0, candidate="baseline"),
    )
    return FeatureEncoder(metadata)


def v2(*tensors: tuple[str, list[int], list[Any]]) -> dict[str, Any]:
    return {"inputs": [{"name": n, "shape": s, "datatype": "BYTES", "data": d} for n, s, d in tensors]}


def predictor_matrix(document: dict[str, Any]) -> np.ndarray:
    """What the predictor makes of a request (v2 tensors as decoded arrays of their shape)."""
    if "instances" in document:
        return encoder().rows(document["instances"])
    tensors = [(t["name"], np.array(t["data"], dtype=object).reshape(t["shape"])) for t in document["inputs"]]
    return encoder().tensors(tensors)


def monitor_rows(document: dict[str, Any]) -> list[Any]:
    """The rows the drift monitor reads from the same request, logged by KServe, checked by its
    feature space as the monitor checks them before they reach the window."""
    rows = parse_event(EVENT, json.dumps(document).encode(), NAMES).rows
    FeatureSpace(NAMES, ["numeric", "numeric", "categorical"], [[], [], ["lima", "oslo", "rome"]]).encode(rows)
    return rows


@pytest.mark.parametrize(
    "document",
    [
        {"instances": [[1.0, 2.0, "oslo"], {"a": 3.0, "city": "rome"}]},
        v2(("a", [2], [1.0, 3.0]), ("b", [2, 1], [2.0, None]), ("city", [2], ["oslo", "rome"])),
        v2(("m", [2, 3], [1.0, 2.0, "oslo", 3.0, None, "rome"])),
    ],
    ids=["v1", "v2-per-feature", "v2-matrix"],
)
def test_both_services_read_the_same_rows(document: dict[str, Any]) -> None:
    rows = monitor_rows(document)
    assert len(rows) == 2
    np.testing.assert_array_equal(predictor_matrix(document), encoder().rows(rows))


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"instances": []}, '"instances" must be a non-empty list of rows'),
        ({"instances": [[1.0, 2.0]]}, "row 0: 2 values, the model takes 3"),
        ({"instances": [{"a": 1.0, "town": "oslo"}]}, "row 0: unknown features 'town'"),
        (v2(("a", [1], [1.0])), "send one [N, features] tensor or one tensor per feature; missing inputs 'b', 'city'"),
        (v2(("m", [1, 2], [1.0, 2.0])), "input 'm' has shape [1, 2]; the model takes [N, 3]"),
        (v2(("m", [0, 3], [])), "inputs must have the same, non-zero number of rows (got [0])"),
        (
            v2(("a", [2, 2], [1, 2, 3, 4]), ("b", [2], [1, 2]), ("city", [2], ["x", "y"])),
            "input 'a' has shape [2, 2]; expected [N] or [N, 1]",
        ),
        (
            v2(("a", [2], [1, 2]), ("b", [1], [1]), ("city", [2], ["x", "y"])),
            "inputs must have the same, non-zero number of rows (got [1, 2])",
        ),
    ],
)
def test_both_services_refuse_a_misfit_with_the_same_reason(document: dict[str, Any], reason: str) -> None:
    with pytest.raises(RequestError) as predictor:
        predictor_matrix(document)
    with pytest.raises((EventError, RowError)) as monitor:
        monitor_rows(document)
    assert str(predictor.value) == str(monitor.value) == reason
