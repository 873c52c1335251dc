"""The local run: every stage of the cluster's loop, in order, on this machine.

    outcome = run_local(manifest, out=Path("optiloop-runs/iris"), view=LogView(sys.stderr))

Stages: data quality, features, tuning, compression and export (the job stages themselves),
then a smoke test of the exported model through the real predictor on loopback, then a drift
baseline: the drift monitor's check of the held-out test split against the reference, run in
the drift environment. Each stage leaves a completion marker, so a rerun resumes after the
last finished stage (the tuning study itself resumes trial by trial).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..api import ModelOptimization
from ..api.jobs import CompressionReport, DataQualityReport, FeatureTransform, StageInput, TuningResult
from ..errors import OptiloopError
from ..jobs.compress import run_compression
from ..jobs.features import encode_raw
from ..jobs.latency import open_session
from ..jobs.prepare import run_data_quality, run_features
from ..jobs.stage import configure_threads
from ..jobs.storage import LocalStore, StageWriter, is_complete
from ..jobs.tune import run_tuning
from .progress import View

DRIFT_PYTHON_ENV = "OPTILOOP_DRIFT_PYTHON"
SMOKE_ROWS = 16


class RunError(OptiloopError):
    """A local-run step failed (the predictor did not start or answered wrongly, ...)."""


@dataclass
class RunOutcome:
    """Everything a local run produced, for the summary and the report."""

    name: str
    revision: int
    root: Path
    data: DataQualityReport | None = None
    transform: FeatureTransform | None = None
    tuning: TuningResult | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    compression: CompressionReport | None = None
    smoke: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    drift_note: str = ""
    evaluation: dict[str, Any] | None = None
    report_path: Path | None = None

    @property
    def model_dir(self) -> Path:
        return self.root / f"r{self.revision}" / "model"


def drift_python() -> Path | None:
    """The drift environment's interpreter: ``$OPTILOOP_DRIFT_PYTHON``, ``./.venv-drift``, or the checkout's."""
    candidates = [os.environ.get(DRIFT_PYTHON_ENV, ""), ".venv-drift/bin/python"]
    candidates.append(str(Path(__file__).resolve().parents[2] / ".venv-drift" / "bin" / "python"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON objects: missing values become null, numbers plain floats."""
    rows = []
    for record in frame.to_dict(orient="records"):
        rows.append({k: None if pd.isna(v) else (v if isinstance(v, str) else float(v)) for k, v in record.items()})
    return rows


