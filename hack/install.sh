#!/usr/bin/env bash
# Installs everything a fresh machine needs to develop and test optiloop:
#   .venv        the main environment (operator, jobs, serve and dev extras) from requirements/main.lock
#   .venv-drift  the drift monitor's own environment from requirements/drift.lock (pydantic 1, see README)
#   PostgreSQL's server, Prometheus, Chromium and wrk (Debian's packages) when missing, for the tests
#   and the benchmarks
#   the test node's runtime (Debian's containerd, runc, CNI plugins, iptables, conntrack, socat, umoci,
#   debootstrap, buildah, busybox-static) when missing
#   the test control plane (kube-apiserver, kube-controller-manager, etcd), Helm, KServe's manager and
#   agent, the test node (kubelet, kube-scheduler, kube-proxy, CoreDNS, pause and busybox images) and
#   Prometheus with its kubernetes discovery and the node's gateway (Traefik), built from the Go
#   module proxy into ~/.cache
#   optiloop's four images as archives for containerd (hack/build-images.sh, into ~/.cache)
# Downloads and builds are cached outside the clone (uv's and Go's caches, ~/.cache/optiloop),
# so running it again on a warm machine takes seconds. Safe to re-run at any time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'install: %s\n' "$*" >&2; exit 1; }

python="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
[[ -n "$python" ]] || die "Python 3.11 is required (set PYTHON=/path/to/python3.11)"
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || die "$python is Python $("$python" -c 'import platform; print(platform.python_version())'); optiloop needs 3.11 (set PYTHON=...)"
command -v go >/dev/null || die "Go (1.26 or newer) is required to build the test control plane and Helm"

uv_version="$(awk -F'==' '/^uv==/ { split($2, v, " "); print v[1] }' requirements/main.lock)"

say "main environment (.venv) from requirements/main.lock"
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  rm -rf .venv
  "$python" -m venv .venv
fi
if [[ "$(.venv/bin/uv --version 2>/dev/null | awk '{print $2}')" != "$uv_version" ]]; then
  # `uv pip sync` removes pip (it is not in the lock), so bring it back to bootstrap uv.
  .venv/bin/python -m pip --version >/dev/null 2>&1 || .venv/bin/python -m ensurepip --default-pip >/dev/null
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$uv_version"
fi
uv=.venv/bin/uv
"$uv" pip sync --quiet --python .venv/bin/python requirements/main.lock
"$uv" pip install --quiet --python .venv/bin/python --no-deps -e .

say "drift environment (.venv-drift) from requirements/drift.lock"
if [[ ! -x .venv-drift/bin/python ]]; then
  "$uv" venv --quiet --python "$python" .venv-drift
fi
"$uv" pip sync --quiet --python .venv-drift/bin/python requirements/drift.lock
"$uv" pip install --quiet --python .venv-drift/bin/python --no-deps -e .

say "system packages for the tests (PostgreSQL: shared studies; Prometheus: drift metrics; Chromium: the run report; the test node; wrk: the benchmarks)"
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing+=(postgresql)
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
# The test node (tests/support/node.py): a container runtime, pod networking and image tools.
for tool in containerd runc iptables conntrack socat umoci debootstrap buildah; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] \
  || missing+=(containernetworking-plugins)
# The benchmarks' HTTP load generator (bench/load.py): C, so it measures the server, not the client.
command -v wrk >/dev/null || missing+=(wrk)
# The static build: the test image's busybox must run without any library in the image.
[[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)" == "install ok installed" ]] \
  || missing+=(busybox-static)
if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]]; then
    # Debian's packages register services but start nothing here: the tests run their own servers.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    die "missing system packages: run 'sudo apt-get install -y ${missing[*]}' and then 'make install' again"
  fi
fi

# The images build mostly downloads and unpacks wheels, while the Go builds below keep the cores
# busy: on a cold machine running them side by side saves much of the images' time.
images_pid=""
if [[ "$(id -u)" == 0 ]]; then
  say "optiloop's images (operator, jobs, serve, drift): buildah on a base made from Debian, in the background"
  images_log="$(mktemp -t optiloop-images.XXXXXX.log)"
  hack/build-images.sh >"$images_log" 2>&1 &
  images_pid=$!
  # A Go build that fails ends this script (set -e); the images build must not run on unattended.
  trap '[[ -z "$images_pid" ]] || kill "$images_pid" 2>/dev/null || true' EXIT
else
  echo "install: not root, so the images are not built (debootstrap and buildah need root); their tests will say so" >&2
fi

say "test control plane (kube-apiserver, kube-controller-manager, etcd) and Helm"
hack/build-control-plane.sh

say "KServe's manager and agent (the InferenceService controller the cluster tier runs, its payload logger)"
hack/build-kserve.sh

say "test node (kubelet, kube-scheduler, kube-proxy, CoreDNS, the pause and busybox images)"
hack/build-node.sh

say "Prometheus with kubernetes_sd_configs (the node tier's, which finds pods through the API; Debian's lacks it)"
hack/build-prometheus.sh

say "the node's gateway (Traefik, the Gateway API implementation that splits Standard-mode canaries)"
hack/build-gateway.sh

if [[ -n "$images_pid" ]]; then
  say "waiting for optiloop's images (log: $images_log)"
  if ! wait "$images_pid"; then
    tail -n 40 "$images_log" >&2
    images_pid=""
    die "building the images failed; the whole log is $images_log"
  fi
  images_pid=""
  rm -f "$images_log"
fi

say "installed; run the tests with: make test"
