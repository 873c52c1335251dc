"""The model family: MLPs for tabular data, built from a fully specified :class:`Architecture`.

:class:`TabularModel` bundles the fitted preprocessing, the MLP and (for regression) the
target scaling, so one module maps encoded raw features to predictions: it is what gets
trained, evaluated, compressed and exported.
"""

from __future__ import annotations

import torch
from torch import nn

from ..api.jobs import Architecture, FeatureTransform
from ..api.spec import Activation, WidthShape
from .features import Preprocessor

ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leakyRelu": nn.LeakyReLU,
}


def hidden_widths(layers: int, width: int, shape: WidthShape, free_widths: list[int] | None = None) -> list[int]:
    """Widths of the hidden layers for a shape rule: equal, halving (at least 4), or given per layer."""
    if shape == "free" and free_widths is not None:
        return list(free_widths[:layers])
    if shape == "funnel":
        return [max(width >> i, 4) for i in range(layers)]
    return [width] * layers


class MLP(nn.Module):
    """Linear layers with optional batch norm, an activation and dropout between them."""

    def __init__(self, architecture: Architecture) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = architecture.inputs
        for hidden in architecture.hidden:
            layers.append(nn.Linear(width, hidden))
            if architecture.batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(ACTIVATIONS[architecture.activation]())
            if architecture.dropout > 0:
                layers.append(nn.Dropout(architecture.dropout))
            width = hidden
        layers.append(nn.Linear(width, architecture.outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class TabularModel(nn.Module):
    """Preprocessing + MLP (+ target rescaling): encoded raw features in, logits or values out."""

    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(
        self, transform: FeatureTransform, architecture: Architecture, target_mean: float = 0.0, target_std: float = 1.0
    ) -> None:
        super().__init__()
        self.transform = transform
        self.architecture = architecture
        self.preprocess = Preprocessor(transform)
        self.mlp = MLP(architecture)
        self.task = architecture.task
        self.register_buffer("target_mean", torch.tensor(target_mean, dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor(target_std, dtype=torch.float32))

    def forward_scaled(self, raw: torch.Tensor) -> torch.Tensor:
        """Logits, or the standardized regression output the loss is computed on."""
        return self.mlp(self.preprocess(raw))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        out = self.forward_scaled(raw)
        if self.task == "regression":
            return out.squeeze(-1) * self.target_std + self.target_mean
        return out


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters; for a tree ensemble (which has a ``size()``), its nodes."""
    size = getattr(module, "size", None)
    if callable(size):
        return int(size())
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
