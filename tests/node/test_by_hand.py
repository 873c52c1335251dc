"""The node started by hand (`python -m tests.support.node`, what hack/node.sh runs) prints a
kubeconfig the host can use, and a run killed with SIGKILL leaves no process behind: the kernel
takes the node's PID namespace down with it, and the next start removes its cgroups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from tests.support.control_plane import wait_for
from tests.support.node_config import NODE_NAME
from tests.support.node_leftovers import processes_using
from tests.support.node_namespaces import CGROUP_FS, descendants, remove_stale_cgroups

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_by_hand_node_serves_its_kubeconfig_and_a_killed_run_leaves_no_process(tmp_path: Path) -> None:
    from kubernetes import client, config

    workdir = tmp_path / "node"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.node", "--workdir", str(workdir)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()

    def exported() -> str | None:
        assert proc.poll() is None, "".join(lines)
        return next((line for line in lines if line.startswith("export KUBECONFIG=")), None)

    try:
        kubeconfig_line = wait_for(exported, 180, interval=0.2, what="the node started by hand to print its kubeconfig")
        kubeconfig = kubeconfig_line.strip().removeprefix("export KUBECONFIG=")
        api = config.new_client_from_config(config_file=kubeconfig)
        node = client.CoreV1Api(api).read_node(NODE_NAME)
        api.close()
        assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
        cgroup_root = yaml.safe_load((workdir / "kubelet.yaml").read_text())["cgroupRoot"].lstrip("/")
        node_pids = descendants({proc.pid})
        assert len(node_pids) > 10  # unshare, nsenter and the components (so the check below can fail)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)

    wait_for(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in node_pids), 30, what="the node's processes to die"
    )
    assert processes_using([workdir]) == []
    remove_stale_cgroups()
    assert [h.name for h in CGROUP_FS.iterdir() if (h / cgroup_root).exists()] == []
