"""Retraining schedules are read as Kubernetes reads a CronJob's: the API server accepts and
refuses the same table as optiloop (a CronJob created as a dry run), every schedule it accepts
passes the CRD too, and Kubernetes' own cron parser (robfig/cron, built from the Go module
cache) gives the same fire times."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from optiloop.api.cron import next_fire, parse
from tests.conftest import skip_or_fail
from tests.unit.test_cron_schedule import ACCEPTED, FRIDAY_NOON, REFUSED

CRONREF = Path(__file__).resolve().parents[1] / "support" / "cronref"
SCHEDULES = [s for s, _ in ACCEPTED] + [s for s, _ in REFUSED]


def ours(schedule: str) -> bool:
    try:
        parse(schedule)
    except ValueError:
        return False
    return True


def cron_job(schedule: str) -> dict[str, Any]:
    container = {"name": "c", "image": "registry.example/c:1"}
    template = {"spec": {"restartPolicy": "Never", "containers": [container]}}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "probe"},
        "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": template}}},
    }


def test_the_api_server_accepts_and_refuses_what_optiloop_does(k8s: Any, namespace: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    batch, custom = client.BatchV1Api(k8s), client.CustomObjectsApi(k8s)
    disagreements = []
    for schedule in SCHEDULES:
        try:
            batch.create_namespaced_cron_job(namespace, cron_job(schedule), dry_run="All")
            kubernetes = True
        except ApiException as exc:
            if exc.status != 422:
                raise
            kubernetes = False
        if kubernetes != ours(schedule):
            disagreements.append((schedule, kubernetes))
        if kubernetes:
            # The CRD's own check (a shape) lets through every schedule a CronJob takes.
            resource = {
                "apiVersion": "optiloop.dev/v1alpha1",
                "kind": "ModelOptimization",
                "metadata": {"name": "probe"},
                "spec": {
                    "dataset": {"uri": "builtin://iris"},
                    "deployment": {"storageUri": "pvc://models/iris"},
                    "monitoring": {"retraining": {"schedule": schedule}},
                },
            }
            custom.create_namespaced_custom_object(
                "optiloop.dev", "v1alpha1", namespace, "modeloptimizations", resource, dry_run="All"
            )
    assert not disagreements, f"(schedule, accepted by Kubernetes) where optiloop differs: {disagreements}"


@pytest.fixture(scope="module")
def robfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kubernetes' cron parser as a small program, built from the Go module cache."""
    go = shutil.which("go")
    if go is None:
        skip_or_fail("Go is not installed (make install needs it for the control plane)")
    binary = tmp_path_factory.mktemp("cronref") / "cronref"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    result = subprocess.run(
        [str(go), "build", "-o", str(binary), "."], cwd=CRONREF, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return binary


def test_kubernetes_cron_parser_gives_the_same_fire_times(robfig: Path) -> None:
    starts = [FRIDAY_NOON, datetime(2027, 2, 28, 23, 59, tzinfo=UTC), datetime(2028, 12, 31, 23, 0, 1, tzinfo=UTC)]
    queries = [(s, start) for s, _ in ACCEPTED for start in starts]
    lines = "".join(json.dumps({"schedule": s, "after": t.isoformat(), "count": 3}) + "\n" for s, t in queries)
    result = subprocess.run(
        [str(robfig)], input=lines, env={**os.environ, "TZ": "UTC"}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    differences = []
    for (schedule, start), line in zip(queries, result.stdout.splitlines(), strict=True):
        answer = json.loads(line)
        assert "error" not in answer, (schedule, answer)
        theirs = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in answer["next"]]
        theirs = [t if t.year > 1 else None for t in theirs]  # robfig's zero time: never
        mine: list[datetime | None] = []
        after: datetime | None = start
        for _ in range(3):
            after = next_fire(schedule, after) if after is not None else None
            mine.append(after)
        if mine != theirs:
            differences.append((schedule, start.isoformat(), mine, theirs))
    assert not differences, differences
