"""The serving adapters around the pure plans: the operator's gateway and KServe-config settings,
how a gateway's report on an HTTPRoute is read, how discovery caches what the cluster serves,
and the blue/green probe against a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from optiloop.jobs import probe
from optiloop.operator.config import OperatorConfig
from optiloop.operator.discovery import Discovery
from optiloop.operator.k8s import ForbiddenError, TransientApiError
from optiloop.operator.observed import SPEC_HASH_ANNOTATION, observe_route, owned_by


def test_gateway_and_kserve_config_settings_are_read_or_refused_by_name() -> None:
    config = OperatorConfig.from_env({"OPTILOOP_GATEWAY": "gateways/inference", "OPTILOOP_KSERVE_CONFIG": "ks/cfg"})
    assert config.gateway == ("gateways", "inference", None)
    assert config.kserve_config == ("ks", "cfg")
    assert OperatorConfig.from_env({"OPTILOOP_GATEWAY": "gw/main/http"}).gateway == ("gw", "main", "http")
    assert OperatorConfig.from_env({}).gateway is None
    for bad in ("inference", "a/b/c/d", "Gateways/Inference"):
        with pytest.raises(ValueError, match="OPTILOOP_GATEWAY must be namespace/name"):
            OperatorConfig.from_env({"OPTILOOP_GATEWAY": bad})


def route(generation: int, *parents: tuple[str, int]) -> dict[str, Any]:
    """An HTTPRoute whose gateways reported Accepted ``(status, for generation)``."""
    return {
        "kind": "HTTPRoute",
        "metadata": {"name": "iris", "resourceVersion": "5", "generation": generation, "uid": "route-1",
                     "annotations": {SPEC_HASH_ANNOTATION: "abc"}, "ownerReferences": [{"uid": "u-1"}]},
        "status": {"parents": [
            {"parentRef": {"name": "inference"},
             "conditions": [{"type": "Accepted", "status": status, "observedGeneration": seen}]}
            for status, seen in parents
        ]},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("parents", "ready", "updating"),
    [
        ((), False, False),  # no gateway reported: nothing implements it (yet)
        ((("True", 2),), True, False),
        ((("True", 1),), False, True),  # the gateway has not seen the latest weights
        ((("False", 2),), False, False),
        ((("True", 2), ("True", 1)), False, True),
    ],
)
def test_a_route_counts_as_taken_only_when_every_gateway_accepted_its_current_generation(
    parents: tuple[tuple[str, int], ...], ready: bool, updating: bool
) -> None:
    seen = observe_route(route(2, *parents), "u-1")
    assert seen is not None
    assert (seen.ready, seen.updating, seen.spec_hash, seen.uid) == (ready, updating, "abc", "route-1")
    assert observe_route(route(2, *parents), "u-2") is None, "another resource's route is not ours"


def test_an_accepted_route_whose_backends_the_gateway_cannot_resolve_is_not_taken() -> None:
    """Traefik on the real node accepts a route naming a Service that does not exist yet and
    reports ``ResolvedRefs=False``; meanwhile it fails the requests routed to that backend."""
    unresolved = route(2, ("True", 2))
    conditions = unresolved["status"]["parents"][0]["conditions"]
    conditions.append({"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound", "observedGeneration": 2})
    seen = observe_route(unresolved, "u-1")
    assert seen is not None
    assert (seen.ready, seen.updating) == (False, False)
    conditions[-1] = {**conditions[-1], "observedGeneration": 1}  # about an older generation: no longer true
    seen = observe_route(unresolved, "u-1")
    assert seen is not None
    assert seen.ready
    conditions[-1] = {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "observedGeneration": 2}
    seen = observe_route(unresolved, "u-1")
    assert seen is not None
    assert seen.ready


def test_only_children_that_name_the_resource_as_owner_count_as_ours() -> None:
    ours = {"metadata": {"ownerReferences": [{"uid": "u-1", "kind": "ModelOptimization"}]}}
    copied_labels = {"metadata": {"labels": {"optiloop.dev/name": "iris"}}}
    assert owned_by(ours, "u-1")
    assert not owned_by(ours, "u-2")
    assert not owned_by(copied_labels, "u-1")
    assert not owned_by(ours, "")


class FakeApi:
    """The two discovery calls of :class:`~optiloop.operator.k8s.Cluster`, answering from a dict."""

    def __init__(self, served: set[str], config: dict[str, Any] | Exception | None) -> None:
        self.served, self.config, self.calls = served, config, 0
        self.failing = False

    def api_resources(self, group_version: str) -> dict[str, Any] | None:
        self.calls += 1
        if self.failing:
            raise TransientApiError("503")
        kinds = {"serving.kserve.io/v1beta1": "InferenceService", "serving.knative.dev/v1": "Service",
                 "gateway.networking.k8s.io/v1": "HTTPRoute", "keda.sh/v1alpha1": "ScaledObject"}  # fmt: skip
        return {"resources": [{"kind": kinds[group_version]}]} if group_version in self.served else None

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        if isinstance(self.config, Exception):
            raise self.config
        return self.config


def discovery(api: FakeApi, now: list[float]) -> Discovery:
    return Discovery(api, ("kserve", "inferenceservice-config"), ttl=60, clock=lambda: now[0])  # type: ignore[arg-type]


def test_discovery_is_cached_refreshed_after_its_ttl_and_survives_api_trouble() -> None:
    now = [0.0]
    api = FakeApi({"serving.kserve.io/v1beta1"}, {"data": {"deploy": '{"defaultDeploymentMode": "Standard"}'}})
    found = discovery(api, now)
    first = found.capabilities()
    assert (first.kserve, first.knative, first.gateway_api, first.keda) == (True, False, False, False)
    assert first.kserve_default.mode == "standard"
    calls = api.calls
    now[0] = 59
    assert found.capabilities() is first
    assert api.calls == calls, "cached"
    api.served.add("gateway.networking.k8s.io/v1")
    now[0] = 61
    assert found.capabilities().gateway_api, "installed Gateway API noticed after the ttl"
    api.failing = True
    now[0] = 200
    assert found.capabilities().gateway_api, "the last answer is kept while the API server has trouble"
    with pytest.raises(TransientApiError):
        discovery(api, now).capabilities()


def test_a_configmap_the_operator_may_not_read_is_reported_not_raised() -> None:
    api = FakeApi({"serving.kserve.io/v1beta1"}, ForbiddenError("403"))
    default = discovery(api, [0.0]).capabilities().kserve_default
    assert default.mode is None
    assert "may not read ConfigMap kserve/inferenceservice-config" in default.problem


# --- the blue/green probe ----------------------------------------------------


@pytest.fixture
def predictor() -> Iterator[dict[str, Any]]:
    """A predictor stand-in on loopback that answers 200, or 500 for rows with ``fail`` set."""
    seen: dict[str, Any] = {"rows": [], "paths": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen["paths"].append(self.path)
            seen["rows"].extend(body["instances"])
            failed = any(row.get("fail") for row in body["instances"])
            self.send_response(500 if failed else 200)
            self.end_headers()
            self.wfile.write(b'{"predictions": [0]}')

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    seen["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield seen
    server.shutdown()
    server.server_close()


def test_the_probe_sends_reference_rows_at_the_rate_and_passes_a_healthy_predictor(predictor: dict[str, Any]) -> None:
    rows = [{"a": 1.0, "b": "x"}, {"a": None, "b": "y"}]
    url = f"{predictor['url']}/v1/models/iris:predict"
    tally = probe.probe(url, rows, rate=50, seconds=0.2, max_error_rate=0.0)
    assert tally.sent == 10
    assert predictor["rows"][:3] == [rows[0], rows[1], rows[0]]
    assert set(predictor["paths"]) == {"/v1/models/iris:predict"}
    outcome = probe.verdict(tally, 0.0, None)
    assert outcome.succeeded
    assert outcome.message.startswith("10 requests, 0 failed")


def test_the_probe_stops_once_failures_break_the_bound_and_says_what_failed(predictor: dict[str, Any]) -> None:
    rows = [{"a": 1.0}, {"a": 2.0, "fail": True}]
    tally = probe.probe(f"{predictor['url']}/v1/models/iris:predict", rows, rate=100, seconds=1, max_error_rate=0.05)
    assert tally.failed == 6, "5 failures of 100 are allowed; the sixth ends it"
    assert tally.sent == 12
    outcome = probe.verdict(tally, 0.05, None)
    assert not outcome.succeeded
    assert "HTTP 500" in outcome.message


def test_the_probe_fails_on_a_predictor_that_does_not_answer_or_is_too_slow() -> None:
    tally = probe.probe(
        "http://127.0.0.1:9/v1/models/iris:predict", [{"a": 1}], rate=10, seconds=0.1, max_error_rate=0.5
    )
    assert not probe.verdict(tally, 0.5, None).succeeded
    assert "no answer" in tally.first_failure
    slow = probe.Tally()
    for latency in (1.0, 2.0, 50.0):
        slow.record(True, latency)
    assert "above maxLatencyP95Ms 10" in probe.verdict(slow, 0.0, 10.0).message


def test_the_probe_reads_only_a_finished_model_directory(tmp_path: Path) -> None:
    from optiloop.api.jobs import StageInput
    from optiloop.jobs.errors import StorageError
    from optiloop.jobs.storage import StageWriter, open_store

    spec = {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://claim/iris"}}
    stage = StageInput.model_validate({"name": "iris", "spec": spec, "artifacts": str(tmp_path), "revision": 2})
    with pytest.raises(StorageError, match="not a finished model directory"):
        probe.reference_rows(stage)
    with StageWriter(open_store(str(tmp_path)), "r2/model") as out:
        out.write_json(
            "reference.json", {"columns": ["a", "b"], "kinds": ["numeric", "numeric"], "rows": [[1.5, float("nan")]]}
        )
    assert probe.reference_rows(stage) == [{"a": 1.5, "b": None}]


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"columns": ["a", "b"], "rows": []}, "it must hold rows"),
        ({"columns": ["a", "b"], "rows": [[1.5]]}, "row 0 must be a list of 2 values"),
        ({"rows": [[1.5]]}, "its columns must be a list of feature names"),
    ],
)
def test_the_probe_names_the_reference_file_it_cannot_use(tmp_path: Path, document: object, reason: str) -> None:
    from optiloop.api.jobs import StageInput
    from optiloop.jobs.errors import StorageError
    from optiloop.jobs.storage import StageWriter, open_store

    spec = {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://claim/iris"}}
    stage = StageInput.model_validate({"name": "iris", "spec": spec, "artifacts": str(tmp_path), "revision": 1})
    with StageWriter(open_store(str(tmp_path)), "r1/model") as out:
        out.write_json("reference.json", document)
    with pytest.raises(StorageError, match=f"r1/model/reference.json: {reason}"):
        probe.reference_rows(stage)
