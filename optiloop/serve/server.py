"""Run the predictor on KServe's ModelServer (REST v1 and v2, health, ``/metrics``).

python -m optiloop.serve --model-dir /mnt/models --model-name iris     # in the serving pod
optiloop serve ./optiloop-runs/iris/r1/model --port 8080                # locally, on loopback
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def serve(model_dir: Path, name: str, host: str, port: int, threads: int | None = None) -> None:
    """Load the model and serve it until SIGTERM or SIGINT; raises if the model cannot be loaded."""
    _import_kserve()
    from .predictor import OnnxPredictor

    model = OnnxPredictor(name, model_dir, threads)
    model.load()
    run_model_server(model, host, port)


def _import_kserve() -> None:
    # KServe parses sys.argv when model_server is first imported; our own flags are not its flags.
    saved, sys.argv = sys.argv, sys.argv[:1]
    try:
        import kserve.model_server  # noqa: F401
    finally:
        sys.argv = saved


def run_model_server(model: Any, host: str, port: int) -> None:
    """Serve a loaded ``kserve.Model`` on KServe's ModelServer (REST only) at ``host:port``."""
    _import_kserve()
    from kserve import ModelServer
    from kserve.model_server import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer

    # KServe logs a timing line for every request at INFO; at serving rates that is the slowest part.
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server = ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False)
    server.register_model(model)
    # ModelServer.start binds 0.0.0.0 unconditionally: right in a pod, wrong on a laptop or a test
    # machine, so the REST server is built here with the requested host.
    rest = RESTServer(FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, port)
    rest.config.host = host
    server._rest_server = rest
    server.servers.append(rest.start())
    server.setup_event_loop()
    server.register_signal_handler()
    asyncio.run(server._serve())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optiloop.serve", description="Serve an optiloop model directory.")
    parser.add_argument(
        "--model-dir", type=Path, default=Path("/mnt/models"), help="model directory (default: %(default)s)"
    )
    parser.add_argument("--model-name", default="model", help="name in the inference URLs (default: %(default)s)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    parser.add_argument("--http-port", type=int, default=8080, help="HTTP port (default: %(default)s)")
    args = parser.parse_args(argv)
    from .model_dir import ModelDirectoryError

    try:
        serve(args.model_dir, args.model_name, args.host, args.http_port)
    except ModelDirectoryError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0
