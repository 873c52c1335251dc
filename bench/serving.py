"""Requests per second and latency of optiloop's predictor against a plain KServe predictor
running the same model in eager torch, and against raw ONNX Runtime without HTTP (the ceiling).

    .venv/bin/python bench/serving.py             # about 2 minutes on 2 cores
    .venv/bin/python bench/serving.py --quick     # shorter runs, for `make bench`

The model is an MLP trained on the bundled digits data (64 inputs, three hidden layers of 700,
about 1M parameters), exported by the product's own compression stage without compression steps, so
both servers run exactly the same weights. Both servers are KServe ModelServers on loopback
with one worker; they differ only in the model class: optiloop's ONNX Runtime predictor, or
a ``kserve.Model`` that runs the safetensors weights in eager torch (what one would write
with KServe's custom-model recipe). Clients are separate processes holding keep-alive
connections and sending v1 requests in a closed loop, at batch sizes 1 and 64. Client and
server share the machine's cores, equally for both servers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

CLIENTS = 2


def build_model(workdir: Path) -> Path:
    """Tune (one fixed configuration) and export the model; returns the artifact root."""
    from optiloop.api.jobs import StageInput
    from optiloop.jobs.compress import run_compression
    from optiloop.jobs.storage import open_store
    from optiloop.jobs.tune import run_tuning

    spec = {
        "dataset": {"uri": "builtin://digits", "seed": 0},
        "dataQuality": {"minRows": 20},
        "deployment": {"storageUri": "pvc://bench/x"},
        "model": {
            "search": {"layers": {"min": 3, "max": 3}, "width": {"min": 700, "max": 700}, "shapes": ["constant"]}
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


def torch_server_main(artifacts: str, port: int, threads: int) -> None:
    """A plain KServe custom model running the same weights in eager torch."""
    import torch
    from kserve import Model

    from optiloop.jobs.storage import open_store
    from optiloop.jobs.tune import load_model

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


def start_server(kind: str, artifacts: Path, port: int, threads: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OPTILOOP_THREADS": str(threads)}
    if kind == "optiloop":
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


def client(port: int, body: bytes, seconds: float, queue: Any) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"content-type": "application/json"}
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        connection.request("POST", "/v1/models/bench:predict", body, headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        latencies.append(time.perf_counter() - start)
    queue.put(latencies)


def load_test(port: int, rows: np.ndarray, batch: int, seconds: float) -> dict[str, float]:
    body = json.dumps({"instances": rows[:batch].tolist()}).encode()
    context = multiprocessing.get_context("spawn")
    client(port, body, 0.5, context.Queue())  # warm-up
    queue = context.Queue()
    workers = [context.Process(target=client, args=(port, body, seconds, queue)) for _ in range(CLIENTS)]
    for worker in workers:
        worker.start()
    latencies = np.concatenate([np.array(queue.get()) for _ in workers])
    for worker in workers:
        worker.join()
    return {
        "rps": len(latencies) / seconds,
        "rows_per_second": len(latencies) * batch / seconds,
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
    }


def ceiling(artifacts: Path, rows: np.ndarray, batch: int, seconds: float, threads: int) -> dict[str, float]:
    from optiloop.jobs.latency import batch_of, open_session

    session = open_session((artifacts / "r1" / "model" / "model.onnx").read_bytes(), threads)
    feed = {"features": batch_of(rows, batch)}
    for _ in range(20):
        session.run(None, feed)  # type: ignore[attr-defined]
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(None, feed)  # type: ignore[attr-defined]
        latencies.append(time.perf_counter() - start)
    total = sum(latencies)
    return {
        "rps": len(latencies) / total,
        "rows_per_second": len(latencies) * batch / total,
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3-second runs instead of 10")
    parser.add_argument("--threads", type=int, default=1, help="inference threads per server (default: 1)")
    parser.add_argument("--torch-server", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serving.json")
    args = parser.parse_args()
    if args.torch_server:
        torch_server_main(args.torch_server, args.port, int(os.environ.get("OPTILOOP_THREADS", "1")))
        return
    seconds = 3.0 if args.quick else 10.0
    artifacts = build_model(REPO / "bench" / "results" / "serving-work")
    import pandas as pd

    features = [f["name"] for f in json.loads((artifacts / "r1" / "model" / "metadata.json").read_text())["features"]]
    rows = pd.read_parquet(artifacts / "r1" / "data" / "test.parquet")[features].to_numpy(dtype=np.float32)[:64]
    results: dict[str, Any] = {"threads": args.threads, "clients": CLIENTS, "seconds": seconds, "runs": {}}
    from tests.support.control_plane import free_port

    for kind in ("torch", "optiloop"):
        port = free_port()
        process = start_server(kind, artifacts, port, args.threads)
        try:
            for batch in (1, 64):
                results["runs"][f"{kind} b{batch}"] = load_test(port, rows, batch, seconds)
        finally:
            process.terminate()
            process.wait(timeout=30)
    for batch in (1, 64):
        results["runs"][f"ceiling b{batch}"] = ceiling(artifacts, rows, batch, seconds, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"{CLIENTS} client processes, closed loop, {seconds:.0f} s per run, {args.threads} inference thread(s)\n")
    print("| server | batch | requests/s | rows/s | p50 | p99 | rps vs eager-torch KServe | rps vs ceiling |")
    print("|---|---|---|---|---|---|---|---|")
    labels = {
        "torch": "KServe + eager torch",
        "optiloop": "optiloop predictor (ONNX Runtime)",
        "ceiling": "raw ONNX Runtime, no HTTP",
    }
    for batch in (1, 64):
        reference, top = results["runs"][f"torch b{batch}"], results["runs"][f"ceiling b{batch}"]
        for kind in ("torch", "optiloop", "ceiling"):
            run = results["runs"][f"{kind} b{batch}"]
            print(
                f"| {labels[kind]} | {batch} | {run['rps']:,.0f} | {run['rows_per_second']:,.0f} "
                f"| {run['p50_ms']:.2f} ms | {run['p99_ms']:.2f} ms "
                f"| {run['rps'] / reference['rps']:.2f}x | {run['rps'] / top['rps']:.3f} |"
            )


if __name__ == "__main__":
    main()
