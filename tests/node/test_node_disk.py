"""A killed run's node images are removed by the next start (and a live node's never are), and an
import that would not fit says how much disk it needs and where, before containerd fills the disk."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.node_disk import (
    NodeDiskError,
    import_needs,
    record_owner,
    remove_dead_nodes_images,
    require_free,
)


def _node_workdir(runs: Path, run: str, holder_pid: int) -> Path:
    workdir = runs / run / "node0"
    (workdir / "containerd" / "snapshots").mkdir(parents=True)
    (workdir / "containerd" / "snapshots" / "layer").write_bytes(b"x" * 1024)
    (workdir / "kubelet.log").write_text("kept: small, and what a reader of the killed run wants\n")
    record_owner(workdir, holder_pid)
    return workdir


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_dead_nodes_images_go_and_a_live_nodes_stay(tmp_path: Path) -> None:
    """The store of a node whose holder is gone is removed, its logs are kept; a live one is untouched."""
    live = _node_workdir(tmp_path, "pytest-1", os.getpid())
    # The dead node's holder is recorded while it runs, as a start does, then dies.
    holder = subprocess.Popen(["sleep", "60"])
    dead = _node_workdir(tmp_path, "pytest-2", holder.pid)
    holder.kill()
    holder.wait()

    removed = remove_dead_nodes_images(tmp_path, "containerd")

    assert removed == [dead / "containerd"]
    assert not (dead / "containerd").exists()
    assert (dead / "kubelet.log").exists()
    assert (live / "containerd" / "snapshots" / "layer").exists()


def test_a_reused_pid_is_not_taken_for_the_node_that_held_it(tmp_path: Path) -> None:
    """A record naming a live PID with another start time is a dead node's: its images go."""
    workdir = _node_workdir(tmp_path, "pytest-1", os.getpid())
    pid, _ = (workdir / "node.owner").read_text().split()
    (workdir / "node.owner").write_text(f"{pid} 1\n")

    assert remove_dead_nodes_images(tmp_path, "containerd") == [workdir / "containerd"]


def test_a_record_being_written_is_left_alone(tmp_path: Path) -> None:
    """An empty or unreadable record may belong to a start still under way: nothing is removed."""
    workdir = _node_workdir(tmp_path, "pytest-1", os.getpid())
    (workdir / "node.owner").write_text("")

    assert remove_dead_nodes_images(tmp_path, "containerd") == []
    assert (workdir / "containerd").exists()


def test_recording_a_holder_that_is_gone_fails_naming_it(tmp_path: Path) -> None:
    """A start whose first process already died says so instead of recording a PID of nobody."""
    pid = _dead_pid()
    with pytest.raises(NodeDiskError, match=f"first process {pid} is gone"):
        record_owner(tmp_path, pid)


def test_an_import_that_would_not_fit_names_what_it_needs_and_where(tmp_path: Path) -> None:
    """The message gives the space needed, the space free, the folder, and where a killed run's images lie."""
    archive = tmp_path / "jobs.tar"
    archive.write_bytes(b"\0" * 4096)
    needed = import_needs(archive)
    assert needed > archive.stat().st_size

    require_free(tmp_path, needed, "importing jobs.tar")
    with pytest.raises(NodeDiskError) as refused:
        require_free(tmp_path, 2**62, "importing jobs.tar as optiloop/jobs:1")
    message = str(refused.value)
    assert "importing jobs.tar as optiloop/jobs:1 needs about" in message
    assert f"free in {tmp_path}" in message
    assert "/tmp/pytest-of-*/pytest-*/node*/containerd" in message
