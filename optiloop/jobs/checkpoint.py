"""The tuned model on disk: weights in safetensors, rebuilt from the tuning stage's outputs.

The tuning stage writes ``model.safetensors`` beside ``result.json`` (the architecture) and
``preprocessing.json`` (the feature transform); the compression stage and the benchmarks load it
back. Safetensors holds tensors only, so loading never runs code (unlike a pickle); a tree
ensemble keeps its LightGBM text model as one byte tensor.
"""

from __future__ import annotations

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..api.jobs import FeatureTransform, TuningResult
from .models import TabularModel
from .storage import ArtifactStore
from .trees import AnyModel, TreeModel

MODEL_FILE = "model.safetensors"
BOOSTER_KEY = "booster"
"""Safetensors entry holding a tree ensemble's LightGBM text model (UTF-8 bytes)."""


def save_model(model: AnyModel) -> bytes:
    """The model's weights and fitted buffers in safetensors (a tree ensemble's booster as bytes)."""
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    if isinstance(model, TreeModel):
        tensors[BOOSTER_KEY] = torch.frombuffer(bytearray(model.booster_text.encode()), dtype=torch.uint8)
    return bytes(save_tensors(tensors))


def load_model(store: ArtifactStore, prefix: str) -> AnyModel:
    """Rebuild a model saved by the tuning stage (weights from safetensors, never pickle)."""
    result = TuningResult.model_validate_json(store.read_bytes(f"{prefix}/result.json"))
    transform = FeatureTransform.model_validate_json(store.read_bytes(f"{prefix}/preprocessing.json"))
    tensors = load_tensors(store.read_bytes(f"{prefix}/{MODEL_FILE}"))
    if result.architecture.family == "lightgbm":
        booster = bytes(tensors[BOOSTER_KEY].numpy().tobytes()).decode()
        trees = TreeModel(
            transform,
            result.architecture,
            booster,
            float(tensors["target_mean"]),
            float(tensors["target_std"]),
        )
        trees.eval()
        return trees
    model = TabularModel(transform, result.architecture)
    model.load_state_dict(tensors)
    model.eval()
    return model
