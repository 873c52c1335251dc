"""``ModelOptimization.spec``: what a platform team asks optiloop to do with one model.

Every stage of the loop has one section. Each section has defaults good enough for a
first run on a bundled dataset, so the minimal manifest names only the data.

Example::

    spec = ModelOptimizationSpec.model_validate({"dataset": {"uri": "builtin://iris"}})
    assert spec.tuning.algorithm == "tpe"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import Field, field_validator

from . import cron
from ._base import ApiModel, ColumnName, ObjectName, Quantity, Rule
from .uris import DatasetURI, S3Endpoint, StorageURI

Task = Literal["classification", "regression"]
Metric = Literal["accuracy", "f1", "rocAuc", "rmse", "mae", "r2", "latencyMs", "parameters"]
Direction = Literal["maximize", "minimize"]

CLASSIFICATION_METRICS: tuple[Metric, ...] = ("accuracy", "f1", "rocAuc", "latencyMs", "parameters")
REGRESSION_METRICS: tuple[Metric, ...] = ("rmse", "mae", "r2", "latencyMs", "parameters")
MAXIMIZED_METRICS: tuple[Metric, ...] = ("accuracy", "f1", "rocAuc", "r2")
CLASSIFICATION_MONITORS = ("loss", "accuracy", "f1", "rocAuc")
REGRESSION_MONITORS = ("loss", "rmse", "mae", "r2")
DEFAULT_METRIC: dict[Task, Metric] = {"classification": "accuracy", "regression": "rmse"}


def natural_direction(metric: Metric) -> Direction:
    """The direction in which ``metric`` improves."""
    return "maximize" if metric in MAXIMIZED_METRICS else "minimize"


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


# --- shared shapes -----------------------------------------------------------


class SecretReference(ApiModel):
    """A Secret in the resource's own namespace; its values are never copied anywhere."""

    name: ObjectName
    """Name of the Secret."""


class SecretKeyReference(ApiModel):
    """One key of a Secret in the resource's own namespace."""

    name: ObjectName
    """Name of the Secret."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """Key inside the Secret."""


class ResourceRequirements(ApiModel):
    """CPU and memory for a container, as in a Pod spec."""

    requests: Annotated[dict[Literal["cpu", "memory", "ephemeral-storage"], Quantity], Field(max_length=3)] = {}
    """Resources the scheduler reserves, for example ``{cpu: 500m, memory: 1Gi}``."""
    limits: Annotated[dict[Literal["cpu", "memory", "ephemeral-storage"], Quantity], Field(max_length=3)] = {}
    """Upper bounds enforced at run time."""


class IntRange(ApiModel):
    """An integer search range, inclusive at both ends."""

    min: Annotated[int, Field(ge=0, le=1_000_000)]
    """Smallest value tried."""
    max: Annotated[int, Field(ge=0, le=1_000_000)]
    """Largest value tried."""
    log: bool = False
    """Sample on a logarithmic scale (needs ``min`` > 0)."""

    cross_field_rules = (
        Rule("self.min <= self.max", "min must not exceed max", lambda m: m.min <= m.max, "min"),
        Rule("!self.log || self.min > 0", "a logarithmic range needs min > 0", lambda m: not m.log or m.min > 0, "log"),
    )


class FloatRange(ApiModel):
    """A real-valued search range, inclusive at both ends."""

    min: Annotated[float, Field(ge=0.0, le=1e6)]
    """Smallest value tried."""
    max: Annotated[float, Field(ge=0.0, le=1e6)]
    """Largest value tried."""
    log: bool = False
    """Sample on a logarithmic scale (needs ``min`` > 0); natural for learning rates."""

    cross_field_rules = (
        Rule("self.min <= self.max", "min must not exceed max", lambda m: m.min <= m.max, "min"),
        Rule(
            "!self.log || self.min > 0.0", "a logarithmic range needs min > 0", lambda m: not m.log or m.min > 0, "log"
        ),
    )


# --- dataset -----------------------------------------------------------------


class SplitFractions(ApiModel):
    """How the rows are divided; the three fractions must add up to 1."""

    train: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.7
    """Fraction used to fit models and preprocessing."""
    validation: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.15
    """Fraction used for early stopping and to score tuning trials."""
    test: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.15
    """Fraction held out for the final metrics and the compression gates."""

    cross_field_rules = (
        Rule(
            "self.train + self.validation + self.test > 0.999 && self.train + self.validation + self.test < 1.001",
            "train, validation and test must add up to 1",
            lambda m: abs(m.train + m.validation + m.test - 1.0) < 0.001,
            "train",
        ),
    )


class DatasetSpec(ApiModel):
    """Where the training data is and what to learn from it."""

    uri: DatasetURI
    """``pvc://<claim>/<path>``, ``s3://<bucket>/<key>`` or ``builtin://<name>`` for one of
    scikit-learn's bundled sets (breast_cancer, digits, wine, iris, diabetes)."""
    format: Literal["csv", "parquet"] | None = None
    """File format; inferred from the file extension when omitted. Ignored for ``builtin://``."""
    target: ColumnName = "target"
    """Column to predict. The bundled sets call it ``target``."""
    task: Task = "classification"
    """Predict a class (classification) or a number (regression)."""
    categorical_columns: Annotated[list[ColumnName], Field(max_length=1024)] = []
    """Columns to treat as categories even when they hold numbers."""
    split: SplitFractions = Field(default_factory=SplitFractions)
    """Train, validation and test fractions."""
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 42
    """Seed for the split and every other random choice of the run."""
    credentials_secret_ref: SecretReference | None = None
    """Secret holding ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` (optionally
    ``AWS_SESSION_TOKEN``, ``AWS_REGION``) for an ``s3://`` URI. The Jobs read the dataset with
    it and the artifact store with deployment.storageCredentialsSecretRef, so the two may differ."""
    s3_endpoint: S3Endpoint | None = None
    """Endpoint of an S3-compatible store (MinIO, Ceph) as ``http(s)://host[:port]``; AWS when
    omitted. No credentials in it: they come from credentialsSecretRef."""

    cross_field_rules = (
        Rule(
            "!has(self.credentialsSecretRef) || self.uri.startsWith('s3://')",
            "credentialsSecretRef applies only to s3:// URIs",
            lambda m: m.credentials_secret_ref is None or m.uri.startswith("s3://"),
            "credentialsSecretRef",
        ),
        Rule(
            "!has(self.s3Endpoint) || self.uri.startsWith('s3://')",
            "s3Endpoint applies only to s3:// URIs",
            lambda m: m.s3_endpoint is None or m.uri.startswith("s3://"),
            "s3Endpoint",
        ),
        Rule(
            "!self.uri.startsWith('builtin://diabetes') || self.task == 'regression'",
            "builtin://diabetes is a regression dataset: set task to regression",
            lambda m: m.uri != "builtin://diabetes" or m.task == "regression",
            "task",
        ),
    )


