"""The drift monitor's init container (``python -m optiloop.jobs.fetch``) copies a revision's
finished model directory out of S3 with every file hash-checked, and never leaves a copy that
passes for finished when the export was unfinished, tampered with, or points outside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from optiloop.formats.errors import FormatError
from optiloop.formats.model_dir import COMPLETE_MARKER, read_model_directory
from optiloop.jobs.errors import StorageError
from optiloop.jobs.fetch import fetch_model_directory
from optiloop.jobs.storage import open_store
from tests.support.model_dirs import city_model, write_model_directory


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished model directory as the export writes it (the drift reference included)."""
    return write_model_directory(tmp_path_factory.mktemp("export") / "model", city_model())


def upload(endpoint: str, bucket: str, prefix: str, root: Path, skip: tuple[str, ...] = ()) -> None:
    client = boto3.client("s3", endpoint_url=endpoint)
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_file() and name not in skip:
            client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=path.read_bytes())


def run_fetch(source: str, to: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "optiloop.jobs.fetch", "--source", source, "--to", str(to)]
    return subprocess.run(command, env=dict(os.environ), capture_output=True, text=True, timeout=120, check=False)


def test_a_finished_directory_is_copied_and_reads_as_the_export(
    s3_endpoint: str, bucket: str, exported: Path, tmp_path: Path
) -> None:
    upload(s3_endpoint, bucket, "iris/r3/model", exported)
    done = run_fetch(f"s3://{bucket}/iris/r3/model", tmp_path / "model")
    assert done.returncode == 0, done.stderr
    copy = read_model_directory(tmp_path / "model", reference=True)
    original = read_model_directory(exported, reference=True)
    assert copy.marker == original.marker
    assert copy.read("model.onnx") == original.read("model.onnx")


def test_an_unfinished_export_is_refused_and_nothing_passes_for_finished(
    s3_endpoint: str, bucket: str, exported: Path, tmp_path: Path
) -> None:
    upload(s3_endpoint, bucket, "iris/r1/model", exported, skip=(COMPLETE_MARKER,))
    done = run_fetch(f"s3://{bucket}/iris/r1/model", tmp_path / "model")
    assert done.returncode == 1
    assert "did not finish" in done.stderr
    assert not (tmp_path / "model" / COMPLETE_MARKER).exists()


def test_a_file_changed_after_the_export_is_refused_with_its_name(
    s3_endpoint: str, bucket: str, exported: Path, tmp_path: Path
) -> None:
    upload(s3_endpoint, bucket, "iris/r2/model", exported)
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(
        Bucket=bucket, Key="iris/r2/model/metadata.json", Body=b'{"features": []}'
    )
    store = open_store(f"s3://{bucket}/iris")
    with pytest.raises(FormatError, match=r"metadata\.json: content differs .*SHA-256"):
        fetch_model_directory(store, "r2/model", tmp_path / "model")
    with pytest.raises(FormatError, match=r"no _COMPLETE\.json"):
        read_model_directory(tmp_path / "model")


def test_a_marker_entry_pointing_outside_writes_nothing_outside(
    s3_endpoint: str, bucket: str, exported: Path, tmp_path: Path
) -> None:
    marker = json.loads((exported / COMPLETE_MARKER).read_text())
    marker["files"]["../../escaped.json"] = {"sha256": "0" * 64, "bytes": 2}
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    upload(s3_endpoint, bucket, "iris/r4/model", exported, skip=(COMPLETE_MARKER,))
    client.put_object(Bucket=bucket, Key=f"iris/r4/model/{COMPLETE_MARKER}", Body=json.dumps(marker).encode())
    store = open_store(f"s3://{bucket}/iris")
    with pytest.raises(FormatError, match="points outside the model directory"):
        fetch_model_directory(store, "r4/model", tmp_path / "deep" / "model")
    assert not (tmp_path / "escaped.json").exists()
    assert not list(tmp_path.rglob("escaped.json"))


def test_a_missing_revision_and_bad_input_are_told_apart(s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    store = open_store(f"s3://{bucket}/iris")
    with pytest.raises(StorageError, match=r"no _COMPLETE\.json"):
        fetch_model_directory(store, "r9/model", tmp_path / "model")
    done = run_fetch("ftp://elsewhere/model", tmp_path / "model")
    assert done.returncode == 2
    assert "--source" in done.stderr
    assert "unsupported artifact URI" in done.stderr
