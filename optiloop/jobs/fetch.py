"""Copy a revision's finished model directory out of the artifact store into a local directory.

optiloop's predictor and the drift monitor read a revision's model directory from a path. On a
``pvc://`` store the claim is mounted; on ``s3://`` the operator runs this as their pods' init
container (the jobs image, with the artifact store's credentials), copying ``r<N>/model`` into an
emptyDir that they then read, so serving and monitoring work wherever the artifacts are, with the
resource's own credentials.

Only a finished directory is copied, and a copy cut short is never taken for a finished one: the
completion marker is read first, every file it lists is checked against its SHA-256 as it
arrives, and the marker is written last. The predictor and the monitor verify the hashes again
when they load.

    python -m optiloop.jobs.fetch --source s3://bucket/iris/r3/model --to /mnt/model

The store's credentials come from the environment as for the stage Jobs (``AWS_*``). Only the
directory's URI is passed, not the stage input: the monitor's pod template then changes only when
the revision does, so a serving-only change to the spec does not restart the monitor, and the
predictor's changes only with the revision and its serving settings.

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
from .storage import ArtifactStore, open_store

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def fetch_model_directory(store: ArtifactStore, prefix: str, destination: Path) -> list[str]:
    """Copy the finished model directory under ``prefix`` (``""``: the store's root) into
    ``destination``; returns the names copied. Raises :class:`StorageError` when it is absent or
    unfinished, :class:`FormatError` when a file differs from what its marker says."""
    base = prefix.strip("/")
    where = f"{store.uri}/{base}".rstrip("/")

    def key(name: str) -> str:
        return f"{base}/{name}" if base else name

    marker_key = key(COMPLETE_MARKER)
    if not store.exists(marker_key):
        raise StorageError(f"{where}: no {COMPLETE_MARKER}; the export did not finish, so there is no model to read")
    marker_bytes = store.read_bytes(marker_key)
    files = parse_marker(marker_bytes, f"{where}/{COMPLETE_MARKER}")["files"]
    destination.mkdir(parents=True, exist_ok=True)
    # An earlier copy's marker goes first: until the new one is written the directory is unfinished.
    (destination / COMPLETE_MARKER).unlink(missing_ok=True)
    for name, entry in sorted(files.items()):
        relative = safe_relative_name(name, where)
        data = store.read_bytes(key(relative.as_posix()))
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
        prog="python -m optiloop.jobs.fetch", description="Copy a finished model directory to a local path."
    )
    parser.add_argument("--source", required=True, help="the model directory's URI (s3://bucket/.../r<N>/model)")
    parser.add_argument("--to", type=Path, required=True, help="the local directory to copy it into")
    args = parser.parse_args(argv)
    try:
        store = open_store(args.source)
    except StorageError as exc:
        print(f"--source: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        copied = fetch_model_directory(store, "", args.to)
    except (StorageError, FormatError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    print(f"copied {len(copied)} files of {args.source} to {args.to}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
