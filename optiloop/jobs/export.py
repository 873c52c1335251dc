"""The export stage: the served model directory for the chosen candidate.

The directory's layout, completion marker and writer belong to :mod:`optiloop.formats.model_dir`
(the predictor and the drift monitor read it with the same module); this stage decides what goes
in: the ONNX model, ``metadata.json``, the tuning stage's ``reference.json`` and the same model
in the model-repository layout of KServe's ONNX runtime (storageUri: ``.../model/triton``).

The ONNX graph's input is the encoded raw features (numbers as numbers, categories as their
code in ``metadata.features[].categories``, NaN for missing); clients of the Triton runtime
send that matrix, clients of optiloop's predictor send raw values and the predictor encodes them.
"""

from __future__ import annotations

from ..api.jobs import (
    CompressionReport,
    FeatureInfo,
    FeatureTransform,
    ModelLineage,
    ModelMetadata,
    StageInput,
    TuningResult,
)
from ..formats.model_dir import METADATA_FILE, MODEL_FILE, REFERENCE_FILE, TRITON_DIR, write_model_directory
from .errors import CompressionError
from .onnx_export import INPUT_NAME, OPSET, output_names
from .storage import ArtifactStore, completion_marker

__all__ = ["METADATA_FILE", "MODEL_FILE", "REFERENCE_FILE", "model_directory_files", "model_metadata", "run_export"]


def triton_config(name: str, metadata: ModelMetadata) -> str:
    """``config.pbtxt`` for Triton's ONNX Runtime backend; the batch axis is part of the dims."""
    width = len(metadata.features)
    outputs = [("predictions", "TYPE_INT64" if metadata.task == "classification" else "TYPE_FP32", "[ -1 ]")]
    if metadata.task == "classification":
        outputs.append(("probabilities", "TYPE_FP32", f"[ -1, {len(metadata.classes)} ]"))
    output_text = ",\n".join(
        f'  {{\n    name: "{output}"\n    data_type: {dtype}\n    dims: {dims}\n  }}' for output, dtype, dims in outputs
    )
    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        "max_batch_size: 0\n"
        f'input [\n  {{\n    name: "{INPUT_NAME}"\n    data_type: TYPE_FP32\n    dims: [ -1, {width} ]\n  }}\n]\n'
        f"output [\n{output_text}\n]\n"
    )


def model_metadata(
    stage: StageInput, transform: FeatureTransform, tuning: TuningResult, report: CompressionReport
) -> ModelMetadata:
    """``metadata.json`` for the chosen candidate."""
    chosen = report.chosen_candidate
    return ModelMetadata(
        model_file=MODEL_FILE,
        task=transform.task,
        target=transform.target,
        input_name=INPUT_NAME,
        output_names=output_names(transform.task),
        features=[FeatureInfo(name=c.name, kind=c.kind, categories=c.categories) for c in transform.columns],
        classes=transform.classes,
        unknown_categories=transform.handle_unknown,
        opset=OPSET,
        precision=chosen.precision,
        test_metrics=chosen.test_metrics,
        latency=chosen.latency,
        size_bytes=chosen.size_bytes,
        parameters=chosen.parameters,
        lineage=ModelLineage(
            resource=stage.name,
            revision=stage.revision,
            parent_revision=stage.parent_revision,
            study_name=tuning.study_name,
            trial=tuning.best_trial.number,
            candidate=chosen.name,
        ),
    )


def model_directory_files(name: str, metadata: ModelMetadata, onnx_bytes: bytes, reference: bytes) -> dict[str, bytes]:
    """Every file of the model directory of ``name``, by relative name (the marker excepted)."""
    return {
        metadata.model_file: onnx_bytes,
        METADATA_FILE: metadata.model_dump_json(by_alias=True, indent=2).encode(),
        REFERENCE_FILE: reference,
        f"{TRITON_DIR}/{name}/config.pbtxt": triton_config(name, metadata).encode(),
        f"{TRITON_DIR}/{name}/1/{MODEL_FILE}": onnx_bytes,
    }


def run_export(stage: StageInput, store: ArtifactStore, report: CompressionReport) -> ModelMetadata:
    """Write the model directory for the chosen candidate (or reuse a finished one)."""
    prefix = f"r{stage.revision}/model"
    if completion_marker(store, prefix):
        return ModelMetadata.model_validate_json(store.read_bytes(f"{prefix}/{METADATA_FILE}"))
    source = f"r{stage.revision}/compression/candidates/{report.chosen}.onnx"
    if not store.exists(source):
        raise CompressionError(f"the chosen candidate's model {source} is missing")
    onnx_bytes = store.read_bytes(source)
    tuning_prefix = f"r{stage.revision}/tuning"
    transform = FeatureTransform.model_validate_json(store.read_bytes(f"{tuning_prefix}/preprocessing.json"))
    tuning = TuningResult.model_validate_json(store.read_bytes(f"{tuning_prefix}/result.json"))
    metadata = model_metadata(stage, transform, tuning, report)
    reference = store.read_bytes(f"{tuning_prefix}/{REFERENCE_FILE}")
    files = model_directory_files(stage.name, metadata, onnx_bytes, reference)
    write_model_directory(store, files, {"stage": "export", "candidate": report.chosen}, prefix=prefix)
    return metadata
