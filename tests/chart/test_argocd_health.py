"""The shipped Argo CD health check tells Healthy, Progressing and Degraded apart for every case,
on fixtures and on statuses the operator's own reconcile produces, and the argocd-cm snippet
embeds exactly the script."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from optiloop.api import ModelOptimization
from optiloop.operator.config import OperatorConfig
from optiloop.operator.observed import Observed, ObservedJob
from optiloop.operator.reconcile import reconcile
from optiloop.operator.topology import UNSERVABLE_REASONS
from tests.support.chart import CHART

SCRIPT = (CHART / "argocd" / "health.lua").read_text()
NOW = datetime(2026, 11, 27, tzinfo=UTC)


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run the script the way Argo CD does: ``obj`` is a global table, the result a table."""
    from lupa import LuaRuntime

    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return result["status"], result["message"] or ""


def resource(generation: int = 2, status: dict[str, Any] | None = None, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "iris", "generation": generation}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-27T00:00:00Z"
    obj: dict[str, Any] = {"metadata": metadata, "spec": {}}
    if status is not None:
        obj["status"] = status
    return obj


def ready(status: str, reason: str, generation: int = 2, message: str = "m") -> dict[str, Any]:
    return {
        "observedGeneration": 2,
        "phase": "Serving",
        "conditions": [
            {"type": "Tuned", "status": "True", "reason": "Succeeded", "observedGeneration": generation},
            {"type": "Ready", "status": status, "reason": reason, "message": message,
             "observedGeneration": generation},
        ],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (resource(status=ready("True", "Serving")), "Healthy"),
        (resource(status=ready("False", "InvalidSpec")), "Degraded"),
        (resource(status=ready("False", "JobFailed")), "Degraded"),
        (resource(status=ready("False", "DataQualityFailed")), "Degraded"),
        (resource(status=ready("False", "ChildNameTaken")), "Degraded"),
        (resource(status=ready("False", "KnativeUnavailable")), "Degraded"),
        (resource(status=ready("Unknown", "Tuning")), "Progressing"),
        (resource(status=ready("False", "SomethingTransient")), "Progressing"),
        (resource(status=ready("True", "Serving", generation=1)), "Progressing"),
        (resource(status={**ready("True", "Serving"), "observedGeneration": 1}), "Progressing"),
        (resource(status=None), "Progressing"),
        (resource(status={"phase": "Pending"}), "Progressing"),
        (resource(status=ready("True", "Serving"), deleting=True), "Progressing"),
        (resource(status={"observedGeneration": 2}), "Progressing"),
    ],
    ids=["ready", "invalid-spec", "job-failed", "data-quality", "child-name-taken", "knative-unavailable", "tuning",
         "transient-false", "stale-ready", "lagging-status", "no-status", "no-generation", "deleting", "no-conditions"],
)  # fmt: skip
def test_fixtures(obj: dict[str, Any], expected: str) -> None:
    assert health(obj)[0] == expected


def test_a_degraded_message_carries_the_reason_and_message() -> None:
    status, message = health(resource(status=ready("False", "JobFailed", message="Job iris-tune-r1 failed")))
    assert status == "Degraded"
    assert message == "JobFailed: Job iris-tune-r1 failed"


def test_statuses_from_the_real_reconcile() -> None:
    body: dict[str, Any] = {
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u", "generation": 1},
        "spec": {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://m/iris"}},
    }
    config = OperatorConfig()
    started = reconcile(ModelOptimization.model_validate(body), Observed(), config, NOW)
    as_obj = {**body, "status": started.status.model_dump(mode="json", by_alias=True, exclude_none=True)}
    assert health(as_obj)[0] == "Progressing"
    failed_job = ObservedJob("iris-tune-r1", "tuning", 1, "Failed", "BackoffLimitExceeded", "boom")
    failed = reconcile(
        ModelOptimization.model_validate({**body, "status": started.status.model_dump(by_alias=True)}),
        Observed(jobs={("tuning", 1): failed_job}),
        config,
        NOW,
    )
    as_obj = {**body, "status": failed.status.model_dump(mode="json", by_alias=True, exclude_none=True)}
    assert health(as_obj)[0] == "Degraded"


@pytest.mark.parametrize("reason", UNSERVABLE_REASONS)
def test_every_serving_the_cluster_cannot_do_is_degraded(reason: str) -> None:
    """The operator's reasons that need a person (it cannot share them with Lua) are all here."""
    assert health(resource(status=ready("False", reason)))[0] == "Degraded"


def test_the_argocd_cm_snippet_embeds_exactly_the_script() -> None:
    snippet = yaml.safe_load((CHART / "argocd" / "argocd-cm-snippet.yaml").read_text())
    assert snippet["data"]["resource.customizations.health.optiloop.dev_ModelOptimization"] == SCRIPT
