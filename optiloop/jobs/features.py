"""Feature engineering, fitted on the training split and exported as data and as a torch module.

Raw rows are first *encoded* into a float matrix, one column per raw feature: numbers as
they are, categories as their code in the fitted category list (-1 when unseen), missing
values as NaN. :class:`Preprocessor` (a ``torch.nn.Module``) then imputes, scales,
one-hot encodes, selects and projects. Training, evaluation and the exported ONNX model
all use that one module, so they cannot disagree.

    transform = fit_transform(train, categorical, spec.dataset, spec.features, spec.data_quality)
    features = Preprocessor(transform)(torch.from_numpy(encode_raw(transform, frame)))
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..api.jobs import ColumnTransform, FeatureTransform
from ..api.spec import DataQualitySpec, DatasetSpec, FeaturesSpec
from ..formats.categories import category_key
from .errors import DataError


def _scaling(values: np.ndarray, method: str) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0 or method == "none":
        return 0.0, 1.0
    if method == "standard":
        center, scale = float(finite.mean()), float(finite.std())
    elif method == "minMax":
        center, scale = float(finite.min()), float(finite.max() - finite.min())
    else:
        q1, median, q3 = np.percentile(finite, [25, 50, 75])
        center, scale = float(median), float(q3 - q1)
    return center, scale if scale > 1e-12 else 1.0


def _fit_columns(
    train: pd.DataFrame, categorical: list[str], target: str, features: FeaturesSpec, quality: DataQualitySpec
) -> list[ColumnTransform]:
    columns = []
    strategy = quality.missing_values.impute_strategy
    for name in (c for c in train.columns if c != target):
        if name in categorical:
            counts = train[name].dropna().astype(str).value_counts()
            categories = [str(c) for c in counts.index[: features.categorical.max_categories]]
            fill = 0.0 if categories else -1.0  # the most frequent category
            columns.append(ColumnTransform(name=name, kind="categorical", fill=fill, categories=categories))
            continue
        values = train[name].to_numpy(dtype="float64")
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            fill = 0.0
        elif strategy == "median":
            fill = float(np.median(finite))
        elif strategy == "mean":
            fill = float(finite.mean())
        else:
            uniques, counts = np.unique(finite, return_counts=True)
            fill = float(uniques[counts.argmax()])
        center, scale = _scaling(np.where(np.isfinite(values), values, fill), features.scaling)
        columns.append(ColumnTransform(name=name, kind="numeric", fill=fill, center=center, scale=scale))
    return columns


def encode_raw(transform: FeatureTransform, frame: pd.DataFrame) -> np.ndarray:
    """Raw rows -> the float matrix :class:`Preprocessor` takes (category codes, NaN for missing)."""
    missing = [c.name for c in transform.columns if c.name not in frame.columns]
    if missing:
        raise DataError(f"input is missing columns {', '.join(missing[:10])}")
    encoded = np.empty((len(frame), len(transform.columns)), dtype=np.float32)
    for index, column in enumerate(transform.columns):
        values = frame[column.name]
        if column.kind == "categorical":
            codes = {category: float(code) for code, category in enumerate(column.categories)}
            encoded[:, index] = [np.nan if pd.isna(v) else codes.get(category_key(v), -1.0) for v in values]
        else:
            encoded[:, index] = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
    return encoded


class Preprocessor(nn.Module):
    """The fitted transform as a torch module: encoded raw features in, model features out."""

    fill: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor
    selected: torch.Tensor
    pca_mean: torch.Tensor
    pca_components: torch.Tensor

    def __init__(self, transform: FeatureTransform) -> None:
        super().__init__()
        self.kinds = [c.kind for c in transform.columns]
        self.widths = [len(c.categories) for c in transform.columns]
        self.one_hot = transform.encoding == "oneHot"
        self.register_buffer("fill", torch.tensor([c.fill for c in transform.columns], dtype=torch.float32))
        self.register_buffer(
            "center",
            torch.tensor([c.center if c.kind == "numeric" else 0.0 for c in transform.columns], dtype=torch.float32),
        )
        self.register_buffer(
            "scale",
            torch.tensor([c.scale if c.kind == "numeric" else 1.0 for c in transform.columns], dtype=torch.float32),
        )
        self.register_buffer("selected", torch.tensor(transform.selected, dtype=torch.long))
        self.has_pca = transform.pca_components is not None
        if transform.pca_components is not None and transform.pca_mean is not None:
            self.register_buffer("pca_mean", torch.tensor(transform.pca_mean, dtype=torch.float32))
            self.register_buffer("pca_components", torch.tensor(transform.pca_components, dtype=torch.float32))

    def expand(self, raw: torch.Tensor) -> torch.Tensor:
        """Impute, scale and encode: the full feature matrix before selection."""
        filled = torch.where(torch.isnan(raw), self.fill, raw)
        scaled = (filled - self.center) / self.scale
        if not self.one_hot or "categorical" not in self.kinds:
            return scaled
        parts = []
        for index, (kind, width) in enumerate(zip(self.kinds, self.widths, strict=True)):
            column = scaled[:, index : index + 1]
            if kind == "categorical":
                codes = torch.arange(width, dtype=raw.dtype, device=raw.device)
                parts.append((column == codes).to(raw.dtype))
            else:
                parts.append(column)
        return torch.cat(parts, dim=1)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        features = self.expand(raw).index_select(1, self.selected)
        if self.has_pca:
            features = (features - self.pca_mean) @ self.pca_components.T
        return features


def _expanded_names(columns: list[ColumnTransform], one_hot: bool) -> list[str]:
    names: list[str] = []
    for column in columns:
        if column.kind == "categorical" and one_hot:
            names.extend(f"{column.name}={category}" for category in column.categories)
        else:
            names.append(column.name)
    return names


def fit_transform(
    train: pd.DataFrame,
    categorical: list[str],
    dataset: DatasetSpec,
    features: FeaturesSpec,
    quality: DataQualitySpec,
) -> FeatureTransform:
    """Fit imputation, scaling, encoding, selection and PCA on the training split."""
    columns = _fit_columns(train, categorical, dataset.target, features, quality)
    one_hot = features.categorical.encoding == "oneHot"
    names = _expanded_names(columns, one_hot)
    classes = sorted(train[dataset.target].astype(str).unique().tolist()) if dataset.task == "classification" else []
    transform = FeatureTransform(
        task=dataset.task,
        target=dataset.target,
        columns=columns,
        encoding=features.categorical.encoding,
        handle_unknown=features.categorical.handle_unknown,
        selected=list(range(len(names))),
        output_names=names,
        classes=_sorted_labels(classes),
    )
    with torch.no_grad():
        expanded = Preprocessor(transform).expand(torch.from_numpy(encode_raw(transform, train))).numpy()

    selection = features.selection
    keep = np.arange(expanded.shape[1])
    if selection.method == "variance":
        # Variance is judged before scaling, where it still means something.
        unscaled = expanded * np.array(_unscale_vector(columns, one_hot), dtype=np.float32)
        keep = np.flatnonzero(unscaled.var(axis=0) > selection.variance_threshold)
    elif selection.method == "mutualInfo" and selection.max_features is not None:
        from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

        target = train[dataset.target].to_numpy()
        if dataset.task == "classification":
            scores = mutual_info_classif(expanded, target.astype(str), random_state=dataset.seed)
        else:
            scores = mutual_info_regression(expanded, target.astype(float), random_state=dataset.seed)
        keep = np.sort(np.argsort(-scores, kind="stable")[: selection.max_features])
    if keep.size == 0:
        raise DataError(f"feature selection ({selection.method}) removed every feature; lower its threshold")
    transform.selected = [int(i) for i in keep]
    transform.output_names = [names[i] for i in keep]

    reduction = features.reduction
    if reduction.method == "pca":
        from sklearn.decomposition import PCA

        selected = expanded[:, keep]
        limit = min(selected.shape)
        amount: int | float = (
            min(reduction.components, limit) if reduction.components else reduction.explained_variance or 0.95
        )
        pca = PCA(n_components=amount, random_state=dataset.seed).fit(selected)
        transform.pca_mean = pca.mean_.astype(float).tolist()
        transform.pca_components = pca.components_.astype(float).tolist()
        transform.output_names = [f"pc{i}" for i in range(pca.n_components_)]
    return transform


def _unscale_vector(columns: list[ColumnTransform], one_hot: bool) -> list[float]:
    factors = []
    for column in columns:
        if column.kind == "categorical" and one_hot:
            factors.extend([1.0] * len(column.categories))
        else:
            factors.append(column.scale)
    return factors


def _sorted_labels(labels: list[str]) -> list[str]:
    """Numeric labels in numeric order (2 before 10), others alphabetically."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def encode_target(transform: FeatureTransform, values: pd.Series) -> np.ndarray:
    """Class labels -> class indices (classification) or floats (regression)."""
    if transform.task == "regression":
        return values.to_numpy(dtype="float32")
    index = {label: i for i, label in enumerate(transform.classes)}
    labels = values.astype(str)
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"target holds classes unseen in training: {', '.join(unknown[:5])}")
    return labels.map(index).to_numpy(dtype="int64")
