"""The probe of a blue/green revision: synthetic requests before any user request.

A revision tried blue/green gets no user traffic, so its analysis needs traffic of its own. The
operator runs this as a Job (``python -m optiloop.jobs.probe``) once the revision's predictor is
Ready: it reads the revision's training reference (``r<N>/model/reference.json``, only from a
finished model directory), sends its rows one per request, in a steady stream of
``canaryAnalysis.probeRequestsPerSecond`` for ``canaryAnalysis.windowSeconds``, to the predictor
at ``$OPTILOOP_PROBE_URL`` (v1 ``:predict``, rows keyed by feature name), and checks what came back
against the canary bounds: the share of failed requests (any answer but 200, or none) and the
p95 latency. It stops early once the failures alone break the bound.

The predictor's own metrics of these requests (labelled with the revision) feed the operator's
usual canary queries as well; the probe's verdict is the part that needs no Prometheus.

Exit codes: 0 passed, 1 failed (the termination message says why), 2 invalid input.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..api.jobs import PROBE_URL_ENV, STAGE_INPUT_ENV, StageInput, StageOutcome
from ..formats.errors import FormatError
from ..formats.model_dir import COMPLETE_MARKER, REFERENCE_FILE
from ..formats.reference import read_reference
from .errors import StorageError
from .outcome import failed_outcome, report_outcome
from .storage import completion_marker, open_store

REQUEST_TIMEOUT_SECONDS = 10.0
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


@dataclass
class Tally:
    """What the predictor answered so far."""

    sent: int = 0
    failed: int = 0
    first_failure: str = ""
    latencies_ms: list[float] = field(default_factory=list)

    def record(self, ok: bool, latency_ms: float, problem: str = "") -> None:
        self.sent += 1
        self.latencies_ms.append(latency_ms)
        if not ok:
            self.failed += 1
            self.first_failure = self.first_failure or problem

    @property
    def p95_ms(self) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def reference_rows(stage: StageInput) -> list[dict[str, Any]]:
    """The revision's training reference as v1 instances keyed by feature name."""
    store = open_store(stage.artifacts)
    prefix = f"r{stage.revision}/model"
    if completion_marker(store, prefix) is None:
        raise StorageError(f"{stage.artifacts}/{prefix} is not a finished model directory (no valid {COMPLETE_MARKER})")
    try:
        columns, rows = read_reference(
            store.read_bytes(f"{prefix}/{REFERENCE_FILE}"), f"{stage.artifacts}/{prefix}/{REFERENCE_FILE}"
        )
    except FormatError as exc:
        raise StorageError(str(exc)) from None
    return [{c: _json_value(v) for c, v in zip(columns, row, strict=True)} for row in rows]


def _json_value(value: Any) -> Any:
    # A missing value is null in a request (NaN is not JSON).
    return None if isinstance(value, float) and not math.isfinite(value) else value


def send(url: str, row: dict[str, Any]) -> tuple[bool, str]:
    """One v1 request with one row; (answered 200, what went wrong otherwise)."""
    body = json.dumps({"instances": [row]}, allow_nan=False).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as answer:
            answer.read()
            return True, ""
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"no answer: {exc}"


def probe(
    url: str,
    rows: Sequence[dict[str, Any]],
    rate: float,
    seconds: float,
    max_error_rate: float,
    sender: Callable[[str, dict[str, Any]], tuple[bool, str]] = send,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Tally:
    """Send ``rate`` requests a second for ``seconds`` (at least one), cycling through ``rows``;
    stop early once more than ``max_error_rate`` of the planned requests have failed."""
    planned = max(1, math.ceil(rate * seconds))
    allowed_failures = math.floor(max_error_rate * planned)
    tally = Tally()
    start = clock()
    for i, row in zip(range(planned), _cycle(rows), strict=False):
        delay = start + i / rate - clock()
        if delay > 0:
            sleep(delay)
        began = clock()
        ok, problem = sender(url, row)
        tally.record(ok, (clock() - began) * 1000.0, problem)
        if tally.failed > allowed_failures:
            break
    return tally


def _cycle(rows: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    while True:
        yield from rows


def verdict(tally: Tally, max_error_rate: float, max_latency_p95_ms: float | None) -> StageOutcome:
    """Pass or fail against the canary bounds, with what was measured."""
    share = tally.failed / tally.sent if tally.sent else 1.0
    p95 = tally.p95_ms
    measured = (
        f"{tally.sent} requests, {tally.failed} failed ({share:.1%}), p95 {p95:.1f} ms" if p95 is not None else ""
    )
    if share > max_error_rate:
        first = f"; first failure: {tally.first_failure}" if tally.first_failure else ""
        message = f"{measured}: more than maxErrorRate {max_error_rate:.1%} failed{first}"
        return failed_outcome("probe", "StageFailed", message)
    if max_latency_p95_ms is not None and p95 is not None and p95 > max_latency_p95_ms:
        return failed_outcome("probe", "StageFailed", f"{measured}: above maxLatencyP95Ms {max_latency_p95_ms:g}")
    return StageOutcome(stage="probe", succeeded=True, reason="Succeeded", message=measured)


def main(argv: Sequence[str] | None = None) -> int:
    del argv  # configured by the environment the operator sets
    try:
        stage = StageInput.model_validate_json(os.environ.get(STAGE_INPUT_ENV, ""))
        base = os.environ[PROBE_URL_ENV].rstrip("/")
    except (ValidationError, KeyError) as exc:
        problem = f"invalid probe input: set {STAGE_INPUT_ENV} and {PROBE_URL_ENV} ({exc})"
        print(problem, file=sys.stderr)
        report_outcome(failed_outcome("probe", "InvalidInput", problem))
        return EXIT_INVALID
    deployment = stage.spec.deployment
    analysis = deployment.canary_analysis
    if deployment.runtime != "optiloop":
        problem = "the probe speaks v1 :predict to optiloop's predictor; runtime onnx (Triton) cannot be probed yet"
        report_outcome(failed_outcome("probe", "StageFailed", problem))
        print(problem, file=sys.stderr)
        return EXIT_FAILED
    try:
        rows = reference_rows(stage)
    except StorageError as exc:
        report_outcome(failed_outcome("probe", "StageFailed", str(exc)))
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    url = f"{base}/v1/models/{stage.name}:predict"
    tally = probe(url, rows, analysis.probe_requests_per_second, analysis.window_seconds, analysis.max_error_rate)
    latency_bound = analysis.max_latency_p95_ms or stage.spec.compression.gates.max_latency_p95_ms
    outcome = verdict(tally, analysis.max_error_rate, latency_bound)
    report_outcome(outcome)
    print(outcome.message)
    return EXIT_OK if outcome.succeeded else EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
