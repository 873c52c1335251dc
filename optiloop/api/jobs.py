"""Inputs and outputs of the pipeline stages, as they travel between the operator, the Jobs
and the local runner (JSON on the wire, camelCase like the resource).

A stage reads a :class:`StageInput` and writes its outputs below
``<artifacts>/r<revision>/<stage>/``; the JSON documents there are these models.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ._base import ApiModel
from .spec import Activation, CompressionGates, Metric, ModelFamily, ModelOptimizationSpec, Task
from .status import BestTrial, ModelMetrics

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
    parent_revision: Annotated[int, Field(ge=1)] | None = None
    """Revision this one replaces (a retrain after drift); recorded in the model's lineage."""


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
    """A model, fully specified: an MLP (``linear`` is one without hidden layers) or a tree ensemble."""

    family: ModelFamily = "mlp"
    """Model family."""
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
    trees: Annotated[int, Field(ge=1)] | None = None
    """Boosting rounds (``lightgbm``)."""
    leaves: Annotated[int, Field(ge=2)] | None = None
    """Leaves per tree (``lightgbm``)."""
    min_child_samples: Annotated[int, Field(ge=1)] | None = None
    """Fewest training rows in a leaf (``lightgbm``)."""
    feature_fraction: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    """Share of features each tree may split on (``lightgbm``)."""
    l2: Annotated[float, Field(ge=0.0)] | None = None
    """L2 regularization of leaf values (``lightgbm``)."""

    def summary(self) -> str:
        """The family and its shape in a few words, for people reading a run's output."""
        if self.family == "lightgbm":
            return f"lightgbm trees, {self.leaves} leaves each"
        if self.family == "linear":
            return "linear"
        return f"mlp, hidden {self.hidden}"


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
    class_weighted: bool = True
    """Whether the loss weighs classes by the data-quality stage's class weights (when it set
    any): searched, because reweighting trades accuracy for the rare classes' recall."""


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
    validation_loss: float | None = None
    """Loss on the validation split (cross-entropy, or MSE of the standardized target): the
    smooth score trials are ranked on when the objective is a task metric."""


class Decision(ApiModel):
    """How a classifier's served graph turns logits into answers (see ``optiloop.jobs.decision``):
    offsets that calibrate the probabilities after class-weighted training, and per-class scales
    of the probabilities whose argmax is the answer (a threshold, for two classes)."""

    metric: str
    """The metric the threshold was chosen for (``accuracy``, ``f1`` or ``balancedAccuracy``)."""
    logit_offsets: list[float]
    """Added to the logits before the softmax (``-log`` of each class's training weight)."""
    class_scales: list[float]
    """The answer is the argmax of the calibrated probabilities times these."""
    threshold: float | None = None
    """Two classes: the second class is answered when its calibrated probability exceeds this."""


class TuningResult(ApiModel):
    """The tuning stage's outcome: the winner, how it was found, and how well it does."""

    study_name: str
    """Name of the Optuna study (stable across restarts of the same revision)."""
    objectives: list[Metric]
    """Objective metrics, in order."""
    directions: list[Literal["maximize", "minimize"]]
    """Their directions."""
    best_trial: TrialRecord
    """The chosen trial: for one task-metric objective the lowest validation loss (ties go to
    fewer parameters); for several objectives the Pareto-optimal trial best on the first."""
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
    """Metrics of the chosen configuration on the validation split, trained on the training split
    (one fold), or of its out-of-fold predictions over training + validation rows (k folds)."""
    validation_folds: int = 1
    """Folds the trials were scored with (1: the validation split)."""
    test_metrics: dict[str, float]
    """Metrics on the test split of the delivered model: the chosen configuration retrained on
    training + validation rows."""
    parameters: int
    """Trainable parameters of the model."""
    param_importances: dict[str, float] = {}
    """fANOVA importance of each parameter for the first objective (empty below 4 completed trials)."""
    elapsed_seconds: float
    """Wall-clock time of the search on this worker."""
    warnings: list[str] = []
    """What a user should know before trusting the model (a class it never predicts, a test
    score below always answering the most frequent class)."""
    decision: Decision | None = None
    """The classifier's decision rule, folded into every exported graph (None: the most
    probable class, probabilities as trained)."""
    primary_metric: Metric | None = None
    """The metric the run judges models on (the user's first task metric, ROC AUC by default on
    uneven classes, else the task's default); None in results of older versions."""


