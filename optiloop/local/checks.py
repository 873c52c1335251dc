"""Checks of the exported model directory: served by the real predictor on loopback, and run
directly in ONNX Runtime on the test split (the report's confusion matrix or residuals)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..api.jobs import FeatureTransform
from ..formats.model_dir import MODEL_FILE
from ..jobs.features import encode_raw
from ..jobs.latency import open_session
from ..jobs.onnx_export import INPUT_NAME
from .errors import RunError

SMOKE_ROWS = 16
READY_SECONDS = 120


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


def _onnx_outputs(model_dir: Path, transform: FeatureTransform, frame: pd.DataFrame) -> list[Any]:
    session = open_session((model_dir / MODEL_FILE).read_bytes(), 1)
    return list(session.run(None, {INPUT_NAME: encode_raw(transform, frame)}))  # type: ignore[attr-defined]


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
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if process.poll() is not None:
                raise RunError(f"the predictor exited with code {process.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RunError(f"the predictor did not become ready within {READY_SECONDS} s; see {log}") from None
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
    direct = _onnx_outputs(model_dir, transform, sample)
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


def evaluation(model_dir: Path, transform: FeatureTransform, test: pd.DataFrame) -> dict[str, Any]:
    """The chosen model's predictions on the test split: a confusion matrix, or residuals."""
    outputs = _onnx_outputs(model_dir, transform, test)
    if transform.task == "classification":
        index = {label: i for i, label in enumerate(transform.classes)}
        truth = [index[str(v)] for v in test[transform.target].astype(str)]
        matrix = np.zeros((len(transform.classes), len(transform.classes)), dtype=int)
        for actual, predicted in zip(truth, outputs[0], strict=True):
            matrix[actual, int(predicted)] += 1
        return {"task": "classification", "classes": transform.classes, "confusion": matrix.tolist()}
    actual = test[transform.target].to_numpy(dtype=float)
    return {"task": "regression", "actual": actual.tolist(), "predicted": np.asarray(outputs[0], dtype=float).tolist()}
