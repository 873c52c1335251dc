"""The operator survives what RELIABILITY.md lists: SIGKILL right after creating a Job (no
duplicate children), a deleted child (recreated under its name), a deleted resource (children
collected through owner references, no stuck finalizer), no-op reconciles (no writes),
metadata edits racing a reconcile (no lost status, no duplicate work) and two replicas (one
active, takeover after the active one dies)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.operator.conftest import StartOperator
from tests.support.control_plane import ControlPlane
from tests.support.operator import EVERY_TICK, Finish, Resources, StandIn, reconciles, succeed_all, wait_until

SPEC: dict[str, Any] = {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://models/iris"}}


def never_finish(job: dict[str, Any]) -> Finish | None:
    return None


def in_process_reconciler(control_plane: ControlPlane, clock: Callable[[], datetime] | None = None) -> Any:
    """The operator's Reconciler in the test process, for races a test must time exactly (and,
    with ``clock``, for retry schedules it must not wait out)."""
    from optiloop.operator.config import OperatorConfig
    from optiloop.operator.k8s import Cluster
    from optiloop.operator.loop import Reconciler

    cluster = Cluster(control_plane.api_client(), connections=2)
    return Reconciler(cluster, OperatorConfig()) if clock is None else Reconciler(cluster, OperatorConfig(), clock)


def counter(name: str) -> float:
    """One of the operator's counters in the test process (0 before its first increment)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name) or 0.0


def test_sigkill_after_each_job_create_leaves_exactly_one_job_per_revision(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator
) -> None:
    resources = Resources(control_plane.api_client(), watched)
    names = [f"model-{i}" for i in range(10)]
    for name in names:
        resources.create(name, SPEC)
    crashes = 0
    # One worker thread: each start creates one tuning Job and dies before writing its status.
    for _ in range(len(names)):
        # It may die before its metrics ever answer: waiting for them would race the crash.
        operator = start_operator(
            await_metrics=False, env={"OPTILOOP_FAILPOINT": "after-create:Job", "OPTILOOP_WORKERS": "1"}
        )
        assert operator.popen is not None
        operator.popen.wait(60)
        assert operator.popen.returncode == -9, operator.tail()
        crashes += 1
    operator = start_operator()
    for name in names:
        wait_until(lambda n=name: (resources.get(n).get("status") or {}).get("revision") == 1, 60,
                   f"{name} to record revision 1", operator)  # fmt: skip
    jobs = [j["metadata"]["name"] for j in resources.jobs()]
    assert crashes == 10
    assert sorted(jobs) == sorted(f"{n}-tune-r1" for n in names)
    for name in names:
        status = resources.get(name)["status"]
        assert status["phase"] == "Tuning"
        assert [r["revision"] for r in status["history"]] == [1]


def test_a_deleted_job_is_recreated_and_a_deleted_resource_takes_its_children(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator
) -> None:
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator()
    hold = {"iris-tune-r1"}

    def policy(job: dict[str, Any]) -> Finish | None:
        return None if job["metadata"]["name"] in hold else succeed_all(job)

    with StandIn(control_plane, watched, policy):
        resources.create("iris", SPEC)
        first = wait_until(lambda: resources.jobs("iris"), 30, "the tuning Job", operator)[0]
        wait_until(lambda: resources.condition("iris", "Tuned")["reason"] in ("JobCreated", "JobRunning"), 30,
                   "the Job in status", operator)  # fmt: skip
        resources.batch.delete_namespaced_job("iris-tune-r1", watched, propagation_policy="Background")
        again = wait_until(
            lambda: [j for j in resources.jobs("iris") if j["metadata"]["uid"] != first["metadata"]["uid"]], 30,
            "the tuning Job to be recreated", operator,
        )  # fmt: skip
        assert [j["metadata"]["name"] for j in again] == ["iris-tune-r1"]
        resources.event_reasons("iris", {"JobRecreated"})
        hold.clear()
        wait_until(lambda: resources.ready("iris"), 60, "Ready", operator)
        assert resources.get("iris")["metadata"]["finalizers"] == ["optiloop.dev/finalizer"]

        resources.delete("iris")
        try:
            wait_until(lambda: not resources.jobs("iris") and resources.inference_service("iris") is None, 90,
                       "garbage collection of the children", operator)  # fmt: skip
        except TimeoutError as exc:
            left = [j["metadata"]["name"] for j in resources.jobs("iris")], resources.inference_service("iris")
            gc_log = control_plane.log_tail("kube-controller-manager")
            raise AssertionError(f"{exc}\nleft: {left}\n--- kube-controller-manager ---\n{gc_log}") from None
        wait_until(lambda: not resources.apps.list_namespaced_deployment(watched).items, 30, "the monitor to go")
    from kubernetes.client.exceptions import ApiException

    def gone() -> bool:
        try:
            resources.get("iris")
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_until(gone, 30, "the resource itself to be gone (no stuck finalizer)", operator)