# --- data quality ------------------------------------------------------------


class MissingValuesRule(ApiModel):
    """Missing values, judged per column."""

    max_fraction: Fraction = 0.2
    """Largest tolerated share of missing values in any one column."""
    action: Literal["impute", "dropRows", "fail"] = "impute"
    """What to do with a column over the threshold; below it, values are always imputed."""
    impute_strategy: Literal["median", "mean", "mostFrequent"] = "median"
    """How numeric gaps are filled (categorical gaps always take the most frequent value)."""


class DuplicatesRule(ApiModel):
    """Rows that repeat exactly."""

    max_fraction: Fraction = 0.05
    """Largest tolerated share of duplicate rows."""
    action: Literal["drop", "fail", "ignore"] = "drop"
    """Drop the duplicates, stop the run, or keep them."""


class ConstantColumnsRule(ApiModel):
    """Columns that hold a single value and so carry no information."""

    action: Literal["drop", "fail", "ignore"] = "drop"
    """Drop such columns, stop the run, or keep them."""


class OutliersRule(ApiModel):
    """Extreme values in numeric columns."""

    method: Literal["iqr", "zscore", "isolationForest"] = "iqr"
    """Interquartile range, z-score, or scikit-learn's IsolationForest."""
    threshold: Annotated[float, Field(gt=0.0, le=100.0)] = 1.5
    """IQR multiplier, z-score cut-off, or (isolationForest) the contamination in percent."""
    max_fraction: Fraction = 0.05
    """Largest tolerated share of outlying rows."""
    action: Literal["flag", "clip", "drop"] = "flag"
    """Only report them, clip values to the fences (iqr, zscore), or drop the rows."""

    cross_field_rules = (
        Rule(
            "self.method != 'isolationForest' || self.action != 'clip'",
            "isolationForest flags whole rows and has no fences to clip to: use flag or drop",
            lambda m: m.method != "isolationForest" or m.action != "clip",
            "action",
        ),
    )


class ClassImbalanceRule(ApiModel):
    """Uneven classes (classification only)."""

    max_ratio: Annotated[float, Field(ge=1.0, le=1e6)] = 10.0
    """Largest tolerated ratio between the most and the least frequent class."""
    action: Literal["reweight", "oversample", "fail", "ignore"] = "reweight"
    """Weight the loss by class, oversample the rare classes, stop, or carry on."""


ColumnType = Literal["numeric", "categorical", "boolean"]


class ExpectedColumn(ApiModel):
    """One column the data must contain."""

    name: ColumnName
    """Column name, exactly as in the file header."""
    type: ColumnType = "numeric"
    """What its values must be."""


class SchemaRule(ApiModel):
    """The columns the data must have and what they hold."""

    columns: Annotated[list[ExpectedColumn], Field(max_length=1024)] = []
    """Columns that must exist with the given type."""
    allow_extra_columns: bool = True
    """Whether columns not listed here are accepted (and used as features)."""


class DataQualitySpec(ApiModel):
    """Checks run before anything is trained. A failed gate stops the run and nothing is deployed."""

    min_rows: Annotated[int, Field(ge=1, le=10**9)] = 50
    """Fewest rows, after cleaning, that a run may train on."""
    missing_values: MissingValuesRule = Field(default_factory=MissingValuesRule)
    """Missing-value threshold and treatment."""
    duplicates: DuplicatesRule = Field(default_factory=DuplicatesRule)
    """Duplicate-row threshold and treatment."""
    constant_columns: ConstantColumnsRule = Field(default_factory=ConstantColumnsRule)
    """Treatment of columns with a single value."""
    outliers: OutliersRule = Field(default_factory=OutliersRule)
    """Outlier detection and treatment."""
    class_imbalance: ClassImbalanceRule = Field(default_factory=ClassImbalanceRule)
    """Class-imbalance threshold and treatment."""
    schema_: SchemaRule = Field(default_factory=SchemaRule, alias="schema")
    """Expected columns and their types."""
    fail_on_violation: bool = True
    """When false, rules whose action is ``fail`` only warn. Empty data, a missing target, fewer
    rows than minRows and a single class always stop the run."""


# --- features ----------------------------------------------------------------


class CategoricalEncoding(ApiModel):
    """How categorical columns become numbers."""

    encoding: Literal["oneHot", "ordinal"] = "oneHot"
    """One column per category, or one integer code per category."""
    handle_unknown: Literal["ignore", "error"] = "ignore"
    """A category unseen in training: encode as all zeros, or reject the request."""
    max_categories: Annotated[int, Field(ge=2, le=10_000)] = 50
    """Categories kept per column; rarer ones are grouped together."""


class FeatureSelection(ApiModel):
    """Which features are kept."""

    method: Literal["none", "variance", "mutualInfo"] = "none"
    """Keep all, drop near-constant features, or keep the most informative ones."""
    variance_threshold: Annotated[float, Field(ge=0.0, le=1e6)] = 0.0
    """With ``variance``: features at or below this variance are dropped."""
    max_features: Annotated[int, Field(ge=1, le=100_000)] | None = None
    """With ``mutualInfo``: how many features to keep."""

    cross_field_rules = (
        Rule(
            "self.method != 'mutualInfo' || has(self.maxFeatures)",
            "mutualInfo selection needs maxFeatures",
            lambda m: m.method != "mutualInfo" or m.max_features is not None,
            "maxFeatures",
        ),
    )


