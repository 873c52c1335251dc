"""Data preparation for the tuning and compression stages: data quality, features, encoded splits.

    data = prepare_data(stage, store)     # runs (or reuses) r<N>/data and r<N>/features

``r<revision>/data/`` holds the quality report and the train/validation/test splits (parquet),
``r<revision>/features/`` the fitted transform. Each has a completion marker, so a rerun (or the
compression stage after tuning) reuses them instead of checking and fitting again.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..api.jobs import DataQualityReport, FeatureTransform, StageInput, TrainingConfig
from ..formats.metadata import FeatureColumn
from ..formats.reference import reference_document
from .data import load_dataset
from .errors import DataQualityError
from .features import encode_raw, encode_target, fit_transform
from .quality import check_quality, failure_message
from .split import split_frame
from .stage import dump
from .storage import ArtifactStore, StageWriter, completion_marker
from .training import EncodedSplit

REFERENCE_ROWS = 2000
SPLITS = ("train", "validation", "test")


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def read_split(store: ArtifactStore, revision: int, name: str) -> pd.DataFrame:
    """One split (``train``, ``validation`` or ``test``) as the data stage wrote it."""
    return pd.read_parquet(io.BytesIO(store.read_bytes(f"r{revision}/data/{name}.parquet")))


def run_data_quality(stage: StageInput, store: ArtifactStore) -> DataQualityReport:
    """Load, check, clean and split the data; raise :class:`DataQualityError` when a gate fails."""
    prefix = f"r{stage.revision}/data"
    if completion_marker(store, prefix):
        return DataQualityReport.model_validate_json(store.read_bytes(f"{prefix}/report.json"))
    spec = stage.spec
    result = check_quality(load_dataset(spec.dataset), spec.dataset, spec.data_quality)
    report = result.report
    report.categorical_columns = result.categorical
    if not report.passed:
        # Written without a completion marker: a rerun checks the data again.
        store.write_bytes(f"{prefix}/report.json", dump(report))
        raise DataQualityError(failure_message(report), report)
    splits = split_frame(result.frame, spec.dataset, oversample=result.oversample)
    report.split_rows = splits.sizes()
    with StageWriter(store, prefix, {"stage": "data"}) as out:
        for name in SPLITS:
            out.write_bytes(f"{name}.parquet", _parquet(getattr(splits, name)))
        out.write_bytes("report.json", dump(report))
    return report


def run_features(stage: StageInput, store: ArtifactStore, report: DataQualityReport | None = None) -> FeatureTransform:
    """Fit the feature transform on the training split (running the data stage unless its
    ``report`` is given)."""
    prefix = f"r{stage.revision}/features"
    if completion_marker(store, prefix):
        return FeatureTransform.model_validate_json(store.read_bytes(f"{prefix}/preprocessing.json"))
    report = report or run_data_quality(stage, store)
    train = read_split(store, stage.revision, "train")
    spec = stage.spec
    transform = fit_transform(train, report.categorical_columns, spec.dataset, spec.features, spec.data_quality)
    with StageWriter(store, prefix, {"stage": "features"}) as out:
        out.write_bytes("preprocessing.json", dump(transform))
    return transform


@dataclass
class PreparedData:
    """Encoded splits and what training needs besides them."""

    transform: FeatureTransform
    splits: dict[str, EncodedSplit]
    class_weights: list[float] | None
    raw_train: pd.DataFrame
    imbalanced: bool = False
    """Whether the data-quality stage found the classes more uneven than its rule allows."""

    def weights_for(self, training: TrainingConfig) -> list[float] | None:
        """The class weights a configuration trains with (none when it chose not to weigh)."""
        return self.class_weights if training.class_weighted else None


def prepare_data(stage: StageInput, store: ArtifactStore) -> PreparedData:
    """Run (or reuse) the data and feature stages and encode the splits."""
    report = run_data_quality(stage, store)
    transform = run_features(stage, store, report)
    frames = {name: read_split(store, stage.revision, name) for name in SPLITS}
    splits = {
        name: EncodedSplit(encode_raw(transform, frame), encode_target(transform, frame[transform.target]))
        for name, frame in frames.items()
    }
    weights = None
    if report.class_weights:
        weights = [report.class_weights.get(label, 1.0) for label in transform.classes]
    imbalanced = any(r.rule == "classImbalance" and r.status != "passed" for r in report.rules)
    return PreparedData(transform, splits, weights, frames["train"], imbalanced)


def train_and_validation(data: PreparedData) -> EncodedSplit:
    """Training and validation rows together (cross-validation's rows, and the final model's)."""
    train, validation = data.splits["train"], data.splits["validation"]
    return EncodedSplit(np.concatenate([train.raw, validation.raw]), np.concatenate([train.target, validation.target]))


def reference_sample(frame: pd.DataFrame, transform: FeatureTransform, seed: int) -> dict[str, Any]:
    """Raw training inputs (no target) for the drift monitor: the ``reference.json`` document."""
    columns = [FeatureColumn(c.name, c.kind) for c in transform.columns]
    sample = frame[[c.name for c in columns]].sample(n=min(REFERENCE_ROWS, len(frame)), random_state=seed)
    rows = [
        [None if pd.isna(v) else (v if isinstance(v, str) else float(v)) for v in row]
        for row in sample.itertuples(index=False)
    ]
    return reference_document(columns, rows)
