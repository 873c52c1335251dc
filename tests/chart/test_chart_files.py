"""The Helm chart lints and renders in both modes, documents every value, ships byte-identical
CRDs, refuses settings that cannot work, and its RBAC never grants secrets or role creation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from optiloop.operator.k8s import CHILD_KINDS
from optiloop.operator.peering import peering_crds
from tests.conftest import skip_or_fail
from tests.support.chart import CHART, REPO_ROOT, render, run_helm

NAMESPACED = {"watch": {"mode": "namespaced", "namespaces": ["ml", "research"]}}


@pytest.fixture(autouse=True)
def _helm_built() -> None:
    try:
        run_helm("version")
    except FileNotFoundError as exc:
        skip_or_fail(str(exc))


@pytest.mark.parametrize("values", [{}, NAMESPACED], ids=["cluster", "namespaced"])
def test_helm_lint_passes(values: dict[str, Any], tmp_path: Path) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", "1.34.4"]
    if values:
        file = tmp_path / "values.yaml"
        file.write_text(yaml.safe_dump(values))
        args += ["--values", str(file)]
    result = run_helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr


def kinds(objects: list[dict]) -> list[tuple[str, str | None]]:
    return sorted((o["kind"], o["metadata"].get("namespace")) for o in objects)


def test_cluster_mode_renders_cluster_roles_and_one_cluster_peering() -> None:
    objects = render("rel", "optiloop-system")
    assert kinds(objects) == [
        ("ClusterKopfPeering", None),
        ("ClusterRole", None),
        ("ClusterRole", None),
        ("ClusterRole", None),
        ("ClusterRoleBinding", None),
        ("ClusterRoleBinding", None),
        ("ClusterRoleBinding", None),
        ("Deployment", "optiloop-system"),
        ("Role", "kserve"),
        ("RoleBinding", "kserve"),
        ("Service", "optiloop-system"),
        ("ServiceAccount", "optiloop-system"),
        ("ValidatingAdmissionPolicy", None),
        ("ValidatingAdmissionPolicyBinding", None),
    ]
    env = {e["name"]: e.get("value") for e in deployment(objects)["containers"][0]["env"]}
    assert env["OPTILOOP_NAMESPACES"] == ""
    assert "OPTILOOP_PRIORITY" not in env, "each replica derives a distinct priority from its pod name"


def test_cluster_mode_can_grant_listing_pods_only_in_the_namespaces_listed(tmp_path: Path) -> None:
    """rbac.jobPodsNamespaces: the pods rule is bound by a RoleBinding in each namespace listed
    instead of cluster-wide; every other rule stays cluster-wide."""

    def pod_rules(objects: list[dict]) -> list[dict[str, Any]]:
        return [
            r for o in objects if o["kind"] in ("ClusterRole", "Role") for r in o["rules"] if "pods" in r["resources"]
        ]

    everywhere = render("rel", "optiloop-system")
    assert pod_rules(everywhere) == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    bound = {o["roleRef"]["name"] for o in everywhere if o["kind"] == "ClusterRoleBinding"}
    assert bound == {"rel-optiloop-framework", "rel-optiloop-application", "rel-optiloop-job-pods"}

    listed = render("rel", "optiloop-system", {"rbac": {"jobPodsNamespaces": ["ml", "research"]}}, tmp_path)
    assert pod_rules(listed) == pod_rules(everywhere)
    bound = {o["roleRef"]["name"] for o in listed if o["kind"] == "ClusterRoleBinding"}
    assert bound == {"rel-optiloop-framework", "rel-optiloop-application"}
    bindings = [(o["metadata"]["namespace"], o["roleRef"]) for o in listed if o["kind"] == "RoleBinding"]
    job_pods = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "rel-optiloop-job-pods"}
    assert [(ns, ref) for ns, ref in bindings if ref == job_pods] == [("ml", job_pods), ("research", job_pods)]


def test_namespaced_mode_renders_a_role_and_a_peering_in_each_namespace_and_nothing_cluster_wide(
    tmp_path: Path,
) -> None:
    objects = render("rel", "optiloop-system", NAMESPACED, tmp_path)
    assert not [o for o in objects if o["kind"].startswith("Cluster")]
    assert [o["metadata"]["namespace"] for o in objects if o["kind"] == "Role"] == ["ml", "research", "kserve"]
    assert [o["metadata"]["namespace"] for o in objects if o["kind"] == "KopfPeering"] == ["ml", "research"]
    env = {e["name"]: e.get("value") for e in deployment(objects)["containers"][0]["env"]}
    assert env["OPTILOOP_NAMESPACES"] == "ml,research"


def test_kserves_configmap_is_readable_by_name_only_and_the_serving_settings_reach_the_operator(
    tmp_path: Path,
) -> None:
    values = {"kserve": {"namespace": "kserve-system"}, "gateway": "gateways/inference/http"}
    objects = render("rel", "optiloop-system", values, tmp_path)
    [role] = [o for o in objects if o["kind"] == "Role" and o["metadata"]["namespace"] == "kserve-system"]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["inferenceservice-config"], "verbs": ["get"]}
    ]
    env = {e["name"]: e.get("value") for e in deployment(objects)["containers"][0]["env"]}
    assert env["OPTILOOP_KSERVE_CONFIG"] == "kserve-system/inferenceservice-config"
    assert env["OPTILOOP_GATEWAY"] == "gateways/inference/http"
    off = render("rel", "optiloop-system", {"kserve": {"readConfig": False}}, tmp_path)
    assert not [o for o in off if o["metadata"].get("namespace") == "kserve"]


def deployment(objects: list[dict]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]


def test_the_operator_pod_is_restricted_with_a_read_only_root_and_probes() -> None:
    pod = deployment(render("rel", "optiloop-system"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_the_admission_policy_binds_the_operators_account_to_the_configured_images(tmp_path: Path) -> None:
    images = {"jobs": "r.example/j:1", "predictor": "r.example/p:1", "drift": "r.example/d:1"}
    objects = render("rel", "ops", {"childImages": images}, tmp_path)
    policy = next(o for o in objects if o["kind"] == "ValidatingAdmissionPolicy")
    assert policy["spec"]["matchConditions"][0]["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:ops:rel-optiloop'".replace("'", '"')
    )
    allowed = next(v["expression"] for v in policy["spec"]["variables"] if v["name"] == "allowed")
    assert all(f'"{image}"' in allowed for image in images.values())
    # Every kind the operator creates or replaces is under the policy (a new one must be added).
    plurals = {"Job": "jobs", "InferenceService": "inferenceservices", "HTTPRoute": "httproutes",
               "Deployment": "deployments", "Service": "services", "NetworkPolicy": "networkpolicies"}  # fmt: skip
    matched = {r for rule in policy["spec"]["matchConstraints"]["resourceRules"] for r in rule["resources"]}
    assert matched == {plurals[kind] for kind in CHILD_KINDS}
    binding = next(o for o in objects if o["kind"] == "ValidatingAdmissionPolicyBinding")
    assert (binding["spec"]["policyName"], binding["spec"]["validationActions"]) == (
        policy["metadata"]["name"],
        ["Deny"],
    )
    off = render("rel", "ops", {"admissionPolicy": {"enabled": False}}, tmp_path)
    assert not [o for o in off if o["kind"].startswith("ValidatingAdmissionPolicy")]


def test_the_pod_grace_period_leaves_room_for_the_drain_on_shutdown(tmp_path: Path) -> None:
    pod = deployment(render("rel", "optiloop-system", {"operator": {"drainSeconds": 45}}, tmp_path))
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["OPTILOOP_DRAIN_SECONDS"] == "45"
    assert pod["terminationGracePeriodSeconds"] == 55


@pytest.mark.parametrize("values", [{}, NAMESPACED], ids=["cluster", "namespaced"])
def test_rbac_grants_no_secrets_no_role_management_and_no_wildcards(values: dict[str, Any], tmp_path: Path) -> None:
    rules = [
        rule
        for o in render("rel", "optiloop-system", values, tmp_path)
        if o["kind"] in ("Role", "ClusterRole")
        for rule in o["rules"]
    ]
    assert rules
    for rule in rules:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert "secrets" not in rule["resources"], rule
        assert not {"roles", "clusterroles", "rolebindings", "clusterrolebindings"} & set(rule["resources"]), rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_the_rbac_template_separates_framework_and_application_parts() -> None:
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert 'define "optiloop.rules.framework"' in helpers
    assert 'define "optiloop.rules.application"' in helpers
    for part in ("framework", "application"):
        block = helpers.split(f'define "optiloop.rules.{part}"')[1].split("{{- end -}}")[0]
        rules, comments = block.count("- apiGroups:"), block.count("\n# ")
        assert rules, part
        assert comments * 2 >= rules, f"the {part} rules need comments saying what each is for"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"watch": {"mode": "namespaced"}}, "watch.mode=namespaced needs at least one namespace"),
        ({"watch": {"mode": "everywhere"}}, 'watch.mode must be "cluster" or "namespaced"'),
        ({"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}}, "not both"),
        ({**NAMESPACED, "rbac": {"jobPodsNamespaces": ["ml"]}}, "rbac.jobPodsNamespaces applies to cluster mode"),
    ],
)
def test_settings_that_cannot_work_fail_the_render_with_a_reason(
    values: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match=re.escape(message)):
        render("rel", "optiloop-system", values, tmp_path)


def test_monitors_are_optional_and_select_the_metrics_service(tmp_path: Path) -> None:
    objects = render("rel", "ops", {"metrics": {"serviceMonitor": {"enabled": True}}}, tmp_path)
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    service = next(o for o in objects if o["kind"] == "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    objects = render("rel", "ops", {"metrics": {"podMonitor": {"enabled": True}}}, tmp_path)
    assert [o["kind"] for o in objects].count("PodMonitor") == 1


def test_every_values_key_is_commented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z][\w-]*:", line):
            previous = next((p for p in reversed(lines[:number]) if p.strip()), "")
            assert previous.strip().startswith("#"), f"values.yaml:{number + 1}: {line.strip()} has no comment"


def test_the_chart_crds_are_the_generated_ones() -> None:
    chart_crd = CHART / "crds" / "modeloptimization.yaml"
    assert chart_crd.read_bytes() == (REPO_ROOT / "crds" / "modeloptimization.yaml").read_bytes()
    shipped = list(yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()))
    assert shipped == peering_crds()