class DimensionalityReduction(ApiModel):
    """Optional PCA after scaling and selection."""

    method: Literal["none", "pca"] = "none"
    """No reduction, or principal component analysis."""
    components: Annotated[int, Field(ge=1, le=100_000)] | None = None
    """Number of components to keep."""
    explained_variance: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    """Keep as many components as explain this share of the variance."""

    cross_field_rules = (
        Rule(
            "self.method != 'pca' || (has(self.components) != has(self.explainedVariance))",
            "pca needs exactly one of components and explainedVariance",
            lambda m: m.method != "pca" or ((m.components is None) != (m.explained_variance is None)),
            "components",
        ),
        Rule(
            "self.method == 'pca' || (!has(self.components) && !has(self.explainedVariance))",
            "components and explainedVariance apply only to method pca",
            lambda m: m.method == "pca" or (m.components is None and m.explained_variance is None),
            "method",
        ),
    )


class FeaturesSpec(ApiModel):
    """Preprocessing, fitted on the training split only and exported with the model."""

    scaling: Literal["standard", "minMax", "robust", "none"] = "standard"
    """How numeric features are scaled."""
    categorical: CategoricalEncoding = Field(default_factory=CategoricalEncoding)
    """How categorical features are encoded."""
    selection: FeatureSelection = Field(default_factory=FeatureSelection)
    """Feature selection."""
    reduction: DimensionalityReduction = Field(default_factory=DimensionalityReduction)
    """Dimensionality reduction."""


# --- model -------------------------------------------------------------------

Activation = Literal["relu", "gelu", "silu", "tanh", "leakyRelu"]
WidthShape = Literal["constant", "funnel", "free"]


class ArchitectureSearchSpace(ApiModel):
    """The architectures tuning may try."""

    layers: IntRange = Field(default_factory=lambda: IntRange(min=1, max=3))
    """Number of hidden layers."""
    width: IntRange = Field(default_factory=lambda: IntRange(min=16, max=256, log=True))
    """Units in a hidden layer (the first one, for ``funnel``)."""
    shapes: Annotated[list[WidthShape], Field(min_length=1, max_length=3)] = ["constant", "funnel"]
    """How widths vary across layers: all equal, halving, or searched per layer."""
    activations: Annotated[list[Activation], Field(min_length=1, max_length=5)] = ["relu", "gelu"]
    """Activation functions to try."""
    dropout: FloatRange | None = None
    """Dropout to search over; when omitted, ``regularization.dropout`` is used."""
    batch_norm: Annotated[list[bool], Field(min_length=1, max_length=2)] = [False, True]
    """Whether hidden layers are batch-normalized; list both to search."""


ModelFamily = Literal["mlp", "linear", "lightgbm"]
FAMILIES: tuple[ModelFamily, ...] = ("lightgbm", "mlp", "linear")


class TreeSearchSpace(ApiModel):
    """The gradient-boosted tree ensembles (LightGBM) tuning may try."""

    trees: IntRange = Field(default_factory=lambda: IntRange(min=50, max=1000, log=True))
    """Most boosting rounds; fewer are kept when the validation loss stops falling."""
    leaves: IntRange = Field(default_factory=lambda: IntRange(min=4, max=64, log=True))
    """Leaves per tree."""
    learning_rate: FloatRange = Field(default_factory=lambda: FloatRange(min=0.01, max=0.3, log=True))
    """Shrinkage of each tree."""
    min_child_samples: IntRange = Field(default_factory=lambda: IntRange(min=3, max=50, log=True))
    """Fewest training rows in a leaf."""
    feature_fraction: FloatRange = Field(default_factory=lambda: FloatRange(min=0.5, max=1.0))
    """Share of features each tree may split on."""
    l2: FloatRange = Field(default_factory=lambda: FloatRange(min=0.001, max=10.0, log=True))
    """L2 regularization of leaf values."""


class ModelSpec(ApiModel):
    """The families of models searched."""

    family: Literal["auto", "mlp", "linear", "lightgbm"] = "auto"
    """Model family. ``auto`` (default) searches all of them, the family being one more tuned
    parameter; ``mlp``: a multilayer perceptron; ``linear``: L2-regularized logistic or ridge
    regression on the preprocessed features, fitted in closed form with its strength chosen by
    cross-validation; ``lightgbm``: gradient-boosted trees on the raw features. Every
    family is served as one ONNX graph with raw features in."""
    search: ArchitectureSearchSpace = Field(default_factory=ArchitectureSearchSpace)
    """MLP architecture search space (``mlp``)."""
    trees: TreeSearchSpace = Field(default_factory=TreeSearchSpace)
    """Tree ensemble search space (``lightgbm``)."""
    folds: Annotated[int, Field(ge=1, le=20)] | None = None
    """How trials are scored: k-fold cross-validation over training + validation rows, or 1 for
    the validation split alone. Unset: 5 folds up to 500 training + validation rows, 3 up to
    2,000, 1 above."""

    def families(self) -> tuple[ModelFamily, ...]:
        """The families tuning searches, most promising for tabular data first."""
        return FAMILIES if self.family == "auto" else (self.family,)


# --- tuning ------------------------------------------------------------------


class Objective(ApiModel):
    """One quantity tuning optimizes."""

    metric: Metric
    """accuracy, f1, rocAuc (classification); rmse, mae, r2 (regression); latencyMs (measured
    inference latency) or parameters (model size), both for either task."""
    direction: Direction | None = None
    """maximize or minimize; defaults to the metric's natural direction, which it must match."""

    cross_field_rules = (
        Rule(
            "!has(self.direction) || "
            f"self.direction == (self.metric in {_cel_list(MAXIMIZED_METRICS)} ? 'maximize' : 'minimize')",
            "direction contradicts the metric (accuracy, f1, rocAuc and r2 are maximized; the others minimized)",
            lambda m: m.direction is None or m.direction == natural_direction(m.metric),
            "direction",
        ),
    )


