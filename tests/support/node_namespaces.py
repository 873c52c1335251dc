"""The test node's namespaces and cgroups (tests/support/node.py): the process that holds them, and
the node's own cgroup subtree.

The holder is ``unshare``'s child: the first process of a new PID namespace, in a new network
namespace and a private mount namespace. Every component joins them with ``nsenter``. Killing
``unshare`` kills the holder (``--kill-child``), and the kernel then kills every process of the PID
namespace, containers included; the namespaces, their tmpfs mounts, links and iptables rules go with
their last process. cgroups are not namespaced: the node keeps to its own subtree, named after the
holder's PID so a later start can remove what a killed run left.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
from pathlib import Path

from tests.support.control_plane import wait_for
from tests.support.node_config import NODE_IP, NODE_PREFIX

CGROUP_FS = Path("/sys/fs/cgroup")
CGROUP_PREFIX = "optiloop-node-"


class NodeUnavailableError(RuntimeError):
    """The node's binaries or host tools are missing, or a component would not start."""


# Runs as the PID namespace's first process (via unshare): the private tmpfs mounts, the node's
# network, then our pause program, which holds the namespaces open and reaps orphaned processes.
HOLDER_SCRIPT = """set -eu
mount -t tmpfs -o mode=0755 optiloop-node-run /run
mount -t tmpfs -o mode=0755 optiloop-node-lib /var/lib
mount -t tmpfs -o mode=0755 optiloop-node-log /var/log
ip link set lo up
ip link add node0 type veth peer name node0-peer
ip addr add {node_ip}/{prefix} dev node0
ip link set node0 up
ip link set node0-peer up
# Service addresses need a route to be DNATed by kube-proxy's rules on the node itself.
ip route add default dev node0
echo 1 > /proc/sys/net/ipv4/ip_forward
# Pod to Service to pod on the same bridge: replies must pass conntrack to be un-NATed.
if [ -w /proc/sys/net/bridge/bridge-nf-call-iptables ]; then echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables; fi
touch {ready}
exec {pause}
"""


def _killed_with_parent() -> None:
    # unshare ignores SIGTERM while it waits for its child, so the usual PR_SET_PDEATHSIG (1) with
    # SIGTERM would leave the node running after a killed test run; SIGKILL cannot be ignored, and
    # unshare's --kill-child then takes the whole PID namespace with it.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def start_holder(workdir: Path, node_bins: Path, timeout: float) -> tuple[subprocess.Popen[bytes], int]:
    """Start the namespaces' first process; return unshare's process and its child's host PID."""
    ready = workdir / "namespaces.ready"
    ready.unlink(missing_ok=True)
    script = HOLDER_SCRIPT.format(node_ip=NODE_IP, prefix=NODE_PREFIX, ready=ready, pause=node_bins / "pause")
    log = workdir / "namespaces.log"
    with log.open("wb") as out:
        holder = subprocess.Popen(
            [
                "unshare",
                "--pid",
                "--kill-child",
                "--mount-proc",
                "--mount",
                "--propagation=private",
                "--net",
                "--",
                "/bin/sh",
                "-c",
                script,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_killed_with_parent,
        )

    def holder_ready() -> bool:
        if holder.poll() is not None:
            raise NodeUnavailableError(f"the node's namespaces failed ({holder.returncode}):\n{log.read_text()}")
        return ready.exists()

    try:
        wait_for(holder_ready, timeout, interval=0.05, what="the node's namespaces")
        children = Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split()
        if len(children) != 1:
            raise NodeUnavailableError(f"unshare has children {children}, expected the namespaces' first process")
    except BaseException:
        holder.kill()
        holder.wait()
        raise
    return holder, int(children[0])


def descendants(roots: set[int]) -> set[int]:
    """``roots`` and every process below them, from the parent PIDs in ``/proc/<pid>/stat``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            # The command name (field 2) is in parentheses and may hold spaces: split after it.
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, queue = set(), list(roots)
    while queue:
        pid = queue.pop()
        if pid not in found:
            found.add(pid)
            queue.extend(children.get(pid, []))
    return found


def create_cgroups(root: str) -> None:
    """The node's cgroup root in every hierarchy (the kubelet requires it to exist). cgroups are not
    namespaced, so the node keeps to its own subtree and removes it on teardown."""
    for hierarchy in CGROUP_FS.iterdir():
        directory = hierarchy / root.lstrip("/")
        directory.mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":
            # A new cpuset starts with no CPUs and no memory nodes: no process could join it.
            for name in ("cpuset.cpus", "cpuset.mems"):
                (directory / name).write_text((hierarchy / name).read_text())


def remove_stale_cgroups() -> None:
    """Remove the cgroups of nodes whose first process is gone (a test run killed before its
    teardown: the kernel killed every process, but cgroup folders stay until removed)."""
    stale = set()
    for hierarchy in CGROUP_FS.iterdir():
        for top in hierarchy.glob(f"{CGROUP_PREFIX}*"):
            pid = top.name.removeprefix(CGROUP_PREFIX).split("-", 1)[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                stale.add(f"/{top.name}")
    for root in stale:
        with contextlib.suppress(TimeoutError):
            remove_cgroups(root, timeout=5)


def remove_cgroups(root: str, timeout: float) -> None:
    """Remove the node's cgroup subtree in every hierarchy, deepest first, once its processes are gone."""
    tops = [hierarchy / root.lstrip("/") for hierarchy in CGROUP_FS.iterdir()]

    def removed() -> bool:
        # A cgroup folder is removable (its control files go with it) once no process is left in it.
        for top in tops:
            for directory, _, _ in os.walk(top, topdown=False):
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(directory)
        return not any(top.exists() for top in tops)

    wait_for(removed, timeout, interval=0.2, what=f"the node's cgroups under {root} to be removed")


def cgroup_root_for(holder_pid: int) -> str:
    """The node's cgroup root: named after its holder, so a later start can tell a dead node's."""
    return f"/{CGROUP_PREFIX}{holder_pid}-{secrets.token_hex(3)}"
