"""How a local run shows its progress: a live view on a terminal, log lines otherwise,
JSON lines for scripts, or nothing.

Every view receives the same events: a stage starts or finishes, a tuning trial finishes an
epoch or ends, and free-form notes. The live view keeps one status line updated in place
(stage, trial, epoch, best so far) and prints a line per finished stage and trial above it.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from ..api.jobs import TrialRecord


class View:
    """Silent base view (``--quiet``); the others override what they show."""

    def stage_started(self, stage: str, detail: str = "") -> None: ...

    def stage_finished(self, stage: str, summary: str, resumed: bool = False) -> None: ...

    def epoch(self, trial: int, epoch: int, value: float) -> None: ...

    def trial(self, record: TrialRecord, best: float | None) -> None: ...

    def note(self, message: str) -> None: ...

    def close(self) -> None: ...


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


class LogView(View):
    """Plain, timestamped lines: what a CI log or a redirected output gets."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()

    def _line(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{int(elapsed // 60):02d}:{elapsed % 60:04.1f}] {text}", file=self.stream, flush=True)

    def stage_started(self, stage: str, detail: str = "") -> None:
        self._line(f"{stage}: started{f' ({detail})' if detail else ''}")

    def stage_finished(self, stage: str, summary: str, resumed: bool = False) -> None:
        self._line(f"{stage}: {'reused from a previous run' if resumed else 'done'}: {summary}")

    def trial(self, record: TrialRecord, best: float | None) -> None:
        values = ", ".join(_value(v) for v in record.values or []) or "-"
        self._line(f"  trial {record.number} {record.state.lower()}: {values} (best {_value(best)})")

    def note(self, message: str) -> None:
        self._line(message)


class LiveView(LogView):
    """A terminal view: finished stages and trials scroll, one status line stays at the bottom."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.stage = ""
        self.best: float | None = None
        self.trials = 0

    def _status(self, text: str) -> None:
        width = 100
        self.stream.write("\r\x1b[2K" + text[:width])
        self.stream.flush()

    def _line(self, text: str) -> None:
        self.stream.write("\r\x1b[2K")
        super()._line(text)

    def stage_started(self, stage: str, detail: str = "") -> None:
        self.stage = stage
        super().stage_started(stage, detail)
        self._status(f"  {stage} ...")

    def epoch(self, trial: int, epoch: int, value: float) -> None:
        self._status(
            f"  tuning: trial {trial}, epoch {epoch}, validation {_value(value)}; best so far {_value(self.best)}"
        )

    def trial(self, record: TrialRecord, best: float | None) -> None:
        self.best, self.trials = best, self.trials + 1
        super().trial(record, best)

    def close(self) -> None:
        self.stream.write("\r\x1b[2K")
        self.stream.flush()


class JsonView(View):
    """One JSON object per event on stdout, for scripts; the final summary is the last line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def emit(self, event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, "time": time.time(), **fields}), file=self.stream, flush=True)

    def stage_started(self, stage: str, detail: str = "") -> None:
        self.emit("stageStarted", stage=stage, detail=detail)

    def stage_finished(self, stage: str, summary: str, resumed: bool = False) -> None:
        self.emit("stageFinished", stage=stage, summary=summary, resumed=resumed)

    def trial(self, record: TrialRecord, best: float | None) -> None:
        self.emit("trial", trial=record.model_dump(mode="json", by_alias=True), best=best)

    def note(self, message: str) -> None:
        self.emit("note", message=message)


def choose_view(quiet: bool, as_json: bool, stream: TextIO | None = None) -> View:
    """``--json`` -> JSON lines, ``--quiet`` -> nothing, a terminal -> live view, else log lines."""
    if as_json:
        return JsonView(sys.stdout)
    if quiet:
        return View()
    stream = stream or sys.stderr
    return LiveView(stream) if stream.isatty() else LogView(stream)
