"""KServe v0.20's real CRDs, configuration and manager, and the Gateway API's CRDs, on the test
API server: what the tests check every object we write against.

Both projects come from the Go module proxy (``go mod download``), never copied into this
repository. KServe's manager is built from the same module by ``make install``
(``hack/build-kserve.sh``; ``OPTILOOP_KSERVE_MANAGER`` names another). It runs the way REAL_NODE.md
describes: its CRDs, the ``inferenceservice-config`` ConfigMap in its ``POD_NAMESPACE``, and its
webhooks registered with a ``url`` client config. It serves its webhooks on every interface and
has no flag to change that, so it runs in a network namespace of its own (only loopback), with
two relays: one carries its API requests out to the API server, one carries the API server's
webhook calls in (both over Unix sockets in the test's folder). Its webhook certificate is the
test API server's own serving certificate (valid for 127.0.0.1, signed by the test CA).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from tests.support.control_plane import ControlPlane, free_port, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
KSERVE = ("github.com/kserve/kserve", "v0.20.0")
GATEWAY_API = ("sigs.k8s.io/gateway-api", "v1.6.3")
KSERVE_NAMESPACE = "kserve"
MANAGER_ENV = "OPTILOOP_KSERVE_MANAGER"


class KServeUnavailableError(RuntimeError):
    """A part of KServe or the Gateway API cannot be found or started here."""


def module_dir(module: tuple[str, str]) -> Path:
    """The module's folder in the Go module cache, downloaded from the module proxy if needed."""
    path, version = module
    go = shutil.which("go")
    if go is None:
        raise KServeUnavailableError("no go command to fetch {path}@{version} from the module proxy")
    proc = subprocess.run([go, "mod", "download", "-json", f"{path}@{version}"], capture_output=True, text=True,
                          timeout=600, check=False, cwd="/")  # fmt: skip
    try:
        folder = Path(json.loads(proc.stdout)["Dir"])
    except (ValueError, KeyError):
        raise KServeUnavailableError(f"go mod download {path}@{version} failed: {proc.stdout} {proc.stderr}") from None
    if not folder.is_dir():
        raise KServeUnavailableError(f"{folder} is missing after go mod download {path}@{version}")
    return folder


def crds() -> list[dict[str, Any]]:
    """KServe's full CRDs (serving.kserve.io, without the LLM ones, which need a conversion webhook
    of their own manager), KEDA's ScaledObject CRD at the version KServe builds against, and the
    Gateway API's standard CRDs."""
    kserve = module_dir(KSERVE)
    full = kserve / "config" / "crd" / "full"
    own = sorted(p for p in full.rglob("serving.kserve.io_*.yaml") if "llmisvc" not in p.parts)
    keda = module_dir(("github.com/kedacore/keda/v2", _required(kserve / "go.mod", "github.com/kedacore/keda/v2")))
    scaled_objects = keda / "config" / "crd" / "bases" / "keda.sh_scaledobjects.yaml"
    return _crds_in([*own, scaled_objects]) + gateway_api_crds()


def _required(go_mod: Path, module: str) -> str:
    """The version of ``module`` that ``go_mod`` requires."""
    for line in go_mod.read_text().splitlines():
        words = line.split()
        words = words[1:] if words[:1] == ["require"] else words
        if len(words) >= 2 and words[0] == module:
            return words[1]
    raise KServeUnavailableError(f"{go_mod} does not require {module}")


def gateway_api_crds() -> list[dict[str, Any]]:
    """The Gateway API's standard-channel CRDs (HTTPRoute, Gateway, ...)."""
    standard = module_dir(GATEWAY_API) / "config" / "crd" / "standard"
    return _crds_in(sorted(standard.glob("gateway.networking.k8s.io_*.yaml")))


def _crds_in(paths: list[Path]) -> list[dict[str, Any]]:
    found = [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]
    return [doc for doc in found if doc.get("kind") == "CustomResourceDefinition"]


class ApiServer(Protocol):
    """What :func:`install_crds` needs of an API server: the test control plane or the real node."""

    url: str
    token: str
    ca_file: Path

    def api_client(self) -> Any: ...


def install_crds(plane: ApiServer, objects: list[dict[str, Any]]) -> None:
    """Server-side apply (the InferenceService CRD is about 2 MB, too large for the annotation a
    client-side apply keeps), then wait until each is established."""
    from kubernetes import client

    context = ssl.create_default_context(cafile=str(plane.ca_file))
    for crd in objects:
        name = crd["metadata"]["name"]
        request = urllib.request.Request(
            f"{plane.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            "?fieldManager=optiloop-tests&force=true",
            data=json.dumps(crd).encode(), method="PATCH",
            headers={"Authorization": f"Bearer {plane.token}", "Content-Type": "application/apply-patch+yaml"},
        )  # fmt: skip
        with urllib.request.urlopen(request, context=context, timeout=120) as answer:
            answer.read()
    api = plane.api_client()
    extensions = client.ApiextensionsV1Api(api)

    def established(name: str) -> bool:
        conditions = extensions.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    for crd in objects:
        name = crd["metadata"]["name"]
        wait_for(lambda name=name: established(name), 60, what=f"CRD {name} to be established")  # type: ignore[misc]


def inferenceservice_config(default_mode: str) -> dict[str, Any]:
    """KServe's own ``inferenceservice-config`` with ``defaultDeploymentMode`` set."""
    path = module_dir(KSERVE) / "config" / "configmap" / "inferenceservice.yaml"
    config_map = yaml.safe_load(path.read_text())
    config_map["data"]["deploy"] = json.dumps({"defaultDeploymentMode": default_mode})
    config_map["data"].pop("_example", None)
    return config_map


