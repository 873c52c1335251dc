"""The operator's only Kubernetes caller: read a resource and its children, write children,
status and Events. Objects travel as plain dicts (the API's JSON), never as client models.

Errors are mapped here once: a conflict or a server hiccup (409 on replace, 429, 5xx, a cut
connection) is :class:`TransientApiError`, to be retried; ``AlreadyExists`` on a child we own is
success; a child name held by someone else's object is :class:`ForeignChildError`.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from ..api import GROUP, PLURAL, VERSION
from ..errors import OptiloopError
from .builders.common import LABEL_NAME
from .builders.serving import ISVC_API_VERSION

log = logging.getLogger(__name__)
ISVC_GROUP, ISVC_VERSION = ISVC_API_VERSION.split("/")
ISVC_PLURAL = "inferenceservices"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
COMPONENT = "optiloop-operator"


class TransientApiError(OptiloopError):
    """The API server could not do it now (conflict, throttling, 5xx, connection); retry soon."""


class ConflictError(TransientApiError):
    """The object changed since it was read (409 on a conditional write); read again and redo."""


class ForeignChildError(OptiloopError):
    """A child's derived name is taken by an object this resource does not own."""


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


def _json(response: Any) -> Any:
    return json.loads(response.data)


def _release(response: Any) -> None:
    """Read an unused answer to its end, which returns the connection to the keep-alive pool
    (an unread one is dropped, and the next request pays a new TLS handshake)."""
    _ = response.data


def _causes(exc: ApiException) -> list[Any]:
    """The ``details.causes`` of an error answer (empty when it has none or is not JSON)."""
    try:
        answer = json.loads(exc.body or "{}")
    except ValueError:
        return []
    return list(((answer if isinstance(answer, dict) else {}).get("details") or {}).get("causes") or [])


def _absent(call: Callable[[], Any]) -> Any:
    """The call's JSON answer, or None on 404."""
    try:
        return _json(call())
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


