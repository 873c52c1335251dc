"""The Standard-mode canary split by a real Gateway API implementation on the real node: Traefik
accepts the operator's own HTTPRoute (and the operator's reading of the route calls it ready only once
the gateway reported on its current generation and resolved its backends), sends the canary revision
its 20% share of 500 requests through the gateway and the serving revision the rest, and moves all of
them on promotion and back on rollback. Each revision is its own InferenceService, made Ready by
KServe's real manager from the operator's own builder, serving our predictor image. It also shows why
the operator gives a canary no share before its InferenceService is Ready: a route naming a predictor
Service KServe has not made yet makes the gateway fail requests."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from optiloop.api import ModelOptimization
from optiloop.operator import names
from optiloop.operator.builders.routing import GATEWAY_GROUP, http_route
from optiloop.operator.builders.serving import inference_service
from optiloop.operator.config import OperatorConfig
from optiloop.operator.observed import observe_route
from optiloop.operator.topology import Topology
from tests.support.control_plane import wait_for
from tests.support.gateway_node import LISTENER_PORT, GatewayOnNode, accepted
from tests.support.kserve_node import KServeOnNode, import_our_image
from tests.support.kserve_serving import (
    CLAIM,
    isvc_ready,
    resolved_topology,
    stored_model_optimization,
    written_as_the_jobs_write_it,
)
from tests.support.model_dirs import city_model, write_model_directory
from tests.support.namespaces import create_namespace, delete_namespace
from tests.support.node import Node

pytestmark = pytest.mark.timeout(900)
GATEWAY = "models"
LISTENER = "http"
REQUESTS = 500
CANARY_PERCENT = 20
ROUTES = "httproutes"
PREDICTOR_RESOURCES = {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
"""Both revisions' predictors (each with KServe's agent beside it) must fit the node's 2 CPUs at once:
the operator's default request (1 CPU each) would leave the canary's pod unschedulable."""

CLIENT = """
import http.client, json, sys
host, port, path, body, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].encode(), int(sys.argv[5])
seen = {}
connection = http.client.HTTPConnection(host, port, timeout=30)
for _ in range(count):
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    answer = connection.getresponse()
    data = answer.read()
    key = json.loads(data).get("model_version", "?") if answer.status == 200 else f"HTTP {answer.status}"
    seen[key] = seen.get(key, 0) + 1
print(json.dumps(seen))
"""
"""Sends ``count`` v2 requests over one keep-alive connection and prints how many answers came from
each revision: the ``model_version`` of a v2 answer is the revision in the served model directory's
lineage. One connection makes the split the gateway's choice per request, not per connection."""

METRICS = """
import sys, urllib.request
for url in sys.argv[1:]:
    sys.stdout.write(urllib.request.urlopen(url, timeout=10).read().decode())
"""


@pytest.fixture
def gateway_namespace(node_api: Any) -> Iterator[str]:
    """A namespace with a short name (KServe puts ``<isvc>-predictor-<namespace>`` in one DNS label)."""
    name = create_namespace(node_api, "gw")
    yield name
    delete_namespace(node_api, name)


def _claim_on(api: Any, namespace: str, folder: Path) -> None:
    """A hostPath PersistentVolume on ``folder`` pre-bound to the ``models`` claim (no provisioner
    runs on the node), and the claim, once Bound."""
    from kubernetes import client

    core: Any = client.CoreV1Api(api)
    volume = f"{namespace}-{CLAIM}"
    access = ["ReadWriteOnce"]
    core.create_persistent_volume({
        "metadata": {"name": volume},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": access, "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(folder), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": CLAIM},
        },
    })  # fmt: skip
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": CLAIM},
        "spec": {"accessModes": access, "storageClassName": "", "volumeName": volume,
                 "resources": {"requests": {"storage": "1Gi"}}},
    })  # fmt: skip
    wait_for(lambda: core.read_namespaced_persistent_volume_claim(CLAIM, namespace).status.phase == "Bound", 60,
             interval=0.25, what=f"claim {CLAIM} to be Bound")  # fmt: skip


