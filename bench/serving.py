"""Requests per second and latency of optiloop's predictor against a plain KServe predictor
running the same model in eager torch, and against raw ONNX Runtime without HTTP (the ceiling).

    .venv/bin/python bench/serving.py             # 3 runs of 10 s per server and batch, about 5 minutes
    .venv/bin/python bench/serving.py --quick     # 1 run of 3 s each, for `make bench`
    .venv/bin/python bench/serving.py --workers 2 # adds optiloop with 2 server processes

The model is an MLP trained on the bundled digits data (64 inputs, three hidden layers of 700,
about 1M parameters), exported by the product's own compression stage without compression steps, so
both servers run exactly the same weights. The baseline is a ``kserve.Model`` that runs the
safetensors weights in eager torch on KServe's ModelServer (what one would write with KServe's
custom-model recipe), one worker; optiloop's predictor runs the ONNX model on its own HTTP
front end, one process unless ``--workers`` adds a row. Same inference threads for all.
Clients are separate processes holding keep-alive connections and sending v1 JSON requests
in a closed loop (and, for optiloop, v2 binary-tensor requests), at batch sizes 1 and 64.
Client and server share the machine's cores, equally for every server. Every figure is the
median of ``--runs`` runs, with the lowest and highest in brackets; the runs interleave
the servers so that a noisy moment hurts all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.load import Request, run_wrk  # noqa: E402

CLIENTS = 2
"""Concurrent closed-loop connections (wrk)."""
REQUESTS = 64
"""Distinct requests each load sends in turn."""


def build_model(workdir: Path, layers: int = 3, width: int = 700) -> Path:
    """Tune (one fixed configuration: ``layers`` hidden layers of ``width``) and export the model;
    returns the artifact root."""
    from optiloop.api.jobs import StageInput
    from optiloop.jobs.compress import run_compression
    from optiloop.jobs.storage import open_store
    from optiloop.jobs.tune import run_tuning

    spec = {
        "dataset": {"uri": "builtin://digits", "seed": 0},
        "dataQuality": {"minRows": 20},
        "deployment": {"storageUri": "pvc://bench/x"},
        "model": {
            "family": "mlp",
            "search": {
                "layers": {"min": layers, "max": layers},
                "width": {"min": width, "max": width},
                "shapes": ["constant"],
            },
        },
        "tuning": {
            "maxTrials": 1,
            "search": {"epochs": {"min": 5, "max": 5}, "batchSize": [64], "learningRate": {"min": 1e-3, "max": 1e-3}},
        },
        "compression": {"steps": []},
    }
    stage = StageInput.model_validate({"name": "bench", "artifacts": str(workdir), "spec": spec})
    store = open_store(stage.artifacts)
    run_tuning(stage, store)
    run_compression(stage, store)
    return workdir


def trained_model(layers: int = 3, width: int = 700, retrain: bool = False) -> Path:
    """The benchmark MLP's artifact root (``layers`` hidden layers of ``width``; 3x700 is this
    benchmark's): trained once per size and reused while its model directory is complete."""
    suffix = "" if (layers, width) == (3, 700) else f"-{layers}x{width}"
    workdir = REPO / "bench" / "results" / f"serving-work{suffix}"
    finished = (workdir / "r1" / "model" / "_COMPLETE.json").exists() and not retrain
    return workdir if finished else build_model(workdir, layers, width)


def test_rows(artifacts: Path) -> np.ndarray:
    """The model's test split, in its features' order, as float32."""
    import pandas as pd

    features = [f["name"] for f in json.loads((artifacts / "r1" / "model" / "metadata.json").read_text())["features"]]
    return pd.read_parquet(artifacts / "r1" / "data" / "test.parquet")[features].to_numpy(dtype=np.float32)


def torch_server_main(artifacts: str, port: int, threads: int) -> None:
    """A plain KServe custom model running the same weights in eager torch."""
    import torch
    from kserve import Model

    from optiloop.jobs.checkpoint import load_model
    from optiloop.jobs.storage import open_store

    torch.set_num_threads(threads)
    model = load_model(open_store(artifacts), "r1/tuning")

    class TorchPredictor(Model):  # type: ignore[misc]
        def load(self) -> bool:
            self.ready = True
            return True

        def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
            rows = torch.tensor(payload["instances"], dtype=torch.float32)
            with torch.inference_mode():
                probabilities = torch.softmax(model(rows), dim=1)
            return {"predictions": probabilities.argmax(dim=1).tolist(), "probabilities": probabilities.tolist()}

    predictor = TorchPredictor("bench")
    predictor.load()
    run_kserve(predictor, "127.0.0.1", port)