class HyperparameterSearchSpace(ApiModel):
    """Training hyperparameters tuning may try."""

    learning_rate: FloatRange = Field(default_factory=lambda: FloatRange(min=1e-4, max=1e-2, log=True))
    """Initial learning rate."""
    batch_size: Annotated[list[Annotated[int, Field(ge=1, le=65536)]], Field(min_length=1, max_length=16)] = [
        32,
        64,
        128,
    ]
    """Mini-batch sizes to try."""
    optimizers: Annotated[list[Literal["adamw", "sgd"]], Field(min_length=1, max_length=2)] = ["adamw"]
    """Optimizers to try."""
    weight_decay: FloatRange | None = None
    """Weight decay to search over; when omitted, ``regularization.weightDecay`` is used."""
    epochs: IntRange = Field(default_factory=lambda: IntRange(min=20, max=60))
    """Epoch budget per trial; early stopping may end a trial sooner."""
    schedules: Annotated[list[Literal["constant", "cosine"]], Field(min_length=1, max_length=2)] = ["cosine"]
    """Learning-rate schedules to try over the epoch budget."""


class StudyStorage(ApiModel):
    """Where trials are recorded, so a restarted or parallel tuning Job shares one study."""

    type: Literal["journal", "rdb"] = "journal"
    """``journal``: a journal file on the artifact location. ``rdb``: a SQL database (PostgreSQL)."""
    url_secret_ref: SecretKeyReference | None = None
    """With ``rdb``: the Secret key holding the database URL."""

    cross_field_rules = (
        Rule(
            "(self.type == 'rdb') == has(self.urlSecretRef)",
            "urlSecretRef is required for type rdb and not allowed for journal",
            lambda m: (m.type == "rdb") == (m.url_secret_ref is not None),
            "urlSecretRef",
        ),
    )


class TuningSpec(ApiModel):
    """Architecture and hyperparameter search with Optuna."""

    algorithm: Literal["grid", "random", "tpe", "gp", "cmaes", "nsga2"] = "tpe"
    """Sampler: grid, random, tpe (default), gp (Bayesian optimization), cmaes, or nsga2
    (several objectives)."""
    objectives: Annotated[list[Objective], Field(min_length=1, max_length=3)] | None = None
    """What to optimize; more than one makes the search multi-objective. Defaults to accuracy
    for classification and rmse for regression."""
    pruner: Literal["none", "median", "successiveHalving", "hyperband"] = "median"
    """Stops unpromising trials early from their per-epoch validation scores."""
    max_trials: Annotated[int, Field(ge=1, le=10_000)] = 30
    """Trials to run in total, across all workers."""
    parallel_trials: Annotated[int, Field(ge=1, le=64)] = 1
    """Trials run at once; above 1, the tuning Job runs that many worker pods."""
    timeout_seconds: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] = 3600
    """Wall-clock budget of the search; running trials finish, no new ones start."""
    grid_points: Annotated[int, Field(ge=2, le=20)] = 3
    """With ``grid``: points taken from each continuous range."""
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    """Sampler seed; defaults to ``dataset.seed``."""
    search: HyperparameterSearchSpace = Field(default_factory=HyperparameterSearchSpace)
    """Training hyperparameters to search."""
    study_storage: StudyStorage = Field(default_factory=StudyStorage)
    """Where trials are stored."""

    cross_field_rules = (
        Rule(
            "self.maxTrials >= self.parallelTrials",
            "maxTrials must be at least parallelTrials",
            lambda m: m.max_trials >= m.parallel_trials,
            "maxTrials",
        ),
        Rule(
            "!has(self.objectives) || size(self.objectives) == 1 || "
            "(self.algorithm != 'cmaes' && self.pruner == 'none')",
            "several objectives need an algorithm other than cmaes and pruner none",
            lambda m: m.objectives is None or len(m.objectives) == 1 or (m.algorithm != "cmaes" and m.pruner == "none"),
            "objectives",
        ),
        Rule(
            "self.algorithm != 'nsga2' || (has(self.objectives) && size(self.objectives) > 1)",
            "nsga2 is for several objectives; list at least two",
            lambda m: m.algorithm != "nsga2" or (m.objectives is not None and len(m.objectives) > 1),
            "algorithm",
        ),
        Rule(
            "!has(self.objectives) || self.objectives.all(a, self.objectives.exists_one(b, b.metric == a.metric))",
            "each metric may appear only once in objectives",
            lambda m: m.objectives is None or len({o.metric for o in m.objectives}) == len(m.objectives),
            "objectives",
        ),
    )


# --- regularization ----------------------------------------------------------


class EarlyStopping(ApiModel):
    """Stop a training run when the validation score stops improving, keeping the best weights."""

    enabled: bool = True
    """Whether to stop early."""
    patience: Annotated[int, Field(ge=1, le=1000)] = 8
    """Epochs without improvement before stopping."""
    min_delta: Annotated[float, Field(ge=0.0, le=1e6)] = 0.0
    """Smallest change that counts as an improvement."""
    monitor: Literal["loss", "accuracy", "f1", "rocAuc", "rmse", "mae", "r2"] = "loss"
    """Validation quantity watched."""


class RegularizationSpec(ApiModel):
    """Regularization applied in every training run."""

    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    """Fixed dropout when ``model.search.dropout`` is not searched (0 when neither is set)."""
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    """Fixed weight decay when ``tuning.search.weightDecay`` is not searched (0 when neither is set)."""
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    """Early stopping on a validation metric."""
    gradient_clip_norm: Annotated[float, Field(gt=0.0, le=1e6)] | None = None
    """Clip gradients to this global norm; no clipping when omitted."""


# --- compression -------------------------------------------------------------