def test_twenty_no_op_reconciles_write_nothing(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator
) -> None:
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator(env=EVERY_TICK)
    # Every child exists (drift monitor included); one drift evaluation, then none for a day.
    spec = {**SPEC, "monitoring": {"evaluationIntervalSeconds": 86400}}
    with StandIn(control_plane, watched):
        resources.create("iris", spec)
        wait_until(lambda: resources.ready("iris"), 60, "Ready", operator)
        wait_until(lambda: resources.condition("iris", "DriftWithinBounds")["reason"] == "PrometheusUnreachable", 30,
                   "the first drift evaluation", operator)  # fmt: skip
        assert resources.apps.read_namespaced_deployment("iris-drift", watched)
        time.sleep(1.5)  # let the reconciles triggered by the last child events finish
        before = resources.get("iris")
        monitor_versions = {
            "Deployment": resources.apps.read_namespaced_deployment("iris-drift", watched).metadata.resource_version,
            "Service": resources.core.read_namespaced_service("iris-drift", watched).metadata.resource_version,
        }
        writes, count = operator.metrics()["optiloop_operator_status_writes_total"], reconciles(operator)
        wait_until(lambda: reconciles(operator) >= count + 20, 60, "20 more reconciles", operator)
        after = resources.get("iris")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["status"] == before["status"]
    assert operator.metrics()["optiloop_operator_status_writes_total"] == writes
    for kind, read in (("Deployment", resources.apps.read_namespaced_deployment),
                       ("Service", resources.core.read_namespaced_service)):  # fmt: skip
        assert read("iris-drift", watched).metadata.resource_version == monitor_versions[kind], f"{kind} rewritten"


def test_status_writes_survive_metadata_edits_between_read_and_write_and_a_stale_status_is_replanned(
    control_plane: ControlPlane, watched: str
) -> None:
    def rebases() -> float:
        return counter("optiloop_operator_status_rebases_total")

    resources = Resources(control_plane.api_client(), watched)
    reconciler = in_process_reconciler(control_plane)
    before = rebases()
    # The first status: a finalizer (as Kopf adds) lands between the read and the write.
    resources.create("iris", SPEC)
    fresh = resources.get("iris")
    resources.patch_metadata("iris", {"finalizers": ["example.com/hold"]})
    assert reconciler.reconcile(watched, "iris", body=fresh) is not None
    assert resources.get("iris")["status"]["revision"] == 1
    assert rebases() == before, "the first write is conditional on the plan's inputs, not on the version"
    # A later status: the tuning Job finished, and a label edit lands between the read and the write.
    StandIn(control_plane, watched).finish_job(resources.jobs("iris")[0], succeed_all(resources.jobs("iris")[0]))
    tuning = resources.get("iris")
    resources.patch_metadata("iris", {"labels": {"team": "vision"}, "annotations": {"argocd.argoproj.io/x": "1"}})
    assert reconciler.reconcile(watched, "iris", body=tuning) is not None
    body = resources.get("iris")
    assert body["status"]["history"][0]["tunedAt"]
    assert body["metadata"]["labels"] == {"team": "vision"}
    assert rebases() == before + 1
    # A read whose status is behind (no status at all): the write is refused, the plan is made
    # again from the fresh status, which it only moves on (no second revision or Job, tuning kept,
    # no Event from the stale plan).
    assert reconciler.reconcile(watched, "iris", body=fresh) is not None
    after = resources.get("iris")["status"]
    assert [r["revision"] for r in after["history"]] == [1]
    assert after["history"][0]["tunedAt"] == body["status"]["history"][0]["tunedAt"]
    assert after["bestTrial"] == body["status"]["bestTrial"]
    assert sorted(j["metadata"]["name"] for j in resources.jobs("iris")) == ["iris-compress-r1", "iris-tune-r1"]
    reconciler.cluster.flush_events()
    assert [e["reason"] for e in resources.events("iris")].count("RevisionStarted") == 1
    resources.patch_metadata("iris", {"finalizers": None})


