"""KServe's request batcher on the real node: one-row traffic through InferenceServices' Services,
with and without ``spec.deployment.batcher``, as the operator builds them.

    .venv/bin/python bench/node_batching.py                  # the serving benchmark's MLP (3x700)
    .venv/bin/python bench/node_batching.py --model 3x2048   # a model whose inference dominates
    .venv/bin/python bench/node_batching.py --quick          # 1 run of 3 s each

It starts the test node (``tests/support/node.py``: a whole single-node cluster in namespaces of its
own; needs root and ``make install``), installs KServe's real manager, imports this checkout's serve
image and serves the model once per configuration, in Standard mode, from the operator's own
builder: one resource without a batcher and one per ``--batchers`` pair. Every predictor has a CPU
limit of 1 (so one inference thread, as in the local benchmarks) and no payload logger (monitoring
off), so the batcher is the only difference; KServe's webhook injects its agent where there is one.
``wrk`` runs inside the node and sends one-row v1 requests to each predictor's Service (its
ClusterIP, through kube-proxy, as any client in the cluster). Configurations interleave in every
run; each figure is the median of the runs with the lowest and highest in brackets. The node is
torn down at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.batching import REQUESTS, add_load_arguments, one_row_request  # noqa: E402
from bench.load import run_wrk  # noqa: E402
from bench.serving import batching_gain, median, spread, test_rows, trained_model, write_results  # noqa: E402

PREDICTOR_RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
"""One CPU per predictor, as the local benchmarks' one inference thread; small requests so that every
configuration's pod fits the node's 2 CPUs at once."""


def serve_configurations(
    node: Any, artifacts: Path, claim_root: Path, batchers: list[tuple[int, int] | None]
) -> list[tuple[str, str]]:
    """One InferenceService per batcher setting (None: without one), all Ready; returns each one's
    predictor ClusterIP and served model name, in order."""
    from kubernetes import client

    from optiloop.operator.builders.serving import inference_service
    from optiloop.operator.config import OperatorConfig
    from tests.support.control_plane import wait_for
    from tests.support.kserve_node import import_our_image
    from tests.support.kserve_serving import (
        CLAIM,
        isvc_ready,
        resolved_topology,
        stored_model_optimization,
        written_as_the_jobs_write_it,
    )
    from tests.support.namespaces import create_namespace
    from tests.support.node_storage import claim_on_host_folder

    api = node.api_client()
    config = OperatorConfig(predictor_image=import_our_image(node, "serve"), image_pull_policy="IfNotPresent")
    namespace = create_namespace(api, "batch")
    names = [f"m{index}" for index in range(len(batchers))]
    for name in names:
        shutil.copytree(artifacts / "r1" / "model", claim_root / name / "r1" / "model")
    written_as_the_jobs_write_it(claim_root)
    claim_on_host_folder(api, namespace, CLAIM, claim_root)
    bodies = []
    for name, batcher in zip(names, batchers, strict=True):
        deployment: dict[str, Any] = {"resources": PREDICTOR_RESOURCES}
        if batcher is not None:
            deployment["batcher"] = {"maxBatchSize": batcher[0], "maxLatencyMs": batcher[1]}
        model = stored_model_optimization(api, namespace, name, spec={"monitoring": {"enabled": False}}, **deployment)
        body = inference_service(model, config, 1, resolved_topology(api, model, config))
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", namespace, "inferenceservices", body
        )
        bodies.append(body)
    served = []
    core = client.CoreV1Api(api)
    for body in bodies:
        name = body["metadata"]["name"]
        wait_for(lambda name=name: isvc_ready(api, namespace, name), 600, interval=0.5, what=f"{name} to be Ready")
        args = body["spec"]["predictor"]["containers"][0]["args"]
        cluster_ip = core.read_namespaced_service(f"{name}-predictor", namespace).spec.cluster_ip
        served.append((cluster_ip, args[args.index("--model-name") + 1]))
    api.close()
    return served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser, "8/5")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "node-batching.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/node_batching.py needs root: it starts the test node")
    seconds = 3.0 if args.quick else 10.0
    runs = args.runs or (1 if args.quick else 3)
    layers, width = args.model
    artifacts = trained_model(layers, width, args.retrain)
    rows = test_rows(artifacts)
    batchers: list[tuple[int, int] | None] = [None, *args.batchers]
    labels = ["no batcher"] + [f"batcher {size} rows / {delay} ms" for size, delay in args.batchers]

    from tests.support.control_plane import wait_for
    from tests.support.kserve_node import install
    from tests.support.node import Node

    measured: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="optiloop-node-batching-") as temp:
        began = time.monotonic()
        node = Node.start(Path(temp) / "node")
        try:
            install(node)
            served = serve_configurations(node, artifacts, Path(temp) / "artifacts", batchers)
            print(f"node, KServe and {len(served)} InferenceServices Ready in {time.monotonic() - began:.0f} s")
            wrk_dir = Path(temp) / "wrk"
            wrk_dir.mkdir()

            def load(target: tuple[str, str], seconds: float) -> dict[str, float]:
                cluster_ip, model_name = target
                requests = [one_row_request(rows[i : i + 1], model_name) for i in range(min(len(rows), REQUESTS))]
                return run_wrk(
                    80, requests, args.clients, seconds, host=cluster_ip, inside=node.nsenter, workdir=wrk_dir
                )

            for target in served:
                # A fresh Service's rules follow its endpoints within a second or two.
                wait_for(lambda target=target: _answers(load, target), 60, interval=1, what=f"{target} to answer")
            for _ in range(runs):
                for label, target in zip(labels, served, strict=True):
                    measured.setdefault(label, []).append(load(target, seconds))
        finally:
            node.stop()
    model = f"MLP {layers}x{width}"
    # What batching could give at most: batches as large as the clients are many, in process.
    gain = batching_gain(artifacts, rows, args.clients)
    load_average = write_results(
        args.out, measured, model=model, clients=args.clients, seconds=seconds, runs=runs, batching_gain=gain
    )
    print(
        f"\n{model} on the real node, {args.clients} single-row clients (wrk inside the node, to the Service), "
        f"{seconds:.0f} s per run, median of {runs} run(s) [min-max], predictor CPU limit 1, "
        f"{os.cpu_count()} CPUs, load average after: {' '.join(f'{x:.1f}' for x in load_average)}\n"
    )
    print("| configuration | requests/s | p50 | p99 | vs no batcher | p99 within max latency + 5 ms |")
    print("|---|---|---|---|---|---|")
    alone = median(measured[labels[0]], "rps")
    for label, batcher in zip(labels, batchers, strict=True):
        run = measured[label]
        p99 = median(run, "p99_ms")
        bound = "" if batcher is None else ("yes" if p99 <= batcher[1] + 5 else "no") + f" ({batcher[1] + 5} ms)"
        print(
            f"| {label} | {spread(run, 'rps')} | {median(run, 'p50_ms'):.2f} ms | {p99:.2f} ms "
            f"| {median(run, 'rps') / alone:.2f}x | {bound} |"
        )

    print(
        f"\nONNX Runtime in process, 1 thread: batches of {args.clients} rows run {gain:.2f}x the rows per second of "
        "single rows, the most a batcher can give this model on this machine."
    )


def _answers(load: Any, target: tuple[str, str]) -> bool:
    try:
        load(target, 1.0)
    except RuntimeError:
        return False
    return True


if __name__ == "__main__":
    main()
