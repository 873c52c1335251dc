"""Latency, size and accuracy of every compression candidate against fp32 eager torch.

    .venv/bin/python bench/compression.py            # both model sizes (about 4 minutes on 2 cores)
    .venv/bin/python bench/compression.py --quick    # fewer repetitions, for `make bench`

Two MLPs are trained on the bundled digits data with the product's training code: a small
one (64-64, about 9k parameters) and a large one (1024-768-256, about 1M parameters). Each
is compressed with the product's own steps (structured and unstructured pruning with
fine-tuning, distillation to a quarter-width student, ONNX Runtime dynamic and static int8,
fp16 storage) and every result is measured in one run, next to the reference: the same fp32
model in eager torch. Eager-torch dynamic int8 (``torch.ao.quantization.quantize_dynamic``)
is measured too, to show why the stage does not assume it helps. Ratios below 1 mean faster
or smaller than the reference.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from optiloop.api.jobs import Architecture, StageInput, TrainingConfig  # noqa: E402
from optiloop.api.spec import DistillStep  # noqa: E402
from optiloop.jobs.distill import distill  # noqa: E402
from optiloop.jobs.latency import batch_of, measure_round_robin, open_session  # noqa: E402
from optiloop.jobs.metrics import task_metrics  # noqa: E402
from optiloop.jobs.onnx_export import (  # noqa: E402
    export_onnx,
    quantize_dynamic_int8,
    quantize_static_int8,
    to_fp16_storage,
)
from optiloop.jobs.prepare import PreparedData, prepare_data  # noqa: E402
from optiloop.jobs.prune import make_permanent, prune_structured, prune_unstructured  # noqa: E402
from optiloop.jobs.stage import configure_threads  # noqa: E402
from optiloop.jobs.storage import open_store  # noqa: E402
from optiloop.jobs.training import build_model, train_model  # noqa: E402

SIZES = {"small (64-64)": [64, 64], "large (1024-768-256)": [1024, 768, 256]}
BATCH = 64


def digits(workdir: Path) -> PreparedData:
    spec = {
        "dataset": {"uri": "builtin://digits", "seed": 0},
        "dataQuality": {"minRows": 20},
        "deployment": {"storageUri": "pvc://bench/x"},
    }
    stage = StageInput.model_validate({"name": "bench", "artifacts": str(workdir), "spec": spec})
    return prepare_data(stage, open_store(stage.artifacts))


def torch_latency(model: torch.nn.Module, rows: np.ndarray, batch_size: int, min_seconds: float) -> dict[str, float]:
    batch = torch.from_numpy(batch_of(rows, batch_size))
    timings: list[float] = []
    with torch.inference_mode():
        for _ in range(10):
            model(batch)
        started = time.perf_counter()
        while len(timings) < 50 or time.perf_counter() - started < min_seconds:
            start = time.perf_counter()
            model(batch)
            timings.append(time.perf_counter() - start)
    p50, p95 = np.percentile(np.array(timings) * 1000, [50, 95])
    return {"p50_ms": float(p50), "p95_ms": float(p95)}


def torch_accuracy(model: torch.nn.Module, data: PreparedData) -> float:
    test = data.splits["test"]
    with torch.inference_mode():
        probabilities = torch.softmax(model(torch.from_numpy(test.raw)), dim=1).numpy()
    return task_metrics("classification", test.target, probabilities)["accuracy"]


def onnx_rows(models: dict[str, bytes], data: PreparedData, threads: int, min_seconds: float) -> list[dict[str, Any]]:
    """ONNX Runtime rows, timed with the product's round-robin measurement."""
    test = data.splits["test"]
    sessions = {name: open_session(onnx_bytes, threads) for name, onnx_bytes in models.items()}
    time.sleep(1.0)  # let torch's worker threads stop spinning before ONNX Runtime is timed
    latency = measure_round_robin(sessions, test.raw, [1, BATCH], rounds=5, min_seconds=min_seconds / 5)
    rows = []
    for name, session in sessions.items():
        probabilities = session.run(None, {"features": test.raw})[1]  # type: ignore[attr-defined]
        row: dict[str, Any] = {
            "candidate": name,
            "runtime": "onnxruntime",
            "accuracy": task_metrics("classification", test.target, probabilities)["accuracy"],
            "size_bytes": len(models[name]),
        }
        for stats in latency[name]:
            row[f"b{stats.batch_size}"] = {"p50_ms": stats.p50_ms, "p95_ms": stats.p95_ms}
        rows.append(row)
    return rows


