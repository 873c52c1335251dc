"""The chart installed with Helm on the real node, as a platform team installs it, in cluster mode and
in namespaced mode: ``helm install --wait`` brings up the operator's two pods from our operator image,
Ready through the operator's own health endpoint, every process of them running as the chart's
non-root user; the RBAC objects are there; the two replicas agree on one active operator (Kopf
peering); that operator, with nothing but its chart's RBAC, reconciles ``examples/minimal.yaml``
applied with kubectl (the tuning Job with the configured jobs image, the status, an Event that
``kubectl describe`` shows); a Prometheus that discovers pods through the API scrapes its metrics as
the chart's PodMonitor declares them; and ``helm uninstall`` leaves nothing of the release behind.

The jobs image is not imported into the node (it is 5 GB): the tuning Job's pod cannot start
(``ErrImageNeverPull``), and the resource says so (``Tuned`` Unknown ``JobPodNotStarting``, a Warning).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from optiloop.operator import names
from optiloop.operator.config import host_priority
from tests.conftest import skip_or_fail
from tests.support.chart import render
from tests.support.chart_release import HelmError, describe, install, manifest, releases, remaining, uninstall
from tests.support.control_plane import wait_for
from tests.support.images import ImagesMissingError
from tests.support.kserve_node import KServeOnNode, import_our_image
from tests.support.namespaces import create_namespace, delete_namespace
from tests.support.node import Node, node_binaries
from tests.support.node_pods import pod_processes
from tests.support.node_prometheus import PrometheusUnavailableError, prometheus_binary, prometheus_on_node
from tests.support.node_storage import claim_on_host_folder

pytestmark = pytest.mark.timeout(900)
REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "minimal.yaml"
JOBS_IMAGE = "optiloop.local/optiloop/jobs:not-imported"
"""The jobs image the chart is told to use; it is not in the node (``pullPolicy: Never``)."""
SELECTOR = "app.kubernetes.io/name=optiloop,app.kubernetes.io/component=operator"
PEERING = ("kopf.dev", "v1")


@pytest.fixture(scope="module")
def prometheus_built() -> None:
    """Prometheus with the kubernetes discovery, checked before any chart is installed."""
    try:
        prometheus_binary()
    except PrometheusUnavailableError as exc:
        skip_or_fail(f"Prometheus with kubernetes_sd_configs: {exc}")


@pytest.fixture(scope="module")
def operator_image(kserve: KServeOnNode) -> str:
    """This checkout's operator image, imported into the node once for the module."""
    try:
        return import_our_image(kserve.node, "operator")
    except ImagesMissingError as exc:
        skip_or_fail(f"the operator image: {exc}")
        raise  # skip_or_fail never returns


def chart_values(image: str, mode: str, watched: str) -> dict[str, Any]:
    """The values a platform team would set here: our image from the node (no registry), the child
    images, and the watch mode."""
    repository, _, tag = image.rpartition(":")
    values: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "childImages": {
            "jobs": JOBS_IMAGE,
            "predictor": "optiloop.local/optiloop/serve:not-imported",
            "drift": "optiloop.local/optiloop/drift:not-imported",
            "pullPolicy": "Never",
        },
    }
    if mode == "namespaced":
        values["watch"] = {"mode": "namespaced", "namespaces": [watched]}
    return values


def kubectl(node: Node, *args: str) -> str:
    """kubectl v1.34.4 against the node, as a user types it; raises with its output when it fails.
    Its discovery cache goes to the node's work folder, not the user's home."""
    env = {**os.environ, "KUBECONFIG": str(node.kubeconfig)}
    command = [str(node_binaries() / "kubectl"), f"--cache-dir={node.workdir / 'kubectl-cache'}", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}{done.stdout}"
    return done.stdout


def get(node: Node, *args: str) -> Any:
    """``kubectl get ... -o json``, decoded; None when the one object asked for does not exist."""
    out = kubectl(node, "get", *args, "--ignore-not-found", "-o", "json")
    return json.loads(out) if out.strip() else None


HEALTH_CLIENT = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as answer:
    print(answer.status)
