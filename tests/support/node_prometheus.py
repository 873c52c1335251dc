"""A Prometheus that finds pods the way a cluster's Prometheus does: ``kubernetes_sd_configs`` with
``role: pod``, reading the API server with a ServiceAccount token of its own (list and watch pods,
nothing else), run inside the test node's network namespace so that it reaches pod addresses, and
queried from the host through a forwarded port. Debian's Prometheus is built without the kubernetes
discovery ("until dependencies are more reasonable", says its patch), so this one is upstream's,
pinned and built by ``hack/build-prometheus.sh``.

What it scrapes is what a Prometheus Operator ``PodMonitor`` asks for (its pod selector and its
port name), turned into the relabelling rules the Prometheus Operator itself would write, so the
test scrapes exactly what the chart's ``metrics.podMonitor`` declares."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tests.support.node import Node
from tests.support.node_config import API_PORT
from tests.support.node_forward import forwarded, net_namespace_of
from tests.support.prometheus import Prometheus, prometheus_process

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "build-prometheus.sh"
PORT = 9090
"""Prometheus' port inside the node's network namespace (nothing of the node listens there)."""
READER_RULES = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
"""All that pod discovery needs (what the Prometheus Operator's own ClusterRole grants for pods)."""


class PrometheusUnavailableError(Exception):
    """The Prometheus with the kubernetes discovery is not built; the message says how to build it."""


def prometheus_binary() -> str:
    """Upstream Prometheus with ``kubernetes_sd_configs`` (``hack/build-prometheus.sh``)."""
    done = subprocess.run([str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PrometheusUnavailableError(done.stderr.strip() or f"{BUILD_SCRIPT} --print-dir failed")
    return str(Path(done.stdout.strip()) / "prometheus")


def _label_name(label: str) -> str:
    """A Kubernetes label key as Prometheus' discovery names it (every other character becomes ``_``)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def scrape_config(pod_monitor: dict[str, Any], token_file: Path, ca_file: Path, interval: str) -> dict[str, Any]:
    """The scrape job for ``pod_monitor``: every pod in its namespace whose labels match its selector,
    on the container port it names, labelled with the pod's ``namespace`` and ``pod``."""
    spec = pod_monitor["spec"]
    selector: dict[str, str] = spec["selector"]["matchLabels"]
    (endpoint,) = spec["podMetricsEndpoints"]
    keys = [f"__meta_kubernetes_pod_label_{_label_name(k)}" for k in selector]
    namespace = pod_monitor["metadata"]["namespace"]
    return {
        "job_name": f"podMonitor/{namespace}/{pod_monitor['metadata']['name']}",
        "scrape_interval": interval,
        "kubernetes_sd_configs": [
            {
                "role": "pod",
                # Inside the node's network namespace the API server listens on loopback.
                "api_server": f"https://127.0.0.1:{API_PORT}",
                "tls_config": {"ca_file": str(ca_file)},
                "authorization": {"credentials_file": str(token_file)},
                "namespaces": {"names": [namespace]},
            }
        ],
        "relabel_configs": [
            {"source_labels": keys, "regex": ";".join(re.escape(v) for v in selector.values()), "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": endpoint["port"],
             "action": "keep"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
    }  # fmt: skip


def reader_token(api: Any, namespace: str, stack: ExitStack) -> str:
    """A token of a new ServiceAccount in ``namespace`` that may only read pods, cluster-wide, as a
    cluster's Prometheus may; the ClusterRole and its binding are removed when ``stack`` closes."""
    from kubernetes import client

    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    name = f"prometheus-{secrets.token_hex(3)}"
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": READER_RULES})
    stack.callback(rbac.delete_cluster_role, name)
    rbac.create_cluster_role_binding({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    })  # fmt: skip
    stack.callback(rbac.delete_cluster_role_binding, name)
    request = {"spec": {"audiences": [], "expirationSeconds": 3600}}
    return str(core.create_namespaced_service_account_token(name, namespace, request).status.token)


@contextmanager
def prometheus_on_node(
    node: Node,
    api: Any,
    pod_monitors: Sequence[dict[str, Any]],
    namespace: str,
    workdir: Path,
    interval: str = "1s",
    for_pods: bool = False,
) -> Iterator[Prometheus]:
    """Prometheus inside ``node`` scraping what each of ``pod_monitors`` selects, with its own
    ServiceAccount in ``namespace``; yields it reachable from the host. ``for_pods``: it also
    listens on the node's address, where pods reach it (``http://NODE_IP:9090``), as an operator
    pod reaches a cluster's Prometheus. Prometheus, its relays and its RBAC are gone on exit."""
    binary = prometheus_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        token_file = workdir / "token"
        token_file.write_text(reader_token(api, namespace, stack))
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [scrape_config(m, token_file, node.ca_file, interval) for m in pod_monitors],
        }
        address = stack.enter_context(forwarded(node, PORT, workdir))
        prefix = net_namespace_of(node)
        listen = f"{'0.0.0.0' if for_pods else '127.0.0.1'}:{PORT}"
        server = stack.enter_context(
            prometheus_process(json.dumps(config), listen, f"http://{address}", workdir, prefix, binary)
        )
        yield server
