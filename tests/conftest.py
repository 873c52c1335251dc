"""Shared fixtures: the real control plane for tests marked ``cluster``, and loud skips outside CI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.control_plane import ControlPlane, ControlPlaneUnavailableError, wait_for
from tests.support.namespaces import create_namespace, delete_namespace, stem_of

REPO_ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_loud_skips: list[str] = []


def skip_or_fail(reason: str) -> None:
    """Skip loudly on a developer machine; fail in CI, where every tier must run."""
    if IN_CI:
        pytest.fail(f"CI must run this test, but: {reason}", pytrace=False)
    _loud_skips.append(reason)
    pytest.skip(f"SKIPPED, NOT TESTED: {reason}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/cluster/" in str(item.path):
            item.add_marker(pytest.mark.cluster)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _loud_skips:
        terminalreporter.section("TESTS THAT DID NOT RUN", sep="!", red=True, bold=True)
        for reason in sorted(set(_loud_skips)):
            terminalreporter.write_line(f"  {reason}", red=True)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd and kube-apiserver on loopback for the whole session, stopped at its end."""
    try:
        plane = ControlPlane.start(tmp_path_factory.mktemp("control-plane"))
    except ControlPlaneUnavailableError as exc:
        skip_or_fail(f"no Kubernetes API server: {exc}")
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def k8s(control_plane: ControlPlane) -> Any:
    """An admin ``kubernetes.client.ApiClient`` with the optiloop CRDs installed and established."""
    from kubernetes import client

    api = control_plane.api_client()
    extensions = client.ApiextensionsV1Api(api)
    for path in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        extensions.create_custom_resource_definition(crd)
        name = crd["metadata"]["name"]

        def established(name: str = name) -> bool:
            conditions = extensions.read_custom_resource_definition(name).status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        wait_for(established, 30, what=f"CRD {name} to be established")
    return api


@pytest.fixture
def namespace(k8s: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = create_namespace(k8s, stem_of(request.node.name))
    yield name
    delete_namespace(k8s, name)
