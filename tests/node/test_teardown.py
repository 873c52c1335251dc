"""Tearing the node down leaves nothing on the host: no mounts, no files in /run, /var/lib or /var/log,
no links or iptables rules in the host's network namespace, no processes, no cgroups, and none of
containerd's images in the node's work folder.

Runs after every other test of the session (tests/node/conftest.py orders it last): it stops the
session's node.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.node import Node, node_binaries
from tests.support.node_leftovers import HostState, processes_using
from tests.support.node_namespaces import CGROUP_FS


def test_teardown_leaves_nothing_on_the_host(node: Node, host_before_node: HostState) -> None:
    # The node really did put things in its own namespaces (so the check below can fail).
    inside = node.run_inside(["sh", "-c", "ls /var/lib /run; ip -o link show; iptables-save"]).stdout
    assert [word for word in ("kubelet", "containerd", "cni0", "KUBE-SERVICES") if word not in inside] == []
    cgroup_root = node.layout.cgroup_root
    assert any((hierarchy / cgroup_root.lstrip("/")).exists() for hierarchy in CGROUP_FS.iterdir())
    images = node.layout.containerd_root
    assert any((images / "io.containerd.content.v1.content" / "blobs").iterdir())

    began = time.monotonic()
    node.stop()
    print(f"teardown took {time.monotonic() - began:.1f}s")

    assert host_before_node.differences(HostState.capture()) == {}
    assert processes_using([node.workdir, node_binaries()]) == []
    assert not Path(f"/proc/{node.holder_pid}").exists()
    assert [h.name for h in CGROUP_FS.iterdir() if (h / cgroup_root.lstrip("/")).exists()] == []
    assert not images.exists()