def smoke_test(model_dir: Path, name: str, frame: pd.DataFrame, transform: FeatureTransform) -> dict[str, Any]:
    """Serve ``model_dir`` with the real predictor on loopback, send rows, compare with ONNX Runtime."""
    port = _free_port()
    log = model_dir.parent / "run" / "predictor.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "optiloop.serve", "--model-dir", str(model_dir), "--model-name", name]
    command += ["--host", "127.0.0.1", "--http-port", str(port)]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RunError(f"the predictor exited with code {process.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RunError(f"the predictor did not become ready within 120 s; see {log}") from None
                time.sleep(0.3)
        sample = frame[[c.name for c in transform.columns]].head(SMOKE_ROWS)
        body = json.dumps({"instances": _json_rows(sample)}).encode()
        request = urllib.request.Request(
            f"{url}/v1/models/{name}:predict", data=body, headers={"content-type": "application/json"}
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise RunError(f"the predictor answered {error.code}: {error.read().decode()[:300]}") from None
        elapsed_ms = (time.perf_counter() - started) * 1000
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    session = open_session((model_dir / "model.onnx").read_bytes(), 1)
    direct = session.run(None, {"features": encode_raw(transform, sample)})  # type: ignore[attr-defined]
    if transform.task == "classification":
        expected = [transform.classes[int(i)] for i in direct[0]]
        agree = answer.get("predictions") == expected
        difference = float(np.max(np.abs(np.asarray(answer.get("probabilities")) - direct[1]), initial=0.0))
    else:
        difference = float(np.max(np.abs(np.asarray(answer.get("predictions"), dtype=float) - direct[0]), initial=0.0))
        agree = difference <= 1e-4
    if not agree:
        raise RunError(f"the predictor's answers differ from ONNX Runtime's (max difference {difference:.3g})")
    return {"rows": len(sample), "requestMs": elapsed_ms, "maxDifference": difference, "url": url}


def drift_baseline(model: ModelOptimization, model_dir: Path, holdout: pd.DataFrame, work: Path) -> dict[str, Any]:
    """The drift monitor's check of ``holdout`` against the reference, in the drift environment."""
    python = drift_python()
    assert python is not None
    path = work / "holdout.csv"
    holdout.to_csv(path, index=False)
    monitoring = model.spec.monitoring
    command = [str(python), "-m", "optiloop.drift", "check", "--reference", str(model_dir), "--data", str(path)]
    command += ["--detector", monitoring.detector, "--p-value", str(monitoring.p_value)]
    command += ["--correction", monitoring.correction]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode not in (0, 1):
        raise RunError(f"the drift check failed: {result.stderr.strip()[-500:]}")
    return dict(json.loads(result.stdout)[str(path)][monitoring.detector])


def _evaluation(model_dir: Path, transform: FeatureTransform, test: pd.DataFrame) -> dict[str, Any]:
    """The chosen model's predictions on the test split: a confusion matrix, or residuals."""
    session = open_session((model_dir / "model.onnx").read_bytes(), 1)
    outputs = session.run(None, {"features": encode_raw(transform, test)})  # type: ignore[attr-defined]
    if transform.task == "classification":
        index = {label: i for i, label in enumerate(transform.classes)}
        truth = [index[str(v)] for v in test[transform.target].astype(str)]
        matrix = np.zeros((len(transform.classes), len(transform.classes)), dtype=int)
        for actual, predicted in zip(truth, outputs[0], strict=True):
            matrix[actual, int(predicted)] += 1
        return {"task": "classification", "classes": transform.classes, "confusion": matrix.tolist()}
    actual = test[transform.target].to_numpy(dtype=float)
    return {"task": "regression", "actual": actual.tolist(), "predicted": np.asarray(outputs[0], dtype=float).tolist()}


def run_local(model: ModelOptimization, root: Path, view: View, fresh: bool = False, revision: int = 1) -> RunOutcome:
    """Run every stage for ``model`` with artifacts below ``root``; raises the stage's errors."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the view reports every trial itself
    name = model.metadata.name
    if fresh and (root / f"r{revision}").exists():
        shutil.rmtree(root / f"r{revision}")
    root.mkdir(parents=True, exist_ok=True)
    store = LocalStore(root)
    stage = StageInput(name=name, spec=model.spec, artifacts=str(root), revision=revision)
    outcome = RunOutcome(name, revision, root)
    threads = configure_threads()
    prefix = f"r{revision}"

    resumed = is_complete(store, f"{prefix}/data")
    view.stage_started("data quality", model.spec.dataset.uri)
    outcome.data = run_data_quality(stage, store)
    rows = outcome.data.split_rows
    view.stage_finished(
        "data quality",
        f"passed; {outcome.data.rows_after} rows, {len(outcome.data.columns_after)} features, "
        f"split {rows.get('train', 0)}/{rows.get('validation', 0)}/{rows.get('test', 0)}",
        resumed,
    )

    resumed = is_complete(store, f"{prefix}/features")
    view.stage_started("features")
    outcome.transform = run_features(stage, store, outcome.data)
    view.stage_finished("features", f"{outcome.transform.input_width} model inputs", resumed)

    resumed = is_complete(store, f"{prefix}/tuning")
    tuning = model.spec.tuning
    view.stage_started("tuning", f"{tuning.algorithm}, up to {tuning.max_trials} trials, {threads} threads")
    outcome.tuning = run_tuning(stage, store, progress=view)
    assert outcome.tuning is not None
    outcome.trials = json.loads(store.read_bytes(f"{prefix}/tuning/trials.json"))
    best = outcome.tuning.best_trial
    view.stage_finished(
        "tuning",
        f"best trial {best.number} of {len(outcome.trials)}: "
        + ", ".join(f"{m} {v:.4g}" for m, v in zip(outcome.tuning.objectives, best.values or [], strict=False))
        + f"; {outcome.tuning.architecture.summary()}",
        resumed,
    )

    resumed = is_complete(store, f"{prefix}/compression")
    view.stage_started("compression", f"{len(model.spec.compression.steps)} steps + baseline")
    outcome.compression = run_compression(stage, store, on_candidate=lambda c: view.note(f"  built candidate {c.name}"))
    view.stage_finished("compression", outcome.compression.message, resumed)

    work = root / prefix / "run"
    test = pd.read_parquet(io.BytesIO(store.read_bytes(f"{prefix}/data/test.parquet")))
    features = [c.name for c in outcome.transform.columns]

    resumed = is_complete(store, f"{prefix}/run/smoke")
    view.stage_started("smoke test", "the exported model through the predictor on loopback")
    if resumed:
        outcome.smoke = json.loads(store.read_bytes(f"{prefix}/run/smoke/result.json"))
    else:
        outcome.smoke = smoke_test(outcome.model_dir, name, test, outcome.transform)
        with StageWriter(store, f"{prefix}/run/smoke", {"stage": "smoke"}) as out:
            out.write_json("result.json", outcome.smoke)
    view.stage_finished(
        "smoke test",
        f"{outcome.smoke['rows']} rows answered in {outcome.smoke['requestMs']:.1f} ms, as ONNX Runtime",
        resumed,
    )

    outcome.evaluation = _evaluation(outcome.model_dir, outcome.transform, test)

    if drift_python() is None:
        outcome.drift_note = (
            "skipped: the drift environment is missing. Create it with `make install` (or "
            "`python3.11 -m venv .venv-drift && .venv-drift/bin/pip install -r requirements/drift.lock "
            "&& .venv-drift/bin/pip install --no-deps -e .`), or point OPTILOOP_DRIFT_PYTHON at its python."
        )
        view.note(f"drift baseline {outcome.drift_note}")
    else:
        resumed = is_complete(store, f"{prefix}/run/drift")
        view.stage_started("drift baseline", f"{model.spec.monitoring.detector} on the held-out test split")
        if resumed:
            outcome.drift = json.loads(store.read_bytes(f"{prefix}/run/drift/result.json"))
        else:
            work.mkdir(parents=True, exist_ok=True)
            outcome.drift = drift_baseline(model, outcome.model_dir, test[features], work)
            with StageWriter(store, f"{prefix}/run/drift", {"stage": "drift"}) as out:
                out.write_json("result.json", outcome.drift)
        verdict = "drift" if outcome.drift["isDrift"] else "no drift"
        view.stage_finished(
            "drift baseline",
            f"{verdict} (smallest p-value {outcome.drift['pValue']:.3g}, threshold {outcome.drift['threshold']:.3g})",
            resumed,
        )
    return outcome