# --- compression and export --------------------------------------------------


class LatencyStats(ApiModel):
    """Latency of one candidate at one batch size, measured in the runtime that serves it."""

    batch_size: int
    """Rows per call."""
    p50_ms: float
    """Median latency of one call, in milliseconds."""
    p95_ms: float
    """95th percentile latency of one call, in milliseconds."""
    repetitions: int
    """Timed calls (after warm-up)."""


class CandidateReport(ApiModel):
    """One compression candidate: how it was made, how it measured, and whether it passed."""

    name: str
    """Stable name: ``baseline``, or the step number and what it did (``2-quantize-dynamicint8``)."""
    steps: list[str] = []
    """The chain of steps that produced it, starting from the baseline."""
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    """Numeric precision of the stored weights."""
    hidden: list[int] = []
    """Hidden layer widths of the network."""
    parameters: int = 0
    """Parameters of the network."""
    nonzero_parameters: int = 0
    """Parameters that are not zero (lower than ``parameters`` after unstructured pruning)."""
    size_bytes: int = 0
    """Size of the ONNX file."""
    test_metrics: dict[str, float] = {}
    """Task metrics on the test split, computed from the served runtime's outputs."""
    latency: list[LatencyStats] = []
    """Latency at batch size 1 and at the configured batch size."""
    metric_drop: float = 0.0
    """Loss on the primary metric against the baseline, in the gate's mode (absolute or relative)."""
    passed: bool = False
    """Whether every gate held."""
    failed_gates: list[str] = []
    """The gates it failed, each with measured value and limit."""
    error: str | None = None
    """Why the candidate could not be built or measured, when it could not."""

    def latency_at(self, batch_size: int) -> LatencyStats | None:
        """The latency measurement at ``batch_size``, if taken."""
        return next((entry for entry in self.latency if entry.batch_size == batch_size), None)


class CompressionReport(ApiModel):
    """The compression stage's outcome: every candidate, the gates, and the chosen model."""

    primary_metric: Metric
    """Metric the drop gate is judged on."""
    selection: Literal["fastest", "smallest", "mostAccurate"]
    """How the winner was picked among passing candidates."""
    gates: CompressionGates
    """The gates applied."""
    chosen: str
    """Name of the chosen candidate."""
    fallback: bool
    """True when no candidate passed and the baseline is deployed anyway."""
    message: str
    """One paragraph for people (becomes the Compressed condition's message)."""
    candidates: list[CandidateReport]
    """Every candidate in the order built; the baseline first."""
    threads: int
    """Threads the runtime used for the latency measurements."""
    elapsed_seconds: float
    """Wall-clock time of the stage."""

    @property
    def chosen_candidate(self) -> CandidateReport:
        """The report of the chosen candidate."""
        return next(c for c in self.candidates if c.name == self.chosen)


class FeatureInfo(ApiModel):
    """One raw input the served model takes, in input order."""

    name: str
    """Column name."""
    kind: Literal["numeric", "categorical"]
    """Numbers, or category values (sent as they appear in the data)."""
    categories: list[str] = []
    """Known categories in code order (categorical)."""


class ModelLineage(ApiModel):
    """Where a served model came from."""

    resource: str
    """Name of the ModelOptimization."""
    revision: int
    """Revision that built it."""
    parent_revision: int | None = None
    """Revision it replaces, for retrains."""
    study_name: str
    """Tuning study."""
    trial: int
    """Tuning trial whose configuration was retrained."""
    candidate: str
    """Compression candidate that was chosen."""


