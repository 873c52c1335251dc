"""The drift monitor's HTTP service (aiohttp), one per served revision.

Endpoints:

- ``POST /revisions/<N>``: CloudEvents from KServe's payload logger of revision ``N`` (the URL the
  operator gives each revision's logger). Revision ``N`` is the monitor's own: rows join the window;
  another revision's (a canary's, whose logger posts to the same Service) are answered and counted
  as ignored, so they never move the served revision's window.
- ``POST /`` (and ``/events``): the same for events that name no revision (the local runner).
  Only well-formed KServe request events are taken (see :mod:`optiloop.drift.events`); with
  ``inference_services`` set, only those naming one of them (others: 403).
- ``POST /check``: a v1 or v2 request body checked at once against the reference (nothing is
  kept); answers the result as JSON. Used by the local runner and for spot checks.
- ``GET /metrics``: Prometheus metrics (see :mod:`optiloop.drift.metrics`).
- ``GET /healthz`` and ``GET /readyz``: liveness, and readiness once the reference is loaded.

A malformed event is answered 400 with the reason and counted as rejected; a body above the
limit is answered 413 before it is read (from its Content-Length, or as soon as the stream
passes the limit). Events are parsed and encoded in worker threads, at most
``PARALLEL_PARSES`` at a time (their bodies are read only once a slot is free, which bounds
memory), so a large event never holds up ``/healthz`` or ``/metrics``. Evaluations run in a
worker thread, one at a time, whenever the window is due (see :mod:`optiloop.drift.window`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .detectors import DriftResult, make_detector
from .events import EventError, ForbiddenEventError, loads, parse_event, request_rows
from .features import RowError
from .metrics import DriftMetrics
from .reference import Reference, load_reference
from .window import Window

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 16 * 1024 * 1024
PARALLEL_PARSES = 2


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
    inference_services: tuple[str, ...] = ()
    """InferenceServices whose events are taken; empty takes any well-formed KServe request event."""
    max_body_bytes: int = MAX_BODY_BYTES


class Monitor:
    """The reference, the window, the detector and the metrics of one revision."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.reference: Reference = load_reference(config.model_dir)
        model = config.model or self.reference.model or "model"
        self.metrics = DriftMetrics(config.namespace, model, self.reference.revision)
        space = self.reference.space
        self.detector = make_detector(
            config.detector, self.reference.matrix, space.names, space.categorical, config.p_value, config.correction
        )
        self.window = Window(config.window_size, len(space.names), config.window)
        self.last: DriftResult | None = None
        self._evaluating = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.parsing = asyncio.Semaphore(PARALLEL_PARSES)
        self.parsers = ThreadPoolExecutor(PARALLEL_PARSES, thread_name_prefix="drift-parse")

    def encode(self, rows: list[Any]) -> np.ndarray:
        """Encode ``rows``; raises ``RowError`` (nothing non-finite ever leaves here)."""
        matrix = self.reference.space.encode(rows)
        if not np.isfinite(matrix).all():
            raise RowError("a value is not a finite number")
        return matrix

    def accept(self, rows: list[Any]) -> int:
        """Encode ``rows`` and add them to the window; raises ``RowError``."""
        matrix = self.encode(rows)
        self.window.add(matrix)
        self.metrics.window(len(self.window))
        return len(matrix)

    def take_event(self, headers: Mapping[str, str], body: bytes) -> int | None:
        """Parse one event and add its rows (a worker thread runs this); None for a logged response."""
        parsed = parse_event(
            headers, body, self.reference.space.names, self.config.inference_services, self.config.namespace
        )
        return None if parsed.is_response else self.accept(parsed.rows)

    def check_body(self, body: bytes) -> np.ndarray:
        """The encoded rows of a v1 or v2 request body (a worker thread runs this)."""
        return self.encode(request_rows(loads(body, "the request body"), self.reference.space.names))

    def evaluate_soon(self) -> None:
        """Start :meth:`evaluate_if_due` in the background (the task is kept until it ends)."""
        task = asyncio.get_running_loop().create_task(self.evaluate_if_due())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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


def _refused(monitor: Monitor, status: int, reason: str) -> web.Response:
    monitor.metrics.event("rejected")
    response = web.json_response({"error": reason}, status=status)
    if status == 413:
        response.force_close()  # the rest of the body is never read
    return response


def _too_large(monitor: Monitor, request: web.Request) -> web.Response | None:
    limit = monitor.config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _refused(monitor, 413, f"the body is {request.content_length} bytes; the limit is {limit}")
    return None


async def _read(monitor: Monitor, request: web.Request) -> bytes | web.Response:
    """The body, or a 413 answer once it passes the limit (aiohttp stops reading there)."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _refused(monitor, 413, f"the body is larger than the limit of {monitor.config.max_body_bytes} bytes")


async def handle_event(request: web.Request) -> web.Response:
    monitor: Monitor = request.app["monitor"]
    if (refusal := _too_large(monitor, request)) is not None:
        return refusal
    loop = asyncio.get_running_loop()
    async with monitor.parsing:
        body = await _read(monitor, request)
        if isinstance(body, web.Response):
            return body
        try:
            count = await loop.run_in_executor(monitor.parsers, monitor.take_event, dict(request.headers), body)
        except ForbiddenEventError as exc:
            return _refused(monitor, 403, str(exc))
        except (EventError, RowError) as exc:
            return _refused(monitor, 400, str(exc))
    if count is None:
        monitor.metrics.event("ignored")
        return web.json_response({"accepted": 0, "ignored": "response event"})
    monitor.metrics.event("accepted", count)
    monitor.evaluate_soon()
    return web.json_response({"accepted": count, "window": len(monitor.window)})


async def handle_revision_event(request: web.Request) -> web.Response:
    monitor: Monitor = request.app["monitor"]
    revision = int(request.match_info["revision"])
    if revision != monitor.reference.revision:
        monitor.metrics.event("ignored")
        ignored = f"revision {revision}'s event; this monitor watches revision {monitor.reference.revision}"
        return web.json_response({"accepted": 0, "ignored": ignored})
    return await handle_event(request)


async def handle_check(request: web.Request) -> web.Response:
    monitor: Monitor = request.app["monitor"]
    if (refusal := _too_large(monitor, request)) is not None:
        return refusal
    loop = asyncio.get_running_loop()
    async with monitor.parsing:
        body = await _read(monitor, request)
        if isinstance(body, web.Response):
            return body
        try:
            matrix = await loop.run_in_executor(monitor.parsers, monitor.check_body, body)
        except (EventError, RowError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
    if len(matrix) < 2:
        return web.json_response({"error": "a check needs at least 2 rows"}, status=400)
    result = await loop.run_in_executor(None, monitor.detector.evaluate, matrix)
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
    app = web.Application(client_max_size=monitor.config.max_body_bytes)
    app["monitor"] = monitor

    async def stop_parsers(_: web.Application) -> None:
        monitor.parsers.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(stop_parsers)
    app.router.add_post("/", handle_event)
    app.router.add_post("/events", handle_event)
    app.router.add_post(r"/revisions/{revision:\d{1,9}}", handle_revision_event)
    app.router.add_post("/check", handle_check)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/readyz", handle_ready)
    return app
