"""Fixtures of the operator tests: the extra CRDs, a watched namespace, and an operator process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.control_plane import ControlPlane
from tests.support.namespaces import create_namespace, delete_namespace, stem_of
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
    name = create_namespace(operator_crds, stem_of(request.node.name), restricted=True)
    yield name
    delete_namespace(operator_crds, name)


StartOperator = Callable[..., OperatorProcess]


@pytest.fixture
def start_operator(control_plane: ControlPlane, watched: str, tmp_path: Path) -> Iterator[StartOperator]:
    """Start ``optiloop operator`` processes watching the test's namespace; all stopped afterwards."""
    started: list[OperatorProcess] = []

    def start(await_metrics: bool = True, **kwargs: Any) -> OperatorProcess:
        log = tmp_path / f"operator-{len(started)}.log"
        process = OperatorProcess(control_plane, [watched], log, **kwargs).start(await_metrics)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
