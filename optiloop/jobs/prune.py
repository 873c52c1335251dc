"""Pruning: remove whole neurons (structured) or single weights (unstructured).

Structured pruning rebuilds every hidden ``Linear`` (and its batch norm) with only the
neurons kept, so the model really gets smaller and faster with dense kernels. Unstructured
pruning zeroes the smallest weights; the file and the latency stay the same unless a
sparse runtime is used, which is why the compression stage measures instead of assuming.

A neuron's importance is how much signal it can pass: the size of what comes in (the
incoming weight row, or the batch-norm scale when there is one, since batch norm undoes the
row's scale) times the size of what goes out (the next layer's weight column).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..api.spec import PruneStep
from .models import TabularModel


def _blocks(model: TabularModel) -> list[tuple[nn.Linear, nn.BatchNorm1d | None]]:
    """Each Linear of the MLP with the batch norm that follows it, if any."""
    blocks: list[tuple[nn.Linear, nn.BatchNorm1d | None]] = []
    for layer in model.mlp.layers:
        if isinstance(layer, nn.Linear):
            blocks.append((layer, None))
        elif isinstance(layer, nn.BatchNorm1d) and blocks:
            blocks[-1] = (blocks[-1][0], layer)
    return blocks


def neuron_importance(model: TabularModel) -> list[torch.Tensor]:
    """Importance of every neuron of every hidden layer (one tensor per hidden layer)."""
    blocks = _blocks(model)
    scores = []
    with torch.no_grad():
        for (linear, norm), (following, _) in itertools.pairwise(blocks):
            incoming = norm.weight.abs() if norm is not None else linear.weight.norm(dim=1)
            outgoing = following.weight.norm(dim=0)
            scores.append(incoming * outgoing)
    return scores


def neurons_to_keep(scores: list[torch.Tensor], amount: float, scope: str) -> list[torch.Tensor]:
    """Sorted indices of the neurons kept in each hidden layer; every layer keeps at least one.

    ``layer`` scope removes ``amount`` of each layer; ``global`` ranks all neurons together
    after dividing each layer's scores by their mean, so layers of different scale compete fairly.
    """
    if scope == "layer":
        keep_counts = [max(1, round(len(s) * (1.0 - amount))) for s in scores]
    else:
        normalized = [s / (s.mean() if float(s.mean()) > 0 else 1.0) for s in scores]
        total = max(len(scores), round(sum(len(s) for s in scores) * (1.0 - amount)))
        threshold = torch.cat(normalized).sort(descending=True).values[total - 1]
        keep_counts = [max(1, int((n >= threshold).sum())) for n in normalized]
    kept = []
    for layer_scores, count in zip(scores, keep_counts, strict=True):
        # A stable sort breaks ties by position, so the same model always prunes the same way.
        order = torch.sort(layer_scores, descending=True, stable=True).indices[:count]
        kept.append(order.sort().values)
    return kept


def prune_structured(model: TabularModel, amount: float, scope: str = "layer") -> TabularModel:
    """A new, smaller model without the least important ``amount`` of hidden neurons."""
    keep = neurons_to_keep(neuron_importance(model), amount, scope)
    architecture = model.architecture.model_copy(update={"hidden": [len(k) for k in keep]})
    smaller = TabularModel(model.transform, architecture)
    smaller.preprocess.load_state_dict(model.preprocess.state_dict())
    smaller.target_mean.copy_(model.target_mean)
    smaller.target_std.copy_(model.target_std)
    old, new = _blocks(model), _blocks(smaller)
    with torch.no_grad():
        for index, ((linear, norm), (target, target_norm)) in enumerate(zip(old, new, strict=True)):
            rows = keep[index] if index < len(keep) else torch.arange(linear.out_features)
            columns = keep[index - 1] if index > 0 else torch.arange(linear.in_features)
            target.weight.copy_(linear.weight[rows][:, columns])
            target.bias.copy_(linear.bias[rows])
            if norm is not None and target_norm is not None:
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(target_norm, name).copy_(getattr(norm, name)[rows])
    smaller.eval()
    return smaller


def prune_unstructured(model: TabularModel, amount: float, scope: str = "layer") -> list[nn.Linear]:
    """Mask the smallest-magnitude ``amount`` of weights in place; returns the masked layers.

    The masks stay attached (so fine-tuning cannot revive pruned weights) until
    :func:`make_permanent` folds them into the weights.
    """
    linears = [linear for linear, _ in _blocks(model)]
    if scope == "global":
        torch_prune.global_unstructured(
            [(linear, "weight") for linear in linears], pruning_method=torch_prune.L1Unstructured, amount=amount
        )
    else:
        for linear in linears:
            torch_prune.l1_unstructured(linear, "weight", amount=amount)  # type: ignore[no-untyped-call]
    return linears


def make_permanent(linears: list[nn.Linear]) -> None:
    """Fold pruning masks into the weights and drop the reparametrization."""
    for linear in linears:
        if torch_prune.is_pruned(linear):
            torch_prune.remove(linear, "weight")  # type: ignore[no-untyped-call]


def nonzero_parameters(model: nn.Module) -> int:
    """Parameters that are not exactly zero."""
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def describe(step: PruneStep) -> str:
    """Short human description of a prune step."""
    return f"prune {step.method} {math.floor(step.amount * 100 + 0.5)}% ({step.scope})"
