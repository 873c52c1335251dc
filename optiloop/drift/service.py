"""The drift monitor's HTTP service (aiohttp), one per served revision.

Endpoints:

- ``POST /`` (and ``/events``): CloudEvents from KServe's payload logger; rows join the window.
- ``POST /check``: a v1 or v2 request body checked at once against the reference (nothing is
  kept); answers the result as JSON. Used by the local runner and for spot checks.
- ``GET /metrics``: Prometheus metrics (see :mod:`optiloop.drift.metrics`).
- ``GET /healthz`` and ``GET /readyz``: liveness, and readiness once the reference is loaded.

A malformed event is answered 400 with the reason and counted as rejected; nothing a client
sends can stop the service. Evaluations run in a worker thread, one at a time, whenever the
window is due (see :mod:`optiloop.drift.window`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .detectors import Detector, DriftResult
from .events import EventError, parse_event, request_rows
from .features import RowError
from .metrics import DriftMetrics
from .reference import Reference, load_reference
from .window import Window

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass
class MonitorConfig:
    """Settings of one monitor (from the command line or the operator's Deployment)."""

    model_dir: str
    namespace: str = "default"
    model: str = ""
    detector: str = "tabular"
    p_value: float = 0.05
    correction: str = "bonferroni"
    window_size: int = 500
    window: str = "sliding"


class Monitor:
    """The reference, the window, the detector and the metrics of one revision."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.reference: Reference = load_reference(config.model_dir)
        model = config.model or self.reference.model or "model"
        self.metrics = DriftMetrics(config.namespace, model, self.reference.revision)
        space = self.reference.space
        self.detector = Detector(
            config.detector, self.reference.matrix, space.names, space.categorical, config.p_value, config.correction
        )
        self.window = Window(config.window_size, len(space.names), config.window)
        self.last: DriftResult | None = None
        self._evaluating = asyncio.Lock()

    def accept(self, rows: list[Any]) -> int:
        """Encode ``rows`` and add them to the window; raises ``RowError``."""
        matrix = self.reference.space.encode(rows)
        self.window.add(matrix)
        self.metrics.window(len(self.window))
        return len(matrix)

    async def evaluate_if_due(self) -> None:
        """Evaluate while the window is due; rows arriving meanwhile are caught by the next loop."""
        if self._evaluating.locked():
            return
        async with self._evaluating:
            while self.window.due():
                rows = self.window.take()
                result = await asyncio.get_running_loop().run_in_executor(None, self.detector.evaluate, rows)
                self.last = result
                self.metrics.evaluation(result)
                self.metrics.window(len(self.window))
                if result.is_drift:
                    log.info(
                        "drift: p=%.3g (threshold %.3g), %d rows", result.p_value, result.threshold, result.samples
                    )


def _bad_request(monitor: Monitor, reason: str) -> web.Response:
    monitor.metrics.event("rejected")
    return web.json_response({"error": reason}, status=400)


async def handle_event(request: web.Request) -> web.Response:
    monitor: Monitor = request.app["monitor"]
    body = await request.read()
    try:
        parsed = parse_event(request.headers, body, monitor.reference.space.names)
        if parsed.is_response:
            monitor.metrics.event("ignored")
            return web.json_response({"accepted": 0, "ignored": "response event"})
        count = monitor.accept(parsed.rows)
    except (EventError, RowError) as exc:
        return _bad_request(monitor, str(exc))
    monitor.metrics.event("accepted", count)
    asyncio.get_running_loop().create_task(monitor.evaluate_if_due())
    return web.json_response({"accepted": count, "window": len(monitor.window)})


async def handle_check(request: web.Request) -> web.Response:
    monitor: Monitor = request.app["monitor"]
    try:
        document = await request.json()
        rows = request_rows(document, monitor.reference.space.names)
        matrix = monitor.reference.space.encode(rows)
    except (ValueError, EventError, RowError) as exc:  # json errors are ValueErrors
        return web.json_response({"error": str(exc)}, status=400)
    if len(matrix) < 2:
        return web.json_response({"error": "a check needs at least 2 rows"}, status=400)
    result = await asyncio.get_running_loop().run_in_executor(None, monitor.detector.evaluate, matrix)
    return web.json_response(result.as_json())


async def handle_metrics(request: web.Request) -> web.Response:
    monitor: Monitor = request.app["monitor"]
    return web.Response(body=generate_latest(monitor.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def handle_health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def handle_ready(request: web.Request) -> web.Response:
    monitor: Monitor = request.app["monitor"]
    return web.json_response({"ready": True, "revision": monitor.reference.revision})


def build_app(monitor: Monitor) -> web.Application:
    """The aiohttp application serving ``monitor``."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app["monitor"] = monitor
    app.router.add_post("/", handle_event)
    app.router.add_post("/events", handle_event)
    app.router.add_post("/check", handle_check)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/readyz", handle_ready)
    return app
