"""A v1 body of plain numbers parsed in C++ gives exactly the matrix of the checked path, and every
other body is left to the checked path to accept or refuse with its reason."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import orjson
import pytest

from optiloop.api.jobs import FeatureInfo, ModelLineage, ModelMetadata
from optiloop.serve.encoding import FeatureEncoder, RequestError
from optiloop.serve.numeric_json import numeric_instances

WIDTH = 3


def numeric_encoder(max_rows: int = 1000) -> FeatureEncoder:
    metadata = ModelMetadata(
        task="regression",
        target="y",
        output_names=["predictions"],
        features=[FeatureInfo(name=name, kind="numeric") for name in ("a", "b", "c")],
        classes=[],
        opset=17,
        precision="fp32",
        test_metrics={},
        size_bytes=1,
        parameters=1,
        lineage=ModelLineage(resource="m", revision=1, study_name="m-r1", trial=0, candidate="baseline"),
    )
    return FeatureEncoder(metadata, max_rows)


def checked(encoder: FeatureEncoder, body: bytes) -> np.ndarray | str:
    """What the full parse and the checked path make of ``body``: the matrix, or the refusal."""
    try:
        payload = orjson.loads(body)
        if not isinstance(payload, dict) or "instances" not in payload:
            return "not a v1 request"
        return encoder.rows(payload["instances"], b"true" in body or b"false" in body)
    except (orjson.JSONDecodeError, RequestError) as exc:
        return str(exc)


ODD_BODIES = [
    b'{"instances": [[1, [2], 3]]}',
    b'{"instances": [[1, [], [2, 3]]]}',
    b'{"instances": [[1, 2, 3], 4, [5, 6]]}',
    b'{"instances": [[1, 2, [3, 4]], 5]}',
    b'{"instances": [[1, 2], [3, 4, 5, 6]]}',
    b'{"instances": [[1, 2, 3], [4, 5, 6]], "instances": [[7, 8, 9]]}',
    b'{"instances": [[1, 2, 3]], "parameters": {}}',
    b'{"instances": [[1, 2, 3]], "x": "[["}',
    b'{"instances": [[1, true, 3]]}',
    b'{"instances": [[1, null, 3]]}',
    b'{"instances": [[1, "2", 3]]}',
    b'{"instances": [{"a": 1, "b": 2, "c": 3}]}',
    b'{"instances": [[1e400, 2, 3]]}',
    b'{"instances": [[1e39, 2, 3]]}',
    b'{"instances": [[-1e39, 2, 3]]}',
    b'{"instances": [[18446744073709551616, 2, 3]]}',
    b'{"instances": [[-9223372036854775809, 2, 3]]}',
    b'{"instances": [[12345678901234567890, -0.0, 1E-320]]}',
    b'{"instances": [[NaN, 2, 3]]}',
    b'{"instances": []}',
    b'{"instances": [[]]}',
    b'{"instances": [[1, 2, 3]]} trailing',
    b'{"instances": [[1, 2, 3]]',
    b'{"\\u0069nstances": [[1, 2, 3]]}',
    b' \n{ "instances" : [ [ 1 , 2 , 3 ] ] }\n ',
    b"[[1, 2, 3]]",
    b'"instances"',
    b"\xff",
    b"",
]


def generated_bodies(count: int) -> list[bytes]:
    """Rows of numbers written in every way JSON allows, some of them broken in one place."""
    rng = random.Random(7)
    numbers: list[Any] = [0, -0.0, 1, -17, 2**53 + 1, 2**63 - 1, 3.25, -1e-7, 6.02e23, 1e-310, 0.1]
    breakers: list[Any] = [None, True, False, "1", [1], [], {}, [[2]]]
    bodies = []
    for _ in range(count):
        rows = [[rng.choice(numbers) for _ in range(WIDTH)] for _ in range(rng.randint(1, 5))]
        if rng.random() < 0.5:
            row = rng.randrange(len(rows))
            rows[row][rng.randrange(WIDTH)] = rng.choice(breakers)
        text = json.dumps({"instances": rows}, indent=rng.choice([None, 1]))
        bodies.append(text.encode())
    return bodies


@pytest.mark.parametrize("body", ODD_BODIES + generated_bodies(300))
def test_the_fast_path_builds_the_checked_paths_matrix_or_leaves_the_body_to_it(body: bytes) -> None:
    encoder = numeric_encoder()
    expected = checked(encoder, body)
    if isinstance(expected, str) and "infinite" in expected:
        # A value beyond float32 is refused on both paths, with the same reason.
        with pytest.raises(RequestError) as refused:
            encoder.numbers(body)
        assert str(refused.value) == expected
        return
    fast = encoder.numbers(body)
    if fast is None:
        return
    assert not isinstance(expected, str), f"the fast path accepted what the checked path refuses: {expected}"
    assert fast.dtype == np.float32
    np.testing.assert_array_equal(fast, expected)


def test_rows_of_numbers_take_the_fast_path_and_others_do_not() -> None:
    rows = np.random.default_rng(0).normal(size=(64, WIDTH)).round(3)
    body = json.dumps({"instances": rows.tolist()}).encode()
    np.testing.assert_array_equal(numeric_instances(body, WIDTH), rows)
    assert numeric_instances(b'{"instances": [[1, 2, 3]]}', WIDTH) is not None
    for odd in (b'{"instances": [[1, [2], 3]]}', b'{"instances": [[1, 2], [3, 4, 5, 6]]}', b'{"instances": []}'):
        assert numeric_instances(odd, WIDTH) is None, odd


def test_too_many_rows_are_refused_on_the_fast_path_as_on_the_checked_one() -> None:
    encoder = numeric_encoder(max_rows=2)
    with pytest.raises(RequestError, match="3 rows in one request; the limit is 2"):
        encoder.numbers(b'{"instances": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}')


def test_a_model_with_categories_never_takes_the_fast_path() -> None:
    metadata = numeric_encoder().metadata.model_copy(
        update={"features": [FeatureInfo(name="a", kind="numeric"), FeatureInfo(name="b", kind="categorical")]}
    )
    assert FeatureEncoder(metadata).numbers(b'{"instances": [[1, 2]]}') is None
