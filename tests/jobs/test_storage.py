"""Artifacts are written atomically, count as finished only with an intact completion marker, on disk and on S3."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from optiloop.api.spec import DatasetSpec
from optiloop.jobs.data import load_dataset
from optiloop.jobs.errors import StorageError
from optiloop.jobs.storage import COMPLETE_MARKER, LocalStore, StageWriter, completion_marker, is_complete, open_store


@pytest.fixture(params=["local", "pvc", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    if request.param == "local":
        return open_store(str(tmp_path / "artifacts"))
    if request.param == "pvc":
        monkeypatch.setenv("OPTILOOP_PVC_ROOT", str(tmp_path / "mnt"))
        store = open_store("pvc://claim/models/iris")
        assert isinstance(store, LocalStore)
        assert store.root == tmp_path / "mnt" / "claim" / "models" / "iris"
        return store
    bucket = request.getfixturevalue("bucket")
    return open_store(f"s3://{bucket}/models/iris")


def test_finished_stage_is_complete_and_readable(store: object) -> None:
    with StageWriter(store, "r1/tuning") as out:  # type: ignore[arg-type]
        out.write_json("result.json", {"ok": True})
        out.write_bytes("model.bin", b"\x00weights")
    assert is_complete(store, "r1/tuning")  # type: ignore[arg-type]
    marker = completion_marker(store, "r1/tuning")  # type: ignore[arg-type]
    assert set(marker["files"]) == {"result.json", "model.bin"}  # type: ignore[index]
    assert store.read_bytes("r1/tuning/model.bin") == b"\x00weights"  # type: ignore[attr-defined]


def _killed_while_writing(store: object, prefix: str, name: str, data: bytes) -> None:
    with StageWriter(store, prefix) as out:  # type: ignore[arg-type]
        out.write_bytes(name, data)
        raise RuntimeError("killed")


def test_stage_interrupted_mid_write_is_not_complete(store: object) -> None:
    with pytest.raises(RuntimeError):
        _killed_while_writing(store, "r1/compression", "candidate-1.onnx", b"half")
    assert not is_complete(store, "r1/compression")  # type: ignore[arg-type]
    assert not store.exists(f"r1/compression/{COMPLETE_MARKER}")  # type: ignore[attr-defined]


def test_rewriting_a_stage_removes_the_old_marker_first(store: object) -> None:
    with StageWriter(store, "r1/data") as out:  # type: ignore[arg-type]
        out.write_bytes("train.parquet", b"v1")
    with pytest.raises(RuntimeError):
        _killed_while_writing(store, "r1/data", "train.parquet", b"v2-partial")
    assert not is_complete(store, "r1/data")  # type: ignore[arg-type]


def test_a_changed_file_breaks_completeness(store: object) -> None:
    with StageWriter(store, "r1/features") as out:  # type: ignore[arg-type]
        out.write_bytes("preprocessing.json", b"{}")
    store.write_bytes("r1/features/preprocessing.json", b'{"tampered": 1}')  # type: ignore[attr-defined]
    assert not is_complete(store, "r1/features")  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/../../b", "./x", ""])
def test_keys_cannot_escape_the_store(store: object, key: str) -> None:
    with pytest.raises(StorageError, match="invalid artifact key"):
        store.write_bytes(key, b"x")  # type: ignore[attr-defined]


def test_missing_artifact_error_names_it(store: object) -> None:
    with pytest.raises(StorageError, match=r"r9/nothing\.json does not exist"):
        store.read_bytes("r9/nothing.json")  # type: ignore[attr-defined]


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    for _ in range(3):
        store.write_bytes("a/b.json", b"{}")
    assert os.listdir(tmp_path / "a") == ["b.json"]


def test_unsupported_scheme_is_refused() -> None:
    with pytest.raises(StorageError, match="unsupported artifact URI"):
        open_store("gs://bucket/x")


def test_dataset_loads_from_s3(bucket: str, s3_endpoint: str) -> None:
    import boto3

    frame = pd.DataFrame({"x": [1.0, 2.0], "target": [0, 1]})
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(
        Bucket=bucket, Key="data/train.csv", Body=frame.to_csv(index=False).encode()
    )
    spec = DatasetSpec(uri=f"s3://{bucket}/data/train.csv", s3_endpoint=s3_endpoint)
    pd.testing.assert_frame_equal(load_dataset(spec), frame)
