"""What the operator saw of a resource's children, read out of the raw API objects.

Pure: :mod:`optiloop.operator.k8s` fetches the objects, these functions turn them into the
few facts reconciling needs (a Job's state and reported outcome, whether a child is up to
date and ready).

Only objects whose owner reference is the resource count as its children: another team's
InferenceService, HTTPRoute, Deployment, Service, NetworkPolicy or Job of the same name (or
with our labels) is left out, so the planner never replaces or deletes it; creating ours then
meets ``AlreadyExists`` and the resource says ``ChildNameTaken``, naming the object.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import ValidationError

from ..api.jobs import StageOutcome
from .builders.common import LABEL_COMPONENT, LABEL_REVISION
from .capabilities import Capabilities

SPEC_HASH_ANNOTATION = "optiloop.dev/spec-hash"
"""Hash of the spec the operator last wrote to a child; a different desired hash means update."""

JobState = Literal["Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class ObservedJob:
    """One stage Job of one revision."""

    name: str
    component: str
    revision: int
    state: JobState
    reason: str = ""
    message: str = ""
    outcome: StageOutcome | None = None
    uid: str | None = None
    """The Job's own uid: a delete is conditional on it (never another object of that name)."""
    stuck: str = ""
    """Why a running Job's pod cannot start (its image cannot be pulled, it cannot be scheduled),
    empty while nothing holds it back: the Job itself says only that it is active."""


PodTroubleReason = Literal["PredictorOOMKilled", "PredictorCrashLooping", "PredictorPodNotStarting"]
POD_TROUBLE_REASONS = frozenset(get_args(PodTroubleReason))
"""The condition reasons a predictor's pods can give for not serving."""


@dataclass(frozen=True)
class PodTrouble:
    """What keeps a predictor's pod from serving, as a condition's reason and message."""

    reason: PodTroubleReason
    message: str


@dataclass(frozen=True)
class ObservedChild:
    """A child the operator keeps up to date: the InferenceService, or the drift monitor's parts."""

    kind: str
    name: str
    resource_version: str
    spec_hash: str | None
    revision: int | None
    ready: bool = False
    url: str | None = None
    updating: bool = False
    """Its controller has not yet acted on the latest spec (``status.observedGeneration`` lags)."""
    uid: str | None = None
    """The child's own uid: a delete is conditional on it (never another object of that name)."""
    trouble: PodTrouble | None = None
    """Why an InferenceService that is not Ready has no ready predictor, read from its pods (KServe
    itself says only that its Deployment is unavailable); None while nothing is known to be wrong."""


@dataclass(frozen=True)
class CanaryMetrics:
    """The canary's error rate, p95 latency and requests served over the analysis window; None:
    unknown."""

    error_rate: float | None
    latency_p95_ms: float | None
    requests_served: float | None


@dataclass(frozen=True)
class Observed:
    """Everything reconciling looks at besides the resource itself."""

    jobs: Mapping[tuple[str, int], ObservedJob] = field(default_factory=dict)
    services: Mapping[str, ObservedChild] = field(default_factory=dict)
    """The resource's InferenceServices, by name."""
    monitor: Mapping[str, ObservedChild] = field(default_factory=dict)
    canary: CanaryMetrics | None = None
    route: ObservedChild | None = None
    """The HTTPRoute of Standard mode, when there is one."""
    capabilities: Capabilities = field(default_factory=Capabilities)
    """What the cluster serves with (KServe, Knative, the Gateway API, KEDA, KServe's default mode)."""


def owned_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    """Whether ``obj`` carries an owner reference to the object ``owner_uid`` (a label alone
    proves nothing: anyone can copy it onto their own object, which must never be replaced or
    deleted)."""
    references = (obj.get("metadata") or {}).get("ownerReferences") or []
    return bool(owner_uid) and any(isinstance(r, Mapping) and r.get("uid") == owner_uid for r in references)


def _revision(obj: Mapping[str, Any]) -> int | None:
    value = (obj.get("metadata", {}).get("labels") or {}).get(LABEL_REVISION)
    return int(value) if value is not None and str(value).isdigit() else None


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or []}