class PruneStep(ApiModel):
    """Remove weights (unstructured) or whole neurons (structured), then fine-tune."""

    method: Literal["structured", "unstructured"] = "structured"
    """``structured`` removes neurons and really shrinks the model; ``unstructured`` zeroes
    single weights, which dense kernels do not run faster."""
    amount: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    """Fraction of neurons (structured) or weights (unstructured) removed."""
    scope: Literal["global", "layer"] = "layer"
    """Rank importance across the whole model or within each layer."""
    fine_tune_epochs: Annotated[int, Field(ge=0, le=1000)] = 5
    """Training epochs after pruning."""


class QuantizeStep(ApiModel):
    """Lower the precision of the weights (and, for static int8, of activations)."""

    mode: Literal["dynamicInt8", "staticInt8", "fp16"] = "dynamicInt8"
    """ONNX Runtime dynamic or static int8 quantization, or half precision."""
    calibration_samples: Annotated[int, Field(ge=16, le=100_000)] = 256
    """With ``staticInt8``: training rows used to calibrate activation ranges."""


class DistillStep(ApiModel):
    """Train a smaller student on the teacher's soft targets and the true labels."""

    width_factor: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    """Student widths as a fraction of the teacher's (0.5 when neither this nor hiddenLayers is set)."""
    hidden_layers: Annotated[list[Annotated[int, Field(ge=1, le=65536)]], Field(min_length=1, max_length=16)] | None = (
        None
    )
    """Explicit student hidden-layer widths."""
    temperature: Annotated[float, Field(gt=0.0, le=100.0)] = 4.0
    """Softmax temperature of the soft targets."""
    alpha: Fraction = 0.7
    """Weight of the soft-target loss; the true-label loss gets ``1 - alpha``."""
    epochs: Annotated[int, Field(ge=1, le=10_000)] = 30
    """Student training epochs."""

    cross_field_rules = (
        Rule(
            "!(has(self.widthFactor) && has(self.hiddenLayers))",
            "set widthFactor or hiddenLayers, not both",
            lambda m: m.width_factor is None or m.hidden_layers is None,
            "widthFactor",
        ),
    )


class CompressionStep(ApiModel):
    """One compression step; exactly one of its members is set."""

    prune: PruneStep | None = None
    """Pruning."""
    quantize: QuantizeStep | None = None
    """Quantization."""
    distill: DistillStep | None = None
    """Knowledge distillation."""

    cross_field_rules = (
        Rule(
            "(has(self.prune) ? 1 : 0) + (has(self.quantize) ? 1 : 0) + (has(self.distill) ? 1 : 0) == 1",
            "a step sets exactly one of prune, quantize and distill",
            lambda m: sum(x is not None for x in (m.prune, m.quantize, m.distill)) == 1,
        ),
    )

    @property
    def kind(self) -> str:
        """``prune``, ``quantize`` or ``distill``."""
        return "prune" if self.prune else "quantize" if self.quantize else "distill"


class CompressionGates(ApiModel):
    """Limits a compressed candidate must meet to be chosen."""

    max_metric_drop: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    """Largest loss on the primary objective against the uncompressed baseline: accuracy
    points for classification, error increase for regression."""
    metric_drop_mode: Literal["absolute", "relative"] = "absolute"
    """Whether maxMetricDrop is in the metric's units or a fraction of the baseline's value."""
    max_latency_p95_ms: Annotated[float, Field(gt=0.0, le=600_000.0)] | None = None
    """Largest p95 latency at batch size 1, in milliseconds."""
    max_size_bytes: Annotated[int, Field(ge=1, le=2**40)] | None = None
    """Largest model file size."""


class CompressionSpec(ApiModel):
    """Compress the tuned model and keep the best candidate that passes the gates."""

    steps: Annotated[list[CompressionStep], Field(max_length=8)] = [
        CompressionStep(prune=PruneStep()),
        CompressionStep(quantize=QuantizeStep()),
    ]
    """Steps applied in order, each to the previous step's output. Every intermediate result
    is a candidate, and so is the uncompressed baseline."""
    gates: CompressionGates = Field(default_factory=CompressionGates)
    """Limits candidates must meet."""
    selection: Literal["fastest", "smallest", "mostAccurate"] = "fastest"
    """Which passing candidate wins; ties go to the smaller, then to the earlier candidate."""
    latency_batch_size: Annotated[int, Field(ge=1, le=65536)] = 64
    """Batch size of the second latency measurement (the first is batch size 1)."""


# --- deployment --------------------------------------------------------------

DeploymentMode = Literal["auto", "standard", "knative"]
ServingMode = Literal["standard", "knative"]
"""A deployment mode as KServe runs it: ``auto`` resolved."""
ScaleMetric = Literal["concurrency", "rps", "cpu", "memory"]
REQUEST_METRICS: tuple[ScaleMetric, ...] = ("concurrency", "rps")
RESOURCE_METRICS: tuple[ScaleMetric, ...] = ("cpu", "memory")
DEFAULT_SCALE_TARGET: dict[ScaleMetric, int] = {"concurrency": 10, "rps": 100, "cpu": 80, "memory": 80}
"""The target per replica when ``scaleTarget`` is omitted: requests in flight, requests per
second, or percent of the requested CPU or memory (KServe's own CPU default is 80%)."""

HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
Hostname = Annotated[str, Field(min_length=1, max_length=253, pattern=HOSTNAME_PATTERN)]
DnsLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]


class CanaryAnalysis(ApiModel):
    """When a canary revision is promoted to all traffic."""

    window_seconds: Annotated[int, Field(ge=30, le=86_400)] = 300
    """How long the canary must stay healthy."""
    max_error_rate: Fraction = 0.01
    """Largest share of failed requests."""
    max_latency_p95_ms: Annotated[float, Field(gt=0.0, le=600_000.0)] | None = None
    """Largest p95 request latency; defaults to the compression gate when that is set."""
    probe_requests_per_second: Annotated[float, Field(gt=0.0, le=1000.0)] = 5.0
    """Blue/green only: the rate of synthetic requests (rows of the revision's training
    reference) sent to the new revision during its analysis, since it gets no user traffic."""


