"""The ``optiloop`` command.

Subcommands share one style: user errors print ``optiloop: <what is wrong>`` (with the
file and field) and exit 2; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import OptiloopError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DATA_QUALITY = 3
EXIT_NO_CANDIDATE_PASSED = 4
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix (a bad file, a missing extra); printed without a traceback."""


def _require_api() -> None:
    try:
        import pydantic
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise UserError("this command needs the API models: pip install 'optiloop[api]'") from None
    if not pydantic.VERSION.startswith("2."):
        raise UserError(f"this command needs pydantic 2, found {pydantic.VERSION} (is this the drift environment?)")


def cmd_crd(args: argparse.Namespace) -> int:
    _require_api()
    from .api import crd

    argv = ["--check"] if args.check else ["--stdout"] if args.file is None else []
    if args.file is not None:
        argv += ["--file", str(args.file)]
    return crd.main(argv)


def cmd_validate(args: argparse.Namespace) -> int:
    _require_api()
    from .api import ManifestError, load_documents, manifest_errors

    failed = False
    for path in args.files:
        try:
            documents = load_documents(path)
        except ManifestError as exc:
            print(exc, file=sys.stderr)
            failed = True
            continue
        for index, document in enumerate(documents):
            where = f"{path}" if len(documents) == 1 else f"{path} (document {index + 1})"
            errors = manifest_errors(document)
            if errors:
                failed = True
                for error in errors:
                    print(f"{where}: {error}", file=sys.stderr)
            elif not args.quiet:
                name = document.get("metadata", {}).get("name", "?")
                print(f"{where}: ModelOptimization {name} is valid")
    return EXIT_USAGE if failed else EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    _require_api()
    try:
        from .serve.model_dir import ModelDirectoryError
        from .serve.server import serve
    except ImportError as exc:
        raise UserError(f"serving needs the serve extra: pip install 'optiloop[serve]' ({exc})") from None
    name = args.name or args.model_dir.resolve().parent.parent.name or "model"
    try:
        print(f"serving {args.model_dir} as {name!r} on http://{args.host}:{args.port}", file=sys.stderr)
        print(
            f"  v1: POST /v1/models/{name}:predict   v2: POST /v2/models/{name}/infer   metrics: /metrics",
            file=sys.stderr,
        )
        serve(args.model_dir, name, args.host, args.port, args.threads)
    except ModelDirectoryError as exc:
        raise UserError(str(exc)) from None
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    _require_api()
    try:
        from .api import ManifestError
        from .jobs.errors import DataQualityError
        from .local import report
        from .local.manifest import load_run_manifest
        from .local.progress import choose_view
        from .local.run import run_local
    except ImportError as exc:
        raise UserError(
            f"optiloop run needs the jobs and serve extras: pip install 'optiloop[jobs,serve]' ({exc})"
        ) from None
    try:
        model = load_run_manifest(args.manifest, args.set or [])
    except ManifestError as exc:
        raise UserError(str(exc)) from None
    root = args.out or Path("optiloop-runs") / model.metadata.name
    view = choose_view(args.quiet, args.json)
    try:
        outcome = run_local(model, root, view, fresh=args.fresh)
    except KeyboardInterrupt:
        view.close()
        print(
            f"\noptiloop: interrupted; finished stages are kept in {root}, rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except DataQualityError as exc:
        view.close()
        print(f"optiloop: the data-quality gate failed: {exc}", file=sys.stderr)
        print(f"  the full report: {root / 'r1' / 'data' / 'report.json'}", file=sys.stderr)
        return EXIT_DATA_QUALITY
    except OptiloopError as exc:
        view.close()
        if args.debug:
            raise
        print(f"optiloop: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    view.close()
    lines = report.summary_lines(outcome)
    if args.json:
        summary = {
            "event": "summary",
            "lines": lines,
            "report": str(outcome.report_path),
            "modelDir": str(outcome.model_dir),
        }
        print(json.dumps(summary))
    elif args.quiet:
        print(outcome.report_path)
    else:
        print("\n".join(lines))
    fallback = outcome.compression is not None and outcome.compression.fallback
    return EXIT_NO_CANDIDATE_PASSED if fallback else EXIT_OK


def cmd_drift_check(args: argparse.Namespace) -> int:
    from .local.drift import run_check
    from .local.errors import DriftEnvironmentMissingError

    try:
        return run_check(args.reference, args.data, args.detector or [], args.p_value, args.correction)
    except DriftEnvironmentMissingError as exc:
        raise UserError(str(exc)) from None


def cmd_operator(args: argparse.Namespace) -> int:
    _require_api()
    from .operator.main import run_operator

    try:
        run_operator(args.namespace or (), args.all_namespaces, args.standalone, args.priority, args.verbose)
    except ValueError as exc:  # a bad OPTILOOP_* variable
        raise UserError(str(exc)) from None
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optiloop",
        description="Keep machine-learning models optimized for their whole life.",
    )
    parser.add_argument("--version", action="version", version=f"optiloop {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    crd = commands.add_parser("crd", help="print, write or check the ModelOptimization CRD")
    crd.add_argument("--check", action="store_true", help="exit 1 when the CRD file differs from a fresh render")
    crd.add_argument("--file", type=Path, help="write the CRD to this file (default: print it)")
    crd.set_defaults(func=cmd_crd)

    validate = commands.add_parser("validate", help="validate ModelOptimization manifests client-side")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE", help="YAML manifest(s)")
    validate.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    validate.set_defaults(func=cmd_validate)

    serve = commands.add_parser("serve", help="serve an exported model directory with optiloop's predictor")
    serve.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="model directory (r<revision>/model)")
    serve.add_argument("--port", type=int, default=8080, help="HTTP port (default: %(default)s)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--name", help="model name in the URLs (default: the resource's name from the path)")
    serve.add_argument("--threads", type=int, help="ONNX Runtime threads (default: the CPUs available)")
    serve.set_defaults(func=cmd_serve)

    run = commands.add_parser(
        "run",
        help="run the whole loop on this machine from a ModelOptimization manifest",
        description="Run data quality, features, tuning, compression, export, a predictor smoke test and a drift "
        "baseline locally. Exit codes: 0 success, 2 invalid manifest or arguments, 3 data-quality gate failed, "
        "4 no compression candidate passed (the baseline was exported), 1 anything else.",
    )
    run.add_argument("manifest", type=Path, metavar="MANIFEST", help="ModelOptimization YAML (as applied to a cluster)")
    run.add_argument(
        "--set",
        action="append",
        metavar="PATH=VALUE",
        help="override a field, e.g. spec.tuning.maxTrials=8 (repeatable)",
    )
    run.add_argument("--out", type=Path, help="artifact directory (default: ./optiloop-runs/<name>)")
    run.add_argument("--fresh", action="store_true", help="start over instead of resuming finished stages")
    output = run.add_mutually_exclusive_group()
    output.add_argument("-q", "--quiet", action="store_true", help="no progress; print only the report's path")
    output.add_argument("--json", action="store_true", help="progress and summary as JSON lines on stdout")
    run.set_defaults(func=cmd_run)

    operator = commands.add_parser(
        "operator",
        help="run the Kubernetes operator (configured by OPTILOOP_* variables, see the README)",
        description="Reconcile ModelOptimization resources. Credentials: the service account in a pod, "
        "$KUBECONFIG elsewhere.",
    )
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument("--namespace", action="append", metavar="NS", help="watch only this namespace (repeatable)")
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace (the default)")
    operator.add_argument("--standalone", action="store_true", help="run without peering (a single replica)")
    operator.add_argument("--priority", type=int, help="peering priority; distinct for every replica")
    operator.add_argument("--verbose", action="store_true", help="debug logging")
    operator.set_defaults(func=cmd_operator)

    drift = commands.add_parser("drift", help="the drift monitor's tools (run in the drift environment)")
    drift_commands = drift.add_subparsers(dest="drift_command", metavar="COMMAND", required=True)
    check = drift_commands.add_parser("check", help="check rows against a model directory's training reference")
    check.add_argument("--reference", required=True, type=Path, help="model directory (r<revision>/model)")
    check.add_argument("--data", required=True, type=Path, nargs="+", help="rows as CSV or JSON")
    check.add_argument("--detector", action="append", choices=("tabular", "ks", "cvm", "mmd"), help="repeatable")
    check.add_argument("--p-value", type=float, default=0.05)
    check.add_argument("--correction", choices=("bonferroni", "fdr"), default="bonferroni")
    check.set_defaults(func=cmd_drift_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"optiloop: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
