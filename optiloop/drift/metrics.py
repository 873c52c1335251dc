"""The monitor's Prometheus metrics, labelled by namespace, model and revision.

| metric | type | meaning |
|---|---|---|
| ``optiloop_drift_p_value`` | gauge | smallest p-value of the latest evaluation |
| ``optiloop_drift_feature_p_value{feature}`` | gauge | p-value of the 5 most drifted features |
| ``optiloop_drift_distance`` | gauge | largest feature distance (or MMD²) |
| ``optiloop_drift_threshold`` | gauge | p-value threshold after correction |
| ``optiloop_drift_detected`` | gauge | 1 when the latest evaluation found drift |
| ``optiloop_drift_window_samples`` | gauge | rows in the current window |
| ``optiloop_drift_events_total{outcome}`` | counter | events accepted, ignored (responses, other revisions), rejected |
| ``optiloop_drift_rows_total`` | counter | rows accepted into the window |
| ``optiloop_drift_evaluations_total`` | counter | evaluations run |
| ``optiloop_drift_evaluation_seconds`` | histogram | time per evaluation |
| ``optiloop_drift_last_evaluation_timestamp_seconds`` | gauge | Unix time of the latest evaluation |

The operator's default query: ``max by (namespace, model, revision)
(optiloop_drift_detected{namespace="<ns>", model="<name>", revision="<rev>"})``. It is 1 when
the latest window drifted; the operator counts consecutive evaluations itself.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..formats.metrics import DRIFT_DETECTED, DRIFT_LABELS, default_drift_query
from .detectors import DriftResult

LABELS = DRIFT_LABELS
TOP_FEATURES = 5


def default_query(namespace: str, model: str, revision: int | str) -> str:
    """The PromQL query the operator runs for one resource's serving revision."""
    return default_drift_query(namespace, model, revision)


class DriftMetrics:
    """The monitor's metrics in their own registry, for one (namespace, model, revision)."""

    def __init__(self, namespace: str, model: str, revision: int | str) -> None:
        self.registry = CollectorRegistry()
        self.labels = {"namespace": namespace, "model": model, "revision": str(revision)}
        r = self.registry
        self.p_value = Gauge("optiloop_drift_p_value", "Smallest p-value of the latest evaluation.", LABELS, registry=r)
        self.feature_p_value = Gauge(
            "optiloop_drift_feature_p_value",
            "p-value of the most drifted features in the latest evaluation.",
            (*LABELS, "feature"),
            registry=r,
        )
        self.distance = Gauge("optiloop_drift_distance", "Largest feature distance (or MMD^2).", LABELS, registry=r)
        self.threshold = Gauge("optiloop_drift_threshold", "p-value threshold after correction.", LABELS, registry=r)
        self.detected = Gauge(DRIFT_DETECTED, "1 when the latest evaluation found drift.", LABELS, registry=r)
        self.samples = Gauge("optiloop_drift_window_samples", "Rows in the current window.", LABELS, registry=r)
        self.events = Counter(
            "optiloop_drift_events",
            "Events by outcome: accepted, ignored or rejected.",
            (*LABELS, "outcome"),
            registry=r,
        )
        self.rows = Counter("optiloop_drift_rows", "Rows accepted into the window.", LABELS, registry=r)
        self.evaluations = Counter("optiloop_drift_evaluations", "Evaluations run.", LABELS, registry=r)
        self.seconds = Histogram(
            "optiloop_drift_evaluation_seconds",
            "Time per evaluation.",
            LABELS,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.last = Gauge(
            "optiloop_drift_last_evaluation_timestamp_seconds",
            "Unix time of the latest evaluation.",
            LABELS,
            registry=r,
        )
        self._offenders: set[str] = set()
        for outcome in ("accepted", "ignored", "rejected"):
            self.events.labels(**self.labels, outcome=outcome)
        self.samples.labels(**self.labels).set(0)

    def event(self, outcome: str, rows: int = 0) -> None:
        self.events.labels(**self.labels, outcome=outcome).inc()
        if rows:
            self.rows.labels(**self.labels).inc(rows)

    def window(self, samples: int) -> None:
        self.samples.labels(**self.labels).set(samples)

    def evaluation(self, result: DriftResult) -> None:
        labels = self.labels
        self.p_value.labels(**labels).set(result.p_value)
        self.distance.labels(**labels).set(result.distance)
        self.threshold.labels(**labels).set(result.threshold)
        self.detected.labels(**labels).set(1 if result.is_drift else 0)
        self.evaluations.labels(**labels).inc()
        self.seconds.labels(**labels).observe(result.seconds)
        self.last.labels(**labels).set(time.time())
        offenders = dict(result.top_offenders(TOP_FEATURES))
        for feature in self._offenders - set(offenders):
            self.feature_p_value.remove(*labels.values(), feature)
        for feature, p_value in offenders.items():
            self.feature_p_value.labels(**labels, feature=feature).set(p_value)
        self._offenders = set(offenders)
