"""Running the operator against the test API server, and playing the parts no test cluster has.

* :func:`install_operator_crds` adds Kopf's peering CRDs, a minimal InferenceService CRD
  (written for the tests: an open schema with a status subresource, like KServe's served shape),
  a minimal Knative Service CRD (the operator only asks whether the API serves it), the Gateway
  API's real CRDs, and KServe's ConfigMap with KServe's shipped default mode (Serverless, i.e.
  Knative): the cluster the stand-in plays.
* :class:`OperatorProcess` runs ``optiloop operator`` as a separate process (so a test can
  SIGKILL it) with a kubeconfig for the test API server.
* :class:`StandIn` plays the Job controller, the kubelet and KServe: it sees our Jobs and, as
  told, leaves them running or finishes them (a Pod whose termination message carries the
  stage outcome, then the Job's conditions); it marks InferenceServices Ready with a URL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.control_plane import ControlPlane, free_port, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


def kserve_crd() -> dict[str, Any]:
    """A minimal InferenceService CRD: KServe's group, version and names, any spec, a status subresource."""
    return _open_crd("serving.kserve.io", "v1beta1", "InferenceService", "inferenceservices", ["isvc"])


def knative_service_crd() -> dict[str, Any]:
    """A minimal Knative Serving Service CRD: what the operator's discovery looks for."""
    return _open_crd("serving.knative.dev", "v1", "Service", "services", ["ksvc"])


KSERVE_CONFIG = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
    "data": {"deploy": json.dumps({"defaultDeploymentMode": "Serverless"})},
}
"""KServe's ConfigMap as KServe ships it: Serverless (Knative) by default."""


def _open_crd(group: str, version: str, kind: str, plural: str, short: list[str]) -> dict[str, Any]:
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "shortNames": short},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": open_object, "status": open_object},
                        }
                    },
                }
            ],
        },
    }


