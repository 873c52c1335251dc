#!/usr/bin/env bash
# Re-resolves the two lock files from pyproject.toml. Run after changing dependencies,
# then `make install` to apply them. The locks target CPython 3.11 on x86_64 Linux
# (the CI machines and the images) and carry hashes, so an install is byte-for-byte
# reproducible.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
uv="${UV:-$(command -v uv || echo .venv/bin/uv)}"
common=(--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet)
"$uv" pip compile pyproject.toml "${common[@]}" --extra operator --extra jobs --extra serve --extra dev \
  --custom-compile-command "hack/lock.sh" -o requirements/main.lock
"$uv" pip compile pyproject.toml "${common[@]}" --extra drift \
  --custom-compile-command "hack/lock.sh" -o requirements/drift.lock
echo "wrote requirements/main.lock and requirements/drift.lock"
