"""Copy a revision's finished model directory out of the artifact store into a local directory.

The drift monitor reads a revision's model directory from a path. On a ``pvc://`` store the claim
is mounted; on ``s3://`` the operator runs this as the monitor's init container (the jobs image,
with the artifact store's credentials), copying ``r<N>/model`` into an emptyDir that the monitor
then reads, so monitoring works wherever the artifacts are.

Only a finished directory is copied, and a copy cut short is never taken for a finished one: the
completion marker is read first, every file it lists is checked against its SHA-256 as it
arrives, and the marker is written last. The monitor verifies the hashes again when it loads.

    python -m optiloop.jobs.fetch --to /mnt/model   # the stage input (store, revision) in $OPTILOOP_STAGE_INPUT

Exit codes: 0 copied, 1 failed (the reason on stderr), 2 invalid input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..formats.errors import FormatError
from ..formats.model_dir import (
    COMPLETE_MARKER,
    parse_marker,
    read_model_directory,
    safe_relative_name,
    sha256,
    write_atomically,
)
from .errors import StorageError
from .stage import read_stage_input
from .storage import ArtifactStore, open_store

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def fetch_model_directory(store: ArtifactStore, prefix: str, destination: Path) -> list[str]:
    """Copy the finished model directory under ``prefix`` into ``destination``; returns the names
    copied. Raises :class:`StorageError` when it is absent or unfinished, :class:`FormatError` when
    a file differs from what its marker says."""
    base = prefix.strip("/")
    where = f"{store.uri}/{base}"
    marker_key = f"{base}/{COMPLETE_MARKER}"
    if not store.exists(marker_key):
        raise StorageError(f"{where}: no {COMPLETE_MARKER}; the export did not finish, so there is nothing to monitor")
    marker_bytes = store.read_bytes(marker_key)
    files = parse_marker(marker_bytes, f"{where}/{COMPLETE_MARKER}")["files"]
    destination.mkdir(parents=True, exist_ok=True)
    # An earlier copy's marker goes first: until the new one is written the directory is unfinished.
    (destination / COMPLETE_MARKER).unlink(missing_ok=True)
    for name, entry in sorted(files.items()):
        relative = safe_relative_name(name, where)
        data = store.read_bytes(f"{base}/{relative.as_posix()}")
        if sha256(data) != entry["sha256"]:
            raise FormatError(f"{where}/{name}: content differs from what the export wrote (SHA-256 mismatch)")
        target = destination.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, data)
    write_atomically(destination / COMPLETE_MARKER, marker_bytes)
    read_model_directory(destination, reference=True)
    return sorted(files)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m optiloop.jobs.fetch", description="Copy a revision's finished model directory to a path."
    )
    parser.add_argument("--to", type=Path, required=True, help="the local directory to copy it into")
    args = parser.parse_args(argv)
    try:
        stage = read_stage_input(None)
    except (StorageError, ValueError) as exc:
        print(f"invalid stage input: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        copied = fetch_model_directory(open_store(stage.artifacts), f"r{stage.revision}/model", args.to)
    except (StorageError, FormatError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    print(f"copied {len(copied)} files of r{stage.revision}/model from {stage.artifacts} to {args.to}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
