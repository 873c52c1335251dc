"""The operator's only Kubernetes caller: read a resource and its children, write children,
status and Events. Objects travel as plain dicts (the API's JSON), never as client models.

Requests go straight to the REST paths through the connection pool that the ``kubernetes``
client builds from its configuration (TLS, client certificates, proxy), with its credentials
read at most once a minute. The generated API methods cost a quarter of the operator's CPU at
500 resources: they validate every argument, serialize the body through the models and, with a
kubeconfig, reload it (and the proxy settings from the environment) on every request.

Errors are mapped here once: a conflict or a server hiccup (409 on replace, 429, 5xx, a cut
connection) is :class:`TransientApiError`, to be retried; ``AlreadyExists`` on a child we own is
success; a child name held by someone else's object is :class:`ForeignChildError`.
"""

from __future__ import annotations

import copy
import json
import logging
import queue
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from ..api import GROUP, PLURAL, VERSION
from ..errors import OptiloopError
from .builders.common import LABEL_NAME
from .builders.routing import ROUTE_API_VERSION
from .builders.serving import ISVC_API_VERSION

log = logging.getLogger(__name__)
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
ISVC_NAME_LABEL = "serving.kserve.io/inferenceservice"
"""The label KServe puts on an InferenceService's pods, its name as the value."""
COMPONENT = "optiloop-operator"
CREDENTIALS_TTL_SECONDS = 60.0
"""How long credentials read from the configuration are reused (a projected service account
token is rotated by the kubelet well before it expires; a 401 re-reads them at once)."""
REQUEST_TIMEOUT = urllib3.Timeout(connect=10.0, read=60.0)
MONITOR_KINDS = ("Deployment", "Service", "NetworkPolicy")
SERVING_KINDS = ("InferenceService", "HTTPRoute")
CHILD_KINDS = ("Job", *SERVING_KINDS, *MONITOR_KINDS)
"""Every kind the operator creates or deletes (the chart's admission policy covers each)."""
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# Where each kind of child lives in the REST API: path prefix (group and version) and plural.
_PATHS = {
    "Job": ("/apis/batch/v1", "jobs"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "Pod": ("/api/v1", "pods"),
    "Event": ("/api/v1", "events"),
    "InferenceService": (f"/apis/{ISVC_API_VERSION}", "inferenceservices"),
    "HTTPRoute": (f"/apis/{ROUTE_API_VERSION}", "httproutes"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "ModelOptimization": (f"/apis/{GROUP}/{VERSION}", PLURAL),
}


class TransientApiError(OptiloopError):
    """The API server could not do it now (conflict, throttling, 5xx, connection); retry soon."""


class ConflictError(TransientApiError):
    """The object changed since it was read (409 on a conditional write); read again and redo."""


class ForeignChildError(OptiloopError):
    """A child's derived name is taken by an object this resource does not own."""


class ForbiddenError(OptiloopError):
    """The operator's RBAC does not allow this read (403)."""


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    try:
        yield
    except ApiException as exc:
        if exc.status in (409, 429) or (exc.status or 0) >= 500:
            raise TransientApiError(f"{what}: {exc.status} {exc.reason}") from exc
        raise
    except (HTTPError, OSError) as exc:
        raise TransientApiError(f"{what}: {exc}") from exc


def _causes(exc: ApiException) -> list[Any]:
    """The ``details.causes`` of an error answer (empty when it has none or is not JSON)."""
    try:
        answer = json.loads(exc.body or "{}")
    except ValueError:
        return []
    return list(((answer if isinstance(answer, dict) else {}).get("details") or {}).get("causes") or [])


def _path(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    prefix, plural = _PATHS[kind]
    parts = [prefix, "namespaces", quote(namespace, safe=""), plural]
    parts += [quote(name, safe="")] if name is not None else []
    parts += [subresource] if subresource is not None else []
    return "/".join(parts)


class Http:
    """JSON requests to the API server over the pool and with the credentials of a ``kubernetes``
    client configuration. Answers other than 2xx raise ``ApiException`` (status, reason, body).

    The pool keeps ``connections`` keep-alive connections: with fewer than the threads that call
    at once, urllib3 discards the extra ones and every request pays a TLS handshake.
    """

    def __init__(self, configuration: Any, connections: int) -> None:
        configuration = copy.copy(configuration)
        configuration.connection_pool_maxsize = connections
        self.configuration = configuration
        self.base = str(configuration.host).rstrip("/")
        # The client's own pool: it honours the configuration's CA, client certificate, TLS
        # server name and proxy exactly as the generated client would.
        self.pool = client.rest.RESTClientObject(configuration).pool_manager
        self._credentials: dict[str, str] = {}
        self._read_at = float("-inf")
        self._guard = threading.Lock()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """The decoded JSON answer of ``method path``."""
        url = self.base + path + (f"?{urlencode(query)}" if query else "")
        payload = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            headers = {"Accept": "application/json", **self._headers(fresh=attempt == 2)}
            if payload is not None:
                headers["Content-Type"] = content_type
            answer = self.pool.request(
                method, url, body=payload, headers=headers, timeout=REQUEST_TIMEOUT, retries=False
            )
            # A rotated or expired token: read the credentials again and retry once.
            if answer.status != 401 or attempt == 2:
                break
        if not 200 <= answer.status < 300:
            raise ApiException(http_resp=answer)
        return json.loads(answer.data) if answer.data else None

    def _headers(self, fresh: bool) -> dict[str, str]:
        with self._guard:
            if fresh or time.monotonic() - self._read_at >= CREDENTIALS_TTL_SECONDS:
                # auth_settings() runs the configuration's refresh hook (token file, exec plugin).
                settings = self.configuration.auth_settings().values()
                self._credentials = {s["key"]: s["value"] for s in settings if s["in"] == "header" and s["value"]}
                self._read_at = time.monotonic()
            return self._credentials


class Cluster:
    """Typed access to the few API calls the operator makes."""

    def __init__(self, api_client: Any | None = None, connections: int = 20) -> None:
        """``api_client``: a ``kubernetes.client.ApiClient`` whose configuration says where the API
        server is and how to authenticate; by default the pod's service account or $KUBECONFIG."""
        configuration = api_client.configuration if api_client is not None else _default_configuration()
        self.http = Http(configuration, connections)
        self.instance = socket.gethostname()
        self._events: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=10_000)
        threading.Thread(target=self._post_events, name="events", daemon=True).start()

    # --- reading --------------------------------------------------------------

    def get_resource(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ModelOptimization as stored, or None when it is gone."""
        return self._read(namespace, "ModelOptimization", name)

    def list_jobs(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The resource's Jobs, every revision."""
        return self._list(namespace, "Job", f"{LABEL_NAME}={name}")

    def list_job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The pods of one Job (their termination messages carry the stage outcome, their waiting
        reasons why a running Job's pod cannot start). A refusal
        raises :class:`ForbiddenError` saying which grant is missing: in cluster mode the chart
        may grant this only in the namespaces of ``rbac.jobPodsNamespaces``."""
        return self._list_pods(
            namespace, f"{JOB_NAME_LABEL}={job}", f"to read Job {job}'s outcome, or why its pod cannot start"
        )

    def list_predictor_pods(self, namespace: str, service: str) -> list[dict[str, Any]]:
        """The pods KServe runs for the InferenceService ``service`` (why one that is not Ready does
        not serve: killed for memory, crash-looping, not starting). Refused as :meth:`list_job_pods`."""
        return self._list_pods(
            namespace, f"{ISVC_NAME_LABEL}={service}", f"to read why InferenceService {service} is not Ready"
        )

    def _list_pods(self, namespace: str, label_selector: str, why: str) -> list[dict[str, Any]]:
        try:
            return self._list(namespace, "Pod", label_selector)
        except ApiException as exc:
            if exc.status == 403:
                raise ForbiddenError(
                    f"list pods in {namespace} ({why}): 403 Forbidden; the chart grants it "
                    f"only in watch.namespaces, or in rbac.jobPodsNamespaces when set: add {namespace} there"
                ) from exc
            raise

    def list_inference_services(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The resource's InferenceServices (one in Knative mode, one per revision in Standard mode)."""
        return [
            {**o, "kind": "InferenceService"} for o in self._list(namespace, "InferenceService", f"{LABEL_NAME}={name}")
        ]

    def get_route(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The HTTPRoute, or None."""
        return self._read(namespace, "HTTPRoute", name)

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A ConfigMap (KServe's configuration), or None when it does not exist; a refusal
        raises :class:`ForbiddenError` for the caller to report."""
        try:
            return self._read(namespace, "ConfigMap", name)
        except ApiException as exc:
            if exc.status == 403:
                raise ForbiddenError(f"read ConfigMap {namespace}/{name}: 403 Forbidden") from exc
            raise

    def api_resources(self, group_version: str) -> dict[str, Any] | None:
        """The discovery document of ``group_version`` (``GET /apis/<group>/<version>``), or None
        when the API server does not serve it. Every authenticated user may read it."""
        with _mapped(f"discover {group_version}"):
            try:
                found: dict[str, Any] = self.http.request("GET", f"/apis/{group_version}")
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        return found

    def get_monitor(self, namespace: str, name: str) -> dict[str, dict[str, Any]]:
        """The drift monitor's Deployment, Service and NetworkPolicy that exist, by kind."""
        found: dict[str, dict[str, Any]] = {}
        for kind in MONITOR_KINDS:
            obj = self._read(namespace, kind, name)
            if obj is not None:
                found[kind] = obj
        return found

    # --- writing --------------------------------------------------------------

    def create(self, namespace: str, body: dict[str, Any], owner_uid: str) -> bool:
        """Create a child; True when created, False when our own child already existed."""
        kind, name = body["kind"], body["metadata"]["name"]
        if kind not in CHILD_KINDS:
            raise ValueError(f"the operator never creates a {kind}")
        try:
            with _mapped(f"create {kind} {namespace}/{name}"):
                self.http.request("POST", _path(kind, namespace), body)
            return True
        except TransientApiError as exc:
            if not (isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 409):
                raise
        existing = self._read(namespace, kind, name)
        owners = (existing or {}).get("metadata", {}).get("ownerReferences") or []
        if existing is None:
            raise TransientApiError(f"{kind} {namespace}/{name} existed, then vanished; retrying")
        if not any(o.get("uid") == owner_uid for o in owners):
            raise ForeignChildError(
                f"{kind} {namespace}/{name} exists and is not owned by this ModelOptimization; "
                "rename or delete it so optiloop can create its own"
            )
        return False

    def replace(self, namespace: str, body: dict[str, Any], resource_version: str) -> None:
        """Replace a child we read at ``resource_version`` (a conflict is transient)."""
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": resource_version}}
        kind, name = body["kind"], body["metadata"]["name"]
        if kind not in (*SERVING_KINDS, *MONITOR_KINDS):
            raise ValueError(f"the operator never replaces a {kind}")
        with _mapped(f"replace {kind} {namespace}/{name}"):
            self.http.request("PUT", _path(kind, namespace, name), body)

    def delete(self, namespace: str, kind: str, name: str, uid: str | None) -> None:
        """Delete a child and, in the background, what it owns (a Job's pods); gone already is fine.

        Only the object ``uid`` (the one observed as ours) is deleted: if another object has
        taken the name since, the API server refuses (a conflict, retried after a fresh read)."""
        if kind not in CHILD_KINDS:
            raise ValueError(f"the operator never deletes a {kind}")
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if uid:
            options["preconditions"] = {"uid": uid}
        with _mapped(f"delete {kind} {namespace}/{name}"):
            try:
                self.http.request("DELETE", _path(kind, namespace, name), options)
            except ApiException as exc:
                if exc.status != 404:
                    raise

    def write_status(self, namespace: str, name: str, status: dict[str, Any], resource_version: str) -> str:
        """Merge-patch ``status`` (nulls remove fields) if the resource is still at ``resource_version``;
        returns the new resourceVersion."""
        patch = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            with _mapped(f"write status of {namespace}/{name}"):
                answer = self.http.request(
                    "PATCH", _path("ModelOptimization", namespace, name, "status"), patch, content_type=MERGE_PATCH
                )
        except TransientApiError as exc:
            if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 409:
                raise ConflictError(str(exc)) from exc.__cause__
            raise
        return str(answer["metadata"]["resourceVersion"])

    def write_first_status(self, namespace: str, name: str, status: dict[str, Any], uid: str, generation: int) -> str:
        """Write the first ``status`` of a resource if it is still the object ``uid`` at
        ``generation`` with no status; returns the new resourceVersion.

        A JSON Patch whose tests are the plan's inputs, rather than a resourceVersion: the
        finalizer Kopf adds right after creation changes the resourceVersion, not the inputs.
        (Later writes cannot do the same: a test on a whole status compares JSON texts, and Go
        and Python spell some floats differently.)
        """
        patch = [
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "test", "path": "/metadata/generation", "value": generation},
            {"op": "test", "path": "/status", "value": None},  # true when absent
            {"op": "add", "path": "/status", "value": status},
        ]
        try:
            with _mapped(f"write the first status of {namespace}/{name}"):
                answer = self.http.request(
                    "PATCH", _path("ModelOptimization", namespace, name, "status"), patch, content_type=JSON_PATCH
                )
        except ApiException as exc:
            # A failed test is a 422 without causes; a schema violation names its fields.
            if exc.status == 422 and not _causes(exc):
                raise ConflictError(f"write the first status of {namespace}/{name}: it changed since the read") from exc
            raise
        return str(answer["metadata"]["resourceVersion"])

    def post_event(self, resource: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue an Event on the resource; a background thread posts it (reconciles do not wait)."""
        event = self._event(resource, type_, reason, message)
        try:
            self._events.put_nowait(event)
        except queue.Full:
            log.warning("dropped Event %s on %s: the queue is full", reason, resource["metadata"]["name"])

    def flush_events(self, timeout: float = 10.0) -> None:
        """Wait until every queued Event is posted (for shutdown and tests)."""
        deadline = time.monotonic() + timeout
        while self._events.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)

    def _post_events(self) -> None:
        while True:
            event = self._events.get()
            try:
                self.http.request("POST", _path("Event", event["metadata"]["namespace"]), event)
            except (ApiException, HTTPError, OSError) as exc:
                log.warning("could not post Event %s on %s: %s", event["reason"], event["involvedObject"]["name"], exc)
            finally:
                self._events.task_done()

    def _event(self, resource: dict[str, Any], type_: str, reason: str, message: str) -> dict[str, Any]:
        meta = resource["metadata"]
        now = datetime.now(UTC)
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": resource.get("apiVersion"),
                "kind": resource.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": f"{GROUP}/operator",
            "reportingInstance": self.instance[:128],
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        }

    # --- plumbing -------------------------------------------------------------

    def _read(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        """The object as stored, or None when there is none."""
        with _mapped(f"read {kind} {namespace}/{name}"):
            try:
                found: dict[str, Any] = self.http.request("GET", _path(kind, namespace, name))
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        found.setdefault("kind", kind)
        return found

    def _list(self, namespace: str, kind: str, label_selector: str) -> list[dict[str, Any]]:
        with _mapped(f"list {kind}s in {namespace} with {label_selector}"):
            answer = self.http.request("GET", _path(kind, namespace), query={"labelSelector": label_selector})
        return list(answer["items"])


def _default_configuration() -> Any:
    """In a pod: the service account; elsewhere: ``$KUBECONFIG`` or ``~/.kube/config``."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.Configuration.get_default_copy()