def test_requests_for_a_resource_whose_reconcile_is_queued_are_folded_into_it(
    control_plane: ControlPlane, watched: str
) -> None:
    from concurrent.futures import Executor, Future

    class Held(Executor):
        """Queues calls and runs none until the test does."""

        def __init__(self) -> None:
            self.queued: list[tuple[Any, tuple[Any, ...]]] = []

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            self.queued.append((fn, args))
            return Future()

    def coalesced() -> float:
        return counter("optiloop_operator_reconciles_coalesced_total")

    resources = Resources(control_plane.api_client(), watched)
    reconciler = in_process_reconciler(control_plane)
    held, before = Held(), coalesced()
    resources.create("iris", SPEC)
    # A tick of a busy resource, then child events: one reconcile is queued, the rest fold into it.
    assert reconciler.submit(held, watched, "iris", body=resources.get("iris")) is not None
    assert reconciler.submit(held, watched, "iris", evaluate_drift=True) is None
    assert reconciler.submit(held, watched, "iris") is None
    assert len(held.queued) == 1
    assert coalesced() == before + 2
    fn, args = held.queued.pop()
    fn(*args)
    assert resources.get("iris")["status"]["revision"] == 1
    # Once it has run, the next request queues a reconcile of its own.
    assert reconciler.submit(held, watched, "iris") is not None
    reconciler.cluster.flush_events()


def test_metadata_edits_do_not_reconcile_and_a_spec_edit_does_at_once(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator
) -> None:
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator()
    with StandIn(control_plane, watched, never_finish):
        resources.create("iris", SPEC)
        wait_until(lambda: (resources.get("iris").get("status") or {}).get("revision") == 1, 30, "revision 1", operator)
        time.sleep(1.0)
        count = reconciles(operator)
        for i in range(5):
            resources.patch_metadata("iris", {"labels": {"edit": str(i)}, "annotations": {"note": str(i)}})
        time.sleep(3.0)
        assert reconciles(operator) == count, "a label or annotation edit is not work for the operator"
        resources.patch_spec("iris", {"tuning": {"maxTrials": 7}})
        wait_until(lambda: any(j["metadata"]["name"] == "iris-tune-r2" for j in resources.jobs("iris")), 10,
                   "revision 2's Job after the spec edit", operator)  # fmt: skip


def test_two_replicas_one_active_and_the_standby_takes_over_when_it_dies(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator
) -> None:
    from kubernetes import client

    custom = client.CustomObjectsApi(control_plane.api_client())
    custom.create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        watched,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "optiloop"}},
    )
    resources = Resources(control_plane.api_client(), watched)
    active = start_operator(peering="optiloop", priority=200)
    standby = start_operator(peering="optiloop", priority=100)
    with StandIn(control_plane, watched, never_finish):
        wait_until(lambda: "paused" in standby.log.read_text().lower(), 30, "the standby to pause", standby)
        resources.create("first", SPEC)
        wait_until(lambda: resources.jobs("first"), 30, "the active replica to create a Job", active)
        assert reconciles(standby) == 0
        active.kill()
        resources.create("second", SPEC)
        wait_until(lambda: resources.jobs("second"), 60, "the standby to take over", standby)
        wait_until(lambda: (resources.get("second").get("status") or {}).get("revision") == 1, 30, "status", standby)
    jobs = sorted(j["metadata"]["name"] for j in resources.jobs())
    assert jobs == ["first-tune-r1", "second-tune-r1"]


def test_api_server_errors_and_cut_watches_are_retried_and_a_spec_edit_after_recovery_is_handled(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator, tmp_path: Path
) -> None:
    """RELIABILITY #3: with the API server answering 503, then 429 with Retry-After, then every
    watch stream cut, the operator keeps running (no crash loop), retries at a bounded pace,
    brings the resource to Ready once the API answers, and handles a spec edit made after the
    recovery (its watches came back)."""
    from tests.support.faulty_api import FaultyApiProxy

    resources = Resources(control_plane.api_client(), watched)
    hold = {"iris-tune-r1"}

    def policy(job: dict[str, Any]) -> Finish | None:
        return None if job["metadata"]["name"] in hold else succeed_all(job)

    with FaultyApiProxy(control_plane) as proxy, StandIn(control_plane, watched, policy):
        operator = start_operator(env={"KUBECONFIG": str(proxy.kubeconfig(tmp_path / "kubeconfig-proxy"))})
        resources.create("iris", SPEC)
        wait_until(lambda: resources.jobs("iris"), 30, "the tuning Job (the operator is up)", operator)
        proxy.fail(503, seconds=4)
        hold.clear()  # the finished Job comes over the open watch; reconciling it meets the 503s
        time.sleep(4)
        proxy.fail(429, seconds=3, retry_after=1)
        time.sleep(3)
        faults = proxy.faults
        assert proxy.cut_watches() >= 4, "the operator watches resources, Jobs, Deployments and InferenceServices"
        wait_until(lambda: resources.ready("iris"), 60, "Ready after the API server recovered", operator)
        resources.patch_spec("iris", {"tuning": {"maxTrials": 7}})
        wait_until(lambda: any(j["metadata"]["name"] == "iris-tune-r2" for j in resources.jobs("iris")), 30,
                   "revision 2's Job after a spec edit on the re-established watch", operator)  # fmt: skip
        assert operator.popen is not None
        assert operator.popen.poll() is None, operator.tail()
        transient = operator.metrics().get('optiloop_operator_reconcile_errors_total{reason="TransientApiError"}', 0.0)
        operator.stop()  # before the proxy goes, so its end is not one more fault
    assert transient >= 1, "the faults reached reconciles, which failed and were retried"
    # One resource, 7 s of faults, a 1 s resync in tests, backing off: a handful, not a hot loop.
    assert faults <= 60, faults