"""


def items(node: Node, *args: str) -> list[dict[str, Any]]:
    """The objects ``kubectl get`` lists (it prints nothing at all when there are none)."""
    return list((get(node, *args) or {}).get("items", []))


def operator_pods(node: Node, namespace: str) -> list[dict[str, Any]]:
    return items(node, "pods", "-n", namespace, "-l", SELECTOR)


def pod_log(node: Node, namespace: str, pod: str) -> str:
    return kubectl(node, "logs", "-n", namespace, pod)


def peering_state(log: str) -> str:
    """Whether the replica that wrote ``log`` is "active" or "standing by". With a peering name Kopf
    starts paused and logs each change: "Resuming operations after the pause" when no live peer has
    a higher priority, "Pausing operations in favour of [...]" when one appears. The last one holds."""
    changes = [line for line in log.splitlines() if "Resuming operations" in line or "Pausing operations" in line]
    return "active" if changes and "Resuming operations" in changes[-1] else "standing by"


def peers(node: Node, mode: str, watched: str) -> dict[str, Any]:
    """The replicas Kopf recorded in the peering object (``status``: identity -> priority...)."""
    if mode == "cluster":
        found = get(node, "clusterkopfpeerings.kopf.dev", "optiloop")
    else:
        found = get(node, "kopfpeerings.kopf.dev", "optiloop", "-n", watched)
    return dict(found.get("status") or {})


@pytest.mark.parametrize("mode", ["cluster", "namespaced"])
def test_helm_installs_the_operator_which_reconciles_is_scraped_and_uninstalls_cleanly(
    mode: str,
    kserve: KServeOnNode,
    operator_image: str,
    prometheus_built: None,
    node_api: Any,
    tmp_path: Path,
    record_property: Any,
) -> None:
    node = kserve.node
    began = time.monotonic()
    system = create_namespace(node_api, "optiloop-system", restricted=True)
    watched = create_namespace(node_api, "ml", restricted=True)
    monitoring = create_namespace(node_api, "monitoring")
    release = f"optiloop-{mode}"
    values = chart_values(operator_image, mode, watched)
    installed = False
    seconds: dict[str, float] = {}

    def mark(step: str) -> None:
        """Seconds from the test's start to the end of ``step`` (printed and recorded at the end)."""
        seconds[step] = round(time.monotonic() - began, 1)

    try:
        install(node.kubeconfig, tmp_path, release, system, values)
        installed = True
        mark("installed")
        objects = manifest(node.kubeconfig, tmp_path, release, system)
        assert remaining(node_api, objects) == [describe(o) for o in objects]
        mark("objects there")

        # The operator's two pods run from our image, Ready through the operator's own /healthz.
        pods = operator_pods(node, system)
        assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
        deployment = next(o for o in objects if o["kind"] == "Deployment")
        pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
        for pod in pods:
            name = pod["metadata"]["name"]
            (container,) = pod["spec"]["containers"]
            assert container["image"] == operator_image
            assert pod["status"]["phase"] == "Running", name
            assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True", name
            assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health", "scheme": "HTTP"}
            (state,) = pod["status"]["containerStatuses"]
            assert (state["ready"], state["restartCount"]) == (True, 0), state
            port = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
            health = f"http://{pod['status']['podIP']}:{port}/healthz"
            assert node.run_inside([sys.executable, "-c", HEALTH_CLIENT, health]).stdout.strip() == "200"
            # Every process of the pod but the sandbox's runs as the user the chart names.
            processes = {c: uid for c, uid in pod_processes(pod["metadata"]["uid"]).items() if c != "/pause"}
            assert any("optiloop operator" in command for command in processes), processes
            assert set(processes.values()) == {pod_security["runAsUser"]} == {65532}, processes
        mark("pods checked")

        # The RBAC objects of the mode are on the cluster (every object of the release is, above).
        rbac = sorted((o["kind"], o["metadata"].get("namespace", "")) for o in objects if "Role" in o["kind"])
        if mode == "cluster":
            assert rbac == [*[("ClusterRole", "")] * 3, *[("ClusterRoleBinding", "")] * 3,
                            ("Role", "kserve"), ("RoleBinding", "kserve")]  # fmt: skip
        else:
            assert rbac == [("Role", "kserve"), ("Role", watched), ("RoleBinding", "kserve"), ("RoleBinding", watched)]

        # Peering: both replicas are in the peering object, and the one of lower priority stands by.
        by_priority = sorted(pods, key=lambda p: host_priority(p["metadata"]["name"]))
        standby, active = (p["metadata"]["name"] for p in by_priority)

        def both_peers() -> dict[str, Any] | None:
            found = peers(node, mode, watched)
            return found if len(found) == 2 else None

        # A replica whose first keep-alive missed the peering object writes the next about 50 s later.
        recorded = wait_for(both_peers, 90, what=f"both replicas in the peering object ({mode} mode)")
        assert sorted(p["priority"] for p in recorded.values()) == sorted(host_priority(p) for p in (standby, active))
        try:
            wait_for(lambda: peering_state(pod_log(node, system, active)) == "active", 60, what=f"{active} active")
        except TimeoutError:
            logs = {name: pod_log(node, system, name)[-3000:] for name in (standby, active)}
            raise AssertionError(f"{active} never went active; peers {recorded}; logs {logs}") from None
        assert peering_state(pod_log(node, system, standby)) == "standing by"
        mark("peering")

        # The active operator reconciles examples/minimal.yaml, applied as a user applies it.
        claim = yaml.safe_load(EXAMPLE.read_text())["spec"]["deployment"]["storageUri"].split("/")[2]
        artifacts = tmp_path / "artifacts"
        artifacts.mkdir()
        claim_on_host_folder(node_api, watched, claim, artifacts)
        applied = time.monotonic()
        kubectl(node, "apply", "-n", watched, "-f", str(EXAMPLE))
        job_name = names.tuning_job("iris", 1)
        job = wait_for(lambda: get(node, "jobs", "-n", watched, job_name), 60,
                       what=f"the operator to create Job {job_name}")  # fmt: skip
        apply_to_job = time.monotonic() - applied
        mark("job")
        assert [c["image"] for c in job["spec"]["template"]["spec"]["containers"]] == [JOBS_IMAGE]
        owner = job["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("ModelOptimization", "iris")

        def status() -> dict[str, Any] | None:
            found = get(node, "modeloptimizations", "-n", watched, "iris")
            current = found.get("status") or {}
            if current.get("observedGeneration") != found["metadata"]["generation"]:
                return None
            tuned = next((c for c in current.get("conditions", []) if c["type"] == "Tuned"), None)
            return current if tuned is not None else None

        written = wait_for(status, 60, what="the operator to write the status")
        conditions = {c["type"]: c for c in written["conditions"]}
        assert conditions["Tuned"]["status"] == "Unknown"
        assert conditions["Tuned"]["reason"] in ("JobCreated", "JobRunning"), conditions["Tuned"]
        assert job_name in conditions["Tuned"]["message"]
        assert written["phase"] in ("ValidatingData", "Tuning"), written

        def described() -> str | None:
            out = kubectl(node, "describe", "modeloptimization", "-n", watched, "iris")
            return out if "TuningStarted" in out else None

        description = wait_for(described, 30, what="the TuningStarted Event in kubectl describe")
        assert f"created Job {job_name}" in description
        events = items(node, "events", "-n", watched, "--field-selector", "reason=TuningStarted")
        assert [e["reportingInstance"] for e in events] == [active], "the active replica reconciled"
        assert peering_state(pod_log(node, system, standby)) == "standing by"
        mark("status and event")

        # The Job's pod cannot start: the jobs image is not on the node, and the resource says so.
        def pod_waiting() -> str | None:
            listed = items(node, "pods", "-n", watched, "-l", f"job-name={job_name}")
            statuses = [s for p in listed for s in p["status"].get("containerStatuses", [])]
            return next((s["state"]["waiting"]["reason"] for s in statuses if "waiting" in s["state"]), None)

        assert wait_for(lambda: pod_waiting() == "ErrImageNeverPull" or None, 60,
                        what=f"Job {job_name}'s pod to be refused its image")  # fmt: skip

        def says_stuck() -> tuple[dict[str, Any], dict[str, Any]] | None:
            later = get(node, "modeloptimizations", "-n", watched, "iris")["status"]
            tuned = next(c for c in later["conditions"] if c["type"] == "Tuned")
            return (later, tuned) if tuned["reason"] == "JobPodNotStarting" else None

        # A pod's waiting reason changes no Job: the operator looks at a running Job's pods every 30 s.
        later, tuned = wait_for(says_stuck, 90, what="the resource to say the Job's pod cannot start")
        print(f"\n{mode}: with the Job's pod in ErrImageNeverPull, the resource says phase={later['phase']}, "
              f"Tuned={tuned['status']} {tuned['reason']}: {tuned['message']}")  # fmt: skip
        assert tuned["status"] == "Unknown"
        assert f"Job {job_name}'s pod cannot start: ErrImageNeverPull" in tuned["message"], tuned
        assert later["phase"] == "Tuning", later
        warnings = items(node, "events", "-n", watched, "--field-selector", "reason=JobPodNotStarting")
        assert {(e["type"], e["involvedObject"]["name"]) for e in warnings} == {("Warning", "iris")}, warnings
        record_property(f"{mode}_status_while_image_missing", f"{later['phase']}/{tuned['reason']}")
        mark("image refused")

        # Prometheus finds the operator's pods through the API, as the chart's PodMonitor declares them.
        pod_monitor = next(
            o
            for o in render(release, system, {**values, "metrics": {"podMonitor": {"enabled": True}}}, tmp_path)
            if o["kind"] == "PodMonitor"
        )
        with prometheus_on_node(node, node_api, [pod_monitor], monitoring, tmp_path / "prometheus") as prometheus:

            def both_scraped() -> list[dict[str, Any]] | None:
                query = f'count by (pod) ({{__name__=~"optiloop_operator_.+", namespace="{system}"}})'
                found = prometheus.query(query)
                return found if len(found) == 2 else None

            scraped = wait_for(both_scraped, 60, interval=0.5, what="Prometheus to scrape both operator pods")
            assert sorted(r["metric"]["pod"] for r in scraped) == sorted([active, standby])
            # Only the active replica created anything (in cluster mode it may have reconciled
            # other tests' resources too, so the count is at least our one Job).
            created = prometheus.query(f'optiloop_operator_children_created_total{{kind="Job", namespace="{system}"}}')
            assert [r["metric"]["pod"] for r in created] == [active], created
            assert float(created[0]["value"][1]) >= 1, created
            mark("scraped")

        # Deleting the resource removes its Job (owner references, the garbage collector).
        kubectl(node, "delete", "-n", watched, "modeloptimization", "iris", "--wait=true", "--timeout=60s")
        wait_for(lambda: get(node, "jobs", "-n", watched, job_name) is None, 60, what=f"Job {job_name} collected")
        mark("deleted")
        uninstall(node.kubeconfig, tmp_path, release, system)
        installed = False
        wait_for(lambda: not operator_pods(node, system), 60, what="the operator pods to go")
        mark("uninstalled")
        assert remaining(node_api, objects) == []
        assert [r["name"] for r in releases(node.kubeconfig, tmp_path) if r["namespace"] == system] == []
        assert items(node, "secrets", "-n", system) == [], "Helm's release record is gone"
        # The CRDs of the chart's crds/ folder stay: Helm never deletes them (resources would go with them).
        kubectl(node, "get", "crd", "modeloptimizations.optiloop.dev", "kopfpeerings.kopf.dev")
        record_property(f"{mode}_seconds", seconds)
        print(f"{mode}: apply to Job {apply_to_job:.1f}s; from the start: " +
              ", ".join(f"{k} {v}s" for k, v in seconds.items()) + f" (load {os.getloadavg()[0]:.1f})")  # fmt: skip
    finally:
        if installed:
            with contextlib.suppress(HelmError):  # the test's own failure is the one to report
                uninstall(node.kubeconfig, tmp_path, release, system)
        for namespace in (watched, monitoring, system):
            delete_namespace(node_api, namespace)
