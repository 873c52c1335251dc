"""A whole single-node Kubernetes cluster, started in its own namespaces for tests and by hand.

etcd, kube-apiserver, kube-controller-manager (every controller), kube-scheduler, containerd (runc,
CNI bridge), kubelet, kube-proxy (iptables) and CoreDNS run inside one new network namespace, one
private mount namespace (tmpfs on ``/run``, ``/var/lib`` and ``/var/log``) and one PID namespace,
so the host's network, folders and process table are untouched; containerd keeps its images in the
node's work folder, on disk (removed on teardown). The node's address sits on a veth
pair inside the namespace. The host reaches the API server through a loopback relay; the
kubeconfig it writes works from the host like any cluster's.

Teardown kills the PID namespace's first process: the kernel then kills every process in it,
containers included, and the namespaces, their mounts, links and iptables rules vanish with their
last process. The node's cgroups (under its own cgroup root) are removed last. The namespaces and
cgroups are tests/support/node_namespaces.py's; the configuration files, node_config.py's.

    with Node.start(workdir) as node:
        node.import_image(archive, "optiloop.local/operator:dev")
        api = node.api_client()

By hand (Ctrl-C tears down): ``python -m tests.support.node`` or ``hack/node.sh``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.support.control_plane import (
    ADMIN_USER,
    ControlPlaneUnavailableError,
    _apiserver_argv,
    _controller_manager_argv,
    _die_with_parent,
    _etcd_argv,
    _http_json,
    _http_ok,
    _Process,
    _spawn,
    _write_kubeconfig,
    _write_pki,
    binaries_dir,
    free_port,
    wait_for,
)
from tests.support.image_archive import split_reference, write_renamed
from tests.support.node_config import (
    API_PORT,
    API_SERVICE_IP,
    BUSYBOX_IMAGE,
    CNI_BIN,
    CONTAINERD_SOCKET,
    NODE_IP,
    NODE_NAME,
    PAUSE_IMAGE,
    POD_CIDR,
    NodeLayout,
    cni_config,
    containerd_config,
    corefile,
    kube_dns_objects,
    kube_proxy_config,
    kubelet_config,
)
from tests.support.node_disk import import_needs, record_owner, require_free
from tests.support.node_namespaces import (
    NodeUnavailableError,
    cgroup_root_for,
    create_cgroups,
    descendants,
    remove_cgroups,
    remove_stale_cgroups,
    start_holder,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-node.sh"
RELAY = REPO_ROOT / "tests" / "support" / "relay.py"
HOST_TOOLS = ("unshare", "nsenter", "ip", "containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables")


def node_binaries() -> Path:
    """Folder holding kubelet, kube-scheduler, kube-proxy, CoreDNS and the pause and busybox images."""
    proc = subprocess.run([str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NodeUnavailableError(proc.stderr.strip() or "the test node is not built: run `make install`")
    return Path(proc.stdout.strip())


def missing_host_tools() -> list[str]:
    """The programs the node needs from the host (Debian's packages, see hack/install.sh) that are absent."""
    from shutil import which

    missing = [tool for tool in HOST_TOOLS if which(tool) is None]
    plugins = [name for name in ("bridge", "host-local", "loopback", "portmap") if not (CNI_BIN / name).exists()]
    if plugins:
        missing.append(f"CNI plugins {plugins} in {CNI_BIN} (containernetworking-plugins)")
    return missing


@dataclass
class Node:
    """A running single-node cluster. ``url``, ``token`` and ``ca_file`` reach its API server from the
    host as an administrator; ``kubeconfig`` is the same as a file."""

    layout: NodeLayout
    url: str
    token: str
    ca_file: Path
    kubeconfig: Path
    version: str
    holder: subprocess.Popen[bytes]
    holder_pid: int
    """The PID namespace's first process, as the host sees it (``nsenter --target``)."""
    processes: list[_Process] = field(default_factory=list)
    imported: set[str] = field(default_factory=set)
    """Image names imported so far: each test module asks for the images it needs, and an image is
    imported once per node (the jobs and drift images take a minute each)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds from the start to each milestone: ``api``, ``node_ready``, ``service_account``."""

    @property
    def workdir(self) -> Path:
        return self.layout.workdir

    @classmethod
    def start(cls, workdir: Path, timeout: float = 120.0) -> Node:
        """Start every component, wait for the Node to be Ready and the default ServiceAccount to
        exist, and import the busybox test image as :data:`BUSYBOX_IMAGE`."""
        if os.geteuid() != 0:
            raise NodeUnavailableError("the test node needs root (namespaces, mounts, cgroups)")
        missing = missing_host_tools()
        if missing:
            raise NodeUnavailableError(f"missing host programs {missing}: run `make install`")
        control_bins, node_bins = binaries_dir(), node_binaries()
        began = time.monotonic()
        workdir.mkdir(parents=True, exist_ok=True)
        remove_stale_cgroups()
        ca, token = _write_pki(workdir, extra_ips=[NODE_IP, API_SERVICE_IP])
        holder, holder_pid = start_holder(workdir, node_bins, timeout)
        record_owner(workdir, holder_pid)
        # The cgroup root names the namespaces' first process, so a later start can tell a dead
        # node's leftovers (after a killed run) from a live one's.
        layout = NodeLayout(workdir=workdir, cgroup_root=cgroup_root_for(holder_pid))
        node = cls(layout, "", token, ca, workdir / "kubeconfig", "", holder, holder_pid)
        try:
            _write_files(layout)
            node._start_components(control_bins, node_bins, began, timeout)
        except BaseException:
            node.stop()
            raise
        return node

    def _start_components(self, control_bins: Path, node_bins: Path, began: float, timeout: float) -> None:
        layout, workdir = self.layout, self.workdir
        # The API server listens on the namespace's loopback and the node's address; the host
        # reaches it through two relays joined by a Unix socket in the work folder.
        socket_path = workdir / "api.sock"
        self._spawn_inside("relay-inside", [sys.executable, str(RELAY), f"unix:{socket_path}=tcp:127.0.0.1:{API_PORT}"])
        wait_for(socket_path.exists, timeout, what="the relay inside the node to listen")
        host_port = free_port()
        self.processes.append(
            _spawn("relay-host", [sys.executable, str(RELAY), f"tcp:127.0.0.1:{host_port}=unix:{socket_path}"], workdir)
        )
        self.url = f"https://127.0.0.1:{host_port}"

        self._spawn_inside(
            "etcd", _etcd_argv(control_bins, Path("/var/lib/etcd"), "http://127.0.0.1:2379", "http://127.0.0.1:2380")
        )
        apiserver = self._spawn_inside(
            "kube-apiserver",
            _apiserver_argv(
                control_bins,
                workdir,
                issuer_url=f"https://{NODE_IP}:{API_PORT}",
                etcd_url="http://127.0.0.1:2379",
                bind_address="0.0.0.0",
                advertise_address=NODE_IP,
                port=API_PORT,
                extra=["--allow-privileged=true", "--kubelet-preferred-address-types=InternalIP"],
            ),
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        wait_for(
            lambda: _http_ok(f"{self.url}/readyz", apiserver, self.token, context),
            timeout,
            interval=0.25,
            what=f"kube-apiserver /readyz through {self.url}",
        )
        self.version = _http_json(f"{self.url}/version", self.token, context)["gitVersion"]
        self.timings["api"] = time.monotonic() - began
        _write_kubeconfig(self.kubeconfig, self.url, self.ca_file, ADMIN_USER, self.token)
        _write_kubeconfig(layout.node_kubeconfig, f"https://127.0.0.1:{API_PORT}", self.ca_file, ADMIN_USER, self.token)

        kubeconfig = str(layout.node_kubeconfig)
        self._spawn_inside(
            "kube-controller-manager",
            _controller_manager_argv(
                control_bins,
                workdir,
                layout.node_kubeconfig,
                10257,
                [
                    "--controllers=*",
                    f"--service-account-private-key-file={workdir / 'pki' / 'sa.key'}",
                    f"--root-ca-file={self.ca_file}",
                    "--flex-volume-plugin-dir=/var/lib/kube-controller-manager/volume-plugins",
                ],
            ),
        )
        self._spawn_inside(
            "kube-scheduler",
            [
                str(node_bins / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--v=1",
            ],
        )
        containerd = self._spawn_inside("containerd", ["containerd", f"--config={workdir / 'containerd.toml'}"])
        wait_for(
            lambda: _alive(containerd) and self.run_inside(["ctr", "--address", CONTAINERD_SOCKET, "version"]),
            timeout,
            interval=0.2,
            what="containerd to answer",
        )
        self.import_image(node_bins / "pause.oci.tar", PAUSE_IMAGE)
        create_cgroups(layout.cgroup_root)
        self._spawn_inside(
            "kubelet",
            [
                str(node_bins / "kubelet"),
                f"--config={workdir / 'kubelet.yaml'}",
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )
        self._spawn_inside(
            "kube-proxy", [str(node_bins / "kube-proxy"), f"--config={workdir / 'kube-proxy.yaml'}", "--v=1"]
        )
        self._spawn_inside("coredns", [str(node_bins / "coredns"), "-conf", str(workdir / "Corefile")])
        self._create_kube_dns()
        self.import_image(node_bins / "busybox.oci.tar", BUSYBOX_IMAGE)

        wait_for(self._node_ready, timeout, interval=0.25, what=f"Node {NODE_NAME} to be Ready")
        self.timings["node_ready"] = time.monotonic() - began
        wait_for(
            self._default_service_account,
            timeout,
            interval=0.25,
            what="the default ServiceAccount",
        )
        self.timings["service_account"] = time.monotonic() - began

    def spawn_inside(self, name: str, argv: list[str]) -> _Process:
        """Start ``argv`` inside the node's namespaces, logging to ``<workdir>/<name>.log``; it dies
        with the node (a cluster add-on that runs as a process, such as KServe's manager)."""
        return self._spawn_inside(name, argv)

    def _spawn_inside(self, name: str, argv: list[str]) -> _Process:
        self._check_alive()
        proc = _spawn(name, argv, self.workdir, self.nsenter)
        self.processes.append(proc)
        return proc

    @property
    def nsenter(self) -> list[str]:
        """The command prefix that runs a program inside the node's namespaces."""
        return ["nsenter", f"--target={self.holder_pid}", "--pid", "--net", "--mount", "--"]

    def run_inside(
        self, argv: Sequence[str], stdin: Any = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the node's namespaces (``ctr``, ``iptables``...); raise with its output
        when it fails."""
        proc = subprocess.run(
            [*self.nsenter, *argv],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=_die_with_parent,
        )
        if proc.returncode != 0:
            raise NodeUnavailableError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def import_image(self, archive: Path, name: str) -> None:
        """Import the one image of ``archive`` (an OCI layout or ``docker save`` archive in a tar, as
        buildah and umoci write them) into the node's containerd as exactly ``name``
        (``registry/path:tag``), which pods then use with ``imagePullPolicy: IfNotPresent`` or
        ``Never``. The archive streams through a renaming filter (see tests/support/image_archive.py)
        into ``ctr`` on stdin, so it may lie anywhere, even under a folder the node's tmpfs hides.
        A name this node already imported is not imported again (names carry their content's hash)."""
        repository, _ = split_reference(name)
        if name in self.imported:
            return
        if not archive.is_file():
            raise FileNotFoundError(f"no image archive at {archive}")
        require_free(self.layout.containerd_root, import_needs(archive), f"importing {archive.name} as {name}")
        ctr = subprocess.Popen(
            [*self.nsenter, "ctr", "-n", "k8s.io", "images", "import", "--base-name", repository, "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        assert ctr.stdin is not None
        assert ctr.stdout is not None
        failures: list[BaseException] = []

        def feed(stdin: IO[bytes]) -> None:
            try:
                with stdin:
                    write_renamed(archive, name, stdin)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after ctr has finished
                failures.append(exc)

        writer = threading.Thread(target=feed, args=(ctr.stdin,), daemon=True)
        writer.start()
        out = ctr.stdout.read().decode(errors="replace")
        ctr.wait()
        writer.join()
        if failures and not isinstance(failures[0], BrokenPipeError):
            raise failures[0]
        imported = re.findall(r"^unpacking (\S+) \(sha256:[0-9a-f]{64}\)", out, flags=re.MULTILINE)
        if ctr.returncode != 0 or imported != [name]:
            raise NodeUnavailableError(
                f"importing {archive} as {name} failed ({ctr.returncode}), imported {imported}:\n{out}"
            )
        self.imported.add(name)

    def _create_kube_dns(self) -> None:
        from kubernetes import client, utils

        api = self.api_client()
        with contextlib.closing(api):
            wait_for(lambda: client.CoreV1Api(api).read_namespace("kube-system"), 30, what="the kube-system namespace")
            for obj in kube_dns_objects():
                utils.create_from_dict(api, obj)  # type: ignore[no-untyped-call]  # the client ships no types there

    def _check_alive(self) -> None:
        """Raise with its log's end when a component has exited (a wait would otherwise run out)."""
        for proc in self.processes:
            _alive(proc)

    def _default_service_account(self) -> Any:
        self._check_alive()
        return self.get_json("/api/v1/namespaces/default/serviceaccounts/default")

    def _node_ready(self) -> bool:
        self._check_alive()
        status = self.get_json(f"/api/v1/nodes/{NODE_NAME}").get("status", {})
        return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` reaching the node's API server from the host as admin."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        configuration.ssl_ca_cert = str(self.ca_file)
        configuration.api_key = {"authorization": f"Bearer {self.token}"}
        return client.ApiClient(configuration)

    def get_json(self, path: str) -> Any:
        """GET ``path`` on the API server as admin and decode the JSON answer."""
        return _http_json(f"{self.url}{path}", self.token, ssl.create_default_context(cafile=str(self.ca_file)))

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The end of one component's log (``kubelet``, ``containerd``, ``kube-apiserver`` ...)."""
        return next((p.tail(lines) for p in self.processes if p.name == name), f"{name} is not running")

    def rss_bytes(self) -> int:
        """Resident memory of every process of the node, containers included (the descendants of
        unshare and of each ``nsenter``: containerd's shims are reparented to the namespace's first
        process, and containers are the shims' children)."""
        roots = {self.holder.pid, *(p.popen.pid for p in self.processes if p.name != "relay-host")}
        total = 0
        for pid in descendants(roots):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def stop(self, timeout: float = 60.0) -> None:
        """Kill everything in the node's namespaces and remove its cgroups. Safe to call twice."""
        for proc in self.processes:
            if proc.name == "relay-host":
                proc.stop()
        if self.holder.poll() is None:
            # unshare's child (the namespace's first process) dies with it (--kill-child), and the
            # kernel then kills every other process of the PID namespace.
            self.holder.kill()
        self.holder.wait(timeout)
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout)
        self.processes.clear()
        wait_for(
            lambda: not Path(f"/proc/{self.holder_pid}").exists(), timeout, what="the node's first process to exit"
        )
        remove_cgroups(self.layout.cgroup_root, timeout)
        # Gigabytes of image layers; nothing mounts them any more once the namespaces are gone.
        shutil.rmtree(self.layout.containerd_root, ignore_errors=True)
        if self.layout.containerd_root.exists():
            raise NodeUnavailableError(f"could not remove the node's images in {self.layout.containerd_root}")

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(proc: _Process) -> bool:
    if proc.popen.poll() is not None:
        raise NodeUnavailableError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
    return True


def _write_files(layout: NodeLayout) -> None:
    workdir = layout.workdir
    layout.cni_dir.mkdir(exist_ok=True)
    (layout.cni_dir / "10-optiloop.conflist").write_text(cni_config())
    (workdir / "containerd.toml").write_text(containerd_config(layout))
    (workdir / "kubelet.yaml").write_text(kubelet_config(layout))
    (workdir / "kube-proxy.yaml").write_text(kube_proxy_config(layout))
    (workdir / "Corefile").write_text(corefile(layout))
    (workdir / "resolv.conf").write_text(f"nameserver {NODE_IP}\n")


def _interrupt(signum: int, frame: object) -> None:
    # Only the first signal interrupts: the teardown that follows must not be cut short by another.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Start a node, print how to reach it, and tear it down on Ctrl-C (or SIGTERM)."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="folder for configuration and logs (default: a new temporary one)")
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        choices=("operator", "jobs", "serve", "drift"),
        help="import this checkout's image of that target (hack/build-images.sh) into the node; repeatable",
    )
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="optiloop-node-"))
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        node = Node.start(workdir)
    except (NodeUnavailableError, ControlPlaneUnavailableError, TimeoutError) as exc:
        print(f"the node did not start: {exc}\n(logs in {workdir})", file=sys.stderr)
        return 1
    try:
        print(f"node {NODE_NAME} ({node.version}) Ready in {node.timings['node_ready']:.1f}s; logs in {workdir}")
        from tests.support.images import ImagesMissingError
        from tests.support.kserve_node import import_our_image  # it imports this module

        try:
            images = [BUSYBOX_IMAGE, *(import_our_image(node, target) for target in args.image)]
        except ImagesMissingError as exc:
            print(f"cannot import the images {args.image}: {exc}", file=sys.stderr)
            return 1
        print(f"pods get addresses in {POD_CIDR}; images: {', '.join(images)}")
        print(f"export KUBECONFIG={node.kubeconfig}")
        print(f'export PATH="{node_binaries()}:$PATH"  # kubectl v1.34.4')
        print("Ctrl-C tears the node down.", flush=True)
        while node.holder.poll() is None:
            time.sleep(1)
        print("the node's namespaces exited", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        began = time.monotonic()
        node.stop()
        print(f"torn down in {time.monotonic() - began:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
