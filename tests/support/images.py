"""optiloop's images as hack/build-images.sh leaves them (docker-archives), unpacked with umoci and
run from their own root filesystem as the image's user, with no Docker engine and no container
runtime: a private mount and PID namespace, the root filesystem read-only (as the operator's pods
mount it) with a tmpfs on /tmp, and chroot. The network is the host's, so servers started this way
must be told to listen on loopback."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.manifests import REPO_ROOT

BUILD_SCRIPT = REPO_ROOT / "hack" / "build-images.sh"
TARGETS = ("operator", "jobs", "serve", "drift")


class ImagesMissingError(Exception):
    """The images of this checkout are not built (or cannot be run here); the message says why."""


@dataclass(frozen=True)
class BuiltImage:
    """One target's archive and the name it is imported under."""

    target: str
    name: str
    archive: Path


def built_image(target: str) -> BuiltImage:
    """This checkout's image of ``target``, as ``hack/build-images.sh --print-dir`` reports it."""
    for tool in ("umoci", "unshare", "chroot", "tar"):
        if shutil.which(tool) is None:
            raise ImagesMissingError(f"{tool} is not installed (make install installs umoci)")
    run = subprocess.run([str(BUILD_SCRIPT), "--print-dir", target], capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise ImagesMissingError(run.stderr.strip() or f"{BUILD_SCRIPT} --print-dir failed")
    listing = Path(run.stdout.strip()) / "images.tsv"
    (line,) = listing.read_text().splitlines()
    listed, name, archive = line.split("\t")
    return BuiltImage(listed, name, Path(archive))


@dataclass(frozen=True)
class UnpackedImage:
    """An image's root filesystem and configuration.

    ``config`` is the image's own configuration (Docker's format, as ``--format docker`` writes it:
    ``User``, ``Entrypoint``, ``Cmd``, ``ExposedPorts``, ``Healthcheck``, ``Env``); ``process`` is the
    runtime configuration umoci derives from it (arguments, environment, uid and gid)."""

    name: str
    rootfs: Path
    config: dict[str, Any]
    process: dict[str, Any]

    def command(self, args: Sequence[str], binds: Mapping[Path, str] | None = None) -> list[str]:
        """The host command that runs ``args`` (resolved on the image's PATH) in this image as its
        user, with ``binds`` (host path: path in the image) mounted read-only."""
        user = self.process["user"]
        env = list(self.process["env"])
        root = str(self.rootfs)
        script = ["set -e", 'mount --rbind /dev "$ROOT/dev"', 'mount -t proc proc "$ROOT/proc"']
        for host, inside in (binds or {}).items():
            target = f'"$ROOT"{inside}'
            source = shlex.quote(str(host))
            script += [f"mkdir -p {target}", f"mount --bind {source} {target}", f"mount -o remount,bind,ro {target}"]
        # The root read-only, as the operator's pods run (readOnlyRootFilesystem), /tmp writable.
        script += [
            'mount --bind "$ROOT" "$ROOT"',
            'mount -o remount,bind,ro "$ROOT"',
            'mount -t tmpfs -o mode=1777 tmpfs "$ROOT/tmp"',
            f'exec chroot --userspec={user["uid"]}:{user["gid"]} "$ROOT" /usr/bin/env -i "$@"',
        ]
        return [
            "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
            "env", f"ROOT={root}", "sh", "-c", "\n".join(script), "image", *env, *args,
        ]  # fmt: skip

    def entry(self, args: Sequence[str] | None = None) -> list[str]:
        """The image's entry point with ``args`` in place of its CMD (or its CMD when ``None``)."""
        entrypoint = list(self.config.get("Entrypoint") or [])
        return entrypoint + list(self.config.get("Cmd") or [] if args is None else args)


def unpack(image: BuiltImage, workdir: Path) -> UnpackedImage:
    """Unpack ``image``'s archive into ``workdir`` with umoci (via an OCI layout whose blobs are the
    archive's own layer files, so umoci checks their digests)."""
    extracted = workdir / "archive"
    extracted.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(image.archive), "-C", str(extracted)], check=True, timeout=1800)
    (manifest,) = json.loads((extracted / "manifest.json").read_text())
    layout = workdir / "oci"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(path: Path, media_type: str) -> dict[str, Any]:
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        stored = blobs / digest.hexdigest()
        path.rename(stored)
        return {"mediaType": media_type, "digest": f"sha256:{digest.hexdigest()}", "size": stored.stat().st_size}

    config_path = extracted / manifest["Config"]
    config = json.loads(config_path.read_text())
    oci_manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(config_path, "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(extracted / layer, "application/vnd.oci.image.layer.v1.tar") for layer in manifest["Layers"]],
    }
    manifest_bytes = json.dumps(oci_manifest).encode()
    manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
    (blobs / manifest_digest).write_bytes(manifest_bytes)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{manifest_digest}",
                "size": len(manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": "image"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    shutil.rmtree(extracted)
    bundle = workdir / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:image", str(bundle)], check=True, capture_output=True, timeout=1800
    )
    shutil.rmtree(layout)
    runtime = json.loads((bundle / "config.json").read_text())
    return UnpackedImage(image.name, bundle / "rootfs", config["config"], runtime["process"])