def install_operator_crds(api: Any) -> None:
    """Install the peering, InferenceService, Knative Service and Gateway API CRDs and KServe's
    ConfigMap (idempotent) and wait until the CRDs are established."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from optiloop.operator.peering import peering_crds
    from tests.support.kserve_release import gateway_api_crds

    core = client.CoreV1Api(api)
    for create, args in ((core.create_namespace, ({"metadata": {"name": "kserve"}},)),
                         (core.create_namespaced_config_map, ("kserve", KSERVE_CONFIG))):  # fmt: skip
        try:
            create(*args)
        except ApiException as exc:
            if exc.status != 409:
                raise
    extensions = client.ApiextensionsV1Api(api)
    for crd in [*peering_crds(), kserve_crd(), knative_service_crd(), *gateway_api_crds()]:
        try:
            extensions.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise
        name = crd["metadata"]["name"]

        def established(name: str = name) -> bool:
            conditions = extensions.read_custom_resource_definition(name).status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        wait_for(established, 30, what=f"CRD {name} to be established")
        # Established comes before the storage answers (a list gets 429 "storage is
        # (re)initializing" meanwhile); an operator watching it then misses early changes.
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        version = crd["spec"]["versions"][0]["name"]
        wait_for(lambda g=group, v=version, p=plural: _lists(api, g, v, p), 30, what=f"CRD {name} to serve lists")


def _lists(api: Any, group: str, version: str, plural: str) -> bool:
    from kubernetes import client

    client.CustomObjectsApi(api).list_cluster_custom_object(group, version, plural, limit=1)
    return True


@dataclass
class OperatorProcess:
    """``optiloop operator`` in its own process, watching ``namespaces``."""

    plane: ControlPlane
    namespaces: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    priority: int = 100
    peering: str = ""
    popen: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    health_port: int = 0
    verbose: bool = True

    def start(self, await_metrics: bool = True) -> OperatorProcess:
        """Start the process and, unless told not to (a process meant to crash at once), wait
        until its metrics answer."""
        self.metrics_port, self.health_port = self.metrics_port or free_port(), free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.plane.kubeconfig),
            "OPTILOOP_JOBS_IMAGE": "registry.example/optiloop/jobs:test",
            "OPTILOOP_PREDICTOR_IMAGE": "registry.example/optiloop/serve:test",
            "OPTILOOP_DRIFT_IMAGE": "registry.example/optiloop/drift:test",
            "OPTILOOP_RESYNC_SECONDS": "1",
            # The stand-ins here move traffic at once: a short wait keeps the retirements quick.
            "OPTILOOP_RETIRE_DELAY_SECONDS": "2",
            "OPTILOOP_METRICS_ADDRESS": "127.0.0.1",
            "OPTILOOP_METRICS_PORT": str(self.metrics_port),
            "OPTILOOP_HEALTH_PORT": str(self.health_port),
            "OPTILOOP_PEERING": self.peering,
            "OPTILOOP_PRIORITY": str(self.priority),
            "OPTILOOP_PEERING_LIFETIME": "10",
            "OPTILOOP_PROMETHEUS_URL": "http://127.0.0.1:9",
            # The tests' Prometheus servers listen on loopback, on ports of their own.
            "OPTILOOP_PROMETHEUS_ALLOWED_URLS": "http://127.0.0.1",
            **self.env,
        }
        args = [sys.executable, "-m", "optiloop", "operator", *(["--verbose"] if self.verbose else [])]
        for namespace in self.namespaces:
            args += ["--namespace", namespace]
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                args,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
                preexec_fn=_restore_signals,
            )
        if await_metrics:
            wait_for(self._metrics_up, 60, interval=0.2, what=f"the operator's metrics (log: {self.log})")
        return self

    def _metrics_up(self) -> bool:
        assert self.popen is not None
        if self.popen.poll() is not None:
            raise RuntimeError(f"the operator exited with {self.popen.returncode}:\n{self.tail()}")
        self.metrics()
        return True

    def metrics(self) -> dict[str, float]:
        """The operator's metric samples, keyed by series (``name{labels}``)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                samples[series] = float(value)
        return samples

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _restore_signals() -> None:
    # A backgrounded shell starts children with SIGINT ignored; the operator must see it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tuning_outcome(trial: int = 3, value: float = 0.93) -> dict[str, Any]:
    return {
        "stage": "tuning",
        "succeeded": True,
        "reason": "Succeeded",
        "bestTrial": {
            "number": trial,
            "values": [{"metric": "accuracy", "value": value}],
            "params": [{"name": "learning_rate", "value": "0.003"}],
            "trialsCompleted": 8,
        },
    }


def compression_outcome(candidate: str = "2-quantize-dynamicint8", value: float = 0.92) -> dict[str, Any]:
    return {
        "stage": "compression",
        "succeeded": True,
        "reason": "Succeeded",
        "message": f"chose {candidate}",
        "model": {
            "candidate": candidate,
            "primaryMetric": "accuracy",
            "primaryValue": value,
            "latencyP50Ms": 0.05,
            "latencyP95Ms": 0.08,
            "sizeBytes": 12345,
            "parameters": 2000,
            "gatesPassed": True,
        },
    }


@dataclass
class Finish:
    """How the stand-in ends a Job: succeed or fail, with the outcome its pod reports."""

    succeed: bool
    outcome: dict[str, Any] | None = None
    reason: str = "BackoffLimitExceeded"
    message: str = "Job has reached the specified backoff limit"


JobPolicy = Callable[[dict[str, Any]], Finish | None]


def probe_outcome(failed: int = 0) -> dict[str, Any]:
    message = f"300 requests, {failed} failed ({failed / 300:.1%}), p95 3.0 ms"
    return {"stage": "probe", "succeeded": not failed, "reason": "StageFailed" if failed else "Succeeded",
            "message": message}  # fmt: skip


def succeed_all(job: dict[str, Any]) -> Finish:
    """Every Job succeeds at once, reporting a plausible outcome."""
    component = job["metadata"]["labels"]["optiloop.dev/component"]
    outcomes = {"tuning": tuning_outcome, "compression": compression_outcome, "probe": probe_outcome}
    return Finish(True, outcomes[component]())