def manager_binary() -> Path:
    """KServe's manager as ``make install`` builds it (``hack/build-kserve.sh``), or the binary
    ``$OPTILOOP_KSERVE_MANAGER`` names."""
    named = os.environ.get(MANAGER_ENV)
    if named:
        return Path(named)
    proc = subprocess.run(
        [str(REPO_ROOT / "hack" / "build-kserve.sh"), "--print-dir"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise KServeUnavailableError(f"KServe's manager is not built: {proc.stderr.strip()}")
    return Path(proc.stdout.strip()) / "kserve-manager"


def webhook_configurations(base_url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """KServe's webhook configurations, each webhook called at ``<base_url><path>``."""
    path = module_dir(KSERVE) / "config" / "webhook" / "manifests.yaml"
    configurations = []
    for document in yaml.safe_load_all(path.read_text()):
        if not document:
            continue
        document = copy.deepcopy(document)
        document["metadata"].pop("creationTimestamp", None)
        for webhook in document["webhooks"]:
            service = webhook["clientConfig"].pop("service")
            webhook["clientConfig"] = {"url": f"{base_url}{service['path']}", "caBundle": ca_bundle}
            webhook["timeoutSeconds"] = 10
        configurations.append(document)
    return configurations


@dataclass
class Manager:
    """KServe's manager running against ``plane`` (stop it with :meth:`stop`)."""

    popen: subprocess.Popen[bytes]
    relay: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Stop the manager, the relays and anything else left in their process groups (the
        relay inside the namespace outlives a manager that exited on its own)."""
        for proc in (self.popen, self.relay):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(15)
                    break
                except subprocess.TimeoutExpired:
                    continue

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_manager(plane: ControlPlane, workdir: Path, default_mode: str = "Standard") -> Manager:
    """Install KServe's configuration and webhooks on ``plane`` and start its manager."""
    from kubernetes import client

    binary = manager_binary()
    if not binary.exists():
        raise KServeUnavailableError(f"{binary} does not exist")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        raise KServeUnavailableError("unshare and ip are needed to give KServe's manager its own network namespace")
    api = plane.api_client()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": KSERVE_NAMESPACE}})
    core.create_namespaced_config_map(KSERVE_NAMESPACE, inferenceservice_config(default_mode))

    workdir.mkdir(parents=True, exist_ok=True)
    certs = workdir / "tmp" / "k8s-webhook-server" / "serving-certs"
    certs.mkdir(parents=True)
    pki = plane.workdir / "pki"
    shutil.copy(pki / "apiserver.crt", certs / "tls.crt")
    shutil.copy(pki / "apiserver.key", certs / "tls.key")
    api_port = int(plane.url.rsplit(":", 1)[1])
    webhook_port = free_port()
    api_socket, webhook_socket = workdir / "api.sock", workdir / "webhook.sock"

    # The host side: the API server's port reachable through api.sock, and the webhook port on
    # loopback carried into the namespace through webhook.sock.
    relay = subprocess.Popen(
        [sys.executable, "-m", "tests.support.relay",
         f"unix:{api_socket}=tcp:127.0.0.1:{api_port}", f"tcp:127.0.0.1:{webhook_port}=unix:{webhook_socket}"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=(workdir / "relay.log").open("wb"), start_new_session=True,
    )  # fmt: skip
    wait_for(api_socket.exists, 30, what="the host relay's socket")
    ready = workdir / "relay.ready"
    inside = (
        "set -e; ip link set lo up; "
        f"{sys.executable} -m tests.support.relay --ready {ready} tcp:127.0.0.1:{api_port}=unix:{api_socket} "
        f"unix:{webhook_socket}=tcp:127.0.0.1:9443 & "
        f"while [ ! -e {ready} ]; do sleep 0.05; done; "
        f"exec {binary} --metrics-addr=0 --health-probe-addr=127.0.0.1:8081 --webhook-port=9443 --leader-elect=false"
    )
    log = workdir / "kserve-manager.log"
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "POD_NAMESPACE": KSERVE_NAMESPACE,
           "TMPDIR": str(workdir / "tmp")}  # fmt: skip
    popen = subprocess.Popen(
        ["unshare", "--net", "--fork", "--kill-child", "sh", "-c", inside],
        cwd=REPO_ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    manager = Manager(popen, relay, log)
    try:
        ca_bundle = base64.b64encode(plane.ca_file.read_bytes()).decode()
        registration = client.AdmissionregistrationV1Api(api)
        for configuration in webhook_configurations(f"https://127.0.0.1:{webhook_port}", ca_bundle):
            if configuration["kind"] == "MutatingWebhookConfiguration":
                registration.create_mutating_webhook_configuration(configuration)
            else:
                registration.create_validating_webhook_configuration(configuration)
        wait_for(lambda: _serving(manager, webhook_socket), 120, interval=0.5, what=f"KServe's webhooks ({log})")
    except BaseException:
        manager.stop()
        raise
    return manager


def _serving(manager: Manager, webhook_socket: Path) -> bool:
    if manager.popen.poll() is not None:
        raise KServeUnavailableError(f"KServe's manager exited:\n{manager.tail()}")
    return webhook_socket.exists() and "Serving webhook server" in manager.log.read_text(errors="replace")
