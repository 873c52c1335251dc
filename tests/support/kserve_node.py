"""KServe v0.20 installed on the real node (tests/support/node.py) as a cluster operator installs it:
its real CRDs (server-side apply), its ``inferenceservice-config`` ConfigMap in Standard mode naming
our agent image, its manager running inside the node with its webhooks (defaulter, validator and the
pod mutator that injects the agent) registered, and optiloop's own CRDs, so InferenceServices can
have a real owner.

The manager runs as a process of the node (its network, mount and PID namespaces), not as a pod:
no image of the manager can be pulled here, and it needs nothing a pod would give it. Inside the
node it reaches the API server on loopback, the API server calls its webhooks on loopback (the
node's serving certificate is valid for 127.0.0.1), and it dies with the node. Pods are what
KServe makes: the predictor's Deployment, and the agent sidecar from ``optiloop.local/kserve-agent``
(KServe's own agent binary, packed by ``hack/build-kserve.sh``).
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.control_plane import _Process, wait_for
from tests.support.images import built_image
from tests.support.kserve_release import (
    KSERVE,
    KSERVE_NAMESPACE,
    KServeUnavailableError,
    crds,
    inferenceservice_config,
    install_crds,
    manager_binary,
    webhook_configurations,
)
from tests.support.manifests import REPO_ROOT
from tests.support.node import Node

AGENT_IMAGE = f"optiloop.local/kserve-agent:{KSERVE[1]}"
"""The name KServe's ConfigMap gives the agent (payload logger, batcher) and the node imports it as."""
WEBHOOK_PORT = 9443
HEALTH_PORT = 18081
"""The manager's health port inside the node (8081 is free there too, but this one says whose it is)."""


@dataclass
class KServeOnNode:
    """KServe's manager running inside ``node``, and how long its installation took."""

    node: Node
    manager: _Process
    seconds: float

    def log_tail(self, lines: int = 40) -> str:
        return self.manager.tail(lines)


def agent_archive() -> Path:
    """The agent's OCI image archive as ``make install`` packs it (``hack/build-kserve.sh``)."""
    archive = manager_binary().parent / "kserve-agent.oci.tar"
    if not archive.is_file():
        raise KServeUnavailableError(f"{archive} is missing: run `make install` (hack/build-kserve.sh packs it)")
    return archive


def node_config_map() -> dict[str, Any]:
    """KServe's own ``inferenceservice-config`` in Standard mode, every agent container (payload
    logger, batcher, agent) from :data:`AGENT_IMAGE`."""
    config_map = inferenceservice_config("Standard")
    for key in ("logger", "batcher", "agent"):
        settings = json.loads(config_map["data"][key])
        settings["image"] = AGENT_IMAGE
        config_map["data"][key] = json.dumps(settings)
    return config_map


def install(node: Node) -> KServeOnNode:
    """Install KServe on ``node`` and wait for its webhooks to be served."""
    from kubernetes import client

    began = time.monotonic()
    binary = manager_binary()
    if not binary.exists():
        raise KServeUnavailableError(f"{binary} does not exist: run `make install`")
    node.import_image(agent_archive(), AGENT_IMAGE)
    ours = [yaml.safe_load(path.read_text()) for path in sorted((REPO_ROOT / "crds").glob("*.yaml"))]
    install_crds(node, ours + crds())

    api = node.api_client()
    try:
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": KSERVE_NAMESPACE}})
        core.create_namespaced_config_map(KSERVE_NAMESPACE, node_config_map())
        workdir = node.workdir / "kserve"
        certs = workdir / "tmp" / "k8s-webhook-server" / "serving-certs"
        certs.mkdir(parents=True)
        shutil.copy(node.workdir / "pki" / "apiserver.crt", certs / "tls.crt")
        shutil.copy(node.workdir / "pki" / "apiserver.key", certs / "tls.key")
        manager = node.spawn_inside(
            "kserve-manager",
            [
                "env", f"KUBECONFIG={node.layout.node_kubeconfig}", f"POD_NAMESPACE={KSERVE_NAMESPACE}",
                f"TMPDIR={workdir / 'tmp'}", str(binary), "--metrics-addr=0",
                f"--health-probe-addr=127.0.0.1:{HEALTH_PORT}", f"--webhook-port={WEBHOOK_PORT}",
                "--leader-elect=false",
            ],
        )  # fmt: skip
        ca_bundle = base64.b64encode(node.ca_file.read_bytes()).decode()
        registration = client.AdmissionregistrationV1Api(api)
        for configuration in webhook_configurations(f"https://127.0.0.1:{WEBHOOK_PORT}", ca_bundle):
            if configuration["kind"] == "MutatingWebhookConfiguration":
                registration.create_mutating_webhook_configuration(configuration)
            else:
                registration.create_validating_webhook_configuration(configuration)

        def serving() -> bool:
            if manager.popen.poll() is not None:
                raise KServeUnavailableError(f"KServe's manager exited:\n{manager.tail()}")
            return "Serving webhook server" in manager.log.read_text(errors="replace")

        wait_for(serving, 120, interval=0.5, what=f"KServe's webhooks ({manager.log})")
    finally:
        api.close()
    return KServeOnNode(node, manager, time.monotonic() - began)


def import_our_image(node: Node, target: str) -> str:
    """Import this checkout's ``target`` image (``hack/build-images.sh``) into the node under a fully
    qualified name (containerd's CRI loses bare names, see docs/real-node.md); returns that name."""
    image = built_image(target)
    name = f"optiloop.local/{image.name}"
    node.import_image(image.archive, name)
    return name