class GatewayReference(ApiModel):
    """The Gateway API ``Gateway`` (or one of its listeners) that the HTTPRoute attaches to."""

    name: ObjectName
    """Name of the Gateway."""
    namespace: DnsLabel | None = None
    """Its namespace; the resource's own when omitted. The Gateway's ``allowedRoutes`` decides
    whether it accepts routes from this namespace."""
    section_name: DnsLabel | None = None
    """One listener of the Gateway; every listener that allows the route when omitted."""


class BatcherSpec(ApiModel):
    """KServe's request batcher: its agent sidecar gathers single v1 ``:predict`` requests into
    one batch for the predictor and splits the answers again."""

    max_batch_size: Annotated[int, Field(ge=1, le=4096)] = 32
    """A batch is sent once it holds this many rows."""
    max_latency_ms: Annotated[int, Field(ge=1, le=10_000)] = 50
    """A batch is sent at the latest this many milliseconds after its first request arrived,
    full or not: the most latency batching adds to a request."""


class ModeRule:
    """A rule on ``spec.deployment`` whose verdict depends on the deployment mode.

    ``check(deployment, mode)`` takes the spec's mode, ``auto`` included (then it passes exactly
    when ``cel`` does, so the API server and ``optiloop validate`` agree), or the mode the
    operator resolved from the cluster, which applies it to an ``auto`` resource at reconcile.
    """

    def __init__(self, cel: str, message: str, check: Callable[[DeploymentSpec, str], bool], field: str) -> None:
        self.cel, self.message, self.check, self.field = cel, message, check, field

    def rule(self) -> Rule:
        """The :class:`Rule` the CRD and ``optiloop validate`` apply with the spec's own mode."""
        return Rule(self.cel, self.message, lambda m: self.check(m, m.mode), self.field)


def effective_scale_metric(deployment: DeploymentSpec, mode: str) -> ScaleMetric:
    """The metric the autoscaler follows: the spec's, else concurrency under Knative and CPU in
    Standard mode (what each autoscaler scales on by default)."""
    if deployment.scale_metric is not None:
        return deployment.scale_metric
    return "concurrency" if mode == "knative" else "cpu"


def effective_scale_target(deployment: DeploymentSpec, mode: str) -> int:
    """The per-replica target: the spec's, else the default of the effective metric."""
    if deployment.scale_target is not None:
        return deployment.scale_target
    return DEFAULT_SCALE_TARGET[effective_scale_metric(deployment, mode)]


MODE_RULES: tuple[ModeRule, ...] = (
    ModeRule(
        "self.mode != 'standard' || !has(self.scaleMetric) || !(self.scaleMetric in ['concurrency', 'rps']) || "
        "(has(self.autoscalerClass) && self.autoscalerClass == 'keda')",
        "concurrency and rps need autoscalerClass keda in Standard mode: its default autoscaler is a "
        "HorizontalPodAutoscaler, which scales on cpu or memory only (KServe silently replaces the metric "
        "with cpu 80%)",
        lambda d, mode: mode != "standard" or d.scale_metric not in REQUEST_METRICS or d.autoscaler_class == "keda",
        "scaleMetric",
    ),
    ModeRule(
        "self.mode != 'knative' || !has(self.autoscalerClass)",
        "autoscalerClass chooses the autoscaler of KServe's Standard mode; in Knative mode Knative scales "
        "the predictor (concurrency, rps, or its HPA class for cpu and memory)",
        lambda d, mode: mode != "knative" or d.autoscaler_class is None,
        "autoscalerClass",
    ),
    ModeRule(
        "self.minReplicas > 0 || self.mode != 'standard'",
        "Standard mode cannot scale to zero: its HorizontalPodAutoscaler keeps at least one replica "
        "(KServe turns 0 into 1), and KEDA would wake a predictor only on a metric that exists while none "
        "runs; use mode knative for scale to zero",
        lambda d, mode: d.min_replicas > 0 or mode != "standard",
        "minReplicas",
    ),
    ModeRule(
        "!has(self.scaleTarget) || self.scaleTarget <= 100 || "
        "(has(self.scaleMetric) ? !(self.scaleMetric in ['cpu', 'memory']) : self.mode != 'standard')",
        "a cpu or memory scaleTarget is a percentage (1-100); Standard mode scales on cpu when scaleMetric is omitted",
        lambda d, mode: (
            d.scale_target is None
            or d.scale_target <= 100
            or (d.scale_metric not in RESOURCE_METRICS if d.scale_metric is not None else mode != "standard")
        ),
        "scaleTarget",
    ),
    ModeRule(
        "self.mode != 'knative' || (!has(self.gateway) && (!has(self.hostnames) || size(self.hostnames) == 0))",
        "gateway and hostnames configure the HTTPRoute that splits a canary's traffic in Standard mode; "
        "in Knative mode Knative routes the traffic",
        lambda d, mode: mode != "knative" or (d.gateway is None and not d.hostnames),
        "gateway",
    ),
)


