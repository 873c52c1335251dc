"""Single-row traffic from concurrent clients, with and without KServe's request batcher in front of
optiloop's predictor.

    .venv/bin/python bench/batching.py            # 3 runs of 10 s per configuration, about 6 minutes
    .venv/bin/python bench/batching.py --quick    # 1 run of 3 s each, for `make bench`

The batcher is KServe's own agent (``kserve-agent`` from ``github.com/kserve/kserve`` v0.20.0, built by
``make install``), started with the flags KServe's controller gives the sidecar when an
InferenceService sets ``predictor.batcher`` (``--enable-batcher --max-batchsize N --max-latency MS``),
proxying to the predictor on loopback exactly as in the pod. The model is the serving benchmark's
(an MLP on digits, about 1M parameters, one inference thread). ``--clients`` clients (default 8) each
hold a keep-alive connection and send one-row v1 requests in a closed loop; they run as threads in two
processes. Configurations, interleaved in every run so that a noisy moment hurts all of them:

- the predictor alone;
- the agent without batching (what its proxy alone costs);
- the agent batching with each ``maxBatchSize``/``maxLatencyMs`` pair of ``--batchers``.

Each figure is the median of ``--runs`` runs, with the lowest and highest in brackets.

The agent listens on every interface and on a fixed abstract unix socket, so the whole benchmark runs
in a network namespace of its own (``unshare --net``, root): nothing it starts is reachable from or
collides with the host.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.load import Request, run_wrk  # noqa: E402
from bench.serving import batching_gain, median, spread, start_server, test_rows, trained_model, write_results  # noqa: E402

REQUESTS = 256
"""Distinct one-row requests the load sends in turn."""


def agent_binary() -> Path:
    """KServe's agent as ``make install`` built it."""
    done = subprocess.run(
        [str(REPO / "hack" / "build-kserve.sh"), "--print-dir"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"KServe's agent is not built: {done.stderr.strip()} (run `make install`)")
    return Path(done.stdout.strip()) / "kserve-agent"


def start_agent(
    binary: Path, port: int, component_port: int, batcher: tuple[int, int] | None
) -> subprocess.Popen[bytes]:
    command = [str(binary), "--port", str(port), "--component-port", str(component_port)]
    if batcher is not None:
        command += ["--enable-batcher", "--max-batchsize", str(batcher[0]), "--max-latency", str(batcher[1])]
    # KServe's pod mutator hands the agent the model server's readiness probe; the agent refuses to
    # start without one. This is the probe optiloop's InferenceServices give the predictor.
    probe = {"httpGet": {"host": "127.0.0.1", "path": "/v2/health/ready", "port": component_port}, "timeoutSeconds": 2}
    env = {**os.environ, "SERVING_READINESS_PROBE": json.dumps(probe)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/v1/models/bench")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"KServe's agent did not answer for the predictor on port {port} within 30 s")


def one_row_request(row: np.ndarray, model: str = "bench") -> Request:
    return Request(f"/v1/models/{model}:predict", json.dumps({"instances": row.tolist()}).encode(), "application/json")


def check_answer(port: int, row: np.ndarray) -> None:
    """One request answered with exactly one prediction (the load itself only sees status codes)."""
    request = one_row_request(row)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", request.path, request.body, {"content-type": request.content_type})
    response = connection.getresponse()
    answer = response.read()
    if response.status != 200 or len(json.loads(answer)["predictions"]) != 1:
        raise RuntimeError(f"port {port} answered one row with HTTP {response.status}: {answer[:200]!r}")


def load_test(port: int, rows: np.ndarray, clients: int, seconds: float) -> dict[str, float]:
    """``clients`` closed-loop connections, each request one row (the rows in turn)."""
    check_answer(port, rows[:1])
    requests = [one_row_request(rows[index : index + 1]) for index in range(min(len(rows), REQUESTS))]
    run_wrk(port, requests, clients, 1.0)  # warm-up
    return run_wrk(port, requests, clients, seconds)


def parse_batchers(text: str) -> list[tuple[int, int]]:
    """``"8/5,8/20"`` -> ``[(8, 5), (8, 20)]`` (maxBatchSize/maxLatencyMs pairs)."""
    pairs = []
    for item in text.split(","):
        size, latency = item.split("/")
        pairs.append((int(size), int(latency)))
    return pairs


def parse_model(text: str) -> tuple[int, int]:
    """``"3x700"`` -> ``(3, 700)``: hidden layers and their width."""
    layers, width = text.lower().split("x")
    return int(layers), int(width)


def in_own_network_namespace() -> bool:
    return os.environ.get("OPTILOOP_BENCH_NETNS") == "1"


def reexec_in_network_namespace() -> None:
    """Runs this script again inside a fresh network namespace with loopback up."""
    if os.geteuid() != 0:
        raise SystemExit("bench/batching.py needs root: it runs KServe's agent in a network namespace of its own")
    script = 'ip link set lo up && exec "$@"'
    command = ["unshare", "--net", "--", "sh", "-c", script, "sh", sys.executable, *sys.argv]
    raise SystemExit(subprocess.call(command, env={**os.environ, "OPTILOOP_BENCH_NETNS": "1"}))


def add_load_arguments(parser: argparse.ArgumentParser, batchers: str) -> None:
    """The options both batching benchmarks share: runs, clients, batchers (default ``batchers``), model."""
    parser.add_argument("--quick", action="store_true", help="one run of 3 seconds instead of 3 of 10")
    parser.add_argument("--runs", type=int, help="runs per figure (default: 3, 1 with --quick)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent single-row clients (default: 8)")
    parser.add_argument(
        "--batchers",
        type=parse_batchers,
        default=parse_batchers(batchers),
        help=f"maxBatchSize/maxLatencyMs pairs to measure, comma-separated (default: {batchers})",
    )
    parser.add_argument(
        "--model",
        type=parse_model,
        default=(3, 700),
        help="the MLP's hidden layers x width (default: 3x700, the serving benchmark's model)",
    )
    parser.add_argument("--retrain", action="store_true", help="train the model again even if one is there")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser, "8/5,8/20,32/5")
    parser.add_argument("--agent", type=Path, help="KServe's agent binary (default: the one `make install` built)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "batching.json")
    args = parser.parse_args()
    if not in_own_network_namespace():
        reexec_in_network_namespace()
    seconds = 3.0 if args.quick else 10.0
    runs = args.runs or (1 if args.quick else 3)
    agent = args.agent or agent_binary()
    layers, width = args.model
    artifacts = trained_model(layers, width, args.retrain)
    rows = test_rows(artifacts)
    from tests.support.control_plane import free_port

    configurations: list[tuple[str, tuple[int, int] | None, bool]] = [
        ("predictor alone", None, False),
        ("through the agent, no batching", None, True),
    ]
    configurations += [(f"batcher {size} rows / {delay} ms", (size, delay), True) for size, delay in args.batchers]
    measured: dict[str, list[dict[str, float]]] = {}
    for _ in range(runs):
        predictor_port = free_port()
        predictor = start_server("optiloop", artifacts, predictor_port, threads=1)
        try:
            for label, batcher, via_agent in configurations:
                if not via_agent:
                    measured.setdefault(label, []).append(load_test(predictor_port, rows, args.clients, seconds))
                    continue
                agent_port = free_port()
                process = start_agent(agent, agent_port, predictor_port, batcher)
                try:
                    measured.setdefault(label, []).append(load_test(agent_port, rows, args.clients, seconds))
                finally:
                    process.kill()
                    process.wait()
        finally:
            predictor.terminate()
            predictor.wait(timeout=30)
    model = f"MLP {layers}x{width}"
    # What batching could give at most: batches as large as the clients are many, in process.
    gain = batching_gain(artifacts, rows, args.clients)
    load = write_results(
        args.out, measured, model=model, clients=args.clients, seconds=seconds, runs=runs, batching_gain=gain
    )
    print(
        f"{model}, {args.clients} single-row clients (wrk), closed loop, {seconds:.0f} s per run, "
        f"median of {runs} run(s) [min-max], 1 inference thread, {os.cpu_count()} CPUs, load average after: "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n"
    )
    print(
        "| configuration | requests/s | p50 | p99 | vs predictor alone | vs agent without batching "
        "| p99 within max latency + 5 ms |"
    )
    print("|---|---|---|---|---|---|---|")
    alone = median(measured["predictor alone"], "rps")
    proxied = median(measured["through the agent, no batching"], "rps")
    for label, batcher, _ in configurations:
        run = measured[label]
        p99 = median(run, "p99_ms")
        bound = "" if batcher is None else ("yes" if p99 <= batcher[1] + 5 else "no") + f" ({batcher[1] + 5} ms)"
        print(
            f"| {label} | {spread(run, 'rps')} | {median(run, 'p50_ms'):.2f} ms | {p99:.2f} ms "
            f"| {median(run, 'rps') / alone:.2f}x | {median(run, 'rps') / proxied:.2f}x | {bound} |"
        )

    print(
        f"\nONNX Runtime in process, 1 thread: batches of {args.clients} rows run {gain:.2f}x the rows per second of "
        "single rows, the most a batcher can give this model on this machine."
    )


if __name__ == "__main__":
    main()
