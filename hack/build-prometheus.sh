#!/usr/bin/env bash
# Builds Prometheus from the Go module proxy, pinned by the wrapper module hack/tools/prometheus,
# with only the kubernetes service discovery (and file and http, which Prometheus always keeps):
# the node tier's Prometheus finds the operator's pods through the API (kubernetes_sd_configs,
# tests/support/node_prometheus.py), and Debian's package is built without that discovery.
# The other tests keep Debian's binary (static targets and files). Everything goes to a cache folder
# outside the clone, keyed by the wrapper's go.mod and go.sum, so a warm machine skips the build.
#
#   hack/build-prometheus.sh               build if needed, print the folder
#   hack/build-prometheus.sh --print-dir   print the folder if built, else fail
set -euo pipefail

print_only=false
[[ "${1:-}" == "--print-dir" ]] && print_only=true

wrapper="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tools/prometheus"
module="$(awk '$1 == "github.com/prometheus/prometheus" { print $2; exit }' "$wrapper/go.mod")"
[[ -n "$module" ]] || { echo "cannot read the pinned Prometheus version from $wrapper/go.mod" >&2; exit 1; }
# Prometheus 3.x is published as module versions v0.3MM.P for release 3.MM.P.
minor="${module#v0.3}"; minor="${minor%%.*}"
version="3.$((10#$minor)).${module##*.}"
tags=remove_all_sd,enable_kubernetes_sd
fingerprint="$( (cat "$wrapper/go.mod" "$wrapper/go.sum"; echo "$tags"; go env GOVERSION) | sha256sum | cut -c1-12)"
cache_root="${OPTILOOP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/optiloop/tools}"
dest="$cache_root/prometheus-v${version}-${fingerprint}"

if [[ -x "$dest/prometheus" ]]; then
  echo "$dest"
  exit 0
fi
if $print_only; then
  echo "Prometheus v$version (with kubernetes_sd_configs) is not built in $cache_root: run 'make install'" >&2
  exit 1
fi
mkdir -p "$dest"
# Written under a temporary name and renamed, so an interrupted build is never taken for a finished one.
scratch="$(mktemp -d "$dest/.work.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
echo "building prometheus v$version (tags $tags) ..." >&2
flags="-s -w -X github.com/prometheus/common/version.Version=$version"
(cd "$wrapper" && CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "$flags" -o "$scratch/prometheus" \
  github.com/prometheus/prometheus/cmd/prometheus)
"$scratch/prometheus" --version >&2
mv -f "$scratch/prometheus" "$dest/prometheus"
echo "$dest"
