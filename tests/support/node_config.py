"""The configuration files of the test node (tests/support/node.py), as pure functions of its layout.

Every path a component writes on its own is pointed at ``/run``, ``/var/lib`` or ``/var/log``, which
the node mounts as private tmpfs in its own mount namespace, or at the node's work folder: nothing
lands on the host's own folders (containerd's ``opt`` plugin and the flex-volume folders default to
``/opt`` and ``/usr/libexec`` and are moved for that reason).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

NODE_NAME = "optiloop-node"
NODE_IP = "10.77.0.1"
"""The node's address, on a veth pair inside its network namespace (the kernel has no dummy links)."""
NODE_PREFIX = 24
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
API_SERVICE_IP = "10.96.0.1"
"""The ``kubernetes`` Service's ClusterIP (the first address of the Service range)."""
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
API_PORT = 6443
PAUSE_IMAGE = "optiloop.local/pause:1"
"""The sandbox image containerd is configured with (hack/build-node.sh's pause.oci.tar)."""
CONTAINERD_DIR = "containerd"
"""The folder of a node's work folder that holds containerd's images (gigabytes)."""
BUSYBOX_IMAGE = "optiloop.local/busybox:1"
"""A shell for test pods: busybox httpd, nslookup, wget, sh (hack/build-node.sh's busybox.oci.tar)."""
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
CNI_BIN = Path("/usr/lib/cni")
"""Where Debian's containernetworking-plugins put the CNI plugins."""


@dataclass(frozen=True)
class NodeLayout:
    """Where the node's files live: ``workdir`` is a host folder visible inside the namespaces
    (configuration, logs, certificates); ``cgroup_root`` is the node's own cgroup subtree, removed on
    teardown."""

    workdir: Path
    cgroup_root: str

    @property
    def cni_dir(self) -> Path:
        return self.workdir / "cni"

    @property
    def containerd_root(self) -> Path:
        """containerd's image content and snapshots: on the host's disk, in the work folder, since
        our jobs and drift images (5 GB each, torch) would not fit in memory; removed on teardown."""
        return self.workdir / CONTAINERD_DIR

    @property
    def node_kubeconfig(self) -> Path:
        """The kubeconfig the node's own components use (the API server on the namespace's loopback)."""
        return self.workdir / "kubeconfig-node"


def containerd_config(layout: NodeLayout) -> str:
    """containerd's configuration: the CRI plugin with runc under cgroupfs and overlayfs.

    ``restrict_oom_score_adj`` is the one setting without which nothing runs here: the machine's root
    lacks ``CAP_SYS_RESOURCE``, so runc cannot lower a container's ``oom_score_adj`` and fails every
    sandbox ("can't get final child's PID from pipe: EOF"). AppArmor is not available in the kernel.
    """
    return f"""version = 2
root = "{layout.containerd_root}"
state = "/run/containerd"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd-opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{layout.cni_dir}"
    max_conf_num = 1
"""


def cni_config() -> str:
    """One bridge network for the pods, with hairpin mode so a pod reaches itself through a Service."""
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "optiloop",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def kubelet_config(layout: NodeLayout) -> str:
    """The kubelet's configuration: cgroupfs under the node's own cgroup root, images never collected
    (no registry can give them back), eviction only at the very edge (the node shares the host's disk and memory)."""
    return yaml.safe_dump(
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # The API server reaches the kubelet for logs, exec and port-forward without a client
            # certificate; the kubelet listens only inside the node's network namespace.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": layout.cgroup_root,
            "cgroupsPerQOS": True,
            "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
            "clusterDNS": [DNS_SERVICE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(layout.workdir / "resolv.conf"),
            "failSwapOn": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "serializeImagePulls": False,
            "volumePluginDir": "/var/lib/kubelet/volume-plugins",
            "podPidsLimit": 1024,
            "syncFrequency": "10s",
        }
    )


def kube_proxy_config(layout: NodeLayout) -> str:
    """kube-proxy in iptables mode; the conntrack sysctls are left alone (some are not per namespace)."""
    return yaml.safe_dump(
        {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(layout.node_kubeconfig)},
            "mode": "iptables",
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": POD_CIDR,
            "bindAddress": "0.0.0.0",
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
    )


def corefile(layout: NodeLayout) -> str:
    """CoreDNS answering for the cluster domain on the node's address (the ``kube-dns`` Service points
    there). No upstream: the node has no way out, so other names fail at once (SERVFAIL) instead of
    timing out."""
    return f""".:53 {{
    bind {NODE_IP}
    errors
    ready 127.0.0.1:8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {layout.node_kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"""


def kube_dns_objects() -> list[dict[str, object]]:
    """The ``kube-dns`` Service at the cluster DNS address, and its endpoints: CoreDNS runs on the node
    itself (a process, not a pod), so the Service has no selector and one hand-written EndpointSlice."""
    ports = [("dns", "UDP"), ("dns-tcp", "TCP")]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "ports": [{"name": name, "port": 53, "protocol": protocol} for name, protocol in ports],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-node",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "optiloop-test-node",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
            "ports": [{"name": name, "port": 53, "protocol": protocol} for name, protocol in ports],
        },
    ]
