"""A tenant cannot point the operator at a Prometheus the platform did not allow: the resource is
an InvalidSpec naming spec.monitoring.prometheus.url (nothing is built, nothing is queried), an
allowed one is used, and a URL with credentials in it is refused by the API server itself."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.control_plane import ControlPlane
from tests.support.operator import Resources


def spec(url: str) -> dict[str, Any]:
    return {
        "dataset": {"uri": "builtin://iris"},
        "deployment": {"storageUri": "pvc://models/iris"},
        "monitoring": {"prometheus": {"url": url}},
    }


def test_a_prometheus_url_the_platform_did_not_allow_is_an_invalid_spec(
    control_plane: ControlPlane, watched: str
) -> None:
    from kubernetes.client.exceptions import ApiException

    from optiloop.operator.config import OperatorConfig
    from optiloop.operator.k8s import Cluster
    from optiloop.operator.loop import InvalidSpecError, Reconciler

    resources = Resources(control_plane.api_client(), watched)
    config = OperatorConfig(prometheus_allowed_urls=("http://prom.team-a",), api_server_host="10.96.0.1")
    reconciler = Reconciler(Cluster(control_plane.api_client(), connections=2), config)
    cases = {
        "metadata": ("http://169.254.169.254", "must not be a link-local"),
        "apiserver": ("https://kubernetes.default.svc", "must not be the Kubernetes API server"),
        "elsewhere": ("http://prom.team-b:9090", "not among the Prometheus URLs this operator allows"),
    }
    for name, (url, message) in cases.items():
        resources.create(name, spec(url))
        with pytest.raises(InvalidSpecError):
            reconciler.reconcile(watched, name)
        ready = resources.condition(name, "Ready")
        assert ready is not None
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert ready["message"].startswith("spec.monitoring.prometheus.url: ")
        assert message in ready["message"]
        assert resources.jobs(name) == []
    resources.create("allowed", spec("http://prom.team-a:9090"))
    reconciler.reconcile(watched, "allowed")
    assert [j["metadata"]["name"] for j in resources.jobs("allowed")] == ["allowed-tune-r1"]
    with pytest.raises(ApiException) as refused:
        resources.create("credentials", spec("http://admin:secret@prom.team-a:9090"))
    assert refused.value.status == 422
    assert "spec.monitoring.prometheus.url" in (refused.value.body or "")
    reconciler.cluster.flush_events()