def job_state(job: Mapping[str, Any]) -> tuple[JobState, str, str]:
    """A Job's state from its ``Complete``/``Failed`` conditions, with the failure's reason and message."""
    conditions = _conditions(job)
    failed = conditions.get("Failed")
    if failed is not None and failed.get("status") == "True":
        return "Failed", str(failed.get("reason") or "JobFailed"), str(failed.get("message") or "")
    complete = conditions.get("Complete")
    if complete is not None and complete.get("status") == "True":
        return "Succeeded", "", ""
    return "Running", "", ""


def pod_outcome(pods: Iterable[Mapping[str, Any]]) -> StageOutcome | None:
    """The stage outcome reported by the Job's pods: a finished result first, else a failure.

    A termination message that is not a :class:`StageOutcome` (the log tail Kubernetes keeps
    when a pod crashed before reporting) becomes a failed outcome carrying that text.
    """
    outcomes: list[StageOutcome] = []
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            message = terminated.get("message")
            if not message:
                continue
            try:
                outcomes.append(StageOutcome.model_validate(json.loads(message)))
            except (ValueError, ValidationError):
                stage = str(((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_COMPONENT, "tuning"))
                outcomes.append(
                    StageOutcome.model_validate(
                        {
                            "stage": stage if stage in ("tuning", "compression") else "tuning",
                            "succeeded": False,
                            "reason": "StageFailed",
                            "message": str(message)[-2048:],
                        }
                    )
                )
    ranked = sorted(outcomes, key=lambda o: (not o.succeeded, o.reason == "WorkerFinished"))
    return ranked[0] if ranked else None


STUCK_WAITING_REASONS = frozenset({
    "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
    "CreateContainerConfigError", "CreateContainerError",
})  # fmt: skip
"""A container's waiting reasons that the kubelet keeps retrying but that rarely clear without a
person: a wrong or unreachable image, a missing Secret or ConfigMap. The Job stays active and never
fails on its own (its backoff counts failed pods, and this pod never runs)."""


def pod_stuck(pods: Iterable[Mapping[str, Any]]) -> str:
    """Why the first of ``pods`` that cannot start is held back, as ``"<reason>: <message>"``
    (a container's stuck waiting reason, or the scheduler's ``Unschedulable``); empty when none is."""
    for pod in pods:
        status = pod.get("status") or {}
        for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_WAITING_REASONS:
                detail = str(waiting.get("message") or f"container {container.get('name')}").strip()
                return f"{waiting['reason']}: {detail}"[:512]
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
                return f"Unschedulable: {str(condition.get('message') or '').strip()}"[:512]
    return ""


def _container_failure(pod: Mapping[str, Any], container: Mapping[str, Any]) -> PodTrouble | None:
    """A container that was killed or keeps exiting: what its last end was, and how often."""
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    ended = state.get("terminated") or {}
    if not ended and waiting.get("reason") == "CrashLoopBackOff":
        ended = (container.get("lastState") or {}).get("terminated") or {}
    elif not ended and not container.get("ready"):
        # Between two crashes the container runs (not ready) and only its last state says why.
        ended = (container.get("lastState") or {}).get("terminated") or {}
        if ended.get("reason") != "OOMKilled":
            return None
    if not ended or (ended.get("exitCode") == 0 and ended.get("reason") != "OOMKilled"):
        # A finished init container (KServe's storage initializer) ends with 0 and is fine.
        return None
    why = str(ended.get("reason") or "Exited")
    pod_name = (pod.get("metadata") or {}).get("name", "")
    message = (
        f"pod {pod_name}: container {container.get('name')} {why} (exit code {ended.get('exitCode')}),"
        f" restarted {container.get('restartCount', 0)} times"
    )
    if waiting.get("reason") == "CrashLoopBackOff":
        message += ", CrashLoopBackOff"
    detail = str(ended.get("message") or "").strip()
    if detail:
        message += f": {detail}"
    reason: PodTroubleReason = "PredictorOOMKilled" if why == "OOMKilled" else "PredictorCrashLooping"
    return PodTrouble(reason, message[:1024])


def predictor_trouble(pods: Iterable[Mapping[str, Any]]) -> PodTrouble | None:
    """Why an InferenceService's pods do not serve: a container killed for memory or crash-looping
    (the first found, OOM first, since its message has no log to point at), else a pod that cannot
    start; None when none of them says anything is wrong (they may still be starting)."""
    pods = list(pods)
    failures = [
        failure
        for pod in pods
        for container in [
            *((pod.get("status") or {}).get("initContainerStatuses") or []),
            *((pod.get("status") or {}).get("containerStatuses") or []),
        ]
        if (failure := _container_failure(pod, container)) is not None
    ]
    if failures:
        return min(failures, key=lambda f: f.reason != "PredictorOOMKilled")
    stuck = pod_stuck(pods)
    return PodTrouble("PredictorPodNotStarting", stuck) if stuck else None


def observe_job(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], owner_uid: str) -> ObservedJob | None:
    """An :class:`ObservedJob` from a Job of the resource ``owner_uid`` carrying our labels; None
    for any other Job. A finished Job's ``pods`` give its outcome, a running one's why it is stuck."""
    meta = job.get("metadata", {})
    labels = meta.get("labels") or {}
    revision = _revision(job)
    if revision is None or LABEL_COMPONENT not in labels or not owned_by(job, owner_uid):
        return None
    state, reason, message = job_state(job)
    pods = list(pods)
    outcome = pod_outcome(pods) if state != "Running" else None
    stuck = pod_stuck(pods) if state == "Running" else ""
    component = labels[LABEL_COMPONENT]
    return ObservedJob(meta["name"], component, revision, state, reason, message, outcome, meta.get("uid"), stuck)


