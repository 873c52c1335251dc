"""A model that loads but fails at inference on part of the traffic (the fault a canary's analysis
exists to catch): the predictor stays ready, answers the rows the model can take, and answers the
others 500 on both protocols, counted as its own ``error`` (what the operator's error rate reads)
and never as the client's ``invalid``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from optiloop.formats.model_dir import read_model_directory
from tests.serve.conftest import Served, predictor
from tests.serve.test_security import outcome
from tests.support.faulty_model import failing_above, make_directory_fail_above
from tests.support.model_dirs import city_model, write_model_directory

BOUND = 3.0
FINE = [[0.5, 1.0, "rome"], [-1.0, 2.0, "oslo"]]
ABOVE = [[0.5, 1.0, "rome"], [3.5, 2.0, "lima"]]
"""Its second row's feature ``a`` (column 0) is above the bound: the whole batch fails."""


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = write_model_directory(tmp_path_factory.mktemp("faulty") / "model", city_model(), name="cities")
    make_directory_fail_above(root, 0, BOUND)
    with predictor(root, "cities", tmp_path_factory.mktemp("logs") / "faulty.log") as served:
        yield served


def test_the_guard_fails_only_batches_with_a_row_above_the_bound(tmp_path: Path) -> None:
    """The fault itself: ONNX Runtime refuses a batch with a row above the bound and gives the
    original model's outputs for the others (so readiness checks on ordinary rows pass)."""
    root = write_model_directory(tmp_path / "model", city_model())
    original = read_model_directory(root).read("model.onnx")
    plain = onnxruntime.InferenceSession(original, providers=["CPUExecutionProvider"])
    guarded = onnxruntime.InferenceSession(failing_above(original, 0, BOUND), providers=["CPUExecutionProvider"])
    rows = np.array([[0.5, 1.0, 2.0], [3.0, 2.0, 0.0]], dtype=np.float32)
    for mine, theirs in zip(guarded.run(None, {"features": rows}), plain.run(None, {"features": rows}), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    with pytest.raises(Exception, match="out of"):
        guarded.run(None, {"features": np.array([[0.5, 1.0, 2.0], [3.01, 2.0, 0.0]], dtype=np.float32)})
    make_directory_fail_above(root, 0, BOUND)
    assert read_model_directory(root).read("model.onnx") != original  # the marker lists the new hash


def test_a_model_failing_at_inference_is_answered_500_and_counted_as_the_predictors_error(faulty: Served) -> None:
    v2_above = {"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [0.5, 3.5]},
                           {"name": "b", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]},
                           {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["rome", "lima"]}]}  # fmt: skip
    assert faulty.post("/v1/models/cities:predict", {"instances": FINE})[0] == 200
    status, answer, _ = faulty.post("/v1/models/cities:predict", {"instances": ABOVE})
    assert status == 500, answer
    assert answer == {"error": "the predictor failed on this request; see its log"}
    assert faulty.post("/v2/models/cities/infer", v2_above)[0] == 500
    assert faulty.post("/v1/models/cities:predict", {"instances": [[1]]})[0] == 400
    assert faulty.get("/v2/health/ready")[0] == 200
    assert (outcome(faulty, "cities", "v1", "ok"), outcome(faulty, "cities", "v1", "error")) == (1, 1)
    assert (outcome(faulty, "cities", "v2", "error"), outcome(faulty, "cities", "v1", "invalid")) == (1, 1)
