"""Split a cleaned frame into train, validation and test, stratified for classification."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ..api.spec import DatasetSpec


@dataclass
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def split_frame(frame: pd.DataFrame, dataset: DatasetSpec, *, oversample: bool = False) -> Splits:
    """Deterministic split by ``dataset.seed``; rare classes oversampled in train only, so
    validation and test keep the real class balance."""
    fractions = dataset.split
    stratify = frame[dataset.target].astype("string") if dataset.task == "classification" else None
    rest, test = train_test_split(frame, test_size=fractions.test, random_state=dataset.seed, stratify=stratify)
    rest_stratify = rest[dataset.target].astype("string") if stratify is not None else None
    train, validation = train_test_split(
        rest,
        test_size=fractions.validation / (fractions.train + fractions.validation),
        random_state=dataset.seed,
        stratify=rest_stratify,
    )
    if oversample:
        train = oversample_classes(train, dataset.target, dataset.seed)
    return Splits(train.reset_index(drop=True), validation.reset_index(drop=True), test.reset_index(drop=True))


def oversample_classes(frame: pd.DataFrame, target: str, seed: int) -> pd.DataFrame:
    """Resample every class with replacement up to the size of the largest one."""
    rng = np.random.default_rng(seed)
    groups = frame.groupby(frame[target].astype("string"), sort=True)
    largest = int(groups.size().max())
    parts = []
    for _, group in groups:
        extra = largest - len(group)
        parts.append(group)
        if extra:
            parts.append(group.iloc[rng.integers(0, len(group), size=extra)])
    return pd.concat(parts).sample(frac=1.0, random_state=seed)
