"""Kopf's entry points: each translates an event into one call of the reconciler.

* an event on a ModelOptimization reconciles it when its spec is new to this process (a new
  object, a new generation, or any object at start-up or after a takeover); our own status
  writes keep the generation and are ignored;
* an event on one of its Jobs, its InferenceService or its drift monitor reconciles the owner;
* a timer per resource ticks every ``OPTILOOP_RESYNC_SECONDS`` and reconciles only when something
  is due: a drift evaluation (the spec's interval), a canary under analysis, a scheduled retrain
  (none has an event of its own), a retry after a failure, or a full resync every
  ``OPTILOOP_FULL_RESYNC_SECONDS``.

Why events rather than Kopf's create/update/resume handlers: those run only after Kopf has
added its finalizer (a PATCH and a wait for its echo) and end with a PATCH of Kopf's own
annotations. The reconcile is level-based and needs neither, so a new resource's Job is created
one round trip sooner and with two writes fewer. Failures are retried at the next tick.
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
# Changes to the resources and events on their children run on separate pools, so a burst of
# child events never delays new resources' first reconcile.
_CHANGES = ThreadPoolExecutor(max_workers=CONFIG.workers, thread_name_prefix="changes")
_CHILD_EVENTS = ThreadPoolExecutor(max_workers=_CHILD_WORKERS, thread_name_prefix="child-events")
log = logging.getLogger(__name__)


def _run(namespace: str | None, name: str, body: dict[str, Any] | None = None) -> None:
    assert _reconciler is not None, "the startup handler builds the reconciler"
    try:
        _reconciler.reconcile(namespace or "default", name, body=body)
    except InvalidSpecError:
        pass  # status and a Warning Event say why; the next spec change is the next event
    except (TransientApiError, ForeignChildError) as exc:
        log.warning("will retry %s/%s at the next tick: %s", namespace, name, exc)
    except Exception:
        log.exception("will retry %s/%s at the next tick", namespace, name)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _reconciler
    configure(settings, CONFIG)
    # A connection per reconcile thread (the change and child-event pools', Kopf's for the
    # timers), plus the Event poster.
    _reconciler = Reconciler(Cluster(connections=2 * CONFIG.workers + _CHILD_WORKERS + 2), CONFIG)
    if CONFIG.metrics_port:
        serve_metrics(CONFIG.metrics_port, CONFIG.metrics_address)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def resource_changed(type: str | None, body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
    assert _reconciler is not None, "the startup handler builds the reconciler"
    if type == "DELETED":
        _reconciler.forget(namespace or "default", name)
    elif _reconciler.is_new(dict(body)):
        _CHANGES.submit(_run, namespace, name, dict(body))


@kopf.timer(GROUP, VERSION, PLURAL, interval=CONFIG.resync_seconds, initial_delay=CONFIG.resync_seconds)
def resync(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> None:
    assert _reconciler is not None, "the startup handler builds the reconciler"
    try:
        _reconciler.tick(namespace or "default", name, dict(body))
    except (InvalidSpecError, TransientApiError, ForeignChildError) as exc:
        log.info("resync of %s/%s: %s", namespace, name, exc)


@kopf.on.event("batch", "v1", "jobs", labels=_CHILD)
@kopf.on.event("apps", "v1", "deployments", labels=_CHILD)
@kopf.on.event(_ISVC_GROUP, _ISVC_VERSION, "inferenceservices", labels=_CHILD)
async def child_changed(type: str | None, labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    # A child's appearance is our own create (or, after a restart, part of what every resource's
    # first reconcile reads anyway); what matters is a child that changed (a finished Job, a
    # Ready InferenceService) or vanished (to be recreated).
    if type in ("MODIFIED", "DELETED"):
        _CHILD_EVENTS.submit(_run, namespace, labels[LABEL_NAME])