def torch_row(name: str, model: torch.nn.Module, data: PreparedData, min_seconds: float) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)  # the bench's own file; the product never pickles
    size = len(buffer.getvalue())
    time.sleep(0.5)
    row: dict[str, Any] = {
        "candidate": name,
        "runtime": "torch",
        "accuracy": torch_accuracy(model, data),
        "size_bytes": size,
    }
    for batch_size in (1, BATCH):
        row[f"b{batch_size}"] = torch_latency(model, data.splits["test"].raw, batch_size, min_seconds)
    return row


def bench_size(hidden: list[int], data: PreparedData, threads: int, min_seconds: float) -> list[dict[str, Any]]:
    transform, train, validation = data.transform, data.splits["train"], data.splits["validation"]
    architecture = Architecture(inputs=transform.input_width, outputs=len(transform.classes), hidden=hidden)
    config = TrainingConfig(learning_rate=1e-3, batch_size=64, epochs=15, early_stopping_patience=5)
    baseline = build_model(transform, architecture, train, 0)
    train_model(baseline, train, validation, config)
    baseline.eval()
    fine_tune = config.model_copy(update={"epochs": 5, "learning_rate": 3e-4})

    pruned = prune_structured(baseline, 0.5)
    train_model(pruned, train, validation, fine_tune)
    sparse = copy.deepcopy(baseline)
    masked = prune_unstructured(sparse, 0.5, "global")
    train_model(sparse, train, validation, fine_tune)
    make_permanent(masked)
    student = distill(baseline, DistillStep(width_factor=0.25, epochs=40), train, validation, config).model
    for model in (pruned, sparse, student):
        model.eval()

    fp32 = export_onnx(baseline)
    calibration = train.raw[np.random.default_rng(0).permutation(len(train.raw))[:256]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_int8 = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(baseline), {torch.nn.Linear}, dtype=torch.qint8
        )
    onnx_models = {
        "baseline fp32": fp32,
        "dynamic int8": quantize_dynamic_int8(fp32),
        "static int8": quantize_static_int8(fp32, calibration),
        "fp16 storage": to_fp16_storage(fp32),
        "structured prune 50%": export_onnx(pruned),
        "  + dynamic int8": quantize_dynamic_int8(export_onnx(pruned)),
        "unstructured prune 50%": export_onnx(sparse),
        "distilled 0.25 width": export_onnx(student),
    }
    rows = [
        torch_row("baseline fp32 (reference)", baseline, data, min_seconds),
        torch_row("baseline dynamic int8", torch_int8, data, min_seconds),
        *onnx_rows(onnx_models, data, threads, min_seconds),
    ]
    parameters = sum(p.numel() for p in baseline.mlp.parameters())
    for row in rows:
        row["parameters_of_baseline"] = parameters
    return rows


def table(label: str, rows: list[dict[str, Any]]) -> list[str]:
    reference = rows[0]
    lines = [
        f"### {label}: {rows[0]['parameters_of_baseline']:,} parameters, reference = eager torch fp32",
        "",
        "| candidate | runtime | accuracy | size | p50 b1 | p95 b1 | p50 b64 "
        "| size ratio | b1 p50 ratio | b64 p50 ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['candidate']} | {row['runtime']} | {row['accuracy']:.3f} | {row['size_bytes'] / 1024:,.0f} KB "
            f"| {row['b1']['p50_ms']:.3f} ms | {row['b1']['p95_ms']:.3f} ms | {row[f'b{BATCH}']['p50_ms']:.3f} ms "
            f"| {row['size_bytes'] / reference['size_bytes']:.2f} "
            f"| {row['b1']['p50_ms'] / reference['b1']['p50_ms']:.2f} "
            f"| {row[f'b{BATCH}']['p50_ms'] / reference[f'b{BATCH}']['p50_ms']:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer timing repetitions")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "compression.json")
    args = parser.parse_args()
    threads = configure_threads()
    min_seconds = 0.2 if args.quick else 1.0
    workdir = REPO / "bench" / "results" / "compression-work"
    data = digits(workdir)
    results: dict[str, Any] = {"threads": threads, "torch_threads": torch.get_num_threads(), "sizes": {}}
    for label, hidden in SIZES.items():
        started = time.monotonic()
        results["sizes"][label] = bench_size(hidden, data, threads, min_seconds)
        print(f"{label}: measured in {time.monotonic() - started:.0f} s", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"threads: {threads} (ONNX Runtime intra-op and torch)\n")
    for label, rows in results["sizes"].items():
        print("\n".join(table(label, rows)) + "\n")


if __name__ == "__main__":
    main()