def observe_child(obj: Mapping[str, Any], owner_uid: str) -> ObservedChild | None:
    """An :class:`ObservedChild` with readiness from its ``Ready`` or ``Available`` condition, or
    None when the resource ``owner_uid`` does not own ``obj``.

    A status written for an older ``metadata.generation`` does not count as ready.
    """
    if not owned_by(obj, owner_uid):
        return None
    meta = obj.get("metadata", {})
    status = obj.get("status") or {}
    conditions = _conditions(obj)
    ready_condition = conditions.get("Ready") or conditions.get("Available")
    observed_generation = status.get("observedGeneration")
    current = observed_generation is None or observed_generation == meta.get("generation")
    ready = ready_condition is not None and ready_condition.get("status") == "True" and current
    return ObservedChild(
        kind=str(obj.get("kind", "")),
        name=str(meta.get("name", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        spec_hash=(meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION),
        revision=_revision(obj),
        ready=bool(ready),
        url=status.get("url"),
        updating=not current,
        uid=meta.get("uid"),
    )


def observe_route(obj: Mapping[str, Any], owner_uid: str) -> ObservedChild | None:
    """An HTTPRoute as an :class:`ObservedChild`, or None when the resource ``owner_uid`` does
    not own it: ``ready`` when every gateway that reported on it accepted its current generation
    and none of them failed to resolve its backends; ``updating`` while a gateway reported only on
    an older one. A route no gateway reported on is neither (nothing implements it yet).

    An accepted route with ``ResolvedRefs=False`` does not carry its weights: a backend Service
    that does not exist makes a gateway fail requests (the Gateway API asks for 500s on that
    backend's share, as Traefik on the real node did; one run failed every request of the route)."""
    child = observe_child(obj, owner_uid)
    if child is None:
        return None
    generation = obj.get("metadata", {}).get("generation")
    conditions = [
        condition
        for parent in (obj.get("status") or {}).get("parents") or []
        for condition in parent.get("conditions") or []
    ]
    reports = [c for c in conditions if c.get("type") == "Accepted"]
    current_gen = (None, generation)
    current = [c for c in reports if c.get("observedGeneration") in current_gen]
    accepted = bool(current) and len(current) == len(reports) and all(c.get("status") == "True" for c in current)
    unresolved = any(
        c.get("type") == "ResolvedRefs" and c.get("status") == "False" and c.get("observedGeneration") in current_gen
        for c in conditions
    )
    return ObservedChild(
        kind=child.kind,
        name=child.name,
        resource_version=child.resource_version,
        spec_hash=child.spec_hash,
        revision=child.revision,
        ready=accepted and not unresolved,
        updating=bool(reports) and len(current) < len(reports),
        uid=child.uid,
    )
