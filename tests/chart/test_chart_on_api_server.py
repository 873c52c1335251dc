"""The chart installs into a real API server in both modes, its operator pod passes `restricted`
admission, and its ServiceAccount is enough in practice and no more: the operator runs a whole
reconcile with that account's token (Knative mode, then KServe's Standard mode with its
HTTPRoute), every request it made (from the API server's audit log) was allowed, every grant
was used or has a stated reason, and what it must never do is denied; its admission policy
admits the children the operator's builders make (the probe Job, the HTTPRoute) and refuses
forged ones."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from optiloop.api import ModelOptimization
from optiloop.operator.builders.jobs import probe_job
from optiloop.operator.builders.routing import http_route
from optiloop.operator.builders.serving import drift_monitor
from optiloop.operator.config import OperatorConfig
from optiloop.operator.topology import GatewayParent
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
# The images tests/support/operator.py configures the operator with; the admission policy allows only these.
TEST_IMAGES = {
    "jobs": "registry.example/optiloop/jobs:test",
    "predictor": "registry.example/optiloop/serve:test",
    "drift": "registry.example/optiloop/drift:test",
}
# Grants the scenario does not exercise, and why each is still needed.
RARELY_USED = {
    ("get", "jobs"): "a create that meets AlreadyExists reads the Job to see whose it is",
    ("get", "inferenceservices"): "the same for an InferenceService (they are listed, not read one by one)",
    ("get", "modeloptimizations"): "a status write refused by a conflict reads the resource again",
    ("update", "deployments"): "a drift monitor whose spec changed is replaced",
    ("update", "services"): "the same for its Service",
    ("update", "networkpolicies"): "the same for its NetworkPolicy",
    ("get", "networkpolicies"): "read with the monitor (the scenario's reads may all come before it exists)",
    ("update", "modeloptimizations/finalizers"): "needed by owner references with blockOwnerDeletion",
    ("list", "kopfpeerings"): "Kopf lists peerings when it starts",
    ("watch", "kopfpeerings"): "Kopf watches its peering object",
    ("get", "kopfpeerings"): "Kopf reads its peering object",
}


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
    values = {"watch": {"mode": "namespaced", "namespaces": [watched]}, "childImages": TEST_IMAGES}
    objects = render(release, system, values, tmp_path)
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
    env = {"KUBECONFIG": str(kubeconfig), "OPTILOOP_GATEWAY": "gateways/inference"}
    operator = OperatorProcess(control_plane, [watched], tmp_path / "operator.log", env=env, peering="optiloop").start()
    resources = Resources(k8s, watched)
    hold = {"iris-tune-r2"}

    def route() -> dict[str, Any] | None:
        return resources.http_route("iris")

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
            # KServe's Standard mode behind the Gateway: an InferenceService per revision and the
            # HTTPRoute; Knative mode's InferenceService is deleted once the route serves.
            resources.patch_metadata("iris", {"annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"}})
            resources.patch_spec("iris", {"deployment": {"maxReplicas": 6}})  # a new generation reads the annotation
            wait_until(lambda: route() is not None and resources.inference_service("iris") is None, 60,
                       "Standard mode: the route, and Knative mode's InferenceService gone", operator)  # fmt: skip
            resources.patch_spec("iris", {"deployment": {"hostnames": ["iris.example.com"]}})  # replaces the route
            wait_until(lambda: (route() or {}).get("spec", {}).get("hostnames") == ["iris.example.com"], 30,
                       "the route's update", operator)  # fmt: skip
            resources.patch_spec("iris", {"deployment": {"canaryMethod": "blueGreen"}})  # no route any more
            wait_until(lambda: route() is None, 30, "the route deleted", operator)
            wait_until(lambda: resources.ready("iris"), 60, "Ready in Standard mode", operator)
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
                   ("delete", "services"), ("create", "events"), ("patch", "kopfpeerings"),
                   ("create", "networkpolicies"), ("delete", "networkpolicies"), ("list", "inferenceservices"),
                   ("delete", "inferenceservices"), ("create", "httproutes"), ("update", "httproutes"),
                   ("delete", "httproutes"), ("get", "httproutes")]:  # fmt: skip
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
    # The smallest RBAC that works: every grant was used, or is listed with the reason it is needed.
    granted = {
        (verb, resource)
        for o in objects if o["kind"] == "Role"
        for rule in o["rules"] for verb in rule["verbs"] for resource in rule["resources"]
    }  # fmt: skip
    unused = granted - exercised - set(RARELY_USED)
    assert not unused, f"granted but never used by the operator: {sorted(unused)}"

    assert allowed(k8s, user, "kserve", "get", "", "configmaps", "inferenceservice-config")
    assert not allowed(k8s, user, "kserve", "get", "", "configmaps", "other-config"), "only that ConfigMap"
    assert not allowed(k8s, user, "kserve", "list", "", "configmaps")
    assert not allowed(k8s, user, other, "get", "", "configmaps")

    # The admission policy: the operator's own account cannot write anything that is not one of
    # our children with our images, whatever its RBAC allows; what it really writes passes.
    forge_as_operator(control_plane, kubeconfig, watched, resources)


def forge_as_operator(control_plane: ControlPlane, kubeconfig: Path, namespace: str, resources: Resources) -> None:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    owner = resources.get("iris")["metadata"]
    ours = {
        "labels": {"app.kubernetes.io/managed-by": "optiloop", "optiloop.dev/name": "iris"},
        "ownerReferences": [{"apiVersion": "optiloop.dev/v1alpha1", "kind": "ModelOptimization",
                             "name": "iris", "uid": owner["uid"]}],
    }  # fmt: skip

    def job(name: str, image: str, **meta: Any) -> dict[str, Any]:
        pod = {"restartPolicy": "Never", "containers": [{"name": "c", "image": image}]}
        return {"metadata": {"name": name, **meta}, "spec": {"template": {"spec": pod}}}

    operator = client.BatchV1Api(config.new_client_from_config(str(kubeconfig)))
    forged = [
        (job("forged-unlabelled", TEST_IMAGES["jobs"]), "labelled as its children"),
        (job("forged-image", "registry.example/miner:1", **ours), "runs only the images of its configuration"),
        (job("forged-orphan", TEST_IMAGES["jobs"], labels=ours["labels"]), "owned by a ModelOptimization"),
    ]
    for body, message in forged:
        with pytest.raises(ApiException) as refused:
            operator.create_namespaced_job(namespace, body, dry_run="All")
        assert refused.value.status in (403, 422), refused.value.body
        assert message in (refused.value.body or ""), refused.value.body
    operator.create_namespaced_job(namespace, job("ours", TEST_IMAGES["jobs"], **ours), dry_run="All")

    # The operator's own builders: the blue/green probe Job (jobs image) and the HTTPRoute pass;
    # a route that is not a ModelOptimization's child does not.
    model = ModelOptimization.model_validate({k: resources.get("iris")[k] for k in ("metadata", "spec")})
    images = OperatorConfig(jobs_image=TEST_IMAGES["jobs"], predictor_image=TEST_IMAGES["predictor"])
    url = f"http://iris-r2-predictor.{namespace}.svc.cluster.local"
    operator.create_namespaced_job(namespace, probe_job(model, images, 2, url), dry_run="All")

    # The drift monitor of s3:// artifacts: the drift image, and the jobs image as the init container
    # that copies the model directory; no other image may ride in as an init container.
    apps = client.AppsV1Api(operator.api_client)
    images = OperatorConfig(jobs_image=TEST_IMAGES["jobs"], drift_image=TEST_IMAGES["drift"])
    document = {k: resources.get("iris")[k] for k in ("metadata", "spec")}
    document["spec"]["deployment"] = {**document["spec"]["deployment"], "storageUri": "s3://bucket/iris"}
    on_s3 = ModelOptimization.model_validate(document)
    monitor = drift_monitor(on_s3, images, 1, inference_services=["iris"])[0]
    apps.create_namespaced_deployment(namespace, monitor, dry_run="All")
    monitor["spec"]["template"]["spec"]["initContainers"][0]["image"] = "registry.example/miner:1"
    with pytest.raises(ApiException) as refused:
        apps.create_namespaced_deployment(namespace, monitor, dry_run="All")
    assert "only the jobs image (childImages.jobs) as an init container" in (refused.value.body or "")
    routes = client.CustomObjectsApi(operator.api_client)
    route = http_route(model, GatewayParent("gateways", "inference", None), [("iris-r2", 100)])
    routes.create_namespaced_custom_object(*ROUTES, namespace, "httproutes", route, dry_run="All")
    foreign = {**route, "metadata": {"name": "forged-route", "labels": ours["labels"]}}
    with pytest.raises(ApiException) as refused:
        routes.create_namespaced_custom_object(*ROUTES, namespace, "httproutes", foreign, dry_run="All")
    assert "owned by a ModelOptimization" in (refused.value.body or ""), refused.value.body


ROUTES = ("gateway.networking.k8s.io", "v1")


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
        ("update", "serving.kserve.io", "inferenceservices"), ("delete", "serving.kserve.io", "inferenceservices"),
        ("create", "gateway.networking.k8s.io", "httproutes"), ("create", "apps", "deployments"),
        ("create", "", "services"), ("create", "", "events"), ("patch", "kopf.dev", "clusterkopfpeerings"),
        ("watch", "apiextensions.k8s.io", "customresourcedefinitions"),
    ]:  # fmt: skip
        scope = None if resource in ("clusterkopfpeerings", "customresourcedefinitions") else anywhere
        assert allowed(k8s, user, scope, verb, group, resource), f"{verb} {resource}"
    for verb, group, resource in MUST_NOT:
        for ns in (anywhere, None):
            assert not allowed(k8s, user, ns, verb, group, resource), f"{verb} {resource} in {ns or 'the cluster'}"


def test_cluster_chart_can_grant_listing_pods_only_where_resources_live(
    control_plane: ControlPlane, k8s: Any, tmp_path: Path
) -> None:
    """With rbac.jobPodsNamespaces the operator may list pods (its Jobs' outcomes) only in those
    namespaces: not in another, and not across the cluster, while everything else stays
    cluster-wide."""
    install_operator_crds(k8s)
    system = create_namespace(k8s, "optiloop-system")
    ml, elsewhere = create_namespace(k8s, "ml"), create_namespace(k8s, "elsewhere")
    release = f"pods-{secrets.token_hex(2)}"
    values = {"rbac": {"jobPodsNamespaces": [ml]}, "peering": {"create": False}, "admissionPolicy": {"enabled": False}}
    objects = render(release, system, values, tmp_path)
    apply(k8s, objects)
    account = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]
    user = f"system:serviceaccount:{system}:{account}"
    assert allowed(k8s, user, ml, "list", "", "pods")
    assert not allowed(k8s, user, elsewhere, "list", "", "pods"), "pods in a namespace not listed"
    assert not allowed(k8s, user, None, "list", "", "pods"), "pods across the cluster"
    assert not allowed(k8s, user, ml, "get", "", "pods"), "list only"
    assert not allowed(k8s, user, ml, "watch", "", "pods"), "list only"
    assert allowed(k8s, user, elsewhere, "create", "batch", "jobs"), "the rest stays cluster-wide"

    # The operator's own client with that account: listing in `ml` works; elsewhere the refusal
    # says which grant is missing instead of a traceback.
    from kubernetes import config

    from optiloop.operator.k8s import Cluster, ForbiddenError

    kubeconfig = control_plane.kubeconfig_for(system, account, tmp_path / "sa-kubeconfig")
    cluster = Cluster(config.new_client_from_config(str(kubeconfig)), connections=2)
    assert cluster.list_job_pods(ml, "iris-tune-r1") == []
    with pytest.raises(ForbiddenError) as refused:
        cluster.list_job_pods(elsewhere, "iris-tune-r1")
    assert str(refused.value) == (
        f"list pods in {elsewhere} (to read Job iris-tune-r1's outcome, or why its pod cannot start): "
        "403 Forbidden; the chart grants it "
        f"only in watch.namespaces, or in rbac.jobPodsNamespaces when set: add {elsewhere} there"
    )
