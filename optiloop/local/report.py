"""The run's report: one self-contained HTML file (inline CSS and SVG, no scripts, no network),
and the plain-text summary printed at the end of ``optiloop run``."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

from ..api.jobs import CandidateReport
from ..formats.model_dir import write_atomically
from . import svg
from .outcome import RunOutcome

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1000px;color:#111;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left}
th{background:#f3f4f6}.passed,.fixed{color:#15803d}.warning{color:#b45309}.failed{color:#b91c1c}
.summary{background:#f8fafc;border:1px solid #e2e8f0;padding:1rem;border-radius:6px}
.figure{margin:1rem 0}
"""


def _ms(candidate: CandidateReport, batch: int) -> float:
    entry = candidate.latency_at(batch)
    return entry.p95_ms if entry else math.nan


def summary_lines(outcome: RunOutcome) -> list[str]:
    """The text summary: data quality, best trial, candidates and the winner, drift baseline."""
    lines = [f"optiloop run: {outcome.name}, revision {outcome.revision}"]
    if outcome.data is not None:
        warnings = [r.rule for r in outcome.data.rules if r.status in ("warning", "fixed")]
        note = f"; fixed or warned: {', '.join(warnings)}" if warnings else ""
        lines.append(
            f"  data quality  {'passed' if outcome.data.passed else 'FAILED'}: "
            f"{outcome.data.rows_after} of {outcome.data.rows_before} rows kept{note}"
        )
    if outcome.tuning is not None:
        best = outcome.tuning.best_trial
        values = ", ".join(f"{m} {v:.4g}" for m, v in zip(outcome.tuning.objectives, best.values or [], strict=False))
        tests = ", ".join(f"{k} {v:.4g}" for k, v in outcome.tuning.test_metrics.items() if k != "loss")
        lines.append(
            f"  tuning        best trial {best.number} of {len(outcome.trials)} ({values}); "
            f"{outcome.tuning.architecture.summary()}; test {tests}"
        )
    if outcome.compression is not None:
        report = outcome.compression
        metric = report.primary_metric
        lines.append(
            "  compression   "
            + ("no candidate passed: baseline exported" if report.fallback else f"winner {report.chosen}")
        )
        lines.append(f"    {'candidate':<28} {metric:>9} {'p95 b1 ms':>10} {'size':>10}  verdict")
        for c in report.candidates:
            mark = "*" if c.name == report.chosen else " "
            verdict = "pass" if c.passed else "fail: " + "; ".join(c.failed_gates)[:100]
            lines.append(
                f"  {mark} {c.name:<28} {c.test_metrics.get(metric, math.nan):>9.4g} {_ms(c, 1):>10.3f} "
                f"{c.size_bytes / 1024:>8.1f}KB  {verdict}"
            )
    if outcome.smoke is not None:
        lines.append(f"  smoke test    predictor answered {outcome.smoke['rows']} rows like ONNX Runtime")
    if outcome.drift is not None:
        verdict = "DRIFT" if outcome.drift["isDrift"] else "no drift"
        lines.append(
            f"  drift         baseline on the held-out split: {verdict} "
            f"(smallest p-value {outcome.drift['pValue']:.3g}, threshold {outcome.drift['threshold']:.3g})"
        )
    elif outcome.drift_note:
        lines.append(f"  drift         {outcome.drift_note}")
    lines.append(f"  model         {outcome.model_dir}  (serve it: optiloop serve {outcome.model_dir})")
    if outcome.report_path is not None:
        lines.append(f"  report        {outcome.report_path}")
    return lines


