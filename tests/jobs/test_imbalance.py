"""Uneven classes (3% positives): a run that chose no metric is judged on one that always answering
the majority cannot win, the threshold is chosen for the user's metric, the served model does not
lose to the majority class on it, and the run warns when it does."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from optiloop.api.jobs import CompressionReport, TuningResult
from optiloop.jobs.compress import run_compression
from optiloop.jobs.decision import majority_score
from optiloop.jobs.latency import open_session
from optiloop.jobs.metrics import task_metrics
from optiloop.jobs.prepare import prepare_data
from optiloop.jobs.storage import open_store
from optiloop.jobs.tune import run_tuning
from optiloop.serve.model_dir import load_model_directory
from tests.jobs.test_tune_stage import quick_spec, stage_input


def _rare_fraud(path: Path, rows: int, signal: float, seed: int = 0) -> None:
    """A CSV with about 3% "fraud" rows; ``signal`` says how far the fraud rows' features are shifted."""
    rng = np.random.default_rng(seed)
    fraud = np.arange(rows) % 33 == 0
    frame = pd.DataFrame(
        {
            "amount": rng.normal(size=rows) + signal * fraud,
            "hour": rng.normal(size=rows) + 0.5 * signal * fraud,
            "noise": rng.normal(size=rows),
        }
    )
    frame["target"] = np.where(fraud, "fraud", "ok")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def _run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signal: float, **sections: Any
) -> tuple[TuningResult, CompressionReport, dict[str, float], float]:
    """Tune and compress; return the results, the served graph's test metrics and the majority's score
    on the run's primary metric."""
    _rare_fraud(tmp_path / "pvc" / "data" / "fraud.csv", 2400, signal)
    monkeypatch.setenv("OPTILOOP_PVC_ROOT", str(tmp_path / "pvc"))
    spec = quick_spec(
        "pvc://data/fraud.csv",
        trials=3,
        dataQuality={"minRows": 20},
        tuning={"algorithm": "random", **sections.pop("tuning", {})},
        compression={"steps": []},
        **sections,
    )
    stage = stage_input(str(tmp_path / "out"), spec)
    store = open_store(stage.artifacts)
    tuned = run_tuning(stage, store)
    assert tuned is not None
    report = run_compression(stage, store)
    data = prepare_data(stage, store)
    test = data.splits["test"]
    directory = load_model_directory(tmp_path / "out" / "r1" / "model")
    predictions, probabilities = open_session(directory.onnx_bytes, 1).run(None, {"features": test.raw})
    served = task_metrics("classification", test.target, np.asarray(probabilities), np.asarray(predictions))
    fraud = [str(c) for c in directory.metadata.classes].index("fraud")
    served["meanFraudProbability"] = float(np.mean(np.asarray(probabilities)[:, fraud]))
    served["answersFraud"] = float(np.any(np.asarray(predictions) == fraud))
    assert tuned.primary_metric is not None
    trivial = majority_score(tuned.primary_metric, data.splits["train"].target, test.target, 2)
    return tuned, report, served, trivial


def test_with_no_metric_chosen_the_run_is_judged_on_roc_auc_and_answers_for_balanced_accuracy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tuned, report, served, trivial = _run(tmp_path, monkeypatch, signal=2.5, model={"family": "lightgbm"})
    assert tuned.objectives == ["rocAuc"]
    assert tuned.primary_metric == report.primary_metric == "rocAuc"
    assert tuned.decision is not None
    assert tuned.decision.metric == "balancedAccuracy"
    assert served["rocAuc"] > trivial + 0.2
    assert served["balancedAccuracy"] > 0.7  # the rare class is answered, and mostly right
    assert not tuned.warnings


def test_a_user_who_asks_for_accuracy_gets_at_least_the_majoritys_accuracy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tuned, report, served, trivial = _run(
        tmp_path, monkeypatch, signal=2.5, model={"family": "linear"}, tuning={"objectives": [{"metric": "accuracy"}]}
    )
    assert tuned.primary_metric == report.primary_metric == "accuracy"
    assert tuned.decision is not None
    assert tuned.decision.metric == "accuracy"
    assert served["accuracy"] >= trivial
    weights = json.loads((tmp_path / "out/r1/data/report.json").read_text())["classWeights"]
    if tuned.training.class_weighted:  # a searched choice; when taken, calibration undoes it
        assert tuned.decision.logit_offsets == pytest.approx([-math.log(weights[c]) for c in ("fraud", "ok")])
    # The served probabilities are calibrated back from the class-weighted training: on average
    # they say about how often fraud happens (3%), not the weighted 50%.
    assert served["meanFraudProbability"] < 0.1
    assert tuned.test_metrics["accuracy"] == pytest.approx(served["accuracy"])


def test_a_model_no_better_than_the_majority_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On pure noise the honest answer is the majority class; the run says that it never answers
    fraud, or that it scores below always answering "ok"."""
    tuned, _, served, trivial = _run(
        tmp_path, monkeypatch, signal=0.0, model={"family": "linear"}, tuning={"objectives": [{"metric": "accuracy"}]}
    )
    assert tuned.primary_metric == "accuracy"
    assert (not served["answersFraud"]) or served["accuracy"] < trivial
    assert tuned.warnings
    assert all("never predicts class fraud" in w or "below always answering" in w for w in tuned.warnings)
