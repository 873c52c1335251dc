"""Runs one reconcile end to end: read the resource and its children, ask Prometheus what the
plan needs, plan (pure), then write children, Events and, only when it changed, status.

Kopf calls this from events on the resource and on its children and from the resync timer,
possibly at once for one resource; a per-resource lock makes those calls take turns in this
process, and the status write is conditional on the resourceVersion that was read, so a stale
plan is never written over a newer state (a write refused only because metadata moved is redone).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, wait
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ..api import ModelOptimization
from ..api.status import DriftStatus, ModelOptimizationStatus
from ..api.validation import manifest_errors
from ..errors import OptiloopError
from . import failpoints, metrics, names, prometheus, queries
from .config import OperatorConfig
from .discovery import Discovery
from .k8s import Cluster, ConflictError, ForbiddenError, ForeignChildError, TransientApiError
from .memory import ResourceMemory
from .observed import (
    CanaryMetrics,
    Observed,
    ObservedChild,
    ObservedJob,
    observe_child,
    observe_job,
    observe_route,
    predictor_trouble,
)
from .planning.blocked import child_name_taken, invalid_spec
from .planning.plan import Delete, Plan
from .planning.revisions import canary_revision, retraining_in_flight
from .policy import DriftDecision, drift_due, evaluate_drift
from .prometheus_access import access_errors
from .reconcile import reconcile

log = logging.getLogger(__name__)
CONFLICT_RETRIES = 5
DRIFT_THRESHOLD = 1.0
"""The drift query returns 1 while drifting (the monitor's ``optiloop_drift_detected``)."""
RETRY_BACKOFF_CAP_SECONDS = 300.0
"""A resource whose reconciles keep failing is retried at the resync interval, then twice as
long after each failure, up to this (events on it or its children still reconcile at once)."""


class InvalidSpecError(OptiloopError):
    """The resource's spec does not validate; nothing is built until it changes."""


class Reconciler:
    """Reconciles ModelOptimizations against one API server with one configuration."""

    def __init__(
        self,
        cluster: Cluster,
        config: OperatorConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.clock = clock
        self.discovery = Discovery(cluster, config.kserve_config, config.discovery_seconds)
        self._memories: dict[tuple[str, str], ResourceMemory] = {}
        self._pending: set[Future[Plan | None]] = set()
        self._guard = threading.Lock()

    @property
    def _backoff_cap(self) -> float:
        return max(self.config.resync_seconds, RETRY_BACKOFF_CAP_SECONDS)

    def _memory(self, key: tuple[str, str]) -> ResourceMemory:
        """The resource's record, made on first use (callers hold ``_guard``)."""
        memory = self._memories.get(key)
        if memory is None:
            memory = self._memories[key] = ResourceMemory()
        return memory

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept about a deleted resource (memory stays flat over many resources)."""
        with self._guard:
            self._memories.pop((namespace, name), None)

    def is_new(self, body: dict[str, Any]) -> bool:
        """Whether this object's spec, as of ``body``, has not been handed to a reconcile in this
        process yet (and claim it): true for a new object, a new generation, and every object
        the first time this process sees it (after a start or a takeover). Status and metadata
        changes keep the generation, so our own status writes do not come back as work.
        """
        meta = body["metadata"]
        key = (meta.get("namespace") or "default", meta["name"])
        seen = (str(meta.get("uid")), int(meta.get("generation") or 0))
        with self._guard:
            memory = self._memory(key)
            if memory.handled == seen:
                return False
            memory.handled = seen
            return True

    def due(self, namespace: str, name: str) -> bool:
        """Whether a timer tick has work: what the resource's last plan asked for (a drift
        evaluation, a canary under analysis, a scheduled retrain), a retry after a failure
        (backing off), or no full reconcile for ``full_resync_seconds`` (events drive the rest).
        Cheap enough for the event loop: it reads only the resource's record."""
        with self._guard:
            memory = self._memories.get((namespace, name))
        return memory is None or memory.due(self.clock(), self.config.full_resync_seconds)

    def submit(
        self,
        executor: Executor,
        namespace: str,
        name: str,
        evaluate_drift: bool = False,
        body: dict[str, Any] | None = None,
    ) -> Future[Plan | None] | None:
        """Queue a reconcile on ``executor`` unless one for this resource is already queued or
        waiting for its lock; that one then reads the resource afresh (and evaluates drift if
        either asked). Errors are logged and retried by the timer, backing off."""
        if not self._claim((namespace, name), evaluate_drift):
            return None
        future = executor.submit(self._logged, namespace, name, evaluate_drift, body)
        with self._guard:
            self._pending.add(future)
        future.add_done_callback(self._settled)
        return future

    def _settled(self, future: Future[Plan | None]) -> None:
        with self._guard:
            self._pending.discard(future)

    def drain(self, timeout: float) -> tuple[int, int]:
        """At shutdown: wait up to ``timeout`` seconds for the reconciles handed to executors,
        cancel those that have not started by then (the next replica or start redoes them:
        every resource is reconciled once after a start), then post the queued Events in the
        time left. Returns (reconciles finished, reconciles cancelled)."""
        deadline = time.monotonic() + timeout
        with self._guard:
            pending = set(self._pending)
        done, left = wait(pending, timeout=timeout)
        cancelled = sum(future.cancel() for future in left)
        self.cluster.flush_events(max(0.0, deadline - time.monotonic()))
        return len(done), cancelled

    def reconcile(
        self, namespace: str, name: str, evaluate_drift: bool = False, body: dict[str, Any] | None = None
    ) -> Plan | None:
        """Bring one resource a step closer to its spec; None when it is gone, being deleted, or
        when another call for it is already waiting (that one will read the newer state).

        ``body`` is the resource as Kopf last saw it, which saves a read; a stale one only costs
        a conflict on the status write, after which the resource is read again.
        """
        if not self._claim((namespace, name), evaluate_drift):
            return None
        return self._claimed(namespace, name, evaluate_drift, body)

    def _claim(self, key: tuple[str, str], evaluate_drift: bool) -> bool:
        with self._guard:
            memory = self._memory(key)
            if memory.waiting:
                memory.folded = bool(memory.folded) or evaluate_drift
                metrics.RECONCILES_COALESCED.inc()
                return False
            memory.waiting = True
            return True

    def _logged(self, namespace: str, name: str, evaluate_drift: bool, body: dict[str, Any] | None) -> Plan | None:
        try:
            return self._claimed(namespace, name, evaluate_drift, body)
        except InvalidSpecError:
            return None  # status and a Warning Event say why; the next spec change is the next event
        except (TransientApiError, ForeignChildError, ForbiddenError) as exc:
            log.warning("will retry %s/%s: %s", namespace, name, exc)
        except Exception:
            log.exception("will retry %s/%s", namespace, name)
        return None

    def _claimed(self, namespace: str, name: str, evaluate_drift: bool, body: dict[str, Any] | None) -> Plan | None:
        key = (namespace, name)
        started = time.perf_counter()
        with self._guard:
            memory = self._memory(key)
            memory.last_full = self.clock()
        try:
            with memory.lock:
                with self._guard:
                    memory.waiting = False
                    if memory.folded is not None:
                        # A later request was folded into this one: its body may predate theirs.
                        evaluate_drift, memory.folded, body = memory.folded or evaluate_drift, None, None
                for attempt in range(CONFLICT_RETRIES):
                    try:
                        plan = self._reconcile(namespace, name, evaluate_drift, body)
                        break
                    except ConflictError:
                        # Another write got in between: read again.
                        if attempt == CONFLICT_RETRIES - 1:
                            raise
                        evaluate_drift, body = False, None
            with self._guard:
                memory.succeeded(plan.requeue_at if plan is not None else None)
            return plan
        except InvalidSpecError:
            # Status and an Event say why; only a new spec (which comes as an event) can help.
            with self._guard:
                memory.succeeded(None)
            metrics.RECONCILE_ERRORS.labels(InvalidSpecError.__name__).inc()
            raise
        except Exception as exc:
            # A timer tick retries, whatever called us (events are not redelivered).
            with self._guard:
                memory.failed(self.clock(), self.config.resync_seconds, self._backoff_cap)
            metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    def _reconcile(self, namespace: str, name: str, evaluate_drift: bool, body: dict[str, Any] | None) -> Plan | None:
        body = _own_copy(body) if body is not None else self.cluster.get_resource(namespace, name)
        if body is None:
            self.forget(namespace, name)  # gone: a child's event came after the resource's last one
            return None
        if body["metadata"].get("deletionTimestamp"):
            return None
        now = self.clock()
        generation = int(body["metadata"].get("generation") or 0)
        previous = _status(body)
        resource = self._parse(body, previous, generation, now)
        observed = self._observe(resource, previous)
        decision = self._drift(resource, previous, now) if evaluate_drift else None
        plan = reconcile(resource, observed, self.config, now, decision)
        try:
            self._apply(namespace, resource, plan)
        except ForeignChildError as exc:
            # Only a person can free the name: say so where people look, once per change.
            if self._write_status(body, previous, child_name_taken(previous, generation, str(exc), now)):
                self.cluster.post_event(body, "Warning", "ChildNameTaken", str(exc))
            raise
        # Events after the status write: a plan whose write is refused (made from a stale read)
        # is made again, and only the one that lands tells what happened.
        self._write_status(body, previous, plan.status)
        for event in plan.events:
            log.log(logging.WARNING if event.type == "Warning" else logging.INFO,
                    "%s/%s: %s: %s", namespace, name, event.reason, event.message)  # fmt: skip
            self.cluster.post_event(body, event.type, event.reason, event.message)
            if event.reason == "RetrainStarted":
                metrics.RETRAINS.inc()
            elif event.reason in ("CanaryPromoted", "CanaryRolledBack"):
                metrics.CANARIES.labels("promoted" if event.reason == "CanaryPromoted" else "rolled_back").inc()
        return plan

    # --- steps ----------------------------------------------------------------

    def _parse(
        self, body: dict[str, Any], previous: ModelOptimizationStatus | None, generation: int, now: datetime
    ) -> ModelOptimization:
        document = {k: v for k, v in body.items() if k != "status"}
        errors = manifest_errors(document)
        resource = ModelOptimization.model_validate(document) if not errors else None
        if resource is not None:
            config = self.config
            errors = access_errors(
                resource, config.prometheus_allowed_urls, config.prometheus_query_templates, config.api_server_host
            )
        if errors or resource is None:
            message = "; ".join(str(e) for e in errors)[:4096]
            status = invalid_spec(previous, generation, message, now)
            if self._write_status(body, previous, status):
                self.cluster.post_event(body, "Warning", "InvalidSpec", message)
            raise InvalidSpecError(message)
        resource.status = previous
        return resource

    def _observe(self, resource: ModelOptimization, status: ModelOptimizationStatus | None) -> Observed:
        """The resource's children: only objects it owns (another's of the same name is left alone)."""
        namespace, name = resource.metadata.namespace or "default", resource.metadata.name
        uid = resource.metadata.uid or ""
        current = status.revision if status is not None else None
        consumed = _consumed_stages(status)
        jobs: dict[tuple[str, int], ObservedJob] = {}
        # A resource without status has never been reconciled to the end: its Jobs, if a crash
        # left one behind, are found by the create's AlreadyExists, so the list can wait.
        for job in self.cluster.list_jobs(namespace, name) if status is not None else []:
            seen = observe_job(job, (), uid)
            if seen is None:
                continue
            # A finished Job's pods are read once: after its outcome is in status, never again. A
            # running one's on each pass: a pod that cannot start (no image, no room on a node)
            # leaves the Job active and says so only on the pod. The grant to list them is the one
            # a finished Job needs, so a missing grant shows while the Job runs.
            if seen.revision == current and seen.component not in consumed:
                seen = observe_job(job, self.cluster.list_job_pods(namespace, seen.name), uid) or seen
            jobs[(seen.component, seen.revision)] = seen
        # Children that cannot exist yet are not read: the InferenceServices and the route come
        # after the first compression, the drift monitor after the first revision serves. A
        # compression Job seen finished counts too: the pass that created the InferenceService
        # may have stopped at the route's ChildNameTaken before its status was written, and the
        # InferenceService's one Ready event then comes to a pass that must read it.
        capabilities = self.discovery.capabilities()
        compressed = (status is not None and any(r.compressed_at for r in status.history)) or any(
            j.component == "compression" and j.state == "Succeeded" for j in jobs.values()
        )
        serving = status is not None and status.serving_revision is not None
        services = self.cluster.list_inference_services(namespace, name) if compressed and capabilities.kserve else []
        route = (
            self.cluster.get_route(namespace, names.route(name)) if compressed and capabilities.gateway_api else None
        )
        monitor = self.cluster.get_monitor(namespace, names.drift_monitor(name)) if serving else {}
        canary = canary_revision(status)
        return Observed(
            jobs=jobs,
            services={
                child.name: self._with_trouble(namespace, child)
                for o in services
                if (child := observe_child(o, uid)) is not None
            },
            monitor={kind: child for kind, obj in monitor.items() if (child := observe_child(obj, uid)) is not None},
            canary=self._canary_metrics(resource, canary) if canary is not None else None,
            route=observe_route(route, uid) if route is not None else None,
            capabilities=capabilities,
        )

    def _with_trouble(self, namespace: str, child: ObservedChild) -> ObservedChild:
        """An InferenceService that is not Ready, with what its pods say is wrong: KServe's own
        status says only that the predictor is unavailable, not that it was killed for memory."""
        if child.ready:
            return child
        return replace(child, trouble=predictor_trouble(self.cluster.list_predictor_pods(namespace, child.name)))

    def _query(self, resource: ModelOptimization, promql: str) -> prometheus.QueryResult:
        """Ask the resource's Prometheus: the operator's own, or the allowed one its spec names
        (which must not resolve to a link-local address either)."""
        tenant = resource.spec.monitoring.prometheus.url
        return prometheus.query(tenant or self.config.prometheus_url, promql, refuse_private=tenant is not None)

    def _canary_metrics(self, resource: ModelOptimization, revision: int) -> CanaryMetrics:
        window = resource.spec.deployment.canary_analysis.window_seconds
        errors = self._query(resource, queries.canary_error_rate_query(resource, revision, window))
        latency = self._query(resource, queries.canary_latency_query(resource, revision, window))
        served = self._query(resource, queries.canary_served_query(resource, revision, window))
        # Reachable but empty: no request failed (the served count tells whether any came); an
        # unreachable Prometheus stays unknown.
        error_rate = (errors.value or 0.0) if errors.reachable else None
        requests_served = (served.value or 0.0) if served.reachable else None
        return CanaryMetrics(error_rate, latency.value if latency.reachable else None, requests_served)

    def _drift(
        self, resource: ModelOptimization, status: ModelOptimizationStatus | None, now: datetime
    ) -> DriftDecision | None:
        if status is None or status.serving_revision is None or not drift_due(resource.spec.monitoring, status, now):
            return None
        promql = queries.drift_query(resource, status.serving_revision, self.config.prometheus_query_templates)
        answer = self._query(resource, promql)
        # No sample yet (the monitor has not filled a window) counts as not drifting; an infinite
        # answer is unusable (and could not be written to status).
        value = (answer.value or 0.0) if answer.reachable else None
        value = value if value is None or math.isfinite(value) else None
        decision = evaluate_drift(
            value,
            DRIFT_THRESHOLD,
            status.drift or DriftStatus(),
            resource.spec.monitoring.retraining,
            now,
            retraining_in_flight(status),
        )
        metrics.DRIFT_EVALUATIONS.labels(decision.reason).inc()
        return decision

    def _apply(self, namespace: str, resource: ModelOptimization, plan: Plan) -> None:
        uid = resource.metadata.uid or ""
        for action in plan.actions:
            if isinstance(action, Delete):
                self.cluster.delete(namespace, action.kind, action.name, action.uid)
            elif action.resource_version is not None:
                self.cluster.replace(namespace, action.body, action.resource_version)
            elif self.cluster.create(namespace, action.body, uid):
                metrics.CHILDREN_CREATED.labels(action.kind).inc()
                failpoints.reached(f"after-create:{action.kind}")

    def _write_status(
        self, body: dict[str, Any], previous: ModelOptimizationStatus | None, status: ModelOptimizationStatus
    ) -> bool:
        """Write ``status`` unless it equals what is stored; True when written."""
        if previous is not None and previous == status:
            return False
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        document = status.model_dump(mode="json", by_alias=True)
        if "status" not in body:
            # Conditional on the plan's inputs, so Kopf's finalizer landing meanwhile is no conflict.
            uid, generation = meta["uid"], int(meta.get("generation") or 0)
            meta["resourceVersion"] = self.cluster.write_first_status(namespace, name, document, uid, generation)
        else:
            meta["resourceVersion"] = self._write_later_status(body, document)
        metrics.STATUS_WRITES.inc()
        return True

    def _write_later_status(self, body: dict[str, Any], document: dict[str, Any]) -> str:
        meta = body["metadata"]
        version = str(meta["resourceVersion"])
        for attempt in range(CONFLICT_RETRIES):
            try:
                return self.cluster.write_status(meta["namespace"], meta["name"], document, version)
            except ConflictError:
                fresh = self.cluster.get_resource(meta["namespace"], meta["name"])
                if attempt == CONFLICT_RETRIES - 1 or fresh is None or not _same_inputs(body, fresh):
                    raise
                # Only metadata moved (a label, Argo CD's tracking annotation): the plan was made
                # from the same spec and status, so it still holds.
                version = str(fresh["metadata"]["resourceVersion"])
                metrics.STATUS_REBASES.inc()
        raise AssertionError("unreachable: the last attempt re-raises")


def _own_copy(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of a watched body that a reconcile may update (only ``metadata.resourceVersion``
    changes); the rest is shared, as Kopf replaces bodies on new events and never edits them."""
    return {**body, "metadata": dict(body["metadata"])}


def _same_inputs(planned: dict[str, Any], fresh: dict[str, Any]) -> bool:
    """Whether ``fresh`` has the spec (generation) and status a plan was made from, so a write
    refused for a newer resourceVersion can be redone on it unchanged."""
    if fresh["metadata"].get("deletionTimestamp"):
        return False
    generation = planned["metadata"].get("generation")
    return bool(fresh["metadata"].get("generation") == generation and fresh.get("status") == planned.get("status"))


def _consumed_stages(status: ModelOptimizationStatus | None) -> set[str]:
    """Stages of the current revision whose outcome is already recorded in status."""
    if status is None:
        return set()
    record = next((r for r in status.history if r.revision == status.revision), None)
    if record is None:
        return set()
    return {stage for stage, at in (("tuning", record.tuned_at), ("compression", record.compressed_at)) if at}


def _status(body: dict[str, Any]) -> ModelOptimizationStatus | None:
    raw = body.get("status")
    if not raw:
        return None
    try:
        return ModelOptimizationStatus.model_validate(raw)
    except ValidationError as exc:
        # Status is ours; an unreadable one (edited by hand) is rebuilt rather than fatal.
        log.warning("ignoring unreadable status of %s: %s", body["metadata"].get("name"), exc)
        return None
