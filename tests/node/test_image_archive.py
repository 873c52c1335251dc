"""Image archives are renamed on their way into the node's containerd: an OCI layout's bare tag and a
docker archive's RepoTags become exactly the name the caller chose, the blobs pass untouched, and a
bad name or an archive with several images is refused with a message naming it."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.support.image_archive import REF_NAME, split_reference, write_renamed


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def _read(stream: io.BytesIO) -> dict[str, bytes]:
    stream.seek(0)
    with tarfile.open(fileobj=stream) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def _manifest(tag: str | None) -> dict[str, object]:
    entry: dict[str, object] = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:ab"}
    if tag is not None:
        entry["annotations"] = {REF_NAME: tag, "keep": "me"}
    return entry


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("optiloop.local/busybox:1", ("optiloop.local/busybox", "1")),
        ("localhost:5000/team/jobs:v1.2", ("localhost:5000/team/jobs", "v1.2")),
        ("localhost/operator:dev", ("localhost/operator", "dev")),
    ],
)
def test_fully_qualified_names_split_into_repository_and_tag(name: str, expected: tuple[str, str]) -> None:
    assert split_reference(name) == expected


@pytest.mark.parametrize("name", ["busybox:1", "library/busybox:1", "optiloop.local/busybox", "Optiloop.local/x:1"])
def test_names_the_kubelet_would_not_find_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"image name '{name}' must be fully qualified"):
        split_reference(name)


def test_an_oci_layout_gets_the_tag_and_keeps_its_blobs(tmp_path: Path) -> None:
    blob = b"layer bytes" * 100
    index = {"schemaVersion": 2, "manifests": [_manifest("pause")]}
    archive = _tar(
        tmp_path / "oci.tar",
        {"./oci-layout": b"{}", "./index.json": json.dumps(index).encode(), "./blobs/sha256/ab": blob},
    )
    out = io.BytesIO()
    write_renamed(archive, "optiloop.local/pause:1", out)
    files = _read(out)
    assert json.loads(files["./index.json"])["manifests"][0]["annotations"] == {REF_NAME: "1", "keep": "me"}
    assert files["./blobs/sha256/ab"] == blob
    assert files["./oci-layout"] == b"{}"


def test_an_unnamed_oci_image_gets_the_tag(tmp_path: Path) -> None:
    index = {"schemaVersion": 2, "manifests": [_manifest(None)]}
    out = io.BytesIO()
    write_renamed(_tar(tmp_path / "oci.tar", {"index.json": json.dumps(index).encode()}), "localhost/x:dev", out)
    assert json.loads(_read(out)["index.json"])["manifests"][0]["annotations"] == {REF_NAME: "dev"}


def test_a_docker_archive_gets_the_whole_name(tmp_path: Path) -> None:
    manifest = [{"Config": "c.json", "RepoTags": ["optiloop-jobs:latest"], "Layers": ["l/layer.tar"]}]
    archive = _tar(tmp_path / "docker.tar", {"manifest.json": json.dumps(manifest).encode(), "c.json": b"{}"})
    out = io.BytesIO()
    write_renamed(archive, "optiloop.local/jobs:dev", out)
    assert json.loads(_read(out)["manifest.json"])[0]["RepoTags"] == ["optiloop.local/jobs:dev"]


def test_archives_with_several_images_or_none_are_refused(tmp_path: Path) -> None:
    two = _tar(
        tmp_path / "two.tar", {"index.json": json.dumps({"manifests": [_manifest("a"), _manifest("b")]}).encode()}
    )
    with pytest.raises(ValueError, match=r"two.tar: index.json lists 2 images, expected one"):
        write_renamed(two, "optiloop.local/x:1", io.BytesIO())
    empty = _tar(tmp_path / "empty.tar", {"README": b"not an image"})
    with pytest.raises(ValueError, match=r"empty.tar is neither an OCI layout"):
        write_renamed(empty, "optiloop.local/x:1", io.BytesIO())
