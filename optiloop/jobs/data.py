"""Load a dataset from the spec: bundled scikit-learn sets, or CSV and Parquet from storage."""

from __future__ import annotations

import io
from typing import Literal

import pandas as pd

from ..api.spec import DatasetSpec
from ..api.uris import BUILTIN_DATASETS
from .errors import DataError, StorageError
from .storage import open_store, split_uri

_EXTENSIONS: dict[str, Literal["csv", "parquet"]] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def load_builtin(name: str) -> pd.DataFrame:
    """One of scikit-learn's bundled datasets as a frame with a ``target`` column."""
    if name not in BUILTIN_DATASETS:
        raise DataError(f"builtin://{name} does not exist; bundled datasets: {', '.join(BUILTIN_DATASETS)}")
    from sklearn import datasets

    frame = getattr(datasets, f"load_{name}")(as_frame=True).frame
    return frame.reset_index(drop=True)


def parse_table(data: bytes, fmt: str, source: str) -> pd.DataFrame:
    """Parse CSV or Parquet bytes, turning every parser failure into a :class:`DataError` naming ``source``."""
    if not data.strip():
        raise DataError(f"{source} is empty")
    if fmt == "parquet":
        try:
            return pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many unrelated types
            raise DataError(f"{source} is not a readable Parquet file: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{source} is not UTF-8 text; is it a binary file? (set dataset.format for Parquet)") from None
    if "\x00" in text:
        raise DataError(f"{source} contains NUL bytes; it looks like a binary file, not CSV")
    try:
        frame = pd.read_csv(io.StringIO(text))
    except pd.errors.EmptyDataError:
        raise DataError(f"{source} has no header or rows") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{source} is not valid CSV: {exc}") from None
    if frame.shape[1] == 1:
        header = str(frame.columns[0])
        for delimiter, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if delimiter in header:
                raise DataError(
                    f"{source} has a single column {header[:60]!r}: it seems to be separated by {name}; "
                    "optiloop reads comma-separated files"
                )
    return frame


def load_dataset(spec: DatasetSpec) -> pd.DataFrame:
    """The dataset ``spec`` points at, as a frame (target column included)."""
    if spec.uri.startswith("builtin://"):
        return load_builtin(spec.uri[len("builtin://") :])
    parent, name = split_uri(spec.uri)
    fmt = spec.format or next((f for ext, f in _EXTENSIONS.items() if name.lower().endswith(ext)), None)
    if fmt is None:
        raise DataError(f"cannot tell the format of {spec.uri}: name it .csv or .parquet, or set dataset.format")
    try:
        data = open_store(parent, endpoint_url=spec.s3_endpoint).read_bytes(name)
    except StorageError as exc:
        raise DataError(f"cannot load the dataset: {exc}") from None
    return parse_table(data, fmt, spec.uri)
