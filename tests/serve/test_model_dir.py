"""The predictor serves only finished model directories holding ONNX and JSON, nothing that
points outside the directory or is linked in, no file whose hash changed and no ONNX file that is
not ONNX; a temporary file left by a killed write does not stop it; and it answers what a request
can and cannot be encoded to."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from optiloop.api.jobs import FeatureInfo, ModelLineage, ModelMetadata
from optiloop.formats.model_dir import LocalDirectory
from optiloop.formats.model_dir import write_model_directory as write_files
from optiloop.serve.encoding import FeatureEncoder, RequestError
from optiloop.serve.model_dir import ModelDirectoryError, load_model_directory
from tests.support.model_dirs import city_model, write_model_directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_directory(tmp_path_factory.mktemp("m") / "model", city_model())


def copy_dir(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def rewrite(target: Path, name: str, data: bytes) -> None:
    """Replace ``name`` and record its new hash in the marker, as a consistent (but wrong) export would."""
    (target / name).write_bytes(data)
    marker = json.loads((target / "_COMPLETE.json").read_text())
    marker["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (target / "_COMPLETE.json").write_text(json.dumps(marker))


def test_a_finished_directory_loads(model_dir: Path) -> None:
    loaded = load_model_directory(model_dir)
    assert [f.name for f in loaded.metadata.features] == ["a", "b", "city"]
    assert loaded.onnx_bytes == (model_dir / "model.onnx").read_bytes()


@pytest.mark.parametrize("name", ["model.pkl", "weights.pt", "scaler.joblib", "extra.bin", "model.pickle"])
def test_pickles_and_checkpoints_are_refused(model_dir: Path, tmp_path: Path, name: str) -> None:
    target = copy_dir(model_dir, tmp_path / "m")
    (target / name).write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelDirectoryError, match=rf"{name}: only ONNX, JSON and Triton config files are served"):
        load_model_directory(target)


def test_a_directory_without_its_completion_marker_is_refused(model_dir: Path, tmp_path: Path) -> None:
    target = copy_dir(model_dir, tmp_path / "m")
    (target / "_COMPLETE.json").unlink()
    with pytest.raises(ModelDirectoryError, match=r"no _COMPLETE\.json; the export did not finish"):
        load_model_directory(target)


def test_a_changed_model_file_is_refused(model_dir: Path, tmp_path: Path) -> None:
    target = copy_dir(model_dir, tmp_path / "m")
    (target / "model.onnx").write_bytes((target / "model.onnx").read_bytes()[:-10])
    with pytest.raises(ModelDirectoryError, match=r"model\.onnx: content differs"):
        load_model_directory(target)


def test_a_marker_entry_outside_the_directory_is_refused(model_dir: Path, tmp_path: Path) -> None:
    target = copy_dir(model_dir, tmp_path / "m")
    marker = json.loads((target / "_COMPLETE.json").read_text())
    marker["files"]["../../etc/passwd.json"] = {"sha256": "0" * 64, "size": 1}
    (target / "_COMPLETE.json").write_text(json.dumps(marker))
    with pytest.raises(ModelDirectoryError, match=r"'../../etc/passwd.json' points outside the model directory"):
        load_model_directory(target)


def test_a_model_file_outside_the_directory_is_refused(model_dir: Path, tmp_path: Path) -> None:
    target = copy_dir(model_dir, tmp_path / "m")
    metadata = json.loads((target / "metadata.json").read_text())
    metadata["modelFile"] = "../other/model.onnx"
    (target / "metadata.json").write_text(json.dumps(metadata))
    rewrite(target, "metadata.json", json.dumps(metadata).encode())  # a consistent marker cannot make it acceptable
    with pytest.raises(ModelDirectoryError, match="points outside the model directory"):
        load_model_directory(target)


def test_a_symlink_leaving_the_directory_is_refused(model_dir: Path, tmp_path: Path) -> None:
    target = copy_dir(model_dir, tmp_path / "m")
    (tmp_path / "outside.json").write_text("{}")
    os.symlink(tmp_path / "outside.json", target / "leak.json")
    with pytest.raises(ModelDirectoryError, match=r"leak\.json: a symbolic link; a model directory holds plain files"):
        load_model_directory(target)


def test_a_symlink_inside_the_directory_is_refused_too(model_dir: Path, tmp_path: Path) -> None:
    target = copy_dir(model_dir, tmp_path / "m")
    (target / "model.onnx").rename(target / "real.onnx")
    os.symlink(target / "real.onnx", target / "model.onnx")  # the listed name now points elsewhere
    with pytest.raises(ModelDirectoryError, match=r"model\.onnx: a symbolic link"):
        load_model_directory(target)


def test_a_listed_file_that_is_gone_is_named(model_dir: Path, tmp_path: Path) -> None:
    target = copy_dir(model_dir, tmp_path / "m")
    (target / "triton" / "m" / "1" / "model.onnx").unlink()
    with pytest.raises(ModelDirectoryError, match=r"triton/m/1/model\.onnx is listed in _COMPLETE\.json but missing"):
        load_model_directory(target)


def test_a_temporary_file_left_by_a_killed_write_is_skipped(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = copy_dir(model_dir, tmp_path / "m")
    # What LocalStore and the formats writer leave when SIGKILLed between write and rename.
    (target / ".model.onnx.tmp-4242-0badc0de").write_bytes(b"half a model")
    loaded = load_model_directory(target)
    assert loaded.onnx_bytes == (model_dir / "model.onnx").read_bytes()
    assert ".model.onnx.tmp-4242-0badc0de, a temporary file left by an interrupted write" in caplog.text


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "the file is empty"),
        (b"\x80\x04K\x01.", "field number 0|runs past the end|wire type"),
        (b"ir_version: 8\ngraph { }\n", "wire type|field number 0|runs past the end"),
    ],
    ids=["empty", "pickle", "text"],
)
def test_an_onnx_file_that_is_not_onnx_is_named(model_dir: Path, tmp_path: Path, content: bytes, problem: str) -> None:
    target = copy_dir(model_dir, tmp_path / "m")
    rewrite(target, "model.onnx", content)
    with pytest.raises(ModelDirectoryError, match=rf"model\.onnx: not an ONNX model \(.*({problem})"):
        load_model_directory(target)


def test_a_truncated_onnx_file_is_named_even_with_a_matching_hash(model_dir: Path, tmp_path: Path) -> None:
    target = copy_dir(model_dir, tmp_path / "m")
    rewrite(target, "model.onnx", (model_dir / "model.onnx").read_bytes()[:-100])
    with pytest.raises(ModelDirectoryError, match=r"model\.onnx: not an ONNX model"):
        load_model_directory(target)


def test_invalid_metadata_names_the_field(model_dir: Path, tmp_path: Path) -> None:
    target = copy_dir(model_dir, tmp_path / "m")
    metadata = json.loads((target / "metadata.json").read_text())
    metadata["task"] = "clustering"
    rewrite(target, "metadata.json", json.dumps(metadata).encode())
    with pytest.raises(ModelDirectoryError, match=r"metadata.json: task: Input should be"):
        load_model_directory(target)


class DiesAfter:
    """A local target whose writer is killed after ``writes`` files, as a SIGKILLed Job would be."""

    def __init__(self, root: Path, writes: int) -> None:
        self.inner, self.root, self.left = LocalDirectory(root), root, writes

    def write_bytes(self, key: str, data: bytes) -> None:
        if self.left == 0:
            (self.root / f".{Path(key).name}.tmp-99-abcdef01").write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt("killed mid-write")
        self.left -= 1
        self.inner.write_bytes(key, data)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def test_a_directory_rewritten_by_a_writer_killed_part_way_is_never_taken_for_finished(
    model_dir: Path, tmp_path: Path
) -> None:
    target = copy_dir(model_dir, tmp_path / "m")
    files = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    files.pop("_COMPLETE.json")
    with pytest.raises(KeyboardInterrupt):
        write_files(DiesAfter(target, 2), files, {"stage": "export"})
    with pytest.raises(ModelDirectoryError, match=r"no _COMPLETE\.json; the export did not finish"):
        load_model_directory(target)
    write_files(LocalDirectory(target), files, {"stage": "export"})  # the retry finishes
    assert load_model_directory(target).onnx_bytes == files["model.onnx"]


# --- request encoding --------------------------------------------------------


@pytest.fixture(scope="module")
def encoder(model_dir: Path) -> FeatureEncoder:
    return FeatureEncoder(load_model_directory(model_dir).metadata)


def test_rows_as_lists_and_objects_encode_alike(encoder: FeatureEncoder) -> None:
    codes = encoder.codes[2]
    as_lists = encoder.rows([[0.5, None, "rome"], [1, 2.0, "paris"]])
    as_objects = encoder.rows([{"a": 0.5, "city": "rome"}, {"a": 1, "b": 2.0, "city": "paris"}])
    np.testing.assert_array_equal(as_lists, as_objects)
    assert np.isnan(as_lists[0, 1])
    assert as_lists[0, 2] == codes["rome"]
    assert as_lists[1, 2] == -1.0


def test_tensors_per_feature_and_as_one_matrix_encode_alike(encoder: FeatureEncoder) -> None:
    per_feature = encoder.tensors(
        [("a", np.array([0.5, 1.0])), ("b", np.array([[np.nan], [2.0]])), ("city", np.array([b"rome", b"lima"]))]
    )
    # A single matrix carries raw values too (a BYTES tensor when categories are words).
    matrix = encoder.tensors([("x", np.array([[0.5, None, "rome"], [1.0, 2.0, "lima"]], dtype=object))])
    np.testing.assert_array_equal(per_feature, matrix)


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([], "non-empty list"),
        ({"a": 1}, "non-empty list"),
        ([[1, 2]], "row 0: 2 values, the model takes 3"),
        ([[1, "two", "rome"]], "row 0, feature 'b': expected a number or null, got str 'two'"),
        ([[1, True, "rome"]], "feature 'b': expected a number"),
        ([{"a": 1, "c1ty": "rome"}], "row 0: unknown features 'c1ty'"),
        ([[1, 2, ["rome"]]], "feature 'city': expected a category value"),
        ([[1, 2, "rome"], "row"], "row 1: expected a list of 3 values or an object"),
    ],
)
def test_bad_rows_name_the_row_and_feature(encoder: FeatureEncoder, instances: object, message: str) -> None:
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace("[", r"\[")):
        encoder.rows(instances)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([("x", np.zeros((2, 4)))], r"input 'x' has shape \[2, 4\]; the model takes \[N, 3\]"),
        ([("a", np.zeros(2)), ("b", np.zeros(2))], "missing inputs 'city'"),
        ([("a", np.zeros(2)), ("b", np.zeros(3)), ("city", np.array(["rome"] * 2))], "same, non-zero number of rows"),
        ([("a", np.array(["x", "y"])), ("b", np.zeros(2)), ("city", np.array(["rome"] * 2))], "expected a number"),
    ],
)
def test_bad_tensors_say_what_is_wrong(
    encoder: FeatureEncoder, tensors: list[tuple[str, np.ndarray]], message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        encoder.tensors(tensors)


def test_numeric_models_encode_plain_rows_fast_and_still_refuse_bad_values() -> None:
    metadata = ModelMetadata(
        task="regression",
        target="y",
        output_names=["predictions"],
        features=[FeatureInfo(name="a", kind="numeric"), FeatureInfo(name="b", kind="numeric")],
        opset=17,
        precision="fp32",
        test_metrics={},
        size_bytes=1,
        parameters=1,
        lineage=ModelLineage(resource="m", revision=1, study_name="m-r1", trial=0, candidate="baseline"),
    )
    numeric = FeatureEncoder(metadata)
    np.testing.assert_array_equal(numeric.rows([[1, 2.5], [3, 4]]), np.array([[1, 2.5], [3, 4]], dtype=np.float32))
    assert np.isnan(numeric.rows([[1, None]])[0, 1])
    with pytest.raises(RequestError, match="row 0, feature 'b': expected a number or null, got str '2'"):
        numeric.rows([[1, "2"]])
    with pytest.raises(RequestError, match="row 1: 3 values, the model takes 2"):
        numeric.rows([[1, 2], [1, 2, 3]])
    with pytest.raises(RequestError, match="feature 'a': expected a number or null, got bool"):
        numeric.rows([[True, False]])