def run_kserve(model: Any, host: str, port: int) -> None:
    """Serve a loaded ``kserve.Model`` on KServe's ModelServer (REST, one worker) at ``host:port``."""
    import asyncio
    import logging

    saved, sys.argv = sys.argv, sys.argv[:1]  # KServe parses sys.argv when model_server is imported
    try:
        from kserve import ModelServer
        from kserve.model_server import FASTAPI_APP_IMPORT_STRING
        from kserve.protocol.rest.server import RESTServer
    finally:
        sys.argv = saved
    # KServe logs a timing line for every request at INFO; at serving rates that is the slowest part.
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server = ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False)
    server.register_model(model)
    # ModelServer.start binds 0.0.0.0; the REST server is built here to listen on loopback only.
    rest = RESTServer(FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, port)
    rest.config.host = host
    server._rest_server = rest
    server.servers.append(rest.start())
    server.setup_event_loop()
    server.register_signal_handler()
    asyncio.run(server._serve())


def start_server(kind: str, artifacts: Path, port: int, threads: int, workers: int = 1) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OPTILOOP_THREADS": str(threads), "OPTILOOP_WORKERS": str(workers)}
    if kind.startswith("optiloop"):
        command = [sys.executable, "-m", "optiloop.serve", "--model-dir", str(artifacts / "r1" / "model")]
        command += ["--model-name", "bench", "--host", "127.0.0.1", "--http-port", str(port)]
    else:
        command = [sys.executable, __file__, "--torch-server", str(artifacts), "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/bench", timeout=1).status == 200:
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"{kind} server did not become ready")


def request_for(protocol: str, rows: np.ndarray) -> Request:
    """One request carrying ``rows``: v1 JSON, or v2 with the binary tensor extension both ways."""
    if protocol == "v1":
        return Request(
            "/v1/models/bench:predict", json.dumps({"instances": rows.tolist()}).encode(), "application/json"
        )
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    body = header + rows.astype(np.float32).tobytes()
    return Request("/v2/models/bench/infer", body, "application/octet-stream", len(header))


def load_test(port: int, pid: int, rows: np.ndarray, batch: int, seconds: float, protocol: str) -> dict[str, float]:
    """``CLIENTS`` closed-loop connections sending batches of ``batch`` rows (each request its own
    rows) to the server ``pid``, whose CPU time per request (all its processes) is measured too:
    that figure is robust to other work on the machine."""
    requests = [
        request_for(protocol, rows.take(range(start * batch, (start + 1) * batch), axis=0, mode="wrap"))
        for start in range(REQUESTS)
    ]
    run_wrk(port, requests, CLIENTS, 1.0)  # warm-up
    cpu_before = server_cpu(pid)
    run = run_wrk(port, requests, CLIENTS, seconds)
    cpu_us = (server_cpu(pid) - cpu_before) / run["requests"] * 1e6
    return {**run, "rows_per_second": run["rps"] * batch, "cpu_us": cpu_us}


def ceiling(artifacts: Path, rows: np.ndarray, batch: int, seconds: float, threads: int) -> dict[str, float]:
    from optiloop.jobs.latency import batch_of, open_session

    session = open_session((artifacts / "r1" / "model" / "model.onnx").read_bytes(), threads)
    feed = {"features": batch_of(rows, batch)}
    for _ in range(20):
        session.run(None, feed)  # type: ignore[attr-defined]
    latencies = []
    cpu_before = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(None, feed)  # type: ignore[attr-defined]
        latencies.append(time.perf_counter() - start)
    total = sum(latencies)
    return {
        "cpu_us": (time.process_time() - cpu_before) / len(latencies) * 1e6,
        "rps": len(latencies) / total,
        "rows_per_second": len(latencies) * batch / total,
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
    }


def batching_gain(artifacts: Path, rows: np.ndarray, size: int, seconds: float = 3.0) -> float:
    """How many times the rows per second of single-row inference ONNX Runtime reaches on batches of
    ``size`` rows, in process, one thread: the most any batcher can give this model here."""
    single = ceiling(artifacts, rows, 1, seconds, 1)["rows_per_second"]
    return ceiling(artifacts, rows, size, seconds, 1)["rows_per_second"] / single


