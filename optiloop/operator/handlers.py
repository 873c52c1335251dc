"""Kopf's entry points: each translates an event into one call of the reconciler.

* an event on a ModelOptimization reconciles it when its spec is new to this process (a new
  object, a new generation, or any object at start-up or after a takeover); our own status
  writes keep the generation and are ignored;
* an event on one of its Jobs, its InferenceService or its drift monitor reconciles the owner;
* a timer per resource ticks every ``OPTILOOP_RESYNC_SECONDS`` and reconciles only when something
  is due: a drift evaluation (the spec's interval), a canary under analysis, a scheduled retrain
  (none has an event of its own), a retry after a failure, or a full resync every
  ``OPTILOOP_FULL_RESYNC_SECONDS``; the resource's last plan says when it next needs to run;
* on shutdown (SIGTERM), after Kopf has stopped its watches, reconciles already handed over
  finish and queued Events are posted, within ``OPTILOOP_DRAIN_SECONDS``.

Why events rather than Kopf's create/update/resume handlers: those run only after Kopf has
added its finalizer (a PATCH and a wait for its echo) and end with a PATCH of Kopf's own
annotations. The reconcile is level-based and needs neither, so a new resource's Job is created
a round trip sooner, and no annotation is written. Failures are retried by the timer, backing off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from ..api import GROUP, PLURAL, VERSION
from .builders.common import LABEL_NAME
from .builders.serving import ISVC_API_VERSION
from .config import OperatorConfig
from .k8s import Cluster
from .loop import Reconciler
from .metrics import serve_metrics
from .settings import configure

log = logging.getLogger(__name__)
CONFIG = OperatorConfig.from_env()
_reconciler: Reconciler | None = None
_ISVC_GROUP, _ISVC_VERSION = ISVC_API_VERSION.split("/")
_CHILD = {LABEL_NAME: kopf.PRESENT}
_PROGRESS_WORKERS = max(2, CONFIG.workers // 4)
# New specs run on one pool, progress (child events, due timer ticks) on a smaller other, so a
# burst of progress never delays new resources' first reconcile. Every handler is async and
# only hands work over: the event loop that reads the watches never waits for a reconcile.
_CHANGES = ThreadPoolExecutor(max_workers=CONFIG.workers, thread_name_prefix="changes")
_PROGRESS = ThreadPoolExecutor(max_workers=_PROGRESS_WORKERS, thread_name_prefix="progress")


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _reconciler
    configure(settings, CONFIG)
    # A connection per reconcile thread, plus the Event poster.
    _reconciler = Reconciler(Cluster(connections=CONFIG.workers + _PROGRESS_WORKERS + 2), CONFIG)
    if CONFIG.metrics_port:
        serve_metrics(CONFIG.metrics_port, CONFIG.metrics_address)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def resource_changed(type: str | None, body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
    assert _reconciler is not None, "the startup handler builds the reconciler"
    if type == "DELETED":
        _reconciler.forget(namespace or "default", name)
    elif _reconciler.is_new(dict(body)):
        _reconciler.submit(_CHANGES, namespace or "default", name, body=dict(body))


@kopf.timer(GROUP, VERSION, PLURAL, interval=CONFIG.resync_seconds, initial_delay=CONFIG.resync_seconds)
async def resync(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> None:
    assert _reconciler is not None, "the startup handler builds the reconciler"
    if _reconciler.due(namespace or "default", name):
        _reconciler.submit(_PROGRESS, namespace or "default", name, evaluate_drift=True, body=dict(body))


@kopf.on.event("batch", "v1", "jobs", labels=_CHILD)
@kopf.on.event("apps", "v1", "deployments", labels=_CHILD)
@kopf.on.event(_ISVC_GROUP, _ISVC_VERSION, "inferenceservices", labels=_CHILD)
async def child_changed(type: str | None, labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    # A child's appearance is our own create; what matters is a child that changed (a finished
    # Job, a Ready InferenceService) or vanished (to be recreated), and a child listed when a watch
    # (re)starts (type None): it may have changed while no watch was open, and that change comes
    # as no event of its own.
    if type != "ADDED":
        assert _reconciler is not None, "the startup handler builds the reconciler"
        _reconciler.submit(_PROGRESS, namespace or "default", labels[LABEL_NAME])


@kopf.on.cleanup()
async def drain(**_: Any) -> None:
    if _reconciler is None:
        return
    finished, cancelled = await asyncio.to_thread(_reconciler.drain, CONFIG.drain_seconds)
    for pool in (_CHANGES, _PROGRESS):
        pool.shutdown(wait=False, cancel_futures=True)
    log.info("drained: %d reconciles finished, %d not started (redone at the next start)", finished, cancelled)