def _gateway(api: Any, namespace: str, class_name: str) -> dict[str, Any]:
    """A Gateway of Traefik's class with one HTTP listener, once Traefik accepted and programmed it."""
    from kubernetes import client

    objects: Any = client.CustomObjectsApi(api)
    body = {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "Gateway",
        "metadata": {"name": GATEWAY},
        "spec": {
            "gatewayClassName": class_name,
            "listeners": [{"name": LISTENER, "port": LISTENER_PORT, "protocol": "HTTP"}],
        },
    }
    objects.create_namespaced_custom_object(GATEWAY_GROUP, "v1", namespace, "gateways", body)

    def programmed() -> Any:
        found = dict(objects.get_namespaced_custom_object(GATEWAY_GROUP, "v1", namespace, "gateways", GATEWAY))
        conditions = {c["type"]: c["status"] for c in (found.get("status") or {}).get("conditions") or []}
        return found if accepted(found) and conditions.get("Programmed") == "True" else None

    return wait_for(programmed, 60, interval=0.25, what=f"Traefik to program Gateway {GATEWAY}")


def _route(api: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes import client

    objects: Any = client.CustomObjectsApi(api)
    return dict(objects.get_namespaced_custom_object(GATEWAY_GROUP, "v1", namespace, ROUTES, name))


def _put_route(api: Any, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create the route, or replace its spec as the operator's server-side apply would; returns the
    stored route as the API server answered the write."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    objects: Any = client.CustomObjectsApi(api)
    name = body["metadata"]["name"]
    try:
        return dict(objects.create_namespaced_custom_object(GATEWAY_GROUP, "v1", namespace, ROUTES, body))
    except ApiException as exc:
        if exc.status != 409:
            raise
    return dict(objects.patch_namespaced_custom_object(GATEWAY_GROUP, "v1", namespace, ROUTES, name,
                                                       {"spec": body["spec"]}))  # fmt: skip


def _applied_weights(gateway: GatewayOnNode, namespace: str, services: Sequence[str]) -> dict[str, int] | None:
    """The weights Traefik's proxy applies to ``services`` (the predictor Services), read from its
    API: the weighted service it built for the route's rule. None while it has applied none."""
    for found in gateway.api("/api/http/services"):
        children = (found.get("weighted") or {}).get("services") or []
        if not children or namespace not in found["name"]:
            continue
        weights: dict[str, int] = {}
        for child in children:
            owner = next((s for s in services if f"{namespace}-{s}-" in child["name"]), None)
            if owner is not None:
                weights[owner] = int(child.get("weight", 1))
        if weights:
            return weights
    return None


def _settle(
    gateway: GatewayOnNode, api: Any, namespace: str, owner_uid: str, body: dict[str, Any], want: dict[str, int]
) -> tuple[float, float]:
    """Write the route, check the operator's reading of it right after the write (not ready: no gateway
    reported on the new generation yet), wait until it is ready and until Traefik's proxy applies
    ``want``; returns the seconds from the write to each."""
    began = time.monotonic()
    stored = _put_route(api, namespace, body)
    fresh = observe_route(stored, owner_uid)
    assert fresh is not None
    assert not fresh.ready, f"ready before the gateway reported on generation {stored['metadata']['generation']}"
    name = body["metadata"]["name"]

    def ready() -> Any:
        gateway.alive()
        found = _route(api, namespace, name)
        child = observe_route(found, owner_uid)
        return found if child is not None and child.ready else None

    route = wait_for(ready, 60, interval=0.1, what=f"Traefik to accept HTTPRoute {name} ({gateway.process.log})")
    accepted_after = time.monotonic() - began
    (parent,) = route["status"]["parents"]
    assert parent["controllerName"] == "traefik.io/gateway-controller"
    assert parent["parentRef"]["name"] == GATEWAY
    conditions = {c["type"]: c for c in parent["conditions"]}
    assert conditions["Accepted"]["observedGeneration"] == route["metadata"]["generation"]
    assert conditions["ResolvedRefs"]["status"] == "True", conditions["ResolvedRefs"]
    wait_for(lambda: _applied_weights(gateway, namespace, list(want)) == want, 30, interval=0.1,
             what=f"Traefik's proxy to apply the weights {want}")  # fmt: skip
    return accepted_after, time.monotonic() - began


def _send(node: Node, address: str, model: str, count: int) -> Counter[str]:
    """``count`` requests through the gateway from inside the node; answers counted by revision."""
    request = {"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1], "data": [0.5]},
        {"name": "b", "datatype": "FP32", "shape": [1], "data": [1.5]},
        {"name": "city", "datatype": "BYTES", "shape": [1], "data": ["oslo"]},
    ]}  # fmt: skip
    path = f"/v2/models/{model}/infer"
    argv = [sys.executable, "-c", CLIENT, address, str(LISTENER_PORT), path, json.dumps(request), str(count)]
    return Counter(json.loads(node.run_inside(argv, timeout=300).stdout))


def _counted(node: Node, api: Any, namespace: str, isvc: str) -> int:
    """Requests the predictor pods of ``isvc`` answered ``ok``, from their own metrics."""
    from kubernetes import client

    core: Any = client.CoreV1Api(api)
    pods = core.list_namespaced_pod(namespace, label_selector=f"serving.kserve.io/inferenceservice={isvc}").items
    urls = [f"http://{pod.status.pod_ip}:8080/metrics" for pod in pods if pod.status.pod_ip]
    text = node.run_inside([sys.executable, "-c", METRICS, *urls], timeout=60).stdout
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("optiloop_predictor_requests_total{") and 'outcome="ok"' in line
    )