class Cluster:
    """Typed access to the few API calls the operator makes."""

    def __init__(self, api_client: Any | None = None, connections: int = 20) -> None:
        self.api = api_client or _default_client(connections)
        # Bodies are plain dicts, which the client accepts but its annotations do not admit.
        self.custom: Any = client.CustomObjectsApi(self.api)
        self.batch: Any = client.BatchV1Api(self.api)
        self.apps: Any = client.AppsV1Api(self.api)
        self.core: Any = client.CoreV1Api(self.api)
        self.instance = socket.gethostname()
        self._events: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=10_000)
        threading.Thread(target=self._post_events, name="events", daemon=True).start()

    # --- reading --------------------------------------------------------------

    def get_resource(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ModelOptimization as stored, or None when it is gone."""
        with _mapped(f"read ModelOptimization {namespace}/{name}"):
            return _absent(  # type: ignore[no-any-return]
                lambda: self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _preload_content=False
                )
            )

    def list_jobs(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The resource's Jobs, every revision."""
        with _mapped(f"list Jobs of {namespace}/{name}"):
            answer = self.batch.list_namespaced_job(
                namespace, label_selector=f"{LABEL_NAME}={name}", _preload_content=False
            )
        return list(_json(answer)["items"])

    def list_job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The pods of one Job (their termination messages carry the stage outcome)."""
        with _mapped(f"list pods of Job {namespace}/{job}"):
            answer = self.core.list_namespaced_pod(
                namespace, label_selector=f"{JOB_NAME_LABEL}={job}", _preload_content=False
            )
        return list(_json(answer)["items"])

    def get_inference_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The InferenceService, or None."""
        with _mapped(f"read InferenceService {namespace}/{name}"):
            return _absent(  # type: ignore[no-any-return]
                lambda: self.custom.get_namespaced_custom_object(
                    ISVC_GROUP, ISVC_VERSION, namespace, ISVC_PLURAL, name, _preload_content=False
                )
            )

    def get_monitor(self, namespace: str, name: str) -> dict[str, dict[str, Any]]:
        """The drift monitor's Deployment and Service that exist, by kind."""
        found: dict[str, dict[str, Any]] = {}
        with _mapped(f"read drift monitor {namespace}/{name}"):
            deployment = _absent(lambda: self.apps.read_namespaced_deployment(name, namespace, _preload_content=False))
            service = _absent(lambda: self.core.read_namespaced_service(name, namespace, _preload_content=False))
        for kind, obj in (("Deployment", deployment), ("Service", service)):
            if obj is not None:
                obj.setdefault("kind", kind)
                found[kind] = obj
        return found

    # --- writing --------------------------------------------------------------

    def create(self, namespace: str, body: dict[str, Any], owner_uid: str) -> bool:
        """Create a child; True when created, False when our own child already existed."""
        kind, name = body["kind"], body["metadata"]["name"]
        try:
            with _mapped(f"create {kind} {namespace}/{name}"):
                self._create(namespace, body)
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
        with _mapped(f"replace {kind} {namespace}/{name}"):
            if kind == "InferenceService":
                _release(
                    self.custom.replace_namespaced_custom_object(
                        ISVC_GROUP, ISVC_VERSION, namespace, ISVC_PLURAL, name, body, _preload_content=False
                    )
                )
            elif kind == "Deployment":
                _release(self.apps.replace_namespaced_deployment(name, namespace, body, _preload_content=False))
            elif kind == "Service":
                _release(self.core.replace_namespaced_service(name, namespace, body, _preload_content=False))
            else:
                raise ValueError(f"the operator never replaces a {kind}")

    def delete(self, namespace: str, kind: str, name: str) -> None:
        """Delete a child and, in the background, what it owns (a Job's pods); gone already is fine."""
        options = {"propagationPolicy": "Background"}
        calls = {
            "Job": lambda: self.batch.delete_namespaced_job(name, namespace, body=options, _preload_content=False),
            "Deployment": lambda: self.apps.delete_namespaced_deployment(
                name, namespace, body=options, _preload_content=False
            ),
            "Service": lambda: self.core.delete_namespaced_service(
                name, namespace, body=options, _preload_content=False
            ),
        }
        with _mapped(f"delete {kind} {namespace}/{name}"):
            try:
                _release(calls[kind]())
            except ApiException as exc:
                if exc.status != 404:
                    raise

    def write_status(self, namespace: str, name: str, status: dict[str, Any], resource_version: str) -> str:
        """Merge-patch ``status`` (nulls remove fields) if the resource is still at ``resource_version``;
        returns the new resourceVersion."""
        patch = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            with _mapped(f"write status of {namespace}/{name}"):
                answer = self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, PLURAL, name, patch, _preload_content=False
                )
        except TransientApiError as exc:
            if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 409:
                raise ConflictError(str(exc)) from exc.__cause__
            raise
        return str(_json(answer)["metadata"]["resourceVersion"])

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
                answer = self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, PLURAL, name, patch,
                    _preload_content=False, _content_type="application/json-patch+json",
                )  # fmt: skip
        except ApiException as exc:
            # A failed test is a 422 without causes; a schema violation names its fields.
            if exc.status == 422 and not _causes(exc):
                raise ConflictError(f"write the first status of {namespace}/{name}: it changed since the read") from exc
            raise
        return str(_json(answer)["metadata"]["resourceVersion"])

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
                namespace = event["metadata"]["namespace"]
                _release(self.core.create_namespaced_event(namespace, event, _preload_content=False))
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

    def _create(self, namespace: str, body: dict[str, Any]) -> None:
        kind = body["kind"]
        # Answers are not decoded into client models: nothing reads them, and decoding costs CPU.
        if kind == "Job":
            response = self.batch.create_namespaced_job(namespace, body, _preload_content=False)
        elif kind == "InferenceService":
            response = self.custom.create_namespaced_custom_object(
                ISVC_GROUP, ISVC_VERSION, namespace, ISVC_PLURAL, body, _preload_content=False
            )
        elif kind == "Deployment":
            response = self.apps.create_namespaced_deployment(namespace, body, _preload_content=False)
        elif kind == "Service":
            response = self.core.create_namespaced_service(namespace, body, _preload_content=False)
        else:
            raise ValueError(f"the operator never creates a {kind}")
        _release(response)

    def _read(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        calls: dict[str, Callable[[], Any]] = {
            "Job": lambda: self.batch.read_namespaced_job(name, namespace, _preload_content=False),
            "InferenceService": lambda: self.custom.get_namespaced_custom_object(
                ISVC_GROUP, ISVC_VERSION, namespace, ISVC_PLURAL, name, _preload_content=False
            ),
            "Deployment": lambda: self.apps.read_namespaced_deployment(name, namespace, _preload_content=False),
            "Service": lambda: self.core.read_namespaced_service(name, namespace, _preload_content=False),
        }
        with _mapped(f"read {kind} {namespace}/{name}"):
            return _absent(calls[kind])  # type: ignore[no-any-return]


def _default_client(connections: int) -> Any:
    """In a pod: the service account; elsewhere: ``$KUBECONFIG`` or ``~/.kube/config``.

    The pool holds ``connections`` keep-alive connections: with fewer than the threads that
    call at once, urllib3 discards the extra ones and every request pays a TLS handshake.
    """
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)
