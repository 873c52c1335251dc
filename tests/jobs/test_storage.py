"""Artifacts are written atomically, count as finished only with an intact completion marker, on disk and on S3."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from optiloop.api.spec import DatasetSpec
from optiloop.formats.model_dir import COMPLETE_MARKER
from optiloop.jobs.data import load_dataset
from optiloop.jobs.errors import StorageError
from optiloop.jobs.storage import (
    LocalStore,
    StageWriter,
    completion_marker,
    credentials_for,
    is_complete,
    open_store,
)


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


class _S3StandIn(http.server.BaseHTTPRequestHandler):
    """A loopback S3 endpoint that records who asked (the access key of each signed request)
    and answers every HEAD with the server's ``head_status`` and no body, as S3 does for a HEAD
    it refuses (403) or throttles (503 SlowDown); a GET gets ``a,target\\n1,0\\n``, a PUT 200."""

    def _answer(self, status: int, body: bytes = b"") -> None:
        signature = self.headers.get("Authorization", "")
        key_id = signature.partition("Credential=")[2].partition("/")[0]
        self.server.requests.append((self.command, self.path, key_id))  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._answer(self.server.head_status)  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._answer(200, b"a,target\n1,0\n")

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer(200)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def s3_stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _S3StandIn)
    server.requests = []  # type: ignore[attr-defined]
    server.head_status = 404  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name, value in {"AWS_ACCESS_KEY_ID": "artifacts-key", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1",
                        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_port}"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("status", [403, 503])
def test_a_refused_or_throttled_check_is_an_error_not_absent(s3_stand_in: http.server.HTTPServer, status: int) -> None:
    """A 403 or a throttled HEAD must not read as "absent": a finished stage would look unfinished
    and be run again, its completion marker deleted."""
    s3_stand_in.head_status = status  # type: ignore[attr-defined]
    store = open_store("s3://models/iris")
    with pytest.raises(StorageError, match=rf"bucket 'models', key 'iris/r1/tuning/{COMPLETE_MARKER}'.*{status}"):
        store.exists(f"r1/tuning/{COMPLETE_MARKER}")
    with pytest.raises(StorageError, match="cannot tell whether"):
        completion_marker(store, "r1/tuning")


def test_only_not_found_means_absent(store: object) -> None:
    assert not store.exists("r1/nothing.json")  # type: ignore[attr-defined]
    assert completion_marker(store, "r1/nothing") is None  # type: ignore[arg-type]


def test_the_dataset_is_read_with_its_own_credentials_and_artifacts_with_the_stores(
    s3_stand_in: http.server.HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two Secrets, two identities: the dataset's object is read with the OPTILOOP_DATASET_ set
    (from dataset.credentialsSecretRef), everything else with the artifact store's AWS_* set, even
    in the same bucket."""
    endpoint = f"http://127.0.0.1:{s3_stand_in.server_port}"
    monkeypatch.setenv("OPTILOOP_DATASET_URI", "s3://shared/data/train.csv")
    monkeypatch.setenv("OPTILOOP_DATASET_AWS_ACCESS_KEY_ID", "dataset-key")
    monkeypatch.setenv("OPTILOOP_DATASET_AWS_SECRET_ACCESS_KEY", "dataset-secret")
    frame = load_dataset(DatasetSpec(uri="s3://shared/data/train.csv", s3_endpoint=endpoint))
    assert list(frame.columns) == ["a", "target"]
    artifacts = open_store("s3://shared/data")
    artifacts.write_bytes("r1/result.json", b"{}")
    assert not artifacts.exists("train.csv.bak")
    requests = s3_stand_in.requests  # type: ignore[attr-defined]
    assert requests == [
        ("GET", "/shared/data/train.csv", "dataset-key"),
        ("PUT", "/shared/data/r1/result.json", "artifacts-key"),
        ("HEAD", "/shared/data/train.csv.bak", "artifacts-key"),
    ]


def test_credentials_are_chosen_by_the_objects_uri() -> None:
    dataset = {"OPTILOOP_DATASET_URI": "s3://data/train.csv", "OPTILOOP_DATASET_AWS_ACCESS_KEY_ID": "k",
               "OPTILOOP_DATASET_AWS_SECRET_ACCESS_KEY": "s", "OPTILOOP_DATASET_AWS_REGION": "eu-west-1"}  # fmt: skip
    chosen = credentials_for("s3://data/train.csv", dataset)
    assert chosen is not None
    assert (chosen.access_key_id, chosen.region) == ("k", "eu-west-1")
    assert credentials_for("s3://data/train.csv.1", dataset) is None, "another object: the artifact store's"
    assert credentials_for("s3://data/models/r1/x", dataset) is None
    no_secret = {"OPTILOOP_DATASET_URI": "s3://data/train.csv"}
    assert credentials_for("s3://data/train.csv", no_secret) is None, "no dataset Secret: the pod's own identity"
    half = {"OPTILOOP_DATASET_URI": "s3://data/train.csv", "OPTILOOP_DATASET_AWS_ACCESS_KEY_ID": "k"}
    with pytest.raises(StorageError, match=r"spec.dataset.credentialsSecretRef.*no AWS_SECRET_ACCESS_KEY"):
        credentials_for("s3://data/train.csv", half)