def server_cpu(pid: int) -> float:
    """User and system CPU seconds of a server process and its children (worker processes)."""
    import psutil

    process = psutil.Process(pid)
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        try:
            times = each.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def median(runs: list[dict[str, float]], key: str) -> float:
    return float(np.median([run[key] for run in runs]))


def spread(runs: list[dict[str, float]], key: str) -> str:
    values = [run[key] for run in runs]
    return (
        f"{median(runs, key):,.0f} [{min(values):,.0f}-{max(values):,.0f}]" if len(values) > 1 else f"{values[0]:,.0f}"
    )


def write_results(out: Path, measured: Mapping[str, Any], **settings: Any) -> tuple[float, float, float]:
    """Write the runs and the settings they ran with to ``out`` as JSON, with the machine's CPU count
    and its load average at the end (what the figures must be read beside); returns that load."""
    load = os.getloadavg()
    results = {**settings, "cpus": os.cpu_count(), "load_average_after": load, "measured": measured}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one run of 3 seconds instead of 3 of 10")
    parser.add_argument("--runs", type=int, help="runs per figure (default: 3, 1 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="inference threads per server (default: 1)")
    parser.add_argument("--workers", type=int, default=1, help="also measure optiloop with this many processes")
    parser.add_argument("--retrain", action="store_true", help="train the model again even if one is there")
    parser.add_argument("--torch-server", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serving.json")
    args = parser.parse_args()
    if args.torch_server:
        torch_server_main(args.torch_server, args.port, int(os.environ.get("OPTILOOP_THREADS", "1")))
        return
    seconds = 3.0 if args.quick else 10.0
    runs = args.runs or (1 if args.quick else 3)
    artifacts = trained_model(retrain=args.retrain)
    rows = test_rows(artifacts)
    from tests.support.control_plane import free_port

    # (label, server kind, workers, protocol)
    servers = [("torch", "torch", 1, "v1"), ("optiloop", "optiloop", 1, "v1"), ("optiloop-bin", "optiloop", 1, "v2")]
    if args.workers > 1:
        servers.append((f"optiloop-w{args.workers}", "optiloop", args.workers, "v1"))
    measured: dict[str, list[dict[str, float]]] = {}
    for _ in range(runs):
        for label, kind, workers, protocol in servers:
            port = free_port()
            process = start_server(kind, artifacts, port, args.threads, workers)
            try:
                for batch in (1, 64):
                    run = load_test(port, process.pid, rows, batch, seconds, protocol)
                    measured.setdefault(f"{label} b{batch}", []).append(run)
            finally:
                process.terminate()
                process.wait(timeout=30)
        for batch in (1, 64):
            run = ceiling(artifacts, rows, batch, seconds, args.threads)
            measured.setdefault(f"ceiling b{batch}", []).append(run)
    load = write_results(args.out, measured, threads=args.threads, clients=CLIENTS, seconds=seconds, runs=runs)
    print(
        f"{CLIENTS} client connections (wrk), closed loop, {seconds:.0f} s per run, median of {runs} run(s) [min-max], "
        f"{args.threads} inference thread(s), {os.cpu_count()} CPUs, load average after: "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n"
    )
    print(
        "| server | batch | requests/s | rows/s | p50 | p99 | req/s vs eager-torch KServe | rows/s vs ceiling "
        "| server CPU per request | ceiling's CPU / this |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    labels = {
        "torch": "KServe + eager torch (v1 JSON)",
        "optiloop": "optiloop predictor (v1 JSON)",
        "optiloop-bin": "optiloop predictor (v2 binary tensors)",
        f"optiloop-w{args.workers}": f"optiloop predictor, {args.workers} processes (v1 JSON)",
        "ceiling": "raw ONNX Runtime, no HTTP",
    }
    for batch in (1, 64):
        reference, top = measured[f"torch b{batch}"], measured[f"ceiling b{batch}"]
        for label in [server[0] for server in servers] + ["ceiling"]:
            run = measured[f"{label} b{batch}"]
            print(
                f"| {labels[label]} | {batch} | {spread(run, 'rps')} | {spread(run, 'rows_per_second')} "
                f"| {median(run, 'p50_ms'):.2f} ms | {median(run, 'p99_ms'):.2f} ms "
                f"| {median(run, 'rps') / median(reference, 'rps'):.2f}x "
                f"| {median(run, 'rows_per_second') / median(top, 'rows_per_second'):.0%} "
                f"| {median(run, 'cpu_us'):,.0f} us | {median(top, 'cpu_us') / median(run, 'cpu_us'):.0%} |"
            )


if __name__ == "__main__":
    main()