class DeploymentSpec(ApiModel):
    """How the chosen model is served through KServe."""

    runtime: Literal["onnx", "optiloop"] = "optiloop"
    """``onnx``: KServe's ONNX runtime. ``optiloop``: optiloop's predictor, which also validates
    requests against the model's metadata and exports per-model metrics."""
    storage_uri: StorageURI
    """Artifact location: every revision's trials, reports and models are written below it,
    and KServe loads the served model from it."""
    storage_credentials_secret_ref: SecretReference | None = None
    """Secret with S3 credentials when storageUri is ``s3://``."""
    mode: DeploymentMode = "auto"
    """KServe's deployment mode. ``standard``: a Deployment, a Service and an autoscaler per
    predictor (KServe's "RawDeployment"). ``knative``: a Knative Service (KServe's "Serverless";
    needs Knative Serving). ``auto``: what the cluster's KServe does for an InferenceService
    without a choice: this resource's ``serving.kserve.io/deploymentMode`` annotation, else the
    ``defaultDeploymentMode`` of KServe's ``inferenceservice-config`` ConfigMap."""
    min_replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Fewest predictor replicas; 0 allows scale to zero (Knative mode only)."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 3
    """Most predictor replicas."""
    autoscaler_class: Literal["hpa", "keda"] | None = None
    """Standard mode's autoscaler (KServe's ``serving.kserve.io/autoscalerClass``): ``hpa`` (the
    default) scales on cpu or memory; ``keda`` also scales on concurrency or rps, read from the
    predictor's own metrics in Prometheus (needs KEDA installed)."""
    scale_metric: ScaleMetric | None = None
    """Metric the autoscaler follows; concurrency under Knative, cpu in Standard mode when omitted."""
    scale_target: Annotated[int, Field(ge=1, le=100_000)] | None = None
    """Target value of scaleMetric per replica (percent for cpu and memory); 10 for concurrency,
    100 for rps and 80 for cpu and memory when omitted."""
    batcher: BatcherSpec | None = None
    """KServe's request batcher in front of the predictor (runtime ``optiloop``); none when omitted."""
    canary_traffic_percent: Annotated[int, Field(ge=1, le=99)] = 10
    """Traffic a retrained revision gets before it is promoted."""
    canary_method: Literal["auto", "trafficSplit", "blueGreen"] = "auto"
    """How a retrained revision is tried. ``trafficSplit``: it gets canaryTrafficPercent of the
    requests (Knative's traffic split, or in Standard mode an HTTPRoute with weights; needs the
    Gateway API and a gateway); a revision waits while no split is available. ``blueGreen``: it
    runs beside the serving revision with no user traffic, is analysed on synthetic requests made
    from its training reference, and takes all traffic only if it passes. ``auto``: a traffic split
    where the cluster has one, else blue/green (the TrafficSplit condition says which and why)."""
    gateway: GatewayReference | None = None
    """Standard mode: the Gateway that the resource's HTTPRoute attaches to; the operator's
    configured gateway when omitted."""
    hostnames: Annotated[list[Hostname], Field(max_length=16)] = []
    """Standard mode: host names the HTTPRoute answers for; every host of the gateway's listener
    when empty."""
    canary_analysis: CanaryAnalysis = Field(default_factory=CanaryAnalysis)
    """Promotion criteria for a canary."""
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    """Predictor container resources."""

    cross_field_rules = (
        Rule(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas must not exceed maxReplicas",
            lambda m: m.min_replicas <= m.max_replicas,
            "minReplicas",
        ),
        Rule(
            "!has(self.storageCredentialsSecretRef) || self.storageUri.startsWith('s3://')",
            "storageCredentialsSecretRef applies only to s3:// URIs",
            lambda m: m.storage_credentials_secret_ref is None or m.storage_uri.startswith("s3://"),
            "storageCredentialsSecretRef",
        ),
        Rule(
            "self.minReplicas > 0 || !has(self.scaleMetric) || self.scaleMetric in ['concurrency', 'rps']",
            "scale to zero needs Knative's autoscaler on concurrency or rps; cpu and memory scale with a "
            "HorizontalPodAutoscaler, which keeps one replica",
            lambda m: m.min_replicas > 0 or m.scale_metric is None or m.scale_metric in REQUEST_METRICS,
            "minReplicas",
        ),
        Rule(
            "!has(self.autoscalerClass) || self.autoscalerClass != 'keda' || !has(self.scaleMetric) || "
            "!(self.scaleMetric in ['concurrency', 'rps']) || self.runtime == 'optiloop'",
            "KEDA scales on concurrency or rps from optiloop's predictor metrics; runtime onnx (Triton) does "
            "not export them: use cpu or memory, or runtime optiloop",
            lambda m: m.autoscaler_class != "keda" or m.scale_metric not in REQUEST_METRICS or m.runtime == "optiloop",
            "autoscalerClass",
        ),
        Rule(
            "!has(self.batcher) || self.runtime == 'optiloop'",
            "KServe's batcher batches v1 :predict requests only; runtime onnx (Triton) speaks v2 and batches "
            "on its own",
            lambda m: m.batcher is None or m.runtime == "optiloop",
            "batcher",
        ),
        *(rule.rule() for rule in MODE_RULES),
    )

    def mode_conflicts(self, mode: ServingMode) -> list[tuple[str, str]]:
        """``(field, message)`` of every mode rule this spec breaks once ``mode`` is known (for an
        ``auto`` resource, the mode the operator resolved; field paths below ``spec.deployment``)."""
        return [(rule.field, rule.message) for rule in MODE_RULES if not rule.check(self, mode)]


# --- monitoring --------------------------------------------------------------


TEMPLATE_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class PrometheusSpec(ApiModel):
    """Where drift metrics are read from. The platform team decides: the operator's own
    Prometheus and default queries unless its configuration allows otherwise."""

    url: Annotated[str, Field(max_length=512, pattern=r"^https?://[^\s/@]+(/[^\s@]*)?$")] | None = None
    """Prometheus base URL; the operator's own when omitted. Accepted only when the operator's
    configuration allows it (chart value ``prometheus.tenantUrlAllowlist``), never the API
    server or a link-local address."""
    query_template: (
        Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")] | None
    ) = None
    """Name of a drift query the operator's configuration offers (chart value
    ``prometheus.queryTemplates``), in place of the default one; tenants cannot write PromQL."""


class RetrainingPolicy(ApiModel):
    """When drift leads to a new revision."""

    on_drift: bool = True
    """Retrain when drift is sustained."""
    consecutive_evaluations: Annotated[int, Field(ge=1, le=1000)] = 3
    """Drifting evaluations in a row needed to retrain."""
    cooldown_seconds: Annotated[int, Field(ge=0, le=30 * 86_400)] = 3600
    """Least time between two retrains."""
    max_retrains: Annotated[int, Field(ge=0, le=10_000)] = 10
    """Most drift-triggered retrains over the resource's life."""
    schedule: Annotated[str, Field(max_length=128, pattern=cron.SHAPE_PATTERN)] | None = None
    """Schedule for retraining regardless of drift, in a CronJob's syntax (UTC): five fields
    (``0 3 * * MON``) or a descriptor (``@daily``, ``@every 12h``). A scheduled time starts a
    new revision when one serves and none is being built."""

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            cron.parse(value)
        return value


