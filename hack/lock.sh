#!/usr/bin/env bash
# Re-resolves the lock files from pyproject.toml. Run after changing dependencies,
# then `make install` to apply them. main.lock is the development environment (every extra
# but drift); operator.lock, jobs.lock and serve.lock are its subsets for the images,
# constrained to main.lock's pins so an image runs exactly what the tests ran; drift.lock is
# the drift monitor's own environment. The locks target CPython 3.11 on x86_64 Linux
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
for extra in operator jobs serve; do
  "$uv" pip compile pyproject.toml "${common[@]}" --extra "$extra" -c requirements/main.lock \
    --custom-compile-command "hack/lock.sh" -o "requirements/$extra.lock"
done
echo "wrote requirements/{main,operator,jobs,serve,drift}.lock"
