"""Small model directories for serving tests, written the way the export stage writes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from optiloop.api.jobs import Architecture, FeatureInfo, ModelLineage, ModelMetadata
from optiloop.api.spec import DataQualitySpec, DatasetSpec, FeaturesSpec
from optiloop.formats.model_dir import LocalDirectory
from optiloop.formats.model_dir import write_model_directory as write_files
from optiloop.jobs.export import model_directory_files
from optiloop.jobs.features import encode_raw, encode_target, fit_transform
from optiloop.jobs.models import TabularModel
from optiloop.jobs.onnx_export import INPUT_NAME, OPSET, export_onnx, output_names
from optiloop.jobs.prepare import reference_sample
from optiloop.jobs.training import EncodedSplit, build_model


def city_frame(rows: int, seed: int) -> pd.DataFrame:
    """Two numeric features (one with gaps), one categorical, three classes."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=rows),
            "b": rng.uniform(0, 5, size=rows),
            "city": rng.choice(["oslo", "lima", "rome"], size=rows),
        }
    )
    frame.loc[::7, "b"] = np.nan
    frame["target"] = rng.choice(["x", "y", "z"], size=rows)
    return frame


def city_model(hidden: list[int] | None = None) -> TabularModel:
    """An (untrained) classifier over :func:`city_frame`'s columns."""
    train = city_frame(200, 0)
    dataset = DatasetSpec(uri="builtin://iris", categorical_columns=["city"])
    transform = fit_transform(train, ["city"], dataset, FeaturesSpec(), DataQualitySpec())
    split = EncodedSplit(encode_raw(transform, train), encode_target(transform, train["target"]))
    architecture = Architecture(inputs=transform.input_width, outputs=3, hidden=hidden or [16, 8])
    return build_model(transform, architecture, split, 0).eval()


def write_model_directory(
    root: Path, model: TabularModel, name: str = "m", reference: pd.DataFrame | None = None, revision: int = 1
) -> Path:
    """Export ``model`` into ``root`` with metadata, a reference sample (``reference``, or
    :func:`city_frame` rows) and a completion marker, with the export stage's own writer; returns
    ``root``."""
    onnx_bytes = export_onnx(model)
    transform = model.transform
    metadata = ModelMetadata(
        task=transform.task,
        target=transform.target,
        input_name=INPUT_NAME,
        output_names=output_names(transform.task),
        features=[FeatureInfo(name=c.name, kind=c.kind, categories=c.categories) for c in transform.columns],
        classes=transform.classes,
        opset=OPSET,
        precision="fp32",
        test_metrics={},
        size_bytes=len(onnx_bytes),
        parameters=sum(p.numel() for p in model.parameters()),
        lineage=ModelLineage(
            resource=name, revision=revision, study_name=f"{name}-r{revision}", trial=0, candidate="baseline"
        ),
    )
    sample = reference if reference is not None else city_frame(400, 1)
    reference_bytes = json.dumps(reference_sample(sample, transform, 0)).encode()
    files = model_directory_files(name, metadata, onnx_bytes, reference_bytes)
    write_files(LocalDirectory(root), files, {"stage": "export"})
    return root
