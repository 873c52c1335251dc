"""A resource whose InferenceService KServe would give a host it refuses (a name and namespace too
long for one DNS label under KServe's domain template) is refused by the operator first, naming
what to shorten, instead of an InferenceService that stays not Ready (see the real-node test
``test_kserve_refuses_a_predictor_host_name_over_63_characters_and_says_so_on_the_inference_service``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from optiloop.api import ModelOptimization
from optiloop.api.status import ModelOptimizationStatus
from optiloop.operator.capabilities import Capabilities, default_from_config, ingress_from_config
from optiloop.operator.kserve_hosts import fqdn_problem, render
from optiloop.operator.topology import Topology, Unservable, resolve
from tests.unit.test_operator_reconcile import CONFIG, condition
from tests.unit.test_operator_serving_modes import Cluster, Walk, writes

SOURCE = "kserve/inferenceservice-config"
DEFAULT = "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"


def kserve(mode: str = "Standard", ingress: dict[str, Any] | None = None) -> Capabilities:
    data = {"deploy": json.dumps({"defaultDeploymentMode": mode})}
    if ingress is not None:
        data["ingress"] = json.dumps(ingress)
    return Capabilities(
        kserve=True, knative=True, gateway_api=True,
        kserve_default=default_from_config(data, SOURCE), kserve_ingress=ingress_from_config(data, SOURCE),
    )  # fmt: skip


def resource(namespace: str, revision: int | None = None, name: str = "iris") -> ModelOptimization:
    status = ModelOptimizationStatus(revision=revision).model_dump(by_alias=True) if revision else None
    return ModelOptimization.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace, "uid": "u-1", "generation": 1},
            "spec": {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://models/iris"}},
            "status": status,
        }
    )


def test_kserves_default_template_puts_the_predictor_and_the_namespace_in_one_label() -> None:
    host = render(DEFAULT, "iris-r1-predictor", "team-a", "example.com")
    assert host == "iris-r1-predictor-team-a.example.com"
    assert render("{{.Name}}.{{- .Namespace -}}.svc", "a", "b", "c") == "a.b.svc"
    assert render('{{ index .Annotations "host" }}.{{ .IngressDomain }}', "a", "b", "c") is None


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("iris-predictor-ml.example.com", None),
        ("iris.example.com.", None),
        ("a" * 63 + ".example.com", None),
        ("a" * 64 + ".example.com", "has 64 characters (at most 63)"),
        (".".join(["a" * 60] * 4) + ".ab", None),
        (".".join(["a" * 62] * 4) + ".ab", "has 254 characters (at most 253)"),
        ("localhost", "no dots"),
        ("Iris.example.com", "not lower-case"),
        ("iris-.example.com", "not lower-case"),
        ("", "empty"),
    ],
)
def test_host_names_follow_kubernetes_fully_qualified_domain_name_rules(host: str, problem: str | None) -> None:
    found = fqdn_problem(host)
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_a_namespace_too_long_for_standard_modes_predictor_host_is_refused_naming_what_to_shorten() -> None:
    fits = "n" * (63 - len("iris-r1-predictor-"))
    assert isinstance(resolve(resource(fits), kserve(), CONFIG), Topology)
    found = resolve(resource(fits + "x"), kserve(), CONFIG)
    assert isinstance(found, Unservable)
    assert found.reason == "HostNameInvalid"
    assert f"iris-r1-predictor-{fits}x.example.com" in found.message
    assert "has 64 characters (at most 63)" in found.message
    assert "metadata.name (4 characters)" in found.message
    assert f"namespace ({len(fits) + 1})" in found.message
    assert f"ingress.domainTemplate {DEFAULT!r} in ConfigMap {SOURCE}" in found.message


def test_the_check_follows_the_revision_number_that_grows_with_every_retrain() -> None:
    namespace = "n" * (63 - len("iris-r9-predictor-"))
    assert isinstance(resolve(resource(namespace, revision=9), kserve(), CONFIG), Topology)
    found = resolve(resource(namespace, revision=10), kserve(), CONFIG)
    assert isinstance(found, Unservable)
    assert "iris-r10-predictor-" in found.message
    assert "(revision 10)" in found.message


def test_knative_mode_names_only_the_inference_service_so_the_same_namespace_is_fine() -> None:
    namespace = "n" * 50
    assert isinstance(resolve(resource(namespace), kserve(), CONFIG), Unservable)
    assert isinstance(resolve(resource(namespace), kserve("Knative"), CONFIG), Topology)
    found = resolve(resource(namespace, name="a" * 13), kserve("Knative"), CONFIG)
    assert isinstance(found, Unservable)
    assert "InferenceService host of InferenceService " + "a" * 13 in found.message


@pytest.mark.parametrize(
    ("ingress", "servable"),
    [
        ({"domainTemplate": "{{ .Name }}.{{ .Namespace }}.{{ .IngressDomain }}"}, True),
        # A template this check cannot render is left to KServe.
        ({"domainTemplate": '{{ .Name }}-{{ index .Labels "team" }}-{{ .Namespace }}.{{ .IngressDomain }}'}, True),
        ({"ingressDomain": "models.example.org"}, False),
        ({}, False),
    ],
)
def test_kserves_own_template_and_domain_are_used(ingress: dict[str, Any], servable: bool) -> None:
    found = resolve(resource("n" * 50), kserve(ingress=ingress), CONFIG)
    assert isinstance(found, Topology) == servable, found


def test_kserves_defaults_fill_what_its_configmap_leaves_out() -> None:
    for data in (None, {}, {"ingress": "{not json"}, {"ingress": "[]"}, {"ingress": '{"domainTemplate": ""}'}):
        ingress = ingress_from_config(data, SOURCE)
        assert (ingress.domain_template, ingress.ingress_domain) == (DEFAULT, "example.com")
    custom = ingress_from_config({"ingress": json.dumps({"ingressDomain": "svc.example.org"})}, SOURCE)
    assert (custom.domain_template, custom.ingress_domain) == (DEFAULT, "svc.example.org")


def test_no_inference_service_is_created_and_ready_is_false_with_the_reason_once_the_model_is_built() -> None:
    long_suffix = "-served-by-the-shared-inference-gateway-of-the-platform-team"
    capabilities = kserve(ingress={"domainTemplate": "{{ .Name }}-{{ .Namespace }}" + long_suffix + ".example.com"})
    walk = Walk(Cluster(capabilities), {})
    built = walk.build_first()
    first = walk.plans[0]
    assert condition(first, "Deployed") == ("False", "HostNameInvalid")
    assert condition(first, "Ready")[0] == "Unknown", "tuning goes on meanwhile"
    assert writes(built) == []
    assert condition(built, "Ready") == ("False", "HostNameInvalid")
    ready = built.status.condition("Ready")
    assert ready is not None
    assert "shorten metadata.name" in ready.message
