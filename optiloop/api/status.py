"""``ModelOptimization.status``: what the operator observed, never what it intends.

Conditions have the ``metav1.Condition`` shape and are keyed by type. The stage
conditions roll up into ``Ready``; a reader (kubectl, Argo CD) trusts ``Ready`` only
when its ``observedGeneration`` equals ``metadata.generation``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from ._base import ApiModel
from .spec import Metric, ScaleMetric
from .uris import StorageURI

ConditionType = Literal[
    "DataValidated", "Tuned", "Compressed", "Deployed", "TrafficSplit", "DriftWithinBounds", "Ready"
]
CONDITION_TYPES: tuple[ConditionType, ...] = (
    "DataValidated",
    "Tuned",
    "Compressed",
    "Deployed",
    "TrafficSplit",
    "DriftWithinBounds",
    "Ready",
)

Phase = Literal[
    "Pending",
    "ValidatingData",
    "Tuning",
    "Compressing",
    "Deploying",
    "Canary",
    "Serving",
    "Retraining",
    "Failed",
]

Reason = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
Message = Annotated[str, Field(max_length=32768)]
Revision = Annotated[int, Field(ge=0, le=1_000_000)]
Generation = Annotated[int, Field(ge=0)]

HISTORY_LIMIT = 20
"""Revisions kept in ``status.history``; older ones are dropped first."""


class Condition(ApiModel):
    """One aspect of the resource's state, in the shape of ``metav1.Condition``."""

    type: ConditionType
    """DataValidated, Tuned, Compressed, Deployed, TrafficSplit (whether a canary gets only its
    share of the traffic, and how), DriftWithinBounds, or Ready (the roll-up)."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: Reason
    """CamelCase reason for the last transition, for machines."""
    message: Message = ""
    """Human-readable details."""
    last_transition_time: datetime
    """When status last changed."""
    observed_generation: Generation | None = None
    """The ``metadata.generation`` this condition was computed for."""


class ParameterValue(ApiModel):
    """One hyperparameter of a trial, rendered as text."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    """Parameter name, for example ``learning_rate`` or ``layer_0_width``."""
    value: Annotated[str, Field(max_length=256)]
    """Its value."""


class ObjectiveValue(ApiModel):
    """A measured value of one objective."""

    metric: Metric
    """Which metric."""
    value: float
    """Its value on the validation split."""


class BestTrial(ApiModel):
    """The winning tuning trial (the first of the Pareto front for several objectives)."""

    number: Annotated[int, Field(ge=0)]
    """Optuna's trial number."""
    values: Annotated[list[ObjectiveValue], Field(max_length=3)] = []
    """Objective values."""
    params: Annotated[list[ParameterValue], Field(max_length=64)] = []
    """Hyperparameters."""
    trials_completed: Annotated[int, Field(ge=0)] | None = None
    """Trials finished in the study."""
    pareto_front_size: Annotated[int, Field(ge=0)] | None = None
    """Trials on the Pareto front (several objectives only)."""


class ModelMetrics(ApiModel):
    """Measurements of the chosen model on the test split and the serving runtime."""

    candidate: Annotated[str, Field(max_length=128)]
    """Compression candidate that was chosen, for example ``baseline`` or ``prune+quantize``."""
    primary_metric: Metric
    """The first objective's metric."""
    primary_value: float
    """Its value on the test split."""
    latency_p50_ms: Annotated[float, Field(ge=0.0)] | None = None
    """Median latency at batch size 1."""
    latency_p95_ms: Annotated[float, Field(ge=0.0)] | None = None
    """95th-percentile latency at batch size 1."""
    size_bytes: Annotated[int, Field(ge=0)] | None = None
    """Model file size."""
    parameters: Annotated[int, Field(ge=0)] | None = None
    """Parameter count."""
    gates_passed: bool | None = None
    """False when no compressed candidate passed the gates and the baseline is served."""


class ArtifactLocations(ApiModel):
    """Where the current revision's outputs are."""

    tuning: StorageURI | None = None
    """Tuning outputs: trials, best model, preprocessing, data-quality report."""
    compression: StorageURI | None = None
    """Compression report and candidates."""
    model: StorageURI | None = None
    """The served model directory."""


CanaryMethod = Literal["KnativeTraffic", "GatewayAPI", "BlueGreen"]
"""How a retrained revision is tried: KServe's ``canaryTrafficPercent`` under Knative, an
HTTPRoute with weights in front of one InferenceService per revision, or blue/green (no user
traffic until it passed its analysis on synthetic requests)."""


