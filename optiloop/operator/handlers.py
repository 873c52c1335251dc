"""Kopf's entry points: each translates an event into one call of the reconciler.

* create, update and resume of a ModelOptimization reconcile it;
* an event on one of its Jobs, its InferenceService or its drift monitor reconciles the owner;
* a timer per resource ticks every ``OPTILOOP_RESYNC_SECONDS`` and reconciles only when something
  is due: a drift evaluation (the spec's interval), a canary under analysis, a scheduled retrain
  (none has an event of its own), or a full resync every ``OPTILOOP_FULL_RESYNC_SECONDS``.

Errors are mapped here: an invalid spec is permanent (status and Event already say why);
API trouble is retried with a delay; anything else is retried later and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from ..api import GROUP, PLURAL, VERSION
from .builders.common import LABEL_NAME
from .builders.serving import ISVC_API_VERSION
from .config import OperatorConfig
from .k8s import Cluster, ForeignChildError, TransientApiError
from .loop import InvalidSpecError, Reconciler
from .metrics import serve_metrics
from .settings import configure

CONFIG = OperatorConfig.from_env()
_reconciler: Reconciler | None = None
_ISVC_GROUP, _ISVC_VERSION = ISVC_API_VERSION.split("/")
_CHILD = {LABEL_NAME: kopf.PRESENT}
_CHILD_WORKERS = max(2, CONFIG.workers // 4)
_CHILD_EVENTS = ThreadPoolExecutor(max_workers=_CHILD_WORKERS, thread_name_prefix="child-events")


def _run(namespace: str | None, name: str, retry: bool = True, body: kopf.Body | None = None) -> None:
    assert _reconciler is not None, "the startup handler builds the reconciler"
    try:
        _reconciler.reconcile(namespace or "default", name, body=dict(body) if body is not None else None)
    except InvalidSpecError as exc:
        if retry:
            raise kopf.PermanentError(str(exc)) from None
    except TransientApiError as exc:
        if retry:
            raise kopf.TemporaryError(str(exc), delay=5) from None
        logging.getLogger(__name__).info("will retry %s/%s at the next tick: %s", namespace, name, exc)
    except ForeignChildError as exc:
        if retry:
            raise kopf.TemporaryError(str(exc), delay=60) from None
        logging.getLogger(__name__).warning("%s/%s: %s", namespace, name, exc)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _reconciler
    configure(settings, CONFIG)
    # A connection per reconcile thread (Kopf's and the child-event pool's), plus the Event poster.
    _reconciler = Reconciler(Cluster(connections=CONFIG.workers + _CHILD_WORKERS + 2), CONFIG)
    if CONFIG.metrics_port:
        serve_metrics(CONFIG.metrics_port, CONFIG.metrics_address)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def changed(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> None:
    _run(namespace, name, body=body)


@kopf.timer(GROUP, VERSION, PLURAL, interval=CONFIG.resync_seconds, initial_delay=CONFIG.resync_seconds)
def resync(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> None:
    assert _reconciler is not None, "the startup handler builds the reconciler"
    try:
        _reconciler.tick(namespace or "default", name, dict(body))
    except (InvalidSpecError, TransientApiError, ForeignChildError) as exc:
        logging.getLogger(__name__).info("resync of %s/%s: %s", namespace, name, exc)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def deleted(name: str, namespace: str | None, **_: Any) -> None:
    if _reconciler is not None:
        _reconciler.forget(namespace or "default", name)


@kopf.on.event("batch", "v1", "jobs", labels=_CHILD)
@kopf.on.event("apps", "v1", "deployments", labels=_CHILD)
@kopf.on.event(_ISVC_GROUP, _ISVC_VERSION, "inferenceservices", labels=_CHILD)
async def child_changed(type: str | None, labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    # A child's appearance is our own create (or, after a restart, what the resume handlers
    # reconcile anyway); what matters is a child that changed (a finished Job, a Ready
    # InferenceService) or vanished (to be recreated). These reconciles run on their own
    # smaller pool, so a burst of child events never delays new resources' first reconcile.
    if type in ("MODIFIED", "DELETED"):
        _CHILD_EVENTS.submit(_run, namespace, labels[LABEL_NAME], False)
