"""How the operator scales: 10, 100 and 500 ModelOptimizations on a real API server.

    .venv/bin/python bench/operator_scale.py                 # 10, 100 and 500 (about 6 minutes)
    .venv/bin/python bench/operator_scale.py --sizes 500 --repeat 3  # the spread between runs
    .venv/bin/python bench/operator_scale.py --sizes 10 100  # what `make bench` runs

Per size, a fresh namespace, a fresh operator process (production settings, its own service
account so the API server's audit log can count its requests) and a fast stand-in for the Job
controller and KServe: every Job succeeds at once with a plausible outcome and every
InferenceService is Ready at once (``tests.support.operator.StandIn`` logic, driven by watches).
The bench creates all resources as fast as it can, then measures from each resource's create
to the operator's create of its tuning Job and of its InferenceService (both as the API
server's audit log times them) and to the first sight (on a watch) of its Ready status. It
reads the operator's reconcile errors from its metrics, its resident memory after the first
10% are Ready and at the end (after 30 s idle), its API requests per resource (by kind) and
the CPU time of the operator, kube-apiserver and etcd.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.control_plane import ADMIN_USER as ADMIN  # noqa: E402
from tests.support.control_plane import ControlPlane, wait_for  # noqa: E402
from tests.support.operator import OperatorProcess, StandIn, install_operator_crds, succeed_all  # noqa: E402

SPEC: dict[str, Any] = {
    "dataset": {"uri": "builtin://iris"},
    "deployment": {"storageUri": "pvc://models/bench"},
    "monitoring": {"evaluationIntervalSeconds": 300},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


class FastStandIn(StandIn):
    """Finishes Jobs and readies InferenceServices as soon as a watch shows them."""

    def __init__(self, plane: ControlPlane, namespace: str, seen: dict[tuple[str, str], float]) -> None:
        super().__init__(plane, namespace, succeed_all)
        self.seen = seen
        self.pool = ThreadPoolExecutor(8)
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> FastStandIn:
        for kind in ("jobs", "inferenceservices", "modeloptimizations"):
            thread = threading.Thread(target=self._watch, args=(kind,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _list_and_watch(self, kind: str) -> Any:
        from kubernetes import watch

        if kind == "jobs":
            return watch.Watch().stream(self.batch.list_namespaced_job, self.namespace, timeout_seconds=600)
        group, version = (
            ("serving.kserve.io", "v1beta1") if kind == "inferenceservices" else ("optiloop.dev", "v1alpha1")
        )
        return watch.Watch().stream(
            self.custom.list_namespaced_custom_object, group, version, self.namespace, kind, timeout_seconds=600
        )

    def _watch(self, kind: str) -> None:
        try:
            self._follow(kind)
        except Exception:
            if not self._stop.is_set():  # a stream cut at shutdown is expected
                raise

    def _follow(self, kind: str) -> None:
        for event in self._list_and_watch(kind):
            if self._stop.is_set():
                return
            obj = event["object"]
            body = obj if isinstance(obj, dict) else self.api.sanitize_for_serialization(obj)
            now = time.monotonic()
            meta = body["metadata"]
            if kind == "jobs" and event["type"] == "ADDED":
                self.pool.submit(self._finish, body)
            elif (
                kind == "inferenceservices"
                and (body.get("status") or {}).get("observedGeneration") != meta["generation"]
            ):
                self.pool.submit(self.mark_ready, body)
            elif kind == "modeloptimizations":
                conditions = (body.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                    self.seen.setdefault((meta["name"], "ready"), now)

    def _finish(self, job: dict[str, Any]) -> None:
        try:
            self.finish_job(job, succeed_all(job))
        except Exception as exc:  # noqa: BLE001 - reported with the results
            self.errors.append(repr(exc))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_latencies(
    audit: list[dict[str, Any]], namespace: str, created_by: str, operator: str
) -> dict[str, list[float]]:
    """Per resource, seconds from its create to the operator's create of its tuning Job and of its
    InferenceService, both as the API server completed them (the audit log's stage timestamps,
    so the bench's own watch lag is not counted)."""
    created: dict[str, float] = {}
    children: dict[tuple[str, str], float] = {}
    for event in audit:
        ref, user = event.get("objectRef") or {}, event["user"]["username"]
        if event["verb"] != "create" or (event.get("responseStatus") or {}).get("code") != 201:
            continue
        if ref.get("namespace") != namespace:
            continue
        done = datetime.fromisoformat(event["stageTimestamp"].replace("Z", "+00:00")).timestamp()
        if user == created_by and ref.get("resource") == "modeloptimizations":
            created[ref["name"]] = done
        elif user == operator and ref.get("resource") == "jobs" and ref.get("name", "").endswith("-tune-r1"):
            children.setdefault((ref["name"].removesuffix("-tune-r1"), "job"), done)
        elif user == operator and ref.get("resource") == "inferenceservices":
            children.setdefault((ref["name"], "isvc"), done)
    return {
        kind: [children[(name, kind)] - at for name, at in created.items() if (name, kind) in children]
        for kind in ("job", "isvc")
    }


def request_kind(event: dict[str, Any]) -> str:
    """``verb resource[/subresource] code`` of one audit event, e.g. ``patch modeloptimizations/status 409``."""
    ref = event.get("objectRef") or {}
    resource = "/".join(x for x in (ref.get("resource"), ref.get("subresource")) if x)
    return f"{event.get('verb')} {resource} {(event.get('responseStatus') or {}).get('code')}"


def operator_account(plane: ControlPlane, api: Any, namespace: str, workdir: Path) -> tuple[Path, str]:
    """A cluster-admin service account for the operator, so its requests are told apart in the audit log."""
    from kubernetes import client

    client.CoreV1Api(api).create_namespaced_service_account(namespace, {"metadata": {"name": "operator"}})
    client.RbacAuthorizationV1Api(api).create_cluster_role_binding(
        {
            "metadata": {"name": f"bench-operator-{namespace}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
        }
    )
    path = plane.kubeconfig_for(namespace, "operator", workdir / f"kubeconfig-{namespace}")
    return path, f"system:serviceaccount:{namespace}:operator"


def run_size(plane: ControlPlane, api: Any, size: int, workdir: Path) -> dict[str, Any]:
    from kubernetes import client

    namespace = f"scale-{size}-{secrets.token_hex(2)}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    kubeconfig, user = operator_account(plane, api, namespace, workdir)
    custom = client.CustomObjectsApi(api)
    seen: dict[tuple[str, str], float] = {}
    created: dict[str, float] = {}
    with FastStandIn(plane, namespace, seen) as stand_in:
        operator = OperatorProcess(
            plane, [namespace], workdir / f"operator-{size}.log",
            env={"KUBECONFIG": str(kubeconfig), "OPTILOOP_RESYNC_SECONDS": "10"}, verbose=False,
        ).start()  # fmt: skip
        assert operator.popen is not None
        pids = {"operator": operator.popen.pid} | {p.name: p.popen.pid for p in plane.processes}

        def cpu_now() -> dict[str, float]:
            return {name: cpu_seconds(pid) for name, pid in pids.items()}

        cpu_before = cpu_now()
        try:
            started = time.monotonic()
            warm_rss = None
            for i in range(size):
                name = f"model-{i:04d}"
                body = {"apiVersion": "optiloop.dev/v1alpha1", "kind": "ModelOptimization",
                        "metadata": {"name": name}, "spec": SPEC}  # fmt: skip
                created[name] = time.monotonic()
                custom.create_namespaced_custom_object(
                    "optiloop.dev", "v1alpha1", namespace, "modeloptimizations", body
                )

            create_loop = time.monotonic() - started

            def ready_count() -> int:
                return sum(1 for (_, what) in seen if what == "ready")

            wait_for(lambda: ready_count() >= max(1, size // 10), 600, interval=0.2, what="10% Ready")
            warm_rss = rss_mib(operator.popen.pid)
            wait_for(lambda: ready_count() >= size, 1800, interval=0.5, what=f"{size} Ready")
            all_ready = time.monotonic() - started
            cpu = cpu_now()
            time.sleep(30)
            end_rss = rss_mib(operator.popen.pid)
            samples = operator.metrics()
        finally:
            operator.stop()
    ready = [seen[(n, "ready")] - created[n] for n in created if (n, "ready") in seen]
    audit = plane.audit_events(user)
    kinds = Counter(request_kind(event) for event in audit)
    latencies = child_latencies(audit + plane.audit_events(ADMIN), namespace, ADMIN, user)
    job, isvc = latencies["job"], latencies["isvc"]
    errors = sum(v for k, v in samples.items() if k.startswith("optiloop_operator_reconcile_errors_total"))
    reconciles = samples.get("optiloop_operator_reconcile_duration_seconds_count", 0.0)
    reconcile_seconds = samples.get("optiloop_operator_reconcile_duration_seconds_sum", 0.0)
    return {
        "resources": size,
        "ready": len(ready),
        "create_to_job_s": {"p50": percentile(job, 0.5), "p95": percentile(job, 0.95), "p99": percentile(job, 0.99)},
        "create_to_isvc_s": {
            "p50": percentile(isvc, 0.5),
            "p95": percentile(isvc, 0.95),
            "p99": percentile(isvc, 0.99),
        },
        "create_to_ready_s": {"p50": percentile(ready, 0.5), "p95": percentile(ready, 0.95), "max": max(ready)},
        "all_ready_s": all_ready,
        "create_loop_s": create_loop,
        "cpu_s_until_all_ready": {name: round(cpu[name] - cpu_before[name], 1) for name in cpu},
        "reconcile_errors": errors,
        "reconciles_per_resource": reconciles / size,
        "mean_reconcile_ms": 1000 * reconcile_seconds / reconciles if reconciles else float("nan"),
        "rss_mib": {"warm": warm_rss, "end": end_rss},
        "api_requests_per_resource": len(audit) / size,
        "api_requests_per_resource_by_kind": {k: round(n / size, 2) for k, n in kinds.most_common()},
        "stand_in_errors": len(stand_in.errors),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (each on a fresh namespace and operator)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "operator_scale.json")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="optiloop-scale-"))
    with ControlPlane.start(workdir / "control-plane") as plane:
        api = plane.api_client()
        import yaml
        from kubernetes import client

        for path in sorted((REPO / "crds").glob("*.yaml")):
            client.ApiextensionsV1Api(api).create_custom_resource_definition(yaml.safe_load(path.read_text()))
        install_operator_crds(api)
        time.sleep(2)
        results = [run_size(plane, api, size, workdir) for size in args.sizes for _ in range(args.repeat)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\n{'resources':>9} {'Ready':>6} {'job p50':>8} {'job p95':>8} {'job p99':>8} {'isvc p95':>9} "
          f"{'Ready p95':>9} {'all Ready':>9} {'errors':>6} {'rec/res':>7} {'ms/rec':>6} {'RSS warm':>8} "
          f"{'RSS end':>8} {'req/res':>7}")  # fmt: skip
    for r in results:
        print(
            f"{r['resources']:>9} {r['ready']:>6} {r['create_to_job_s']['p50']:>7.2f}s "
            f"{r['create_to_job_s']['p95']:>7.2f}s {r['create_to_job_s']['p99']:>7.2f}s "
            f"{r['create_to_isvc_s']['p95']:>8.2f}s {r['create_to_ready_s']['p95']:>8.2f}s {r['all_ready_s']:>8.1f}s "
            f"{r['reconcile_errors']:>6.0f} {r['reconciles_per_resource']:>7.1f} {r['mean_reconcile_ms']:>6.1f} "
            f"{r['rss_mib']['warm']:>7.0f}M {r['rss_mib']['end']:>7.0f}M {r['api_requests_per_resource']:>7.1f}"
        )
    for r in results:
        top = ", ".join(f"{k}: {n}" for k, n in list(r["api_requests_per_resource_by_kind"].items())[:8])
        print(f"requests per resource at {r['resources']}: {top}")
        print(f"at {r['resources']}: creates took {r['create_loop_s']:.1f} s; CPU seconds until all Ready: "
              + ", ".join(f"{k} {v}" for k, v in r["cpu_s_until_all_ready"].items()))  # fmt: skip
    print(f"(stand-in errors: {[r['stand_in_errors'] for r in results]}; results in {args.out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