class StandIn:
    """Plays the Job controller, the kubelet and KServe for one namespace, by polling."""

    def __init__(self, plane: ControlPlane, namespace: str, jobs: JobPolicy = succeed_all) -> None:
        from kubernetes import client

        self.api = plane.api_client()
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.namespace = namespace
        self.jobs = jobs
        self.services_ready = True
        self.routes_accepted = True
        self.finished: set[str] = set()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stand-in", daemon=True)

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - reported by the test on failure
                self.errors.append(repr(exc))
            self._stop.wait(0.2)

    def step(self) -> None:
        for job in self.batch.list_namespaced_job(self.namespace).items:
            body = self.api.sanitize_for_serialization(job)
            uid = body["metadata"]["uid"]
            if uid in self.finished or (body.get("status") or {}).get("conditions"):
                continue
            finish = self.jobs(body)
            if finish is not None:
                self.finish_job(body, finish)
                self.finished.add(uid)
        if self.services_ready:
            for isvc in self.custom.list_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", self.namespace, "inferenceservices"
            )["items"]:
                self.mark_ready(isvc)
        if self.routes_accepted:
            for route in self.custom.list_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", self.namespace, "httproutes"
            )["items"]:
                self.accept_route(route)

    def finish_job(self, job: dict[str, Any], finish: Finish) -> None:
        """Report ``job`` finished the way the Job controller and the kubelet would."""
        name = job["metadata"]["name"]
        now = datetime.now(UTC).isoformat()
        template = job["spec"]["template"]
        labels = {
            **(template["metadata"].get("labels") or {}),
            "batch.kubernetes.io/job-name": name,
            "job-name": name,
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-{job['metadata']['uid'][:5]}",
                "labels": labels,
                "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job["metadata"]["uid"]}
                ],
            },
            "spec": template["spec"],
        }
        created = self.core.create_namespaced_pod(self.namespace, pod)
        container = template["spec"]["containers"][0]
        terminated = {"exitCode": 0 if finish.succeed else 1, "reason": "Completed" if finish.succeed else "Error"}
        if finish.outcome is not None:
            terminated["message"] = json.dumps(finish.outcome)
        self.core.patch_namespaced_pod_status(
            created.metadata.name,
            self.namespace,
            {
                "status": {
                    "phase": "Succeeded" if finish.succeed else "Failed",
                    "containerStatuses": [
                        {
                            "name": container["name"],
                            "image": container["image"],
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {"terminated": {**terminated, "startedAt": now, "finishedAt": now}},
                        }
                    ],
                }
            },
        )
        if finish.succeed:
            status = {
                "startTime": now,
                "completionTime": now,
                "succeeded": job["spec"].get("completions") or 1,
                "conditions": [
                    _condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
                    _condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
                ],
            }
        else:
            status = {
                "startTime": now,
                "failed": 1,
                "conditions": [
                    _condition("FailureTarget", finish.reason, finish.message),
                    _condition("Failed", finish.reason, finish.message),
                ],
            }
        self.batch.patch_namespaced_job_status(name, self.namespace, {"status": status})

    def mark_ready(self, isvc: dict[str, Any]) -> None:
        meta = isvc["metadata"]
        status = isvc.get("status") or {}
        if status.get("observedGeneration") == meta["generation"]:
            return
        url = f"http://{meta['name']}.{self.namespace}.example.com"
        self.custom.patch_namespaced_custom_object_status(
            "serving.kserve.io",
            "v1beta1",
            self.namespace,
            "inferenceservices",
            meta["name"],
            {
                "status": {
                    "observedGeneration": meta["generation"],
                    "url": url,
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": _now()}],
                }
            },
        )

    def accept_route(self, route: dict[str, Any]) -> None:
        """Report ``route`` accepted by its gateways, as a gateway controller does."""
        meta = route["metadata"]
        parents = (route.get("status") or {}).get("parents") or []
        if parents and all(
            c.get("observedGeneration") == meta["generation"] for p in parents for c in p.get("conditions", [])
        ):
            return
        accepted = {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "accepted by the stand-in",
                    "observedGeneration": meta["generation"], "lastTransitionTime": _now()}  # fmt: skip
        status = {"parents": [{"parentRef": ref, "controllerName": "optiloop.dev/stand-in", "conditions": [accepted]}
                              for ref in route["spec"]["parentRefs"]]}  # fmt: skip
        self.custom.patch_namespaced_custom_object_status(
            "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", meta["name"], {"status": status}
        )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(type_: str, reason: str, message: str) -> dict[str, str]:
    now = _now()
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def wait_until(condition: Callable[[], Any], timeout: float, what: str, operator: OperatorProcess | None = None) -> Any:
    """:func:`wait_for`, adding the operator's log tail to the timeout message."""
    try:
        return wait_for(condition, timeout, interval=0.2, what=what)
    except TimeoutError as exc:
        tail = f"\n--- operator log ---\n{operator.tail()}" if operator is not None else ""
        raise TimeoutError(f"{exc}{tail}") from None


