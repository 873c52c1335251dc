#!/usr/bin/env bash
# Builds Traefik, the Gateway API implementation the node tier runs in front of KServe's Standard-mode
# predictors (tests/support/gateway_node.py), from the Go module proxy, pinned to one release.
#
# Why Traefik: one static Go binary (no Envoy or NGINX data plane to build), and its kubernetesGateway
# provider implements HTTPRoute backend weights. Why v3.6.12 and not the newer v3.7.x: every v3.7
# release replaces github.com/abbot/go-http-auth by a fork commit the module proxy does not serve
# (403 "not available"), so v3.7 cannot be built from the proxy; v3.6.12's fork commit is served.
# v3.6.12 is built against Gateway API v1.4.0 and reads the standard-channel resources the node
# installs at v1.6.3 through their v1 (and ReferenceGrant's v1beta1) versions, which v1.6.3 serves.
#
# `go install` refuses Traefik (its go.mod has replace directives), so the script downloads the
# module (`go mod download`, verified against the checksum database), copies it to a scratch folder
# and builds ./cmd/traefik inside it with its own go.sum (-mod=readonly: nothing is re-resolved).
# The binary goes to a cache folder outside the clone keyed by the version and the Go toolchain,
# so a warm machine skips the build.
#
#   hack/build-gateway.sh               build if needed, print the folder
#   hack/build-gateway.sh --print-dir   print the folder if built, else fail
set -euo pipefail

print_only=false
[[ "${1:-}" == "--print-dir" ]] && print_only=true

module="github.com/traefik/traefik/v3"
version="v3.6.12"
ldflags="-s -w -X $module/pkg/version.Version=$version"
fingerprint="$( (echo "$module@$version $ldflags"; go env GOVERSION) | sha256sum | cut -c1-12)"
cache_root="${OPTILOOP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/optiloop/tools}"
dest="$cache_root/gateway-traefik-${version}-${fingerprint}"

if [[ -x "$dest/traefik" ]]; then
  echo "$dest"
  exit 0
fi
if $print_only; then
  echo "Traefik $version (the node tier's gateway) is not built in $cache_root: run 'make install'" >&2
  exit 1
fi
mkdir -p "$dest"
# Built under a temporary name and renamed, so an interrupted build is never taken for a finished one.
scratch="$(mktemp -d "$dest/.work.XXXXXX")"
trap 'chmod -R u+w "$scratch" 2>/dev/null; rm -rf "$scratch"' EXIT
# Outside any module, so no go.mod around the caller's folder takes part.
source_dir="$(cd / && go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -d "$source_dir" ]] || { echo "go mod download $module@$version gave no folder" >&2; exit 1; }
cp -r "$source_dir" "$scratch/src"
chmod -R u+w "$scratch/src"  # the module cache's copy is read-only
echo "building traefik ($module $version) ..." >&2
(cd "$scratch/src" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$scratch/traefik" ./cmd/traefik)
mv -f "$scratch/traefik" "$dest/traefik"
echo "$dest"