def test_a_real_gateway_splits_the_canary_share_and_moves_all_traffic_on_promotion_and_rollback(
    kserve: KServeOnNode, gateway: GatewayOnNode, node_api: Any, gateway_namespace: str, tmp_path: Path,
    record_property: Any,
) -> None:  # fmt: skip
    from kubernetes import client

    namespace, node = gateway_namespace, kserve.node
    serve_image = import_our_image(node, "serve")
    artifacts = tmp_path / "artifacts"
    model_net = city_model()
    for revision in (1, 2):
        # The same network in both revisions: only the lineage's revision (the answer's
        # model_version and the metrics' revision label) tells them apart.
        write_model_directory(artifacts / "iris" / f"r{revision}" / "model", model_net, name="iris", revision=revision)
    written_as_the_jobs_write_it(artifacts)
    _claim_on(node_api, namespace, artifacts)

    config = OperatorConfig(predictor_image=serve_image, image_pull_policy="IfNotPresent")
    model: ModelOptimization = stored_model_optimization(
        node_api, namespace, canaryTrafficPercent=CANARY_PERCENT, gateway={"name": GATEWAY, "sectionName": LISTENER},
        resources=PREDICTOR_RESOURCES,
    )  # fmt: skip
    owner_uid = str(model.metadata.uid)
    topology: Topology = resolved_topology(node_api, model, config)
    assert (topology.mode, topology.canary_method) == ("standard", "GatewayAPI"), topology.split
    assert topology.gateway is not None
    objects: Any = client.CustomObjectsApi(node_api)
    bodies = {revision: inference_service(model, config, revision, topology) for revision in (1, 2)}
    services = {revision: str(body["metadata"]["name"]) for revision, body in bodies.items()}
    stable, canary = (names.predictor_service(services[r]) for r in (1, 2))
    model_name = names.inference_service(model.metadata.name)

    def create(revision: int) -> None:
        objects.create_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", namespace, "inferenceservices", bodies[revision]
        )

    def route(*backends: tuple[int, int]) -> dict[str, Any]:
        assert topology.gateway is not None
        return http_route(model, topology.gateway, [(services[r], w) for r, w in backends])

    def through_the_gateway(count: int) -> tuple[Counter[str], dict[int, int]]:
        """Answers by revision, and each revision's own count of the requests it answered."""
        before = {r: _counted(node, node_api, namespace, services[r]) for r in (1, 2)}
        seen = _send(node, address, model_name, count)
        counted = {r: _counted(node, node_api, namespace, services[r]) - before[r] for r in (1, 2)}
        return seen, counted

    # Revision 1 serves alone: the operator's route sends it everything.
    create(1)
    wait_for(lambda: isvc_ready(node_api, namespace, services[1]), 600, interval=0.5,
             what=f"InferenceService {services[1]} to be Ready ({kserve.manager.log})")  # fmt: skip
    found = _gateway(node_api, namespace, gateway.class_name)
    address = found["status"]["addresses"][0]["value"]
    _settle(gateway, node_api, namespace, owner_uid, route((1, 100)), {stable: 100})

    # Why the canary gets no share before its InferenceService is Ready: a route naming its
    # predictor Service before KServe made it is accepted, its backend is not resolved, and the
    # gateway fails requests. The operator's reading of such a route says it is not taken.
    early = _put_route(node_api, namespace, route((1, 100 - CANARY_PERCENT), (2, CANARY_PERCENT)))
    generation = early["metadata"]["generation"]

    def reported() -> Any:
        found = _route(node_api, namespace, names.route(model.metadata.name))
        parents = (found.get("status") or {}).get("parents") or []
        conditions = {c["type"]: c for p in parents for c in p.get("conditions") or []}
        current = conditions.get("Accepted", {}).get("observedGeneration") == generation
        return (found, conditions) if current and "ResolvedRefs" in conditions else None

    unresolved, conditions = wait_for(reported, 60, interval=0.1, what="Traefik to report on the early route")
    assert conditions["Accepted"]["status"] == "True", conditions
    assert (conditions["ResolvedRefs"]["status"], conditions["ResolvedRefs"]["reason"]) == ("False", "BackendNotFound")
    taken = observe_route(unresolved, owner_uid)
    assert taken is not None
    assert not taken.ready, "a route whose canary backend does not exist is not taken"
    early_weights = {stable: 100 - CANARY_PERCENT, canary: CANARY_PERCENT}
    wait_for(lambda: _applied_weights(gateway, namespace, list(early_weights)) == early_weights, 30, interval=0.1,
             what=f"Traefik's proxy to apply the weights {early_weights}")  # fmt: skip
    failed = _send(node, address, model_name, 100)
    record_property("early_route_answers", dict(failed))
    print(f"\nthe canary's share routed before its Service exists: {dict(failed)} of 100 requests")
    assert "2" not in failed, failed
    assert sum(n for answer, n in failed.items() if answer.startswith("HTTP 5")) > 0, failed

    # The operator's order: revision 2's InferenceService first, while the route still sends
    # every request to revision 1, which answers all of them; the share once revision 2 is Ready.
    _settle(gateway, node_api, namespace, owner_uid, route((1, 100)), {stable: 100})
    create(2)
    meanwhile: Counter[str] = Counter()
    deadline = time.monotonic() + 600
    while not isvc_ready(node_api, namespace, services[2]):
        assert time.monotonic() < deadline, f"InferenceService {services[2]} not Ready ({kserve.manager.log})"
        meanwhile += _send(node, address, model_name, 20)
    print(f"while revision 2 was being created: {dict(meanwhile)}")
    assert set(meanwhile) <= {"1"}, meanwhile

    # The canary at 20%: the serving revision's weight is the rest.
    split = route((1, 100 - CANARY_PERCENT), (2, CANARY_PERCENT))
    accepted_s, applied_s = _settle(
        gateway, node_api, namespace, owner_uid, split, {stable: 100 - CANARY_PERCENT, canary: CANARY_PERCENT}
    )
    seen, counted = through_the_gateway(REQUESTS)
    assert set(seen) <= {"1", "2"}, seen  # every request answered, by one of the two revisions
    assert sum(seen.values()) == REQUESTS, seen
    assert counted == {1: seen["1"], 2: seen["2"]}, (counted, seen)
    share = seen["2"] / REQUESTS
    record_property("canary_share", share)
    record_property("route_accepted_seconds", round(accepted_s, 2))
    record_property("route_applied_seconds", round(applied_s, 2))
    print(
        f"{REQUESTS} requests through Traefik at {CANARY_PERCENT}%: canary r2 {seen['2']} ({share:.1%}), "
        f"r1 {seen['1']}; predictors' own counts {counted}; route Accepted {accepted_s:.2f}s and applied by the "
        f"proxy {applied_s:.2f}s after the write (load {os.getloadavg()[0]:.1f})"
    )
    assert 0.15 <= share <= 0.25, seen

    # Promotion (the operator's route names only the promoted revision): every request to r2.
    accepted_s, applied_s = _settle(gateway, node_api, namespace, owner_uid, route((2, 100)), {canary: 100})
    seen, counted = through_the_gateway(100)
    print(f"promoted: {dict(seen)}, counted {counted}; Accepted {accepted_s:.2f}s, applied {applied_s:.2f}s")
    assert seen == {"2": 100}, seen
    assert counted == {1: 0, 2: 100}, counted

    # Rollback (only the serving revision): every request back to r1.
    accepted_s, applied_s = _settle(gateway, node_api, namespace, owner_uid, route((1, 100)), {stable: 100})
    seen, counted = through_the_gateway(100)
    print(f"rolled back: {dict(seen)}, counted {counted}; Accepted {accepted_s:.2f}s, applied {applied_s:.2f}s")
    assert seen == {"1": 100}, seen
    assert counted == {1: 100, 2: 0}, counted
