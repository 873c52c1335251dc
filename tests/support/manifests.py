"""Example manifests and a table of malformed ones, shared by client-side and server-side tests.

Each malformed case is one edit to a valid manifest and the field path that both
``optiloop validate`` and the API server must name in their error.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
Manifest = dict[str, Any]


def load_example(name: str) -> Manifest:
    return dict(yaml.safe_load((REPO_ROOT / "examples" / name).read_text()))


def set_path(document: Manifest, path: str, value: Any) -> None:
    """Set ``spec.tuning.maxTrials``-style paths, creating mappings on the way."""
    *parents, leaf = path.split(".")
    node = document
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def delete_path(document: Manifest, path: str) -> None:
    *parents, leaf = path.split(".")
    node = document
    for part in parents:
        node = node[part]
    del node[leaf]


@dataclass(frozen=True)
class Malformed:
    id: str
    edits: Callable[[Manifest], None]
    field: str
    """The path the error must name, as ``kubectl`` prints it."""

    def manifest(self) -> Manifest:
        document = copy.deepcopy(load_example("minimal.yaml"))
        self.edits(document)
        return document


def _set(**paths: Any) -> Callable[[Manifest], None]:
    def edit(document: Manifest) -> None:
        for path, value in paths.items():
            set_path(document, path.replace("__", "."), value)

    return edit


def _delete(path: str) -> Callable[[Manifest], None]:
    return lambda document: delete_path(document, path)


MALFORMED: list[Malformed] = [
    Malformed("wrong-type", _set(spec__tuning__maxTrials="many"), "spec.tuning.maxTrials"),
    Malformed("integer-below-minimum", _set(spec__tuning__maxTrials=0), "spec.tuning.maxTrials"),
    Malformed("number-above-maximum", _set(spec__monitoring__pValue=1.5), "spec.monitoring.pValue"),
    Malformed("bad-enum", _set(spec__tuning__algorithm="annealing"), "spec.tuning.algorithm"),
    Malformed(
        "max-trials-below-parallel-trials",
        _set(spec__tuning__maxTrials=2, spec__tuning__parallelTrials=4),
        "spec.tuning.maxTrials",
    ),
    Malformed("unknown-field", _set(spec__dataset__bogus=1), "spec.dataset.bogus"),
    Malformed(
        "credentials-in-the-s3-endpoint",
        _set(
            spec__dataset__uri="s3://data/train.csv", spec__dataset__s3Endpoint="https://key:secret@minio.storage:9000"
        ),
        "spec.dataset.s3Endpoint",
    ),
    Malformed("unknown-section", _set(spec__training={"epochs": 3}), "spec.training"),
    Malformed(
        "bad-uri-scheme", _set(spec__deployment__storageUri="http://example.com/models"), "spec.deployment.storageUri"
    ),
    Malformed(
        "storage-path-traversal",
        _set(spec__deployment__storageUri="pvc://claim/../../etc"),
        "spec.deployment.storageUri",
    ),
    Malformed("dataset-path-traversal", _set(spec__dataset__uri="s3://bucket/a/../b.csv"), "spec.dataset.uri"),
    Malformed("too-long-string", _set(spec__dataset__target="x" * 300), "spec.dataset.target"),
    Malformed("missing-required-field", _delete("spec.deployment.storageUri"), "spec.deployment.storageUri"),
    Malformed(
        "split-does-not-add-up",
        _set(spec__dataset__split={"train": 0.8, "validation": 0.15, "test": 0.15}),
        "spec.dataset.split.train",
    ),
    Malformed(
        "step-with-two-kinds",
        _set(spec__compression__steps=[{"prune": {}, "quantize": {}}]),
        "spec.compression.steps[0]",
    ),
    Malformed(
        "gate-out-of-range", _set(spec__compression__gates__maxMetricDrop=2), "spec.compression.gates.maxMetricDrop"
    ),
    Malformed(
        "objective-does-not-fit-task",
        _set(
            spec__dataset__uri="builtin://diabetes",
            spec__dataset__task="regression",
            spec__tuning__objectives=[{"metric": "accuracy"}],
        ),
        "spec.tuning.objectives",
    ),
    Malformed(
        "min-replicas-above-max",
        _set(spec__deployment__minReplicas=5, spec__deployment__maxReplicas=2),
        "spec.deployment.minReplicas",
    ),
    Malformed(
        "canary-percent-100", _set(spec__deployment__canaryTrafficPercent=100), "spec.deployment.canaryTrafficPercent"
    ),
    Malformed("bad-deployment-mode", _set(spec__deployment__mode="serverless"), "spec.deployment.mode"),
    Malformed(
        "standard-mode-concurrency-without-keda",
        _set(spec__deployment__mode="standard", spec__deployment__scaleMetric="concurrency"),
        "spec.deployment.scaleMetric",
    ),
    Malformed(
        "knative-mode-with-autoscaler-class",
        _set(spec__deployment__mode="knative", spec__deployment__autoscalerClass="hpa"),
        "spec.deployment.autoscalerClass",
    ),
    Malformed(
        "standard-mode-scale-to-zero",
        _set(spec__deployment__mode="standard", spec__deployment__minReplicas=0),
        "spec.deployment.minReplicas",
    ),
    Malformed(
        "scale-to-zero-on-cpu",
        _set(spec__deployment__minReplicas=0, spec__deployment__scaleMetric="cpu"),
        "spec.deployment.minReplicas",
    ),
    Malformed(
        "standard-mode-default-cpu-target-above-100",
        _set(spec__deployment__mode="standard", spec__deployment__scaleTarget=500),
        "spec.deployment.scaleTarget",
    ),
    Malformed(
        "keda-rps-with-triton",
        _set(
            spec__deployment__runtime="onnx",
            spec__deployment__autoscalerClass="keda",
            spec__deployment__scaleMetric="rps",
        ),
        "spec.deployment.autoscalerClass",
    ),
    Malformed(
        "batcher-with-triton",
        _set(spec__deployment__runtime="onnx", spec__deployment__batcher={"maxBatchSize": 8}),
        "spec.deployment.batcher",
    ),
    Malformed(
        "batch-size-out-of-range",
        _set(spec__deployment__batcher={"maxBatchSize": 0}),
        "spec.deployment.batcher.maxBatchSize",
    ),
    Malformed(
        "knative-mode-with-gateway",
        _set(spec__deployment__mode="knative", spec__deployment__gateway={"name": "inference"}),
        "spec.deployment.gateway",
    ),
    Malformed("bad-hostname", _set(spec__deployment__hostnames=["Not A Host"]), "spec.deployment.hostnames[0]"),
    Malformed(
        "too-many-objectives",
        _set(spec__tuning__objectives=[{"metric": m} for m in ("accuracy", "f1", "rocAuc", "latencyMs")]),
        "spec.tuning.objectives",
    ),
    Malformed(
        "bad-quantity", _set(spec__jobs__resources={"requests": {"cpu": "lots"}}), "spec.jobs.resources.requests.cpu"
    ),
    Malformed("name-too-long", _set(metadata__name="a" * 45), "metadata.name"),
    Malformed("name-not-a-dns-label", _set(metadata__name="1-model"), "metadata.name"),
    Malformed(
        "credentials-for-pvc",
        _set(spec__dataset__credentialsSecretRef={"name": "store"}),
        "spec.dataset.credentialsSecretRef",
    ),
    Malformed(
        "rdb-without-secret", _set(spec__tuning__studyStorage={"type": "rdb"}), "spec.tuning.studyStorage.urlSecretRef"
    ),
    Malformed(
        "mmd-window-too-large",
        _set(spec__monitoring__detector="mmd", spec__monitoring__windowSize=5000),
        "spec.monitoring.windowSize",
    ),
    Malformed(
        "direction-contradicts-metric",
        _set(spec__tuning__objectives=[{"metric": "accuracy", "direction": "minimize"}]),
        "spec.tuning.objectives[0].direction",
    ),
    Malformed(
        "log-range-from-zero",
        _set(spec__tuning__search={"learningRate": {"min": 0, "max": 0.1, "log": True}}),
        "spec.tuning.search.learningRate.log",
    ),
    Malformed(
        "dropout-fixed-and-searched",
        _set(spec__regularization__dropout=0.1, spec__model__search={"dropout": {"min": 0.0, "max": 0.5}}),
        "spec.regularization.dropout",
    ),
    Malformed(
        "bad-secret-name",
        _set(spec__tuning__studyStorage={"type": "rdb", "urlSecretRef": {"name": "Bad_Name", "key": "url"}}),
        "spec.tuning.studyStorage.urlSecretRef.name",
    ),
    Malformed(
        "nested-unknown-field-in-list",
        _set(spec__compression__steps=[{"prune": {"amount": 0.5, "ratio": 2}}]),
        "spec.compression.steps[0].prune.ratio",
    ),
    Malformed("local-file-dataset", _set(spec__dataset__uri="file:///home/me/train.csv"), "spec.dataset.uri"),
    Malformed(
        "width-from-zero",
        _set(spec__model__search={"width": {"min": 0, "max": 64}}),
        "spec.model.search.width.min",
    ),
]


def maximal_manifest() -> Manifest:
    """A valid manifest that sets every optional field at least once (with a full status)."""
    document = load_example("breast-cancer.yaml")
    spec = document["spec"]
    spec["dataset"].update(
        uri="s3://datasets/cancer/train.parquet",
        format="parquet",
        categoricalColumns=["clinic"],
        credentialsSecretRef={"name": "dataset-reader"},
        s3Endpoint="http://minio.storage.svc:9000",
    )
    spec["features"]["selection"] = {"method": "mutualInfo", "maxFeatures": 12}
    spec["features"]["reduction"] = {"method": "pca", "components": 8}
    spec["model"]["search"].pop("dropout")
    spec["regularization"]["dropout"] = 0.1
    spec["regularization"].pop("weightDecay")
    spec["tuning"]["search"]["weightDecay"] = {"min": 1e-6, "max": 1e-2, "log": True}
    spec["tuning"].update(
        seed=11,
        algorithm="nsga2",
        pruner="none",
        objectives=[{"metric": "accuracy", "direction": "maximize"}, {"metric": "latencyMs"}],
        studyStorage={"type": "rdb", "urlSecretRef": {"name": "optuna-db", "key": "url"}},
    )
    spec["compression"]["steps"] = [
        {"prune": {"method": "unstructured", "amount": 0.3, "scope": "global", "fineTuneEpochs": 0}},
        {"distill": {"hiddenLayers": [64, 32], "temperature": 2.0, "alpha": 0.5, "epochs": 10}},
        {"quantize": {"mode": "staticInt8", "calibrationSamples": 128}},
    ]
    spec["deployment"].update(
        storageUri="s3://models/cancer",
        storageCredentialsSecretRef={"name": "model-store"},
        mode="standard",
        autoscalerClass="keda",
        scaleMetric="rps",
        scaleTarget=50,
        batcher={"maxBatchSize": 16, "maxLatencyMs": 20},
        canaryMethod="trafficSplit",
        gateway={"name": "inference", "namespace": "gateways", "sectionName": "http"},
        hostnames=["cancer.models.example.com"],
    )
    spec["deployment"]["canaryAnalysis"]["probeRequestsPerSecond"] = 2.5
    spec["monitoring"]["prometheus"] = {
        "url": "http://prometheus.monitoring.svc:9090",
        "queryTemplate": "feature-drift",
    }
    spec["monitoring"]["retraining"]["schedule"] = "0 3 * * SUN"
    spec["jobs"]["nodeSelector"] = {"kubernetes.io/arch": "amd64", "pool": "training"}
    document["status"] = full_status()
    return document


def round_trip_documents() -> dict[str, Manifest]:
    """Documents that, between them, set every optional field of every API model."""
    documents = {path.name: load_example(path.name) for path in EXAMPLES}
    documents["maximal"] = maximal_manifest()
    variant = maximal_manifest()
    variant["spec"]["features"]["reduction"] = {"method": "pca", "explainedVariance": 0.95}
    documents["maximal-pca-by-variance"] = variant
    return documents


def full_status() -> Manifest:
    t = "2026-11-27T10:00:00Z"
    return {
        "observedGeneration": 3,
        "phase": "Serving",
        "conditions": [
            {
                "type": kind,
                "status": "True",
                "reason": "Succeeded",
                "message": f"{kind} is fine",
                "lastTransitionTime": t,
                "observedGeneration": 3,
            }
            for kind in (
                "DataValidated",
                "Tuned",
                "Compressed",
                "Deployed",
                "TrafficSplit",
                "DriftWithinBounds",
                "Ready",
            )
        ],
        "revision": 2,
        "servingRevision": 2,
        "bestTrial": {
            "number": 17,
            "values": [{"metric": "accuracy", "value": 0.982}, {"metric": "latencyMs", "value": 0.21}],
            "params": [{"name": "learning_rate", "value": "0.0031"}, {"name": "layers", "value": "2"}],
            "trialsCompleted": 20,
            "paretoFrontSize": 3,
        },
        "model": {
            "candidate": "prune+quantize",
            "primaryMetric": "accuracy",
            "primaryValue": 0.976,
            "latencyP50Ms": 0.08,
            "latencyP95Ms": 0.12,
            "sizeBytes": 41234,
            "parameters": 10402,
            "gatesPassed": True,
        },
        "artifacts": {
            "tuning": "s3://models/cancer/r2/tuning",
            "compression": "s3://models/cancer/r2/compression",
            "model": "s3://models/cancer/r2/model",
        },
        "url": "http://breast-cancer.ml.example.com",
        "serving": {
            "mode": "Standard",
            "modeSource": "spec",
            "canaryMethod": "GatewayAPI",
            "autoscaler": "keda",
            "scaleMetric": "rps",
            "scaleTarget": 50,
            "route": "breast-cancer",
        },
        "drift": {
            "lastEvaluationTime": t,
            "lastValue": 0.0,
            "consecutiveDrifting": 0,
            "retrainsTriggered": 1,
            "lastRetrainTime": t,
        },
        "history": [
            {
                "revision": 1,
                "trigger": "Created",
                "outcome": "Superseded",
                "generation": 1,
                "triggeredAt": t,
                "startedAt": t,
                "deployedAt": t,
                "promotedAt": t,
                "finishedAt": t,
                "bestTrial": 9,
                "candidate": "baseline",
                "primaryValue": 0.97,
                "message": "replaced by revision 2",
            },
            {
                "revision": 2,
                "trigger": "Drift",
                "outcome": "Promoted",
                "triggeredAt": t,
                "tunedAt": t,
                "compressedAt": t,
                "deployedAt": t,
                "promotedAt": t,
                "canaryMethod": "GatewayAPI",
                "parentRevision": 1,
                "fingerprint": "0123456789abcdef",
                "model": {"candidate": "1-prune", "primaryMetric": "accuracy", "primaryValue": 0.96},
            },
        ],
    }