def _table(headers: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{classes[index]}"' if classes else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _history(outcome: RunOutcome) -> str:
    assert outcome.tuning is not None
    maximize = outcome.tuning.directions[0] == "maximize"
    points, best_line, best = [], [], None
    for trial in outcome.trials:
        values = trial.get("values")
        if trial.get("state") != "COMPLETE" or not values:
            continue
        value = values[0]
        best = value if best is None else (max(best, value) if maximize else min(best, value))
        points.append(svg.Point(trial["number"], value, size=4))
        best_line.append((trial["number"], best))
    return svg.scatter(points, "trial", outcome.tuning.objectives[0], "Optimization history", line=best_line)


def _pareto(outcome: RunOutcome) -> str:
    assert outcome.tuning is not None
    objectives = outcome.tuning.objectives
    front = {t.number for t in outcome.tuning.pareto_front}
    points = [
        svg.Point(
            t["values"][0],
            t["values"][1],
            size=6 if t["number"] in front else 3,
            color=svg.PALETTE[1] if t["number"] in front else svg.PALETTE[6],
            label=f"#{t['number']}" if t["number"] in front else "",
        )
        for t in outcome.trials
        if t.get("state") == "COMPLETE" and t.get("values") and len(t["values"]) > 1
    ]
    return svg.scatter(points, objectives[0], objectives[1], "Pareto front (red: Pareto-optimal trials)")


def _candidates(outcome: RunOutcome) -> str:
    report = outcome.compression
    assert report is not None
    metric = report.primary_metric
    measured = [c for c in report.candidates if c.error is None and c.size_bytes]
    largest = max((c.size_bytes for c in measured), default=1)
    points = [
        svg.Point(
            _ms(c, 1),
            c.test_metrics.get(metric, math.nan),
            label=("* " if c.name == report.chosen else "") + c.name,
            size=4 + 10 * math.sqrt(c.size_bytes / largest),
            color=svg.PALETTE[2] if c.passed else svg.PALETTE[1],
        )
        for c in measured
    ]
    vertical = [(report.gates.max_latency_p95_ms, "latency gate")] if report.gates.max_latency_p95_ms else []
    baseline = report.candidates[0].test_metrics.get(metric, math.nan)
    drop = report.gates.max_metric_drop * (abs(baseline) if report.gates.metric_drop_mode == "relative" else 1.0)
    limit = baseline - drop if metric in ("accuracy", "f1", "rocAuc", "r2") else baseline + drop
    return svg.scatter(
        points,
        "p95 latency at batch size 1 (ms)",
        f"test {metric}",
        "Compression candidates (green passed, red failed; marker area ~ file size)",
        vertical=vertical,
        horizontal=[(limit, f"{metric} gate")] if math.isfinite(limit) else [],
    )


def _evaluation(outcome: RunOutcome) -> str:
    evaluation = outcome.evaluation
    if not evaluation:
        return svg.empty("Evaluation")
    if evaluation["task"] == "classification":
        return svg.heatmap(
            evaluation["confusion"], evaluation["classes"], "Confusion matrix of the chosen model (test split)"
        )
    actual, predicted = evaluation["actual"], evaluation["predicted"]
    points = [svg.Point(p, a - p, size=3) for a, p in zip(actual, predicted, strict=True)]
    return svg.scatter(
        points, "predicted", "actual - predicted", "Residuals of the chosen model (test split)", horizontal=[(0.0, "")]
    )


def render(outcome: RunOutcome) -> str:
    """The whole report as one HTML document."""
    sections = [
        f"<h1>optiloop run: {escape(outcome.name)}, revision {outcome.revision}</h1>",
        '<div class="summary"><pre>' + escape("\n".join(summary_lines(outcome)[1:])) + "</pre></div>",
    ]
    if outcome.data is not None:
        rows = [[r.rule, r.status, r.action, ", ".join(r.columns[:8]), r.message] for r in outcome.data.rules]
        sections += [
            "<h2>Data quality</h2>",
            _table(["rule", "status", "action", "columns", "message"], rows, [r.status for r in outcome.data.rules]),
        ]
    if outcome.tuning is not None:
        sections += ["<h2>Optimization history</h2>", f'<div class="figure">{_history(outcome)}</div>']
        importances = sorted(outcome.tuning.param_importances.items(), key=lambda item: -item[1])
        sections += [
            "<h2>Parameter importances</h2>",
            f'<div class="figure">{svg.bars(importances, "Parameter importances", "fANOVA importance")}</div>',
        ]
        if len(outcome.tuning.objectives) > 1:
            sections += ["<h2>Pareto front</h2>", f'<div class="figure">{_pareto(outcome)}</div>']
    if outcome.compression is not None:
        report = outcome.compression
        rows = [
            [
                ("* " if c.name == report.chosen else "") + c.name,
                " -> ".join(c.steps) or "uncompressed",
                c.precision,
                f"{c.test_metrics.get(report.primary_metric, math.nan):.4g}",
                f"{_ms(c, 1):.3f}",
                f"{c.size_bytes / 1024:.1f} KB",
                "passed" if c.passed else "; ".join(c.failed_gates),
            ]
            for c in report.candidates
        ]
        sections += [
            "<h2>Compression</h2>",
            f"<p>{escape(report.message)}</p>",
            f'<div class="figure">{_candidates(outcome)}</div>',
            _table(["candidate", "steps", "precision", report.primary_metric, "p95 b1 ms", "size", "verdict"], rows),
        ]
    sections += ["<h2>The chosen model on the test split</h2>", f'<div class="figure">{_evaluation(outcome)}</div>']
    sections.append("<h2>Drift baseline</h2>")
    if outcome.drift is not None:
        values = sorted(outcome.drift.get("featurePValues", {}).items(), key=lambda item: item[1])[:20]
        sections.append(
            f"<p>The held-out test split against the training reference: "
            f"{'drift' if outcome.drift['isDrift'] else 'no drift'} (smallest p-value {outcome.drift['pValue']:.3g}, "
            f"threshold {outcome.drift['threshold']:.3g}). A baseline without drift means the monitor will not "
            "raise false alarms on data like the training data.</p>"
        )
        sections.append(
            '<div class="figure">'
            + svg.bars(values, "Per-feature p-values (lowest 20)", "p-value", reference=outcome.drift["threshold"])
            + "</div>"
        )
    else:
        sections.append(f"<p>{escape(outcome.drift_note or 'not run')}</p>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>optiloop run: {escape(outcome.name)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>"
    )


def write(outcome: RunOutcome) -> Path:
    """Write ``r<revision>/report.html`` (whole or not at all) and record its path in the outcome."""
    path = outcome.root / f"r{outcome.revision}" / "report.html"
    outcome.report_path = path  # before rendering: the summary names the report
    write_atomically(path, render(outcome).encode("utf-8"))
    return path
