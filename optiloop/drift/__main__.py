"""``python -m optiloop.drift``: the drift monitor (``serve``) and a one-off check (``check``).

    python -m optiloop.drift serve --model-dir /mnt/model --namespace ns --model iris --port 8080 \
        [--inference-service iris-r3 ...] [--max-body-bytes 16777216]
    python -m optiloop.drift check --reference r1/model --data rows.json other.csv [--detector ks ...]

``check`` prints ``{file: {detector: result}}`` as JSON and exits 0 (no drift anywhere), 1 (drift
in some file) or 2 (bad input).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .detectors import DETECTORS, make_detector
from .events import EventError, request_rows
from .features import RowError
from .reference import ReferenceError, load_reference

MAX_BODY_BYTES = 16 * 1024 * 1024  # the service's default (not imported: the service needs aiohttp)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of bytes, not {text}")
    return value


def _add_detector_options(parser: argparse.ArgumentParser, repeatable: bool = False) -> None:
    if repeatable:
        parser.add_argument(
            "--detector", choices=DETECTORS, action="append", help="repeat to compare detectors (default: tabular)"
        )
    else:
        parser.add_argument("--detector", choices=DETECTORS, default="tabular", help="default: %(default)s")
    parser.add_argument("--p-value", type=float, default=0.05, help="significance level (default: %(default)s)")
    parser.add_argument("--correction", choices=("bonferroni", "fdr"), default="bonferroni")


def _read_rows(path: Path, names: list[str]) -> list[Any]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [name for name in names if name not in (reader.fieldnames or [])]
            if missing:
                raise RowError(f"{path}: missing columns {', '.join(missing[:5])}")
            rows = []
            for record in reader:
                rows.append({name: _csv_value(record[name]) for name in names})
            return rows
    try:
        document = json.loads(path.read_text())
    except ValueError as exc:
        raise RowError(f"{path}: not JSON ({exc})") from None
    if isinstance(document, list):
        return document
    return request_rows(document, names)


def _csv_value(text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def check(args: argparse.Namespace) -> int:
    try:
        reference = load_reference(args.reference)
        batches = [reference.space.encode(_read_rows(path, reference.space.names)) for path in args.data]
    except (ReferenceError, RowError, EventError, OSError) as exc:
        print(f"optiloop drift check: {exc}", file=sys.stderr)
        return 2
    space = reference.space
    results: dict[str, dict[str, Any]] = {}
    for detector_kind in args.detector or ["tabular"]:
        detector = make_detector(
            detector_kind, reference.matrix, space.names, space.categorical, args.p_value, args.correction
        )
        for path, matrix in zip(args.data, batches, strict=True):
            results.setdefault(str(path), {})[detector_kind] = detector.evaluate(matrix).as_json()
    print(json.dumps(results, indent=2))
    return 1 if any(r["isDrift"] for by_kind in results.values() for r in by_kind.values()) else 0


def serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .service import Monitor, MonitorConfig, build_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = MonitorConfig(
        model_dir=args.model_dir,
        namespace=args.namespace,
        model=args.model,
        detector=args.detector,
        p_value=args.p_value,
        correction=args.correction,
        window_size=args.window_size,
        window=args.window,
        inference_services=tuple(args.inference_service or ()),
        max_body_bytes=args.max_body_bytes,
    )

    async def start() -> web.AppRunner:
        runner = web.AppRunner(build_app(Monitor(config)))
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        return runner

    try:
        loop = asyncio.new_event_loop()
        runner = loop.run_until_complete(start())
    except (ReferenceError, ValueError) as exc:
        print(f"optiloop drift monitor: {exc}", file=sys.stderr)
        return 2
    logging.getLogger(__name__).info("drift monitor on http://%s:%d", args.host, args.port)
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        loop.run_until_complete(runner.cleanup())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optiloop.drift", description="optiloop's drift monitor.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the monitor service")
    run.add_argument("--model-dir", required=True, help="the served revision's model directory")
    run.add_argument("--namespace", default="default")
    run.add_argument("--model", default="", help="model name in the metrics (default: from metadata.json)")
    run.add_argument("--window-size", type=int, default=500)
    run.add_argument("--window", choices=("sliding", "tumbling"), default="sliding")
    run.add_argument(
        "--inference-service",
        action="append",
        metavar="NAME",
        help="take only events whose KServe inferenceservicename is NAME (repeat for several; others get 403)",
    )
    run.add_argument(
        "--max-body-bytes",
        type=_positive,
        default=MAX_BODY_BYTES,
        help="larger events are refused with 413 before they are read (default: %(default)s)",
    )
    run.add_argument("--host", default="0.0.0.0")
    run.add_argument("--port", type=int, default=8080)
    _add_detector_options(run)
    run.set_defaults(func=serve)
    one = commands.add_parser("check", help="check rows against a model directory's reference once")
    one.add_argument("--reference", required=True, type=Path, help="model directory holding reference.json")
    one.add_argument("--data", required=True, type=Path, nargs="+", help="rows as JSON (list or v1/v2 body) or CSV")
    _add_detector_options(one, repeatable=True)
    one.set_defaults(func=check)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
