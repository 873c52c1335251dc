"""The gradient-boosted tree family: LightGBM trained on the encoded raw features, exported as
one ONNX graph built from the booster's own dump (ai.onnx.ml ``TreeEnsembleRegressor``).

Trees need no imputation, scaling or one-hot encoding: LightGBM takes the encoded raw matrix
as it is (numbers, category codes, NaN for missing), so the served graph has raw features in,
like the MLP's, and nothing of the preprocessing is lost. Regression targets are standardized
with training statistics before boosting and mapped back inside the graph, so float32 sums in
ONNX Runtime stay as precise as the output's scale allows.

:class:`TreeModel` is a ``torch.nn.Module`` whose ``forward`` gives what the MLP's does
(logits, or values), so evaluation, metrics and the compression stage treat both alike; it has
no trainable tensors, and the booster itself is kept as LightGBM's text model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from torch import nn

from ..api.jobs import Architecture, FeatureTransform
from .models import TabularModel

OPSET = 17
ML_OPSET = 3
INPUT_NAME = "features"


@dataclass(frozen=True)
class TreeSettings:
    """LightGBM's settings for one trial."""

    trees: int = 300
    leaves: int = 31
    learning_rate: float = 0.05
    min_child_samples: int = 20
    feature_fraction: float = 1.0
    l2: float = 0.0
    early_stopping_rounds: int = 30


def _objective(task: str, classes: int) -> dict[str, Any]:
    if task == "regression":
        return {"objective": "regression"}
    if classes == 2:
        return {"objective": "binary"}
    return {"objective": "multiclass", "num_class": classes}


