"""Fixtures of the operator tests: the extra CRDs, a watched namespace, and an operator process."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.control_plane import ControlPlane
from tests.support.operator import OperatorProcess, install_operator_crds


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/operator/" in str(item.path):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def operator_crds(k8s: Any) -> Any:
    install_operator_crds(k8s)
    return k8s


@pytest.fixture
def watched(operator_crds: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(operator_crds)
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{secrets.token_hex(3)}"
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    yield name
    core.delete_namespace(name)


StartOperator = Callable[..., OperatorProcess]


@pytest.fixture
def start_operator(control_plane: ControlPlane, watched: str, tmp_path: Path) -> Iterator[StartOperator]:
    """Start ``optiloop operator`` processes watching the test's namespace; all stopped afterwards."""
    started: list[OperatorProcess] = []

    def start(**kwargs: Any) -> OperatorProcess:
        log = tmp_path / f"operator-{len(started)}.log"
        process = OperatorProcess(control_plane, [watched], log, **kwargs).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
