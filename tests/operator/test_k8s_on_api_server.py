"""The operator's Kubernetes edge (``optiloop.operator.k8s``) against the real API server: how it
authenticates (credentials read once a minute, a rejected token read again), and how it maps
answers (our child already there, someone else's object under a child's name, a stale write)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.control_plane import ControlPlane

SPEC: dict[str, Any] = {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://models/iris"}}


def configuration_with_tokens(control_plane: ControlPlane, tokens: list[str]) -> tuple[Any, list[int]]:
    """A client configuration whose refresh hook hands out ``tokens`` in turn (the last one
    thereafter), as a kubeconfig's exec plugin or a rotated token file would; and its call count."""
    configuration = control_plane.api_client().configuration
    calls = [0]

    def refresh(config: Any) -> None:
        config.api_key = {"authorization": f"Bearer {tokens[min(calls[0], len(tokens) - 1)]}"}
        calls[0] += 1

    configuration.refresh_api_key_hook = refresh
    return configuration, calls


def test_credentials_are_read_once_for_many_requests_not_per_request(control_plane: ControlPlane, watched: str) -> None:
    """The refresh hook (a kubeconfig reload, a token file read) runs once for 30 requests."""
    from optiloop.operator.k8s import Http

    configuration, calls = configuration_with_tokens(control_plane, [control_plane.token])
    http = Http(configuration, connections=2)
    for _ in range(30):
        assert http.request("GET", f"/api/v1/namespaces/{watched}")["metadata"]["name"] == watched
    assert calls[0] == 1


def test_a_rejected_token_is_read_again_and_the_request_retried_once(control_plane: ControlPlane, watched: str) -> None:
    """A 401 (a token rotated since it was read) re-reads the credentials and retries once;
    credentials that stay wrong end in the 401."""
    from kubernetes.client.exceptions import ApiException

    from optiloop.operator.k8s import Http

    configuration, calls = configuration_with_tokens(control_plane, ["expired", control_plane.token])
    answer = Http(configuration, connections=2).request("GET", f"/api/v1/namespaces/{watched}")
    assert answer["metadata"]["name"] == watched
    assert calls[0] == 2

    configuration, calls = configuration_with_tokens(control_plane, ["wrong"])
    with pytest.raises(ApiException) as raised:
        Http(configuration, connections=2).request("GET", f"/api/v1/namespaces/{watched}")
    assert raised.value.status == 401
    assert calls[0] == 2


def test_creating_a_child_that_exists_is_success_for_ours_and_an_error_naming_it_for_anyone_elses(
    control_plane: ControlPlane, watched: str
) -> None:
    """``create`` is True when it created, False when our own child was already there (a crash
    between create and status write), and ForeignChildError when the name is taken by an object
    we do not own."""
    from optiloop.operator.k8s import Cluster, ForeignChildError, TransientApiError
    from tests.support.operator import Resources

    cluster = Cluster(control_plane.api_client(), connections=2)
    # A real owner: the garbage collector deletes children whose owner does not exist.
    owner_uid = Resources(control_plane.api_client(), watched).create("iris", SPEC)["metadata"]["uid"]
    ours = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "iris-drift",
            "ownerReferences": [
                {"apiVersion": "optiloop.dev/v1alpha1", "kind": "ModelOptimization", "name": "iris", "uid": owner_uid}
            ],
        },
        "spec": {"ports": [{"port": 8080}]},
    }
    assert cluster.create(watched, ours, owner_uid) is True
    assert cluster.create(watched, ours, owner_uid) is False
    theirs = {**ours, "metadata": {"name": "taken-drift"}}
    assert cluster.create(watched, theirs, "someone-else") is True
    with pytest.raises(ForeignChildError, match=f"Service {watched}/taken-drift exists and is not owned"):
        cluster.create(watched, theirs, owner_uid)
    service = cluster.get_monitor(watched, "iris-drift")["Service"]
    assert service["spec"]["ports"][0]["port"] == 8080
    # A delete names the object it means: another object under that name is never deleted.
    stale = cluster.get_monitor(watched, "taken-drift")["Service"]["metadata"]["uid"]
    with pytest.raises(TransientApiError, match="409"):
        cluster.delete(watched, "Service", "iris-drift", stale)
    cluster.delete(watched, "Service", "iris-drift", service["metadata"]["uid"])
    cluster.delete(watched, "Service", "iris-drift", service["metadata"]["uid"])  # gone already is fine
    assert cluster.get_monitor(watched, "iris-drift") == {}
    assert cluster.get_monitor(watched, "taken-drift")["Service"]["metadata"]["uid"] == stale


def test_a_status_write_on_a_stale_version_is_a_conflict_and_a_missing_resource_reads_as_none(
    control_plane: ControlPlane, watched: str
) -> None:
    """A status write conditional on a resourceVersion that moved on raises ConflictError (the
    reconcile reads again), the write on the current version lands, and a missing resource
    reads as None."""
    from optiloop.operator.k8s import Cluster, ConflictError
    from tests.support.operator import Resources

    cluster = Cluster(control_plane.api_client(), connections=2)
    Resources(control_plane.api_client(), watched).create("iris", SPEC)
    body = cluster.get_resource(watched, "iris")
    assert body is not None
    assert body["kind"] == "ModelOptimization"
    meta = body["metadata"]
    version = cluster.write_first_status(watched, "iris", {"phase": "Pending"}, meta["uid"], meta["generation"])
    with pytest.raises(ConflictError):
        cluster.write_status(watched, "iris", {"phase": "Tuning"}, meta["resourceVersion"])
    cluster.write_status(watched, "iris", {"phase": "Tuning"}, version)
    assert (cluster.get_resource(watched, "iris") or {})["status"]["phase"] == "Tuning"
    assert cluster.get_resource(watched, "absent") is None
    assert cluster.list_jobs(watched, "iris") == []
