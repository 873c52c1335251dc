"""Datasets load from bundled sets, CSV and Parquet, and every bad file gets an error naming it."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from optiloop.api.spec import DatasetSpec
from optiloop.jobs.data import load_builtin, load_dataset
from optiloop.jobs.errors import DataError


@pytest.mark.parametrize(
    ("name", "rows"), [("breast_cancer", 569), ("digits", 1797), ("wine", 178), ("iris", 150), ("diabetes", 442)]
)
def test_builtin_datasets_load_with_a_target_column(name: str, rows: int) -> None:
    frame = load_builtin(name)
    assert len(frame) == rows
    assert "target" in frame.columns


def test_unknown_builtin_lists_what_exists() -> None:
    with pytest.raises(DataError, match="bundled datasets: breast_cancer, digits, wine, iris, diabetes"):
        load_builtin("mnist")


def _spec(path: Path, **extra: object) -> DatasetSpec:
    # file:// is what the local runner uses; the CRD itself accepts only pvc://, s3:// and builtin://.
    fields: dict[str, object] = {"uri": f"file://{path}", "format": None, "s3_endpoint": None, **extra}
    return DatasetSpec.model_construct(**fields)  # type: ignore[arg-type]


def test_csv_and_parquet_load(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "target": [0, 1, 0]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    pd.testing.assert_frame_equal(load_dataset(_spec(tmp_path / "d.csv")), frame)
    pd.testing.assert_frame_equal(load_dataset(_spec(tmp_path / "d.parquet")), frame)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "is empty"),
        ("header-only.csv", b"\n\n", "is empty"),
        ("semicolons.csv", b"x;y;target\n1;2;0\n3;4;1\n", "separated by semicolons"),
        ("garbage.csv", bytes(range(256)) * 4, "not UTF-8 text"),
        ("nul.csv", b"x,target\n1,\x000\n", "NUL bytes"),
        ("broken.parquet", b"PAR1 this is not parquet", "not a readable Parquet file"),
        ("data.bin", b"x,target\n1,0\n", "cannot tell the format"),
        ("missing.csv", None, "does not exist"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message) as raised:
        load_dataset(_spec(tmp_path / name))
    assert name in str(raised.value)


def test_ragged_csv_is_reported(tmp_path: Path) -> None:
    (tmp_path / "ragged.csv").write_bytes(b"a,b\n1,2\n1,2,3,4\n")
    with pytest.raises(DataError, match="not valid CSV"):
        load_dataset(_spec(tmp_path / "ragged.csv"))


def test_format_field_overrides_the_extension(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    pd.DataFrame({"x": [1], "target": [0]}).to_parquet(buffer)
    (tmp_path / "data.bin").write_bytes(buffer.getvalue())
    assert len(load_dataset(_spec(tmp_path / "data.bin", format="parquet"))) == 1
