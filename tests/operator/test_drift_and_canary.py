"""Sustained drift read from Prometheus starts a new revision that rolls out as a canary and is
promoted or rolled back; the consecutive-evaluation, cooldown and budget rules hold; an
unreachable or garbled Prometheus never retrains."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import skip_or_fail
from tests.operator.conftest import StartOperator
from tests.support.control_plane import ControlPlane
from tests.support.operator import OperatorProcess, Resources, StandIn, succeed_all, wait_until
from tests.support.prometheus import PrometheusStandIn


@pytest.fixture
def prometheus() -> Iterator[PrometheusStandIn]:
    stand_in = PrometheusStandIn()
    yield stand_in
    stand_in.stop()


def drift_spec(url: str, **retraining: Any) -> dict[str, Any]:
    return {
        "dataset": {"uri": "builtin://iris"},
        "deployment": {
            "storageUri": "pvc://models/iris",
            "canaryTrafficPercent": 20,
            "canaryAnalysis": {"windowSeconds": 30, "maxErrorRate": 0.05, "maxLatencyP95Ms": 50},
        },
        "monitoring": {
            "evaluationIntervalSeconds": 5,
            "prometheus": {"url": url},
            "retraining": {"consecutiveEvaluations": 2, "cooldownSeconds": 0, "maxRetrains": 1, **retraining},
        },
    }


def status(resources: Resources) -> dict[str, Any]:
    return dict(resources.get("iris").get("status") or {})


def drift_condition(resources: Resources) -> dict[str, Any]:
    return next(c for c in status(resources)["conditions"] if c["type"] == "DriftWithinBounds")


def isvc_state(resources: Resources) -> tuple[str, int | None]:
    isvc = resources.inference_service("iris") or {"metadata": {"labels": {}}, "spec": {"predictor": {}}}
    return isvc["metadata"]["labels"].get("optiloop.dev/revision", ""), isvc["spec"]["predictor"].get(
        "canaryTrafficPercent"
    )


def serve_revision_1(resources: Resources, operator: OperatorProcess, spec: dict[str, Any]) -> None:
    resources.create("iris", spec)
    wait_until(lambda: resources.ready("iris"), 60, "revision 1 to serve", operator)
    wait_until(lambda: drift_condition(resources)["reason"] == "WithinBounds", 30, "a first evaluation", operator)


def test_sustained_drift_retrains_once_and_the_healthy_canary_is_promoted(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator, prometheus: PrometheusStandIn
) -> None:
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator()
    prometheus.latency_ms = 2.0
    with StandIn(control_plane, watched):
        serve_revision_1(resources, operator, drift_spec(prometheus.url))
        prometheus.drift = 1.0
        pending = wait_until(
            lambda: (c := drift_condition(resources))["reason"] == "DriftPending" and c, 30, "DriftPending", operator
        )
        assert pending["status"] == "False"
        assert status(resources)["revision"] == 1, "one drifting evaluation must not retrain (consecutive: 2)"
        wait_until(lambda: status(resources)["revision"] == 2, 30, "revision 2 after 2 drifting evaluations", operator)
        record = status(resources)["history"][-1]
        assert (record["trigger"], record["parentRevision"]) == ("Drift", 1)
        wait_until(lambda: isvc_state(resources) == ("2", 20), 30, "revision 2 as a 20% canary", operator)
        wait_until(lambda: status(resources)["phase"] == "Canary", 10, "phase Canary", operator)
        assert status(resources)["servingRevision"] == 1
        assert resources.ready("iris"), "a canary in analysis must not make the resource un-Ready"
        wait_until(lambda: isvc_state(resources) == ("2", None), 60, "the canary promoted", operator)
        wait_until(lambda: drift_condition(resources)["reason"] == "RetrainBudgetSpent", 30, "budget spent", operator)
        final = status(resources)
    assert final["servingRevision"] == 2
    assert [(r["revision"], r["outcome"]) for r in final["history"]] == [(1, "Superseded"), (2, "Promoted")]
    promoted = final["history"][1]
    assert promoted["triggeredAt"] <= promoted["startedAt"] <= promoted["deployedAt"] <= promoted["promotedAt"]
    assert final["drift"]["retrainsTriggered"] == 1
    assert [j["metadata"]["name"] for j in resources.jobs("iris")].count("iris-tune-r3") == 0
    monitor = resources.apps.read_namespaced_deployment("iris-drift", watched)
    assert monitor.metadata.labels["optiloop.dev/revision"] == "2"
    resources.event_reasons("iris", {"DriftDetected", "RetrainStarted", "CanaryStarted", "CanaryPromoted"})
    samples = operator.metrics()
    assert samples["optiloop_operator_retrains_triggered_total"] == 1
    assert samples['optiloop_operator_canaries_total{outcome="promoted"}'] == 1
    assert samples['optiloop_operator_drift_evaluations_total{outcome="DriftSustained"}'] == 1


def test_a_failing_canary_rolls_back_and_cooldown_and_an_unreachable_prometheus_hold_retraining(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator, prometheus: PrometheusStandIn
) -> None:
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator()
    spec = drift_spec(prometheus.url, maxRetrains=5, cooldownSeconds=3600)
    with StandIn(control_plane, watched):
        serve_revision_1(resources, operator, spec)
        prometheus.drift, prometheus.error_rate = 1.0, 0.5
        wait_until(lambda: status(resources)["revision"] == 2, 30, "revision 2", operator)
        wait_until(lambda: status(resources)["history"][-1]["outcome"] == "RolledBack", 40, "a rollback", operator)
        wait_until(lambda: isvc_state(resources) == ("1", None), 10, "revision 1 back at 100%", operator)
        after_rollback = status(resources)
        assert after_rollback["servingRevision"] == 1
        assert "ErrorRateTooHigh" in after_rollback["history"][-1]["message"]
        wait_until(lambda: resources.ready("iris"), 10, "Ready after the rollback", operator)
        # Drift goes on, but the cooldown since the last retrain holds the next one.
        wait_until(lambda: drift_condition(resources)["reason"] == "CooldownActive", 30, "cooldown", operator)

        for mode in ("down", "garbage"):
            prometheus.mode = mode
            before = prometheus.drift_queries()
            unknown = wait_until(
                lambda: (c := drift_condition(resources))["reason"] == "PrometheusUnreachable" and c, 30,
                f"PrometheusUnreachable ({mode})", operator,
            )  # fmt: skip
            assert unknown["status"] == "Unknown"
            wait_until(lambda b=before: prometheus.drift_queries() >= b + 2, 30, "two more evaluations", operator)
            assert status(resources)["revision"] == 2
    resources.event_reasons("iris", {"CanaryRolledBack"})
    assert operator.metrics()['optiloop_operator_drift_evaluations_total{outcome="PrometheusUnreachable"}'] >= 2


def test_a_spec_change_rolls_out_as_a_canary_and_a_deployment_only_change_does_not_retrain(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator, prometheus: PrometheusStandIn
) -> None:
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator()
    spec = drift_spec(prometheus.url)
    with StandIn(control_plane, watched):
        serve_revision_1(resources, operator, spec)
        resources.patch_spec("iris", {"deployment": {"maxReplicas": 7}})
        wait_until(
            lambda: (resources.inference_service("iris") or {})["spec"]["predictor"]["maxReplicas"] == 7, 30,
            "maxReplicas applied", operator,
        )  # fmt: skip
        wait_until(lambda: resources.ready("iris"), 30, "Ready for generation 2", operator)
        assert status(resources)["revision"] == 1
        assert sorted(j["metadata"]["name"] for j in resources.jobs("iris")) == ["iris-compress-r1", "iris-tune-r1"]

        changed = copy.deepcopy(spec["monitoring"])
        resources.patch_spec("iris", {"tuning": {"maxTrials": 12}, "monitoring": changed})
        wait_until(lambda: status(resources)["revision"] == 2, 30, "revision 2 after the spec change", operator)
        wait_until(lambda: isvc_state(resources) == ("2", 20), 30, "revision 2 as a canary", operator)
    record = status(resources)["history"][-1]
    assert record["trigger"] == "SpecChanged"
    assert record["generation"] == resources.get("iris")["metadata"]["generation"]


def test_drift_exported_by_the_monitor_and_scraped_by_a_real_prometheus_starts_a_retrain(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator
) -> None:
    from prometheus_client import start_http_server

    from optiloop.drift.metrics import DriftMetrics
    from tests.support.control_plane import free_port
    from tests.support.prometheus import prometheus_bin, running_prometheus

    if prometheus_bin() is None:
        skip_or_fail("Debian's prometheus is not installed (make install)")
    exporter = DriftMetrics(watched, "iris", 1)
    exporter.detected.labels(**exporter.labels).set(0)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=exporter.registry)
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator()
    try:
        with running_prometheus([f"127.0.0.1:{port}"]) as real, StandIn(control_plane, watched):
            spec = drift_spec(real.url)
            spec["monitoring"]["evaluationIntervalSeconds"] = 5
            serve_revision_1(resources, operator, spec)
            exporter.detected.labels(**exporter.labels).set(1)
            wait_until(lambda: real.query("optiloop_drift_detected == 1"), 30, "Prometheus to scrape the drift")
            wait_until(lambda: status(resources)["revision"] == 2, 40, "revision 2 from real drift", operator)
            names = lambda: [j["metadata"]["name"] for j in resources.jobs("iris")]  # noqa: E731
            wait_until(lambda: "iris-tune-r2" in names(), 30, "revision 2's tuning Job", operator)
    finally:
        server.shutdown()
        thread.join(5)
    assert status(resources)["history"][-1]["trigger"] == "Drift"


def test_drift_flapping_around_the_threshold_never_retrains_and_a_storm_retrains_once(
    control_plane: ControlPlane, watched: str, start_operator: StartOperator, prometheus: PrometheusStandIn
) -> None:
    resources = Resources(control_plane.api_client(), watched)
    operator = start_operator()
    with StandIn(control_plane, watched, lambda job: None if job["metadata"]["name"].endswith("-r2") else
                 succeed_all(job)):  # fmt: skip
        serve_revision_1(resources, operator, drift_spec(prometheus.url, maxRetrains=5, cooldownSeconds=3600))
        prometheus.flap = True
        before = prometheus.drift_queries()
        wait_until(lambda: prometheus.drift_queries() >= before + 6, 60, "six flapping evaluations", operator)
        assert status(resources)["revision"] == 1, "drift on every other evaluation is never two in a row"
        assert status(resources)["drift"]["consecutiveDrifting"] <= 1
        # A storm (drift on every evaluation) retrains once; the revision stays in flight and the
        # cooldown holds, so the storm starts nothing else.
        prometheus.flap, prometheus.drift = False, 1.0
        wait_until(lambda: status(resources)["revision"] == 2, 30, "one retrain", operator)
        before = prometheus.drift_queries()
        wait_until(lambda: prometheus.drift_queries() >= before + 4, 40, "four more evaluations", operator)
        assert status(resources)["revision"] == 2
        assert drift_condition(resources)["reason"] in ("RetrainInFlight", "CooldownActive")
    assert [j["metadata"]["name"] for j in resources.jobs("iris")].count("iris-tune-r2") == 1
