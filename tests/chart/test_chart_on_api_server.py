"""The chart installs into a real API server in both modes, its operator pod passes `restricted`
admission, and its ServiceAccount is enough in practice and no more: the operator runs a whole
reconcile with that account's token, every request it made (from the API server's audit log)
was allowed, and what it must never do is denied."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.support.chart import apply, render
from tests.support.control_plane import ControlPlane
from tests.support.namespaces import create_namespace
from tests.support.operator import (
    Finish,
    OperatorProcess,
    Resources,
    StandIn,
    install_operator_crds,
    succeed_all,
    wait_until,
)

pytestmark = pytest.mark.cluster
SPEC: dict[str, Any] = {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://models/iris"}}


def allowed(api: Any, user: str, namespace: str | None, verb: str, group: str, resource: str, name: str = "") -> bool:
    from kubernetes import client

    resource, _, subresource = resource.partition("/")
    attributes = {"verb": verb, "group": group, "resource": resource, "subresource": subresource, "name": name}
    if namespace:
        attributes["namespace"] = namespace
    ns = user.split(":")[2]
    review = client.AuthorizationV1Api(api).create_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
                "resourceAttributes": attributes,
            },
        }
    )
    return bool(review.status.allowed)


Use = tuple[str, str, str, str | None]


def uses_from_audit(events: list[dict[str, Any]]) -> set[Use]:
    """(verb, group, resource[/subresource], namespace) of every resource request."""
    found: set[Use] = set()
    for event in events:
        ref = event.get("objectRef")
        if not ref:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        found.add((event["verb"], ref.get("apiGroup", ""), resource, ref.get("namespace")))
    return found


MUST_NOT: list[tuple[str, str, str]] = [
    ("list", "", "secrets"),
    ("get", "", "secrets"),
    ("watch", "", "secrets"),
    ("create", "rbac.authorization.k8s.io", "roles"),
    ("create", "rbac.authorization.k8s.io", "clusterroles"),
    ("create", "rbac.authorization.k8s.io", "rolebindings"),
    ("create", "", "pods"),
    ("create", "", "pods/exec"),
    ("delete", "", "pods"),
    ("create", "", "serviceaccounts/token"),
    ("update", "", "configmaps"),
    ("delete", "apiextensions.k8s.io", "customresourcedefinitions"),
]


def test_namespaced_chart_runs_the_operator_with_its_own_service_account(
    control_plane: ControlPlane, k8s: Any, tmp_path: Path
) -> None:
    install_operator_crds(k8s)
    system, watched, other = (
        create_namespace(k8s, "optiloop-system"),
        create_namespace(k8s, "ml", restricted=True),
        create_namespace(k8s, "other"),
    )
    release = f"ns-{secrets.token_hex(2)}"
    objects = render(release, system, {"watch": {"mode": "namespaced", "namespaces": [watched]}}, tmp_path)
    apply(k8s, objects, dry_run=True)
    apply(k8s, objects)
    account = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]
    user = f"system:serviceaccount:{system}:{account}"

    # The operator's own pod passes `restricted` admission (a server-side dry run of the pod).
    template = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "operator", "namespace": watched, "labels": template["metadata"]["labels"]},
        "spec": {**template["spec"], "serviceAccountName": "default"},
    }
    apply(k8s, [pod], dry_run=True)

    kubeconfig = control_plane.kubeconfig_for(system, account, tmp_path / "sa-kubeconfig")
    operator = OperatorProcess(
        control_plane, [watched], tmp_path / "operator.log", env={"KUBECONFIG": str(kubeconfig)}, peering="optiloop"
    ).start()
    resources = Resources(k8s, watched)
    hold = {"iris-tune-r2"}

    def policy(job: dict[str, Any]) -> Finish | None:
        return None if job["metadata"]["name"] in hold else succeed_all(job)

    try:
        with StandIn(control_plane, watched, policy):
            resources.create("iris", SPEC)
            wait_until(lambda: resources.ready("iris"), 60, "Ready with the chart's account", operator)
            resources.patch_spec("iris", {"deployment": {"maxReplicas": 5}})  # replaces the InferenceService
            wait_until(lambda: resources.inference_service("iris")["spec"]["predictor"]["maxReplicas"] == 5, 30,
                       "the InferenceService update", operator)  # fmt: skip
            resources.patch_spec("iris", {"tuning": {"maxTrials": 7}})  # revision 2, held running
            wait_until(lambda: any(j["metadata"]["name"] == "iris-tune-r2" for j in resources.jobs("iris")), 30,
                       "revision 2", operator)  # fmt: skip
            resources.patch_spec("iris", {"tuning": {"maxTrials": 8}, "monitoring": {"enabled": False}})
            wait_until(lambda: not any(j["metadata"]["name"] == "iris-tune-r2" for j in resources.jobs("iris")), 30,
                       "revision 2's Job deleted as superseded", operator)  # fmt: skip
            wait_until(lambda: not resources.apps.list_namespaced_deployment(watched).items, 30,
                       "the drift monitor removed", operator)  # fmt: skip
            wait_until(lambda: resources.ready("iris"), 60, "Ready with revision 3", operator)
    finally:
        operator.stop()

    events = control_plane.audit_events(user)
    denied = sorted({(e["verb"], e.get("objectRef", {}).get("resource")) for e in events
                     if e["responseStatus"]["code"] == 403})  # fmt: skip
    assert not denied, f"the chart's RBAC denied the operator: {denied}\n{operator.tail()}"
    uses = uses_from_audit(events)
    exercised = {(verb, resource) for verb, _, resource, _ in uses}
    for needed in [("create", "jobs"), ("delete", "jobs"), ("list", "pods"), ("patch", "modeloptimizations/status"),
                   ("create", "inferenceservices"), ("update", "inferenceservices"), ("create", "deployments"),
                   ("delete", "services"), ("create", "events"), ("patch", "kopfpeerings")]:  # fmt: skip
        assert needed in exercised, f"the scenario did not exercise {needed}"
    assert ("get", "", "configmaps", "kserve") in uses, "KServe's default mode is read"
    for verb, group, resource, ns in sorted(uses, key=str):
        if (verb, resource, ns) == ("get", "configmaps", "kserve"):
            continue  # KServe's inferenceservice-config, the one object granted there (checked below)
        assert ns in (watched, None), f"namespaced mode reached outside {watched}: {verb} {resource} in {ns}"
        assert allowed(k8s, user, ns, verb, group, resource)
        if ns is not None:
            assert not allowed(k8s, user, other, verb, group, resource), f"{verb} {resource} allowed in {other}"
    for verb, group, resource in MUST_NOT:
        for ns in (watched, None):
            assert not allowed(k8s, user, ns, verb, group, resource), f"{verb} {resource} in {ns or 'the cluster'}"
    assert allowed(k8s, user, "kserve", "get", "", "configmaps", "inferenceservice-config")
    assert not allowed(k8s, user, "kserve", "get", "", "configmaps", "other-config"), "only that ConfigMap"
    assert not allowed(k8s, user, "kserve", "list", "", "configmaps")
    assert not allowed(k8s, user, other, "get", "", "configmaps")


def test_cluster_chart_installs_and_grants_the_same_uses_cluster_wide_and_nothing_forbidden(
    control_plane: ControlPlane, k8s: Any, tmp_path: Path
) -> None:
    install_operator_crds(k8s)
    system = create_namespace(k8s, "optiloop-system")
    release = f"cl-{secrets.token_hex(2)}"
    objects = render(release, system, {}, tmp_path)
    objects = [o for o in objects if o["kind"] != "ClusterKopfPeering"] + [
        {**o, "metadata": {**o["metadata"], "name": f"{release}-peering"}}
        for o in objects if o["kind"] == "ClusterKopfPeering"
    ]  # fmt: skip
    apply(k8s, objects, dry_run=True)
    apply(k8s, objects)
    account = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]
    user = f"system:serviceaccount:{system}:{account}"
    anywhere = create_namespace(k8s, "anywhere")
    for verb, group, resource in [
        ("watch", "optiloop.dev", "modeloptimizations"), ("patch", "optiloop.dev", "modeloptimizations/status"),
        ("create", "batch", "jobs"), ("delete", "batch", "jobs"), ("list", "", "pods"),
        ("update", "serving.kserve.io", "inferenceservices"), ("create", "apps", "deployments"),
        ("create", "", "services"), ("create", "", "events"), ("patch", "kopf.dev", "clusterkopfpeerings"),
        ("watch", "apiextensions.k8s.io", "customresourcedefinitions"),
    ]:  # fmt: skip
        scope = None if resource in ("clusterkopfpeerings", "customresourcedefinitions") else anywhere
        assert allowed(k8s, user, scope, verb, group, resource), f"{verb} {resource}"
    for verb, group, resource in MUST_NOT:
        for ns in (anywhere, None):
            assert not allowed(k8s, user, ns, verb, group, resource), f"{verb} {resource} in {ns or 'the cluster'}"