class ModelMetadata(ApiModel):
    """``metadata.json`` beside the served ONNX model: what the predictor and the drift monitor
    need to turn requests into model inputs, plus the model's measurements and lineage."""

    format_version: Literal[1] = 1
    """Version of this document's layout."""
    model_file: str = "model.onnx"
    """ONNX file, relative to the model directory."""
    task: Task
    """classification or regression."""
    target: str
    """Target column the model predicts."""
    input_name: str = "features"
    """Name of the ONNX input: a float matrix, one column per feature, category codes for categories."""
    output_names: list[str]
    """ONNX outputs: ``predictions`` and, for classification, ``probabilities``."""
    features: list[FeatureInfo]
    """Raw inputs in model input order."""
    classes: list[str] = []
    """Class labels in output order (classification)."""
    unknown_categories: Literal["ignore", "error"] = "ignore"
    """What a category value unseen in training does: encoded as unknown, or refused."""
    opset: int
    """ONNX opset of the model."""
    precision: Literal["fp32", "fp16", "int8"]
    """Precision of the stored weights."""
    test_metrics: dict[str, float]
    """Task metrics on the test split."""
    latency: list[LatencyStats] = []
    """Latency measured by the compression stage."""
    size_bytes: int
    """Size of the ONNX file."""
    parameters: int
    """Parameters of the network."""
    lineage: ModelLineage
    """Where it came from."""


# --- how a stage Job's pod gets its input ---------------------------------------

STAGE_INPUT_ENV = "OPTILOOP_STAGE_INPUT"
"""The :class:`StageInput` as JSON: set by the operator on every stage Job, read by the job entry points."""
PROBE_URL_ENV = "OPTILOOP_PROBE_URL"
"""The base URL of the blue/green revision's predictor that the probe Job sends its requests to."""


# --- how a stage Job's pod reaches the dataset ----------------------------------

DATASET_URI_ENV = "OPTILOOP_DATASET_URI"
"""The dataset's object URI: the one object a stage reads with the dataset's own credentials."""
DATASET_CREDENTIALS_PREFIX = "OPTILOOP_DATASET_"
"""Prefix of the dataset's credential set in a stage pod (``OPTILOOP_DATASET_AWS_ACCESS_KEY_ID``,
``..._AWS_SECRET_ACCESS_KEY``, optionally ``..._AWS_SESSION_TOKEN``, ``..._AWS_REGION``,
``..._AWS_ENDPOINT_URL``): the operator fills it from ``dataset.credentialsSecretRef`` with an
``envFrom`` of this prefix, beside the artifact store's unprefixed ``AWS_*`` variables."""


# --- what a stage Job reports to the operator ---------------------------------

TERMINATION_MESSAGE_LIMIT = 4096
"""Bytes Kubernetes keeps of a container's termination message."""

OutcomeReason = Literal["Succeeded", "WorkerFinished", "DataQualityFailed", "InvalidInput", "StageFailed"]


class StageOutcome(ApiModel):
    """A stage Job's result as its pod reports it in the termination message.

    The operator reads this from the pod's status instead of from the artifact store, so it
    needs neither the artifact claim mounted nor storage credentials; it is kept under the
    4 KiB Kubernetes allows (see :func:`optiloop.jobs.outcome.termination_message`).
    """

    stage: Literal["tuning", "compression", "probe"]
    """Which stage (``probe``: the synthetic requests to a blue/green revision)."""
    succeeded: bool
    """Whether the stage finished its work."""
    reason: OutcomeReason
    """``Succeeded``; ``WorkerFinished`` (a tuning worker other than the first); or why it failed."""
    message: Annotated[str, Field(max_length=2048)] = ""
    """People-readable details (for a failed data-quality gate: the failed rules)."""
    best_trial: BestTrial | None = None
    """The winning trial (tuning)."""
    model: ModelMetrics | None = None
    """The chosen model's measurements (compression)."""
