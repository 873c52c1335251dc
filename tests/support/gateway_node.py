"""A real Gateway API implementation on the real node: Traefik (``hack/build-gateway.sh``) run as a
cluster operator runs a gateway controller outside the cluster, a process with a kubeconfig, here
inside the node's namespaces (tests/support/node.py).

Traefik watches GatewayClasses naming its controller, the Gateways of those classes and their
HTTPRoutes, writes their status (``Accepted`` with the route's ``observedGeneration``, listeners
``Programmed``), and proxies each request itself: its ``web`` entry point listens on
:data:`LISTENER_PORT` on every address of the node's network namespace, and it balances straight to
the ready pod addresses of each backend Service's EndpointSlices, with weighted round robin between
an HTTPRoute rule's backends. Its API (read-only, loopback only) shows the configuration it has
applied, which lags the status it writes by the providers' throttle (2 s by default): a route is
``Accepted`` a moment before its new weights carry requests.

No pod runs it: no image of Traefik can be pulled here, and a gateway needs nothing a pod would give
it. It dies with the node; :meth:`GatewayOnNode.stop` stops it before.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.control_plane import _Process, _spawn, wait_for
from tests.support.manifests import REPO_ROOT
from tests.support.node import Node
from tests.support.node_config import NODE_IP
from tests.support.node_namespaces import descendants

BUILD_SCRIPT = REPO_ROOT / "hack" / "build-gateway.sh"
CONTROLLER_NAME = "traefik.io/gateway-controller"
"""The ``controllerName`` Traefik's kubernetesGateway provider claims GatewayClasses by."""
GATEWAY_CLASS = "optiloop-traefik"
LISTENER_PORT = 8000
"""The port of Traefik's ``web`` entry point: a Gateway listener on this port is served by it."""
API_PORT = 18080
"""Traefik's own API and ping (its ``traefik`` entry point), on the node's loopback only."""
GATEWAY_GROUP = "gateway.networking.k8s.io"
GET = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"
"""Prints what a GET of ``argv[1]`` answers; run inside the node, where Traefik's API listens."""


class GatewayUnavailableError(RuntimeError):
    """Traefik is not built here, or did not start on the node."""


def traefik_binary() -> Path:
    """Traefik as ``make install`` builds it (``hack/build-gateway.sh``)."""
    proc = subprocess.run([str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GatewayUnavailableError(proc.stderr.strip() or "Traefik is not built: run `make install`")
    return Path(proc.stdout.strip()) / "traefik"


def traefik_argv(binary: Path) -> list[str]:
    """Traefik's static configuration: the Gateway API provider (standard channel), one HTTP entry
    point for Gateway listeners, the read-only API and ping on loopback, and the node's address as
    the address Gateways report; nothing sent home."""
    return [
        str(binary),
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        "--log.level=INFO",
        "--log.noColor=true",
        f"--entryPoints.web.address=:{LISTENER_PORT}",
        f"--entryPoints.traefik.address=127.0.0.1:{API_PORT}",
        # "insecure": served on the traefik entry point without a router of its own; that entry point
        # listens on the node's loopback only.
        "--api.insecure=true",
        "--api.dashboard=false",  # the module holds no built web UI
        "--ping=true",
        "--providers.kubernetesGateway=true",
        f"--providers.kubernetesGateway.statusAddress.ip={NODE_IP}",
    ]


@dataclass
class GatewayOnNode:
    """Traefik running inside ``node`` and the GatewayClass it accepted."""

    node: Node
    process: _Process
    class_name: str
    seconds: float
    """From starting Traefik to its GatewayClass being Accepted."""

    def api(self, path: str) -> Any:
        """GET ``path`` from Traefik's API (what it has applied, not what it wrote in statuses)."""
        url = f"http://127.0.0.1:{API_PORT}{path}"
        done = self.node.run_inside([sys.executable, "-c", GET, url], timeout=30)
        return json.loads(done.stdout)

    def alive(self) -> bool:
        """True while Traefik runs; raises with its log's end once it has exited."""
        if self.process.popen.poll() is not None:
            code = self.process.popen.returncode
            raise GatewayUnavailableError(f"Traefik exited with {code}:\n{self.process.tail()}")
        return True

    def stop(self) -> None:
        """Delete the GatewayClass and stop Traefik (the process inside the node, then ``nsenter``:
        this ``nsenter`` forks into the PID namespace and does not pass signals on)."""
        from kubernetes import client

        api = self.node.api_client()
        with contextlib.closing(api), contextlib.suppress(Exception):
            client.CustomObjectsApi(api).delete_cluster_custom_object(
                GATEWAY_GROUP, "v1", "gatewayclasses", self.class_name
            )
        inside = descendants({self.process.popen.pid}) - {self.process.popen.pid}
        for pid in inside:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.process.stop()


def gateway_class(name: str = GATEWAY_CLASS) -> dict[str, Any]:
    """A GatewayClass that Traefik's controller claims."""
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": CONTROLLER_NAME},
    }


def accepted(obj: dict[str, Any]) -> bool:
    """Whether ``obj`` (a GatewayClass or Gateway) has ``Accepted=True`` for its current generation."""
    generation = obj.get("metadata", {}).get("generation")
    return any(
        c.get("type") == "Accepted" and c.get("status") == "True" and c.get("observedGeneration") == generation
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def start(node: Node, timeout: float = 120.0) -> GatewayOnNode:
    """Start Traefik inside ``node`` (the Gateway API's CRDs must be installed: the ``kserve``
    fixture installs them), create its GatewayClass and wait until Traefik accepts it."""
    from kubernetes import client

    binary = traefik_binary()
    if not binary.exists():
        raise GatewayUnavailableError(f"{binary} does not exist: run `make install`")
    began = time.monotonic()
    # Not node.spawn_inside: the node checks that every process it started still runs, and this one
    # is stopped before the node.
    argv = ["env", f"KUBECONFIG={node.layout.node_kubeconfig}", *traefik_argv(binary)]
    process = _spawn("traefik", argv, node.workdir, node.nsenter)
    gateway = GatewayOnNode(node, process, GATEWAY_CLASS, 0.0)
    api = node.api_client()
    try:
        objects: Any = client.CustomObjectsApi(api)
        objects.create_cluster_custom_object(GATEWAY_GROUP, "v1", "gatewayclasses", gateway_class())
        wait_for(
            lambda: (
                gateway.alive()
                and accepted(objects.get_cluster_custom_object(GATEWAY_GROUP, "v1", "gatewayclasses", GATEWAY_CLASS))
            ),
            timeout,
            interval=0.25,
            what=f"Traefik to accept GatewayClass {GATEWAY_CLASS} ({process.log})",
        )
    except BaseException:
        gateway.stop()
        raise
    finally:
        api.close()
    gateway.seconds = time.monotonic() - began
    return gateway
