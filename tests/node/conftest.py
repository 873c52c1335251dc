"""The real single-node cluster for the tests in tests/node: one node per session, started before
the first test that needs it and torn down after the last (the teardown check runs last of all)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import skip_or_fail
from tests.support.control_plane import ControlPlaneUnavailableError
from tests.support.gateway_node import GatewayOnNode, GatewayUnavailableError, start
from tests.support.kserve_node import KServeOnNode, install
from tests.support.kserve_release import KServeUnavailableError
from tests.support.namespaces import create_namespace, delete_namespace, stem_of
from tests.support.node import Node, NodeUnavailableError
from tests.support.node_config import CONTAINERD_DIR
from tests.support.node_disk import remove_dead_nodes_images
from tests.support.node_leftovers import HostState


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tier's tests ``node``, and run the teardown check (tests/node/test_teardown.py) right
    after the tier's last other test: it stops the session's node, so the node's memory is given back
    before the next tier, and no other tier's files in /run or /var/lib can blur the check."""
    ours = [item for item in items if "/tests/node/" in str(item.path)]
    for item in ours:
        item.add_marker(pytest.mark.node)
    teardown = [item for item in ours if item.path.name == "test_teardown.py"]
    others = [item for item in ours if item not in teardown]
    if not teardown or not others:
        return
    for item in teardown:
        items.remove(item)
    last = items.index(others[-1])
    items[last + 1 : last + 1] = teardown


@pytest.fixture(scope="session")
def host_before_node() -> HostState:
    """What the host looked like before the session's node started (mounts, folders, links, rules)."""
    return HostState.capture()


@pytest.fixture(scope="session")
def node(host_before_node: HostState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A whole single-node cluster for the session, torn down at its end."""
    removed = remove_dead_nodes_images(tmp_path_factory.getbasetemp().parent, CONTAINERD_DIR)
    if removed:
        print(f"removed the images of nodes whose run was killed: {[str(path) for path in removed]}")
    try:
        started = Node.start(tmp_path_factory.mktemp("node"))
    except (NodeUnavailableError, ControlPlaneUnavailableError) as exc:
        skip_or_fail(f"no real node: {exc}")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def kserve(node: Node) -> KServeOnNode:
    """KServe installed on the session's node (once: its manager lives as long as the node)."""
    try:
        return install(node)
    except KServeUnavailableError as exc:
        skip_or_fail(f"KServe on the node: {exc}")
        raise  # skip_or_fail never returns


@pytest.fixture(scope="module")
def gateway(kserve: KServeOnNode) -> Iterator[GatewayOnNode]:
    """Traefik serving the Gateway API on the node (KServe's installation brings the Gateway API's
    CRDs), with its GatewayClass accepted; stopped after the module's tests."""
    try:
        started = start(kserve.node)
    except GatewayUnavailableError as exc:
        skip_or_fail(f"no gateway on the node: {exc}")
        raise  # skip_or_fail never returns
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def node_api(node: Node) -> Iterator[Any]:
    """An admin ``kubernetes.client.ApiClient`` for the node, closed after the test."""
    api = node.api_client()
    yield api
    api.close()


@pytest.fixture
def node_namespace(node_api: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace on the node for one test, deleted afterwards."""
    name = create_namespace(node_api, stem_of(request.node.name))
    yield name
    delete_namespace(node_api, name)