class ServingStatus(ApiModel):
    """How KServe serves the model on this cluster, as the operator resolved it."""

    mode: Literal["Standard", "Knative"]
    """KServe's deployment mode in effect."""
    mode_source: Literal["spec", "annotation", "kserveConfig"]
    """Where the mode came from: spec.deployment.mode, the resource's
    ``serving.kserve.io/deploymentMode`` annotation, or KServe's ``inferenceservice-config``."""
    canary_method: CanaryMethod | None = None
    """How a retrained revision is tried; none while the spec asks for a traffic split the
    cluster cannot do (see the TrafficSplit condition)."""
    autoscaler: Literal["kpa", "knativeHpa", "hpa", "keda"]
    """The autoscaler: Knative's (KPA) or its HPA class, a HorizontalPodAutoscaler, or KEDA."""
    scale_metric: ScaleMetric
    """The metric it follows."""
    scale_target: Annotated[int, Field(ge=1)]
    """Its target per replica."""
    route: Annotated[str, Field(max_length=253)] | None = None
    """The HTTPRoute in front of the revisions (Standard mode with the Gateway API)."""


Trigger = Literal["Created", "SpecChanged", "Drift", "Schedule"]
Outcome = Literal["InProgress", "Serving", "Promoted", "RolledBack", "Failed", "Superseded"]


class RevisionRecord(ApiModel):
    """What happened to one revision, from its trigger to its fate."""

    revision: Revision
    """Revision number, starting at 1."""
    trigger: Trigger
    """What started it."""
    outcome: Outcome = "InProgress"
    """Where it ended (or is)."""
    generation: Generation | None = None
    """The ``metadata.generation`` it was built from."""
    triggered_at: datetime
    """When the trigger was observed (for drift: when drift was confirmed)."""
    started_at: datetime | None = None
    """When its tuning Job was created."""
    tuned_at: datetime | None = None
    """When its tuning Job was seen to succeed."""
    compressed_at: datetime | None = None
    """When its compression Job was seen to succeed."""
    deployed_at: datetime | None = None
    """When it began serving (as a canary, for retrained revisions)."""
    promoted_at: datetime | None = None
    """When its canary was promoted to all traffic."""
    canary_method: CanaryMethod | None = None
    """How it was tried before promotion or rollback (retrained revisions)."""
    finished_at: datetime | None = None
    """When it reached a final outcome (rolled back, failed or superseded)."""
    best_trial: Annotated[int, Field(ge=0)] | None = None
    """Number of the winning trial."""
    candidate: Annotated[str, Field(max_length=128)] | None = None
    """Chosen compression candidate."""
    primary_value: float | None = None
    """Primary metric of the chosen model on the test split."""
    model: ModelMetrics | None = None
    """Measurements of the chosen model (copied to ``status.model`` while it serves)."""
    parent_revision: Revision | None = None
    """Revision that was serving when this one started."""
    fingerprint: Annotated[str, Field(max_length=64)] | None = None
    """Hash of the spec fields that shape the model; a spec change that alters it starts a new revision."""
    message: Message = ""
    """Why it ended as it did."""


class DriftStatus(ApiModel):
    """The latest drift evaluations and retraining bookkeeping."""

    last_evaluation_time: datetime | None = None
    """When Prometheus was last queried."""
    last_value: float | None = None
    """The query's last result (1 while drifting for the default query)."""
    consecutive_drifting: Annotated[int, Field(ge=0)] = 0
    """Drifting evaluations in a row."""
    retrains_triggered: Annotated[int, Field(ge=0)] = 0
    """Drift-triggered retrains so far."""
    last_retrain_time: datetime | None = None
    """When the last retrain started (for the cooldown)."""


class ModelOptimizationStatus(ApiModel):
    """Observed state of a ModelOptimization."""

    observed_generation: Generation | None = None
    """The ``metadata.generation`` the status was last computed for."""
    phase: Phase | None = None
    """Summary for display; use conditions to make decisions."""
    conditions: Annotated[list[Condition], Field(max_length=16)] = []
    """Latest observations, one per type."""
    revision: Revision | None = None
    """Revision being built or served."""
    serving_revision: Revision | None = None
    """Revision receiving (most of the) traffic."""
    best_trial: BestTrial | None = None
    """Winning trial of the current revision."""
    model: ModelMetrics | None = None
    """Metrics of the served model."""
    artifacts: ArtifactLocations | None = None
    """Artifact URIs of the current revision."""
    url: Annotated[str, Field(max_length=2048)] | None = None
    """Where the model answers: the HTTPRoute's first host name, else the serving revision's
    InferenceService."""
    serving: ServingStatus | None = None
    """KServe's mode, the canary method and the autoscaling in effect."""
    drift: DriftStatus | None = None
    """Drift evaluations and retraining bookkeeping."""
    history: Annotated[list[RevisionRecord], Field(max_length=HISTORY_LIMIT)] = []
    """The latest revisions, oldest first."""

    def condition(self, type_: ConditionType) -> Condition | None:
        """The condition of the given type, if present."""
        return next((c for c in self.conditions if c.type == type_), None)