def train_booster(
    raw: np.ndarray,
    target: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray] | None,
    task: str,
    classes: int,
    settings: TreeSettings,
    seed: int,
    sample_weight: np.ndarray | None = None,
) -> Any:
    """A LightGBM booster; with ``validation`` it stops adding trees once validation loss stops falling."""
    import lightgbm

    params = {
        **_objective(task, classes),
        "num_leaves": settings.leaves,
        "learning_rate": settings.learning_rate,
        "min_child_samples": min(settings.min_child_samples, max(len(raw) // 4, 1)),
        "feature_fraction": settings.feature_fraction,
        "lambda_l2": settings.l2,
        # Missing values are NaN only; zeros are plain numbers (the exported graph relies on it).
        "zero_as_missing": False,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": torch.get_num_threads(),
        "verbosity": -1,
    }
    train_set = lightgbm.Dataset(raw, target, weight=sample_weight, free_raw_data=False)
    callbacks: list[Any] = []
    valid_sets = []
    if validation is not None and len(validation[0]):
        valid_sets = [lightgbm.Dataset(validation[0], validation[1], reference=train_set)]
        callbacks.append(lightgbm.early_stopping(settings.early_stopping_rounds, verbose=False))
    return lightgbm.train(params, train_set, num_boost_round=settings.trees, valid_sets=valid_sets, callbacks=callbacks)


class TreeModel(nn.Module):
    """A fitted booster with the same interface as :class:`~optiloop.jobs.models.TabularModel`:
    encoded raw features in; logits (classification) or values (regression) out."""

    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(
        self,
        transform: FeatureTransform,
        architecture: Architecture,
        booster_text: str,
        target_mean: float = 0.0,
        target_std: float = 1.0,
    ) -> None:
        super().__init__()
        import lightgbm

        self.transform = transform
        self.architecture = architecture
        self.task = architecture.task
        self.booster_text = booster_text
        self.booster = lightgbm.Booster(model_str=booster_text)
        self.register_buffer("target_mean", torch.tensor(target_mean, dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor(target_std, dtype=torch.float32))

    def raw_scores(self, raw: np.ndarray) -> np.ndarray:
        """The booster's summed leaf values, one column per output (float64)."""
        scores = np.asarray(self.booster.predict(raw, raw_score=True), dtype=np.float64)
        return scores.reshape(len(raw), -1)

    def forward_scaled(self, raw: torch.Tensor) -> torch.Tensor:
        """Logits (binary: 0 for the first class, the score for the second), or standardized values."""
        scores = torch.from_numpy(self.raw_scores(raw.detach().cpu().numpy())).float()
        if self.task == "classification" and scores.shape[1] == 1:
            scores = torch.cat([torch.zeros_like(scores), scores], dim=1)
        return scores

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        out = self.forward_scaled(raw)
        if self.task == "regression":
            return out.squeeze(-1) * self.target_std + self.target_mean
        return out

    def rounds(self) -> int:
        """Boosting rounds kept (up to the best validation round when training stopped early: the
        text model holds only those)."""
        return int(self.booster.current_iteration())

    def truncated(self, rounds: int) -> TreeModel:
        """The same ensemble cut to its first ``rounds`` boosting rounds (fewer trees, no retraining)."""
        text = self.booster.model_to_string(num_iteration=rounds)
        return TreeModel(
            self.transform,
            self.architecture.model_copy(update={"trees": rounds}),
            text,
            float(self.target_mean),
            float(self.target_std),
        )

    def size(self) -> int:
        """Nodes in all trees (splits and leaves): the family's counterpart of a parameter count."""
        return sum(2 * int(tree["num_leaves"]) - 1 for tree in self.booster.dump_model()["tree_info"])


def settings_of(architecture: Architecture, learning_rate: float, trees: int | None = None) -> TreeSettings:
    """The LightGBM settings an architecture of the ``lightgbm`` family stands for."""
    default = TreeSettings()
    return TreeSettings(
        trees=trees or architecture.trees or default.trees,
        leaves=architecture.leaves or default.leaves,
        learning_rate=learning_rate,
        min_child_samples=architecture.min_child_samples or default.min_child_samples,
        feature_fraction=architecture.feature_fraction or default.feature_fraction,
        l2=architecture.l2 if architecture.l2 is not None else default.l2,
    )


def build_tree_model(
    transform: FeatureTransform,
    architecture: Architecture,
    train_raw: np.ndarray,
    train_target: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray] | None,
    settings: TreeSettings,
    seed: int,
    class_weights: list[float] | None = None,
) -> TreeModel:
    """Fit a booster (regression targets standardized with the training rows) and wrap it."""
    task = architecture.task
    mean, std = 0.0, 1.0
    target: np.ndarray = train_target
    valid = validation
    if task == "regression":
        mean, std = float(train_target.mean()), float(train_target.std()) or 1.0
        target = (train_target.astype(np.float64) - mean) / std
        if validation is not None:
            valid = (validation[0], (validation[1].astype(np.float64) - mean) / std)
    weights = None
    if task == "classification" and class_weights:
        weights = np.asarray(class_weights, dtype=np.float64)[train_target.astype(np.int64)]
    booster = train_booster(train_raw, target, valid, task, architecture.outputs, settings, seed, sample_weight=weights)
    return TreeModel(transform, architecture, booster.model_to_string(), mean, std)


AnyModel = TabularModel | TreeModel
"""A model of any family, as tuning delivers it and compression takes it."""


# --- ONNX --------------------------------------------------------------------


def _below_or_equal_float32(threshold: float) -> float:
    """The largest float32 not above ``threshold``: for a float32 input x, ``x <= t`` (LightGBM,
    in double) holds exactly when ``x <= this`` does in float32."""
    largest = float(np.finfo(np.float32).max)
    if threshold >= largest:  # LightGBM's "everything goes left" thresholds overflow float32
        return largest if threshold == largest else float("inf")
    value = np.float32(max(threshold, -largest))
    if float(value) > threshold:
        value = np.nextafter(value, np.float32(-np.inf))
    return float(value)


class _Nodes:
    """The flat node lists TreeEnsembleRegressor takes."""

    def __init__(self) -> None:
        self.tree_ids: list[int] = []
        self.node_ids: list[int] = []
        self.features: list[int] = []
        self.modes: list[str] = []
        self.values: list[float] = []
        self.true_ids: list[int] = []
        self.false_ids: list[int] = []
        self.missing_true: list[int] = []
        self.target_tree: list[int] = []
        self.target_node: list[int] = []
        self.target_id: list[int] = []
        self.target_weight: list[float] = []

    def add_tree(self, tree_id: int, root: dict[str, Any], target: int) -> None:
        counter = [0]

        def visit(node: dict[str, Any]) -> int:
            node_id = counter[0]
            counter[0] += 1
            index = len(self.node_ids)
            self.tree_ids.append(tree_id)
            self.node_ids.append(node_id)
            if "leaf_value" in node:
                self.features.append(0)
                self.modes.append("LEAF")
                self.values.append(0.0)
                self.true_ids.append(0)
                self.false_ids.append(0)
                self.missing_true.append(0)
                self.target_tree.append(tree_id)
                self.target_node.append(node_id)
                self.target_id.append(target)
                self.target_weight.append(float(node["leaf_value"]))
                return node_id
            if node.get("decision_type", "<=") != "<=":
                raise ValueError(f"tree {tree_id} has a {node['decision_type']!r} split; only numeric splits export")
            threshold = float(node["threshold"])
            missing = node.get("missing_type", "None")
            if missing == "NaN":
                tracks_true = bool(node.get("default_left", True))
            elif missing == "None":
                tracks_true = threshold >= 0.0  # LightGBM reads a missing value as 0 here
            else:
                raise ValueError(f"tree {tree_id} treats zeros as missing; train with zero_as_missing=False")
            self.features.append(int(node["split_feature"]))
            self.modes.append("BRANCH_LEQ")
            self.values.append(_below_or_equal_float32(threshold))
            self.missing_true.append(int(tracks_true))
            self.true_ids.append(0)
            self.false_ids.append(0)
            self.true_ids[index] = visit(node["left_child"])
            self.false_ids[index] = visit(node["right_child"])
            return node_id

        visit(root)


def export_tree_onnx(model: TreeModel) -> bytes:
    """The booster as a checked ONNX graph: ``features`` in; ``predictions`` (and, for
    classification, ``probabilities``) out, as the MLP's graph has them."""
    dump = model.booster.dump_model()
    per_iteration = int(dump.get("num_tree_per_iteration", 1))
    nodes = _Nodes()
    for tree in dump["tree_info"]:
        index = int(tree["tree_index"])
        nodes.add_tree(index, tree["tree_structure"], index % per_iteration)
    width = len(model.transform.columns)
    ensemble = helper.make_node(
        "TreeEnsembleRegressor",
        [INPUT_NAME],
        ["scores"],
        name="trees",
        domain="ai.onnx.ml",
        n_targets=per_iteration,
        aggregate_function="SUM",
        post_transform="NONE",
        nodes_treeids=nodes.tree_ids,
        nodes_nodeids=nodes.node_ids,
        nodes_featureids=nodes.features,
        nodes_modes=nodes.modes,
        nodes_values=nodes.values,
        nodes_truenodeids=nodes.true_ids,
        nodes_falsenodeids=nodes.false_ids,
        nodes_missing_value_tracks_true=nodes.missing_true,
        target_treeids=nodes.target_tree,
        target_nodeids=nodes.target_node,
        target_ids=nodes.target_id,
        target_weights=nodes.target_weight,
    )
    graph_nodes = [ensemble]
    initializers = []
    if model.task == "regression":
        initializers = [
            helper.make_tensor("target_std", TensorProto.FLOAT, [], [float(model.target_std)]),
            helper.make_tensor("target_mean", TensorProto.FLOAT, [], [float(model.target_mean)]),
            helper.make_tensor("flat", TensorProto.INT64, [1], [-1]),
        ]
        graph_nodes += [
            helper.make_node("Reshape", ["scores", "flat"], ["standardized"], name="flatten"),
            helper.make_node("Mul", ["standardized", "target_std"], ["scaled"], name="unscale"),
            helper.make_node("Add", ["scaled", "target_mean"], ["predictions"], name="uncenter"),
        ]
        outputs = [helper.make_tensor_value_info("predictions", TensorProto.FLOAT, ["batch"])]
    else:
        classes = len(model.transform.classes)
        logits = "scores"
        if per_iteration == 1:
            graph_nodes.append(helper.make_node("Sub", ["scores", "scores"], ["zeros"], name="zeros"))
            graph_nodes.append(helper.make_node("Concat", ["zeros", "scores"], ["logits"], name="logits", axis=1))
            logits = "logits"
        graph_nodes += [
            helper.make_node("Softmax", [logits], ["probabilities"], name="softmax", axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["predictions"], name="argmax", axis=1, keepdims=0),
        ]
        outputs = [
            helper.make_tensor_value_info("predictions", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes]),
        ]
    graph = helper.make_graph(
        graph_nodes,
        "optiloop-trees",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", width])],
        outputs,
        initializer=initializers,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="optiloop",
    )
    proto.ir_version = 8
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()