class MonitoringSpec(ApiModel):
    """Drift detection on live inputs and the retraining it triggers."""

    enabled: bool = True
    """Run a drift monitor for the served model."""
    detector: Literal["tabular", "ks", "cvm", "mmd"] = "tabular"
    """``tabular``: KS for numeric and chi-square for categorical features; ``ks``; ``cvm``
    (Cramér-von Mises); ``mmd`` (maximum mean discrepancy, for windows up to 2000 rows)."""
    p_value: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.05
    """Significance level of the test."""
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    """Multiple-testing correction across features."""
    window_size: Annotated[int, Field(ge=10, le=100_000)] = 500
    """Rows compared with the reference at each check."""
    window: Literal["sliding", "tumbling"] = "sliding"
    """A sliding window over the latest rows, or consecutive disjoint windows."""
    evaluation_interval_seconds: Annotated[int, Field(ge=5, le=86_400)] = 60
    """How often the operator reads the drift metrics."""
    prometheus: PrometheusSpec = Field(default_factory=PrometheusSpec)
    """Prometheus settings."""
    retraining: RetrainingPolicy = Field(default_factory=RetrainingPolicy)
    """Retraining policy."""

    cross_field_rules = (
        Rule(
            "self.detector != 'mmd' || self.windowSize <= 2000",
            "mmd costs grow quadratically: windowSize must be at most 2000",
            lambda m: m.detector != "mmd" or m.window_size <= 2000,
            "windowSize",
        ),
    )


# --- jobs --------------------------------------------------------------------

LabelKey = Annotated[
    str, Field(min_length=1, max_length=253, pattern=r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
]
LabelValue = Annotated[str, Field(max_length=63, pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")]


class JobsSpec(ApiModel):
    """Resources, placement and retries of the tuning and compression Jobs. Images, service
    accounts and security settings come from the operator's configuration, never from here."""

    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    """Resources of each Job pod."""
    node_selector: Annotated[dict[LabelKey, LabelValue], Field(max_length=16)] = {}
    """Node labels the Job pods must run on."""
    backoff_limit: Annotated[int, Field(ge=0, le=10)] = 1
    """Pod retries before a Job counts as failed."""
    active_deadline_seconds: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] | None = None
    """Hard time limit of each Job."""


# --- the spec ----------------------------------------------------------------


class ModelOptimizationSpec(ApiModel):
    """The desired optimization loop for one model."""

    dataset: DatasetSpec
    """The training data."""
    data_quality: DataQualitySpec = Field(default_factory=DataQualitySpec)
    """Data-quality gate."""
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    """Feature engineering."""
    model: ModelSpec = Field(default_factory=ModelSpec)
    """Model family and architecture search space."""
    tuning: TuningSpec = Field(default_factory=TuningSpec)
    """Hyperparameter and architecture search."""
    regularization: RegularizationSpec = Field(default_factory=RegularizationSpec)
    """Regularization in every training run."""
    compression: CompressionSpec = Field(default_factory=CompressionSpec)
    """Compression and its gates."""
    deployment: DeploymentSpec
    """Serving through KServe, and where artifacts are stored."""
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    """Drift monitoring and retraining."""
    jobs: JobsSpec = Field(default_factory=JobsSpec)
    """Settings of the Jobs that run the stages."""

    cross_field_rules = (
        Rule(
            "!has(self.tuning) || !has(self.tuning.objectives) || "
            "self.tuning.objectives.all(o, o.metric in (self.dataset.task == 'regression' ? "
            f"{_cel_list(REGRESSION_METRICS)} : {_cel_list(CLASSIFICATION_METRICS)}))",
            "an objective's metric does not fit dataset.task (classification: accuracy, f1, rocAuc; "
            "regression: rmse, mae, r2; either: latencyMs, parameters)",
            lambda m: all(
                o.metric in (REGRESSION_METRICS if m.dataset.task == "regression" else CLASSIFICATION_METRICS)
                for o in m.tuning.objectives or ()
            ),
            "tuning.objectives",
        ),
        Rule(
            "!has(self.regularization) || !has(self.regularization.earlyStopping) || "
            "!has(self.regularization.earlyStopping.monitor) || "
            "self.regularization.earlyStopping.monitor in (self.dataset.task == 'regression' ? "
            f"{_cel_list(REGRESSION_MONITORS)} : {_cel_list(CLASSIFICATION_MONITORS)})",
            "earlyStopping.monitor does not fit dataset.task",
            lambda m: (
                m.regularization.early_stopping.monitor
                in (REGRESSION_MONITORS if m.dataset.task == "regression" else CLASSIFICATION_MONITORS)
            ),
            "regularization.earlyStopping.monitor",
        ),
        Rule(
            "!has(self.regularization) || !has(self.regularization.dropout) || !has(self.model) || "
            "!has(self.model.search) || !has(self.model.search.dropout)",
            "set dropout either as regularization.dropout or as model.search.dropout, not both",
            lambda m: m.regularization.dropout is None or m.model.search.dropout is None,
            "regularization.dropout",
        ),
        Rule(
            # Here rather than on IntRange: widths need >= 1, other integer ranges may start at 0.
            "!has(self.model) || !has(self.model.search) || !has(self.model.search.width) || "
            "self.model.search.width.min >= 1",
            "must be at least 1: a hidden layer needs at least one unit",
            lambda m: m.model.search.width.min >= 1,
            "model.search.width.min",
        ),
        Rule(
            "!has(self.regularization) || !has(self.regularization.weightDecay) || !has(self.tuning) || "
            "!has(self.tuning.search) || !has(self.tuning.search.weightDecay)",
            "set weightDecay either as regularization.weightDecay or as tuning.search.weightDecay, not both",
            lambda m: m.regularization.weight_decay is None or m.tuning.search.weight_decay is None,
            "regularization.weightDecay",
        ),
    )

    def objectives(self) -> list[Objective]:
        """The tuning objectives, with the task's default metric when none are given."""
        if self.tuning.objectives:
            return list(self.tuning.objectives)
        return [Objective(metric=DEFAULT_METRIC[self.dataset.task])]
