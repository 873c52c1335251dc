"""Inputs and outputs of the pipeline stages, as they travel between the operator, the Jobs
and the local runner (JSON on the wire, camelCase like the resource).

A stage reads a :class:`StageInput` and writes its outputs below
``<artifacts>/r<revision>/<stage>/``; the JSON documents there are these models.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ._base import ApiModel
from .spec import Activation, Metric, ModelOptimizationSpec, Task

ParamValue = float | int | str | bool


class StageInput(ApiModel):
    """What every stage is given: the spec, where artifacts go, and which revision it builds."""

    name: Annotated[str, Field(min_length=1, max_length=253)] = "model"
    """Name of the ModelOptimization (lineage only)."""
    spec: ModelOptimizationSpec
    """The resource's spec at the generation being built."""
    artifacts: Annotated[str, Field(min_length=1, max_length=1024)]
    """Artifact root: ``pvc://``, ``s3://``, or a local directory (local runner)."""
    revision: Annotated[int, Field(ge=1)] = 1
    """Revision being built; outputs go below ``r<revision>/``."""
    worker_index: Annotated[int, Field(ge=0)] = 0
    """Index of this tuning worker (the Indexed Job's completion index)."""
    worker_count: Annotated[int, Field(ge=1)] = 1
    """Number of tuning workers sharing the study."""


# --- data quality ------------------------------------------------------------

RuleStatus = Literal["passed", "fixed", "warning", "failed"]


class RuleResult(ApiModel):
    """The outcome of one data-quality rule."""

    rule: str
    """Rule name: rows, target, schema, missingValues, duplicates, constantColumns, outliers, classes,
    classImbalance."""
    status: RuleStatus
    """passed, fixed (violated and repaired), warning (violated, run continues) or failed."""
    action: str = ""
    """What was done (impute, drop, clip, reweight, ...)."""
    columns: list[str] = []
    """Columns concerned."""
    counts: dict[str, float] = {}
    """Measured quantities (per column or overall)."""
    message: str = ""
    """Explanation for people."""


class DataQualityReport(ApiModel):
    """What the data-quality stage found and did."""

    passed: bool
    """False when a rule failed; nothing downstream runs then."""
    failed_rules: list[str] = []
    """Names of the failed rules."""
    rows_before: int
    """Rows loaded."""
    rows_after: int
    """Rows after cleaning."""
    columns_before: list[str]
    """Columns loaded."""
    columns_after: list[str]
    """Feature columns kept, target excluded."""
    rules: list[RuleResult]
    """Each rule's outcome, in the order run."""
    class_weights: dict[str, float] | None = None
    """Loss weight per class label, when imbalance is handled by reweighting."""
    split_rows: dict[str, int] = {}
    """Rows in the train, validation and test splits."""
    categorical_columns: list[str] = []
    """Feature columns treated as categorical (declared in the spec or holding text)."""


# --- features ----------------------------------------------------------------


class ColumnTransform(ApiModel):
    """How one raw input column becomes model inputs."""

    name: str
    """Column name."""
    kind: Literal["numeric", "categorical"]
    """Numeric columns are imputed and scaled; categorical ones are one-hot or ordinal encoded."""
    fill: float = 0.0
    """Value replacing a missing numeric input (a category code for categorical columns)."""
    center: float = 0.0
    """Subtracted before scaling (numeric)."""
    scale: float = 1.0
    """Divisor after centering (numeric); never 0."""
    categories: list[str] = []
    """Known categories, in code order (categorical). Inputs carry the code; -1 or an unknown code
    means an unseen category."""


