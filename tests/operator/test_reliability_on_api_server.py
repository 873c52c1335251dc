"""The operator survives what RELIABILITY.md lists: SIGKILL right after creating a Job (no
duplicate children), a deleted child (recreated under its name), a deleted resource (children
collected through owner references, no stuck finalizer), no-op reconciles (no writes) and two
replicas (one active, takeover after the active one dies)."""

from __future__ import annotations

import time
from typing import Any

from tests.operator.conftest import StartOperator
from tests.support.control_plane import ControlPlane
from tests.support.operator import EVERY_TICK, Finish, Resources, StandIn, reconciles, succeed_all, wait_until

SPEC: dict[str, Any] = {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://models/iris"}}


def never_finish(job: dict[str, Any]) -> Finish | None:
    return None


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
        operator = start_operator(env={"OPTILOOP_FAILPOINT": "after-create:Job", "OPTILOOP_WORKERS": "1"})
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
