"""The test node's disk: gigabytes of image layers under its work folder (tests/support/node.py).

A node's teardown removes its images, but a test run killed before its teardown (SIGKILL, a lost
machine) leaves them: about 20 GB after the loop test. The next run's images would then not fit,
and every test on the node would fail on a full disk instead of saying why. So a node records
which process holds it, a later start removes the images of nodes whose holder is gone, and an
import checks the free space first and names what it needs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support.node_namespaces import NodeUnavailableError

OWNER_FILE = "node.owner"
"""In a node's work folder: its holder's PID and start time (``/proc/PID/stat``), so a reused PID
is never taken for the node that is gone."""

UNPACK_FACTOR = 2.2
"""Disk an imported archive takes: its layers in containerd's content store, the same unpacked as
snapshots, and some room for the metadata and the pods' writable layers."""


class NodeDiskError(NodeUnavailableError):
    """Too little free disk for what the node is asked to hold."""


def process_start_time(pid: int) -> str | None:
    """The start time (clock ticks after boot) of ``pid``, or None when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses; the fields after its last ')' do not.
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19]


def record_owner(workdir: Path, holder_pid: int) -> None:
    """Write which process holds the node whose work folder is ``workdir``."""
    started = process_start_time(holder_pid)
    if started is None:
        raise NodeDiskError(f"the node's first process {holder_pid} is gone before it could be recorded")
    (workdir / OWNER_FILE).write_text(f"{holder_pid} {started}\n")


def _holder_alive(owner: Path) -> bool:
    try:
        pid, started = owner.read_text().split()
    except (OSError, ValueError):
        # Unreadable or half-written: the start that wrote it may still be running.
        return True
    return pid.isdigit() and process_start_time(int(pid)) == started


def remove_dead_nodes_images(runs_root: Path, containerd_dir: str) -> list[Path]:
    """Remove the image stores (``<workdir>/<containerd_dir>``) of nodes under ``runs_root`` (pytest's
    folder of runs: ``<runs_root>/<run>/<node workdir>``) whose holder is gone; return what was removed.

    A live node's store is never touched, whichever run started it, so two runs can share a machine.
    """
    removed = []
    for owner in sorted(runs_root.glob(f"*/*/{OWNER_FILE}")):
        store = owner.parent / containerd_dir
        if store.exists() and not _holder_alive(owner):
            shutil.rmtree(store, ignore_errors=True)
            removed.append(store)
    return removed


def require_free(where: Path, needed: int, what: str) -> None:
    """Raise :class:`NodeDiskError` unless ``where``'s file system has ``needed`` bytes free."""
    free = shutil.disk_usage(where).free
    if free < needed:
        raise NodeDiskError(
            f"{what} needs about {needed / 2**30:.1f} GiB free in {where}, and only {free / 2**30:.1f} GiB are"
            " (a test run killed before its teardown leaves its node's images under"
            " /tmp/pytest-of-*/pytest-*/node*/containerd: remove them)"
        )


def import_needs(archive: Path) -> int:
    """The free disk importing ``archive`` into the node's containerd takes, in bytes."""
    return int(archive.stat().st_size * UNPACK_FACTOR)
