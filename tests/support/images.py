"""optiloop's images as hack/build-images.sh leaves them (docker-archives), unpacked layer by layer
and run from their own root filesystem as the image's user, with no Docker engine and no container
runtime: a private mount and PID namespace, the root filesystem read-only (as the operator's pods
mount it) with a tmpfs on /tmp, and chroot. The network is the host's, so servers started this way
must be told to listen on loopback."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
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
    for tool in ("unshare", "chroot"):
        if shutil.which(tool) is None:
            raise ImagesMissingError(f"{tool} is not installed")
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
    ``User``, ``Entrypoint``, ``Cmd``, ``ExposedPorts``, ``Healthcheck``, ``Env``); ``process`` is what
    a runtime derives from it: the numeric ``user`` (uid, gid) and the ``env`` list."""

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
        # The root read-only, as the operator's pods run (readOnlyRootFilesystem), then /dev, /proc,
        # a writable /tmp and the binds mounted over it (mount points made first, while it is writable).
        binds = binds or {}
        script = ["set -e"]
        script += [f'mkdir -p "$ROOT"{inside}' for inside in binds.values()]
        script += ['mount --bind "$ROOT" "$ROOT"', 'mount -o remount,bind,ro "$ROOT"']
        script += ['mount --rbind /dev "$ROOT/dev"', 'mount -t proc proc "$ROOT/proc"']
        script += ['mount -t tmpfs -o mode=1777 tmpfs "$ROOT/tmp"']
        for host, inside in binds.items():
            target = f'"$ROOT"{inside}'
            script += [f"mount --bind {shlex.quote(str(host))} {target}", f"mount -o remount,bind,ro {target}"]
        # Not exec'd: the namespace's first process must stay this root shell. unshare's --kill-child
        # is a parent-death signal, which the kernel clears when a process changes its user, so a
        # first process that became the image's user would outlive unshare and keep the namespace.
        # Killing the shell kills every process of the namespace.
        script += [f'chroot --userspec={user["uid"]}:{user["gid"]} "$ROOT" /usr/bin/env -i "$@"']
        return [
            "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
            "env", f"ROOT={root}", "sh", "-c", "\n".join(script), "image", *env, *args,
        ]  # fmt: skip

    def entry(self, args: Sequence[str] | None = None) -> list[str]:
        """The image's entry point with ``args`` in place of its CMD (or its CMD when ``None``)."""
        entrypoint = list(self.config.get("Entrypoint") or [])
        return entrypoint + list(self.config.get("Cmd") or [] if args is None else args)


def unpack(image: BuiltImage, workdir: Path) -> UnpackedImage:
    """Unpack ``image``'s archive into ``workdir``: its layers in order, straight out of the archive
    (the jobs image is about 5 GB: laying the layers out as separate blobs first, as umoci needs,
    would double that on a shared disk), with OCI whiteouts applied."""
    rootfs = workdir / "rootfs"
    rootfs.mkdir(parents=True)
    with tarfile.open(image.archive) as archive:
        (manifest,) = json.loads(_member_bytes(archive, "manifest.json"))
        config = json.loads(_member_bytes(archive, manifest["Config"]))
        for layer in manifest["Layers"]:
            stream = archive.extractfile(layer)
            if stream is None:
                raise ValueError(f"{image.archive}: layer {layer} is not a file")
            with tarfile.open(fileobj=stream, mode="r|") as entries:
                _apply_layer(entries, rootfs)
    image_config = config["config"]
    uid, _, gid = str(image_config.get("User") or "0:0").partition(":")
    process = {"user": {"uid": int(uid), "gid": int(gid or uid)}, "env": list(image_config.get("Env") or [])}
    return UnpackedImage(image.name, rootfs, image_config, process)


def _member_bytes(archive: tarfile.TarFile, name: str) -> bytes:
    stream = archive.extractfile(name)
    if stream is None:
        raise ValueError(f"{archive.name!r}: {name} is not a file")
    return stream.read()


def _apply_layer(entries: tarfile.TarFile, rootfs: Path) -> None:
    """Extract one layer over ``rootfs``: a ``.wh.NAME`` entry deletes NAME from the layers below,
    ``.wh..wh..opq`` empties its directory of them, and any other entry replaces what was there."""
    for entry in entries:
        path = PurePosixPath(entry.name.lstrip("./") or ".")
        if ".." in path.parts:
            raise ValueError(f"layer entry outside the root: {entry.name}")
        target = rootfs / path
        if path.name == ".wh..wh..opq":
            for child in target.parent.iterdir():
                _remove(child)
            continue
        if path.name.startswith(".wh."):
            _remove(target.parent / path.name.removeprefix(".wh."))
            continue
        if not (entry.isdir() and target.is_dir() and not target.is_symlink()):
            _remove(target)
        # Our own build's archive, extracted as root: ownership, modes and links are kept as they are.
        entries.extract(entry, rootfs, set_attrs=True, numeric_owner=True, filter="fully_trusted")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
