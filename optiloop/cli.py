"""The ``optiloop`` command.

Subcommands share one style: user errors print ``optiloop: <what is wrong>`` (with the
file and field) and exit 2; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


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
