"""What the test node costs: start, pods, memory and teardown (tests/support/node.py).

    .venv/bin/python bench/node.py                # 3 starts, 4 busybox pods each
    .venv/bin/python bench/node.py --repeat 1 --pods 8

Per start: seconds to the API server's /readyz, to the Node being Ready and to the default
ServiceAccount; seconds from creating N busybox httpd pods to all of them Running and Ready; the
resident memory of every process of the node (control plane, containerd and its shims, the
containers) with those pods running; and the teardown's seconds. The machine's load average is
printed beside the figures: on a shared machine they move with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.control_plane import wait_for  # noqa: E402
from tests.support.node import Node  # noqa: E402
from tests.support.node_config import BUSYBOX_IMAGE  # noqa: E402


def _pod(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"web-{index}", "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "httpd",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["httpd", "-f", "-p", "8080"],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }
            ],
        },
    }


def _all_ready(api: Any, count: int) -> bool:
    from kubernetes import client

    pods = client.CoreV1Api(api).list_namespaced_pod("default").items
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
    return len(ready) == count


def run_once(pods: int) -> dict[str, float]:
    from kubernetes import utils

    with tempfile.TemporaryDirectory(prefix="optiloop-node-bench-") as workdir:
        node = Node.start(Path(workdir))
        try:
            figures = dict(node.timings)
            api = node.api_client()
            began = time.monotonic()
            for index in range(pods):
                utils.create_from_dict(api, _pod(index))
            wait_for(lambda: _all_ready(api, pods), 120, interval=0.1, what=f"{pods} pods Ready")
            figures["pods_ready"] = time.monotonic() - began
            figures["rss_mb"] = node.rss_bytes() / 2**20
            api.close()
        finally:
            began = time.monotonic()
            node.stop()
            figures["teardown"] = time.monotonic() - began
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pods", type=int, default=4)
    args = parser.parse_args()
    runs = []
    for attempt in range(args.repeat):
        runs.append(run_once(args.pods))
        load = os.getloadavg()[0]
        print(f"run {attempt + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in runs[-1].items()) + f" (load {load:.1f})")
    load = os.getloadavg()[0]
    print(f"\nmedian of {len(runs)} starts, {args.pods} busybox pods, load {load:.1f} on {os.cpu_count()} CPUs")
    labels = {
        "api": "API server ready (s)",
        "node_ready": "Node Ready (s)",
        "service_account": "default ServiceAccount (s)",
        "pods_ready": f"{args.pods} pods created -> Ready (s)",
        "rss_mb": f"node RSS with {args.pods} pods (MiB)",
        "teardown": "teardown (s)",
    }
    for key, label in labels.items():
        values = [run[key] for run in runs]
        print(f"  {label:36s} {statistics.median(values):8.1f}   (min {min(values):.1f}, max {max(values):.1f})")


if __name__ == "__main__":
    main()
