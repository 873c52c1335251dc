#!/usr/bin/env bash
# Runs every check CI runs: lint, types, layer contracts, the CRD freshness check, then
# the whole test suite (unit tests and the tests on a real API server). Extra arguments
# go to pytest, e.g. `make test ARGS="-k crd"` or `hack/test.sh tests/unit`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -x .venv/bin/python ]] || { echo "test: no .venv here; run 'make install' first" >&2; exit 1; }
bin=.venv/bin

step() { printf '\n==> %s\n' "$*"; }
step "ruff";          "$bin/ruff" check . && "$bin/ruff" format --check .
step "mypy";          "$bin/mypy"
step "import-linter"; "$bin/lint-imports"
step "CRD is fresh";  "$bin/python" -m optiloop.api.crd --check
step "pytest"
exec "$bin/python" -m pytest "$@"