def test_a_foreign_object_under_a_child_name_is_reported_and_retried_with_backoff_until_the_name_is_free(
    control_plane: ControlPlane, watched: str
) -> None:
    """An object the resource does not own holds its tuning Job's name: Ready=False with reason
    ChildNameTaken naming it, one Warning Event however often it fails, retries backing off
    (10, 20, 40 s at the default resync), and the Job is created once the name is free."""
    from optiloop.operator.k8s import ForeignChildError

    resources = Resources(control_plane.api_client(), watched)
    now = [datetime(2026, 11, 27, tzinfo=UTC)]
    reconciler = in_process_reconciler(control_plane, clock=lambda: now[0])
    container = {"name": "other", "image": "registry.example/other:1"}
    resources.batch.create_namespaced_job(watched, {
        "metadata": {"name": "iris-tune-r1"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}},
    })  # fmt: skip
    resources.create("iris", SPEC)
    for delay in (10, 20, 40):
        with pytest.raises(ForeignChildError):
            reconciler.reconcile(watched, "iris")
        ready = resources.condition("iris", "Ready")
        assert ready is not None
        assert (ready["status"], ready["reason"]) == ("False", "ChildNameTaken")
        assert f"Job {watched}/iris-tune-r1 exists and is not owned by this ModelOptimization" in ready["message"]
        now[0] += timedelta(seconds=delay - 1)
        assert not reconciler.due(watched, "iris"), f"no retry before {delay} s"
        now[0] += timedelta(seconds=1)
        assert reconciler.due(watched, "iris"), f"a retry after {delay} s"
    reconciler.cluster.flush_events()
    assert [e["reason"] for e in resources.events("iris")].count("ChildNameTaken") == 1

    resources.batch.delete_namespaced_job("iris-tune-r1", watched, propagation_policy="Background")
    wait_until(lambda: not resources.batch.list_namespaced_job(watched).items, 30, "the foreign Job to go")
    reconciler.reconcile(watched, "iris")
    assert [j["metadata"]["name"] for j in resources.jobs("iris")] == ["iris-tune-r1"]
    ready = resources.condition("iris", "Ready")
    assert ready is not None
    assert ready["reason"] != "ChildNameTaken"


def test_sigterm_finishes_the_reconcile_in_flight_and_posts_the_events_queued_before_it(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator, tmp_path: Path
) -> None:
    """On SIGTERM the operator drains within OPTILOOP_DRAIN_SECONDS: a reconcile held up by a slow
    API server (its Job create takes 2 s) finishes and writes status, and the Events it queued
    (each POST also held 2 s, so they are still queued when the signal comes) are all posted
    before the process exits cleanly."""
    from tests.support.faulty_api import FaultyApiProxy

    resources = Resources(control_plane.api_client(), watched)
    with FaultyApiProxy(control_plane) as proxy:
        operator = start_operator(env={"KUBECONFIG": str(proxy.kubeconfig(tmp_path / "kubeconfig-proxy"))})
        proxy.slow("POST", "/jobs", 2)
        proxy.slow("POST", "/events", 2)
        resources.create("iris", SPEC)
        wait_until(lambda: proxy.slowed >= 1, 30, "the Job create to be held up", operator)
        operator.stop()
        assert operator.popen is not None
        assert operator.popen.returncode == 0, operator.tail()
        assert proxy.slowed >= 3, "the Job create and both Events went through the slow proxy"
    assert [j["metadata"]["name"] for j in resources.jobs("iris")] == ["iris-tune-r1"]
    assert resources.get("iris")["status"]["revision"] == 1
    assert {"RevisionStarted", "TuningStarted"} <= {e["reason"] for e in resources.events("iris")}
    assert re.search(r"drained: [1-9][0-9]* reconciles finished", operator.log.read_text()), operator.tail()