EVERY_TICK = {"OPTILOOP_FULL_RESYNC_SECONDS": "1"}
"""Operator environment that makes every timer tick a full reconcile (for tests that count them)."""


def reconciles(operator: OperatorProcess) -> float:
    """How many reconciles the operator has finished."""
    return operator.metrics().get("optiloop_operator_reconcile_duration_seconds_count", 0.0)


class Resources:
    """ModelOptimizations and their children in one namespace, through the admin client."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes import client

        self.api = api
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)

    def _crd_args(self) -> tuple[str, str, str, str]:
        return ("optiloop.dev", "v1alpha1", self.namespace, "modeloptimizations")

    def create(self, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
        body = {
            "apiVersion": "optiloop.dev/v1alpha1",
            "kind": "ModelOptimization",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": spec,
        }
        return dict(self.custom.create_namespaced_custom_object(*self._crd_args(), body))

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(*self._crd_args(), name))

    def patch_spec(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return dict(self.custom.patch_namespaced_custom_object(*self._crd_args(), name, {"spec": spec}))

    def patch_metadata(self, name: str, metadata: dict[str, Any]) -> dict[str, Any]:
        """Merge ``metadata`` (labels, annotations) into the resource, as kubectl or Argo CD would."""
        return dict(self.custom.patch_namespaced_custom_object(*self._crd_args(), name, {"metadata": metadata}))

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(*self._crd_args(), name)

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        conditions = (self.get(name).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == type_), None)

    def ready(self, name: str) -> bool:
        body = self.get(name)
        ready = next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
        return (
            ready is not None
            and ready["status"] == "True"
            and ready.get("observedGeneration") == body["metadata"]["generation"]
        )

    def jobs(self, name: str | None = None) -> list[dict[str, Any]]:
        selector = f"optiloop.dev/name={name}" if name else "optiloop.dev/name"
        items = self.batch.list_namespaced_job(self.namespace, label_selector=selector).items
        return [self.api.sanitize_for_serialization(j) for j in items]

    def inference_service(self, name: str) -> dict[str, Any] | None:
        return self._custom_object("serving.kserve.io", "v1beta1", "inferenceservices", name)

    def http_route(self, name: str) -> dict[str, Any] | None:
        return self._custom_object("gateway.networking.k8s.io", "v1", "httproutes", name)

    def _custom_object(self, group: str, version: str, plural: str, name: str) -> dict[str, Any] | None:
        """The object, or None when there is none of that name."""
        from kubernetes.client.exceptions import ApiException

        try:
            return dict(self.custom.get_namespaced_custom_object(group, version, self.namespace, plural, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def event_reasons(self, name: str, expected: set[str], timeout: float = 15) -> set[str]:
        """The reasons of the Events on ``name`` once all of ``expected`` are there (they are posted
        in the background, so shortly after the state they describe)."""
        wait_for(lambda: expected <= {e["reason"] for e in self.events(name)}, timeout, what=f"Events {expected}")
        return {e["reason"] for e in self.events(name)}

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}").items
        return [self.api.sanitize_for_serialization(e) for e in items]
