"""Image archives (OCI layouts and ``docker save`` archives in a tar) renamed on the fly for import.

containerd's CRI plugin needs every name of an image to be a normalized reference. ``ctr images
import`` keeps an archive's own names: a bare OCI tag becomes ``import-<date>:<tag>``, a short docker
name ``docker.io/library/...``, and one bad name makes the image unusable under all its names
("image ... not found" when a pod starts). So the archive's naming metadata (``index.json``'s
``org.opencontainers.image.ref.name`` or ``manifest.json``'s ``RepoTags``) is rewritten while the tar
streams to ``ctr``, and the image lands under exactly the name the caller chose. The blobs pass
through untouched (neither file is content-addressed), so nothing is copied to disk.
"""

from __future__ import annotations

import copy
import io
import json
import re
import tarfile
from pathlib import Path
from typing import IO, Any

REF_NAME = "org.opencontainers.image.ref.name"
_REFERENCE = re.compile(
    r"^(?P<repository>[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$"
)


def split_reference(name: str) -> tuple[str, str]:
    """``registry/path:tag`` -> (``registry/path``, ``tag``); the registry part must look like a host
    (a dot, a port or ``localhost``), the form the kubelet looks images up by."""
    match = _REFERENCE.match(name)
    host = name.split("/", 1)[0]
    if not match or not ("." in host or ":" in host or host == "localhost"):
        raise ValueError(f"image name {name!r} must be fully qualified with a tag, such as optiloop.local/busybox:1")
    return match["repository"], match["tag"]


def write_renamed(archive: Path, name: str, out: IO[bytes]) -> None:
    """Stream ``archive`` to ``out`` as an uncompressed tar whose one image is named ``name``.

    The repository goes to ``ctr images import --base-name`` and the bare tag into the OCI index, or
    the whole name into a docker archive's ``RepoTags``. Raises ``ValueError`` naming the archive when
    it holds no image or more than one."""
    _, tag = split_reference(name)
    found = False
    with tarfile.open(archive, mode="r|*") as source, tarfile.open(fileobj=out, mode="w|") as target:
        for member in source:
            data = source.extractfile(member) if member.isfile() else None
            base = member.name.removeprefix("./")
            if data is not None and base in ("index.json", "manifest.json"):
                document = json.load(data)
                renamed: Any
                if base == "index.json":
                    renamed = _rename_index(archive, document, tag)
                else:
                    renamed = _rename_manifest(archive, document, name)
                content = json.dumps(renamed).encode()
                member = copy.copy(member)
                member.size = len(content)
                target.addfile(member, io.BytesIO(content))
                found = True
            else:
                target.addfile(member, data)
    if not found:
        raise ValueError(f"{archive} is neither an OCI layout (index.json) nor a docker archive (manifest.json)")


def _rename_index(archive: Path, index: dict[str, Any], tag: str) -> dict[str, Any]:
    manifests = index.get("manifests") or []
    if len(manifests) != 1:
        raise ValueError(f"{archive}: index.json lists {len(manifests)} images, expected one")
    (manifest,) = manifests
    manifest["annotations"] = {**(manifest.get("annotations") or {}), REF_NAME: tag}
    return index


def _rename_manifest(archive: Path, manifest: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    if len(manifest) != 1:
        raise ValueError(f"{archive}: manifest.json lists {len(manifest)} images, expected one")
    manifest[0]["RepoTags"] = [name]
    return manifest