class FeatureTransform(ApiModel):
    """The fitted preprocessing, as data: enough to rebuild it anywhere (torch, ONNX, NumPy)."""

    task: Task
    """classification or regression."""
    target: str
    """Target column."""
    columns: list[ColumnTransform]
    """Raw input columns in model input order."""
    encoding: Literal["oneHot", "ordinal"]
    """How categorical columns are expanded."""
    handle_unknown: Literal["ignore", "error"]
    """What an unseen category does at serving time."""
    selected: list[int]
    """Indices of the expanded features kept by selection."""
    pca_mean: list[float] | None = None
    """PCA centering vector over the selected features."""
    pca_components: list[list[float]] | None = None
    """PCA projection, one row per component."""
    output_names: list[str]
    """Names of the model's input features after the transform."""
    classes: list[str] = []
    """Class labels in output order (classification)."""

    @property
    def input_width(self) -> int:
        """Number of model inputs after the transform."""
        return len(self.output_names)


# --- models and tuning -------------------------------------------------------


class Architecture(ApiModel):
    """An MLP, fully specified."""

    inputs: Annotated[int, Field(ge=1)]
    """Input features (after preprocessing)."""
    outputs: Annotated[int, Field(ge=1)]
    """Classes, or 1 for regression."""
    hidden: list[Annotated[int, Field(ge=1)]]
    """Hidden layer widths."""
    activation: Activation = "relu"
    """Activation function."""
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Dropout after each hidden layer."""
    batch_norm: bool = False
    """Batch normalization after each hidden linear layer."""
    task: Task = "classification"
    """Decides the loss and the output head."""


class TrainingConfig(ApiModel):
    """Hyperparameters of one training run."""

    learning_rate: Annotated[float, Field(gt=0.0)]
    """Initial learning rate."""
    batch_size: Annotated[int, Field(ge=1)]
    """Mini-batch size."""
    optimizer: Literal["adamw", "sgd"] = "adamw"
    """Optimizer."""
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    """Weight decay."""
    epochs: Annotated[int, Field(ge=1)]
    """Epoch budget."""
    schedule: Literal["constant", "cosine"] = "cosine"
    """Learning-rate schedule over the epoch budget."""
    gradient_clip_norm: float | None = None
    """Global gradient-norm clip."""
    early_stopping_patience: int | None = 8
    """Epochs without improvement before stopping; None disables early stopping."""
    early_stopping_min_delta: float = 0.0
    """Smallest change that counts as an improvement."""
    monitor: Literal["loss", "accuracy", "f1", "rocAuc", "rmse", "mae", "r2"] = "loss"
    """Validation quantity watched by early stopping."""
    seed: int = 0
    """Seed for initialization and batch order."""


class TrialRecord(ApiModel):
    """One tuning trial."""

    number: int
    """Optuna trial number."""
    state: Literal["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]
    """Final (or current) state."""
    values: list[float] | None = None
    """Objective values, in objective order."""
    params: dict[str, ParamValue] = {}
    """Sampled parameters."""
    duration_seconds: float | None = None
    """Wall-clock duration."""
    epochs_run: int | None = None
    """Epochs trained before early stopping or pruning."""
    worker: int | None = None
    """Worker index that ran it."""


class TuningResult(ApiModel):
    """The tuning stage's outcome: the winner, how it was found, and how well it does."""

    study_name: str
    """Name of the Optuna study (stable across restarts of the same revision)."""
    objectives: list[Metric]
    """Objective metrics, in order."""
    directions: list[Literal["maximize", "minimize"]]
    """Their directions."""
    best_trial: TrialRecord
    """The chosen trial (for several objectives: the Pareto-optimal trial best on the first)."""
    pareto_front: list[TrialRecord] = []
    """Pareto-optimal trials (several objectives only)."""
    trials_completed: int
    """Completed trials."""
    trials_pruned: int
    """Pruned trials."""
    trials_failed: int
    """Failed trials."""
    architecture: Architecture
    """Architecture of the retrained best model."""
    training: TrainingConfig
    """Training configuration of the retrained best model."""
    validation_metrics: dict[str, float]
    """Metrics of the retrained model on the validation split."""
    test_metrics: dict[str, float]
    """Metrics of the retrained model on the test split."""
    parameters: int
    """Trainable parameters of the model."""
    param_importances: dict[str, float] = {}
    """fANOVA importance of each parameter for the first objective (empty below 4 completed trials)."""
    elapsed_seconds: float
    """Wall-clock time of the search on this worker."""
