"""Run the predictor: HTTP (v1, v2, health, ``/metrics``) on uvloop, and gRPC v2 when asked.

python -m optiloop.serve --model-dir /mnt/models --model-name iris     # in the serving pod
optiloop serve ./optiloop-runs/iris/r1/model --port 8080                # locally, on loopback

Settings from the environment (the flags win where both exist):

- ``OPTILOOP_WORKERS``: server processes sharing the ports with ``SO_REUSEPORT`` (default 1);
  each loads the model and answers on its own, the kernel spreads connections between them.
  With more than one, ``/metrics`` adds up every process (Prometheus' multiprocess mode).
- ``OPTILOOP_GRPC_PORT``: serve the Open Inference Protocol's gRPC service on this port (off by default).
- ``OPTILOOP_MAX_BODY_BYTES``, ``OPTILOOP_MAX_ROWS``: request limits (413 above them).
- ``OPTILOOP_THREADS``: ONNX Runtime threads per process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .settings import positive_env

WORKERS_ENV = "OPTILOOP_WORKERS"
GRPC_PORT_ENV = "OPTILOOP_GRPC_PORT"
BODY_ENV = "OPTILOOP_MAX_BODY_BYTES"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve(
    model_dir: Path,
    name: str,
    host: str,
    port: int,
    threads: int | None = None,
    grpc_port: int | None = None,
    workers: int | None = None,
) -> None:
    """Load the model and serve it until SIGTERM or SIGINT; raises if the model cannot be loaded."""
    workers = workers or positive_env(WORKERS_ENV, 1)
    if grpc_port is None and os.environ.get(GRPC_PORT_ENV):
        grpc_port = positive_env(GRPC_PORT_ENV, 0)
    if workers == 1:
        _worker(model_dir, name, host, port, threads, grpc_port, reuse_port=False)
        return
    # Counters must add up across processes: Prometheus' multiprocess mode, chosen before
    # prometheus_client is first imported (in this process and in the children it spawns).
    created = None
    if MULTIPROC_ENV not in os.environ:
        created = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="optiloop-metrics-")
    try:
        from .model_dir import load_model_directory

        load_model_directory(model_dir)  # fail here, once, with the reason, rather than in every worker
        _supervise(workers, (model_dir, name, host, port, threads, grpc_port, True))
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)


def _supervise(workers: int, arguments: tuple[Any, ...]) -> None:
    """Start ``workers`` processes and wait; stop them all on SIGTERM/SIGINT or when one dies."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=arguments, daemon=True) for _ in range(workers)]
    for process in processes:
        process.start()
    stopping = False

    def stop(signum: int, _: Any) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)  # type: ignore[arg-type]

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    from multiprocessing.connection import wait

    wait([process.sentinel for process in processes])
    if not stopping:
        stop(signal.SIGTERM, None)  # one died: take the others down so the pod restarts whole
    for process in processes:
        process.join(timeout=30)
    failed = [p.exitcode for p in processes if p.exitcode not in (0, -signal.SIGTERM)]
    if failed and not stopping:
        raise SystemExit(f"a predictor worker exited with {failed[0]}")


def _metrics_reader() -> Callable[[], bytes]:
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    if MULTIPROC_ENV in os.environ:
        from prometheus_client import multiprocess

        def every_process() -> bytes:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)

        return every_process
    return lambda: generate_latest(REGISTRY)


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Without TCP_NODELAY (which accepted connections inherit from here) a response written in
    # two parts waits for the client's delayed ACK, 40 ms; answers leave in one write anyway.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(
    model_dir: Path,
    name: str,
    host: str,
    port: int,
    threads: int | None,
    grpc_port: int | None,
    reuse_port: bool,
) -> None:
    """One server process: load the model, then answer HTTP (and gRPC) until SIGTERM or SIGINT."""
    import uvloop

    from .http import MAX_BODY_BYTES, App, serve_http
    from .predictor import OnnxPredictor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    max_body = positive_env(BODY_ENV, MAX_BODY_BYTES)
    predictor = OnnxPredictor(name, model_dir, threads)
    predictor.load()
    grpc_server = None
    if grpc_port is not None:
        from .grpc_service import start_grpc

        grpc_server = start_grpc(predictor, host, grpc_port, max_body)
    app = App(predictor, max_body, _metrics_reader())
    sock = _bind(host, port, reuse_port)
    logging.getLogger("optiloop.serve").info(
        "serving %s (revision %s) on http://%s:%d%s",
        name,
        predictor.revision,
        host,
        port,
        f" and gRPC port {grpc_port}" if grpc_port is not None else "",
    )

    async def until_signalled() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve_http(app, sock, stop)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(until_signalled())
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=5).wait()
        sock.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optiloop.serve", description="Serve an optiloop model directory.")
    parser.add_argument(
        "--model-dir", type=Path, default=Path("/mnt/models"), help="model directory (default: %(default)s)"
    )
    parser.add_argument("--model-name", default="model", help="name in the inference URLs (default: %(default)s)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    parser.add_argument("--http-port", type=int, default=8080, help="HTTP port (default: %(default)s)")
    parser.add_argument("--grpc-port", type=int, help=f"gRPC v2 port (default: ${GRPC_PORT_ENV}, else off)")
    parser.add_argument("--workers", type=int, help=f"server processes (default: ${WORKERS_ENV}, else 1)")
    args = parser.parse_args(argv)
    from .model_dir import ModelDirectoryError

    try:
        serve(
            args.model_dir, args.model_name, args.host, args.http_port, grpc_port=args.grpc_port, workers=args.workers
        )
    except (ModelDirectoryError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0
