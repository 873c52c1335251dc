#!/usr/bin/env bash
# Builds KServe's manager (the InferenceService controller and its webhooks) and its agent (the
# payload-logger sidecar the manager injects into predictor pods) from the Go module proxy, pinned
# by the wrapper module hack/tools/kserve. The cluster tier runs InferenceServices through the
# manager (tests/support/kserve_release.py). The agent is also packed with umoci into a tiny OCI image
# archive (kserve-agent.oci.tar: the static binary alone, as KServe's own distroless image has it,
# entry point /ko-app/agent, user 65532), which the node tier imports and names in KServe's
# ConfigMap (tests/support/kserve_node.py): no registry is reachable to pull kserve/agent from.
# Everything goes to a cache folder outside the clone, keyed by the wrapper's go.mod and go.sum, so a
# warm machine skips the build.
#
#   hack/build-kserve.sh               build if needed, print the folder
#   hack/build-kserve.sh --print-dir   print the folder if built, else fail
set -euo pipefail

print_only=false
[[ "${1:-}" == "--print-dir" ]] && print_only=true

wrapper="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tools/kserve"
version="$(awk '$1 == "github.com/kserve/kserve" { print $2; exit }' "$wrapper/go.mod")"
[[ -n "$version" ]] || { echo "cannot read the pinned KServe version from $wrapper/go.mod" >&2; exit 1; }
fingerprint="$( (cat "$wrapper/go.mod" "$wrapper/go.sum"; go env GOVERSION) | sha256sum | cut -c1-12)"
cache_root="${OPTILOOP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/optiloop/tools}"
dest="$cache_root/kserve-${version}-${fingerprint}"

binaries=(kserve-manager kserve-agent)
complete() {
  local bin
  for bin in "${binaries[@]}"; do [[ -x "$dest/$bin" ]] || return 1; done
  [[ -s "$dest/kserve-agent.oci.tar" ]]
}
if complete; then
  echo "$dest"
  exit 0
fi
if $print_only; then
  echo "KServe's manager and agent ($version) are not built in $cache_root: run 'make install'" >&2
  exit 1
fi
mkdir -p "$dest"
# Written under a temporary name and renamed, so an interrupted build is never taken for a finished one.
scratch="$(mktemp -d "$dest/.work.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
for bin in "${binaries[@]}"; do
  [[ -x "$dest/$bin" ]] && continue
  package="github.com/kserve/kserve/cmd/${bin#kserve-}"
  echo "building $bin ($package $version) ..." >&2
  (cd "$wrapper" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$scratch/$bin" "$package")
  mv -f "$scratch/$bin" "$dest/$bin"
done
if [[ ! -s "$dest/kserve-agent.oci.tar" ]]; then
  command -v umoci >/dev/null || { echo "umoci is missing: run 'make install'" >&2; exit 1; }
  echo "packing kserve-agent.oci.tar ..." >&2
  layout="$scratch/agent-layout" bundle="$scratch/agent-bundle" tag="kserve-agent"
  umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  umoci unpack --image "$layout:$tag" "$bundle" >/dev/null
  install -D -m 0755 "$dest/kserve-agent" "$bundle/rootfs/ko-app/agent"
  install -d -m 1777 "$bundle/rootfs/tmp"
  umoci repack --image "$layout:$tag" "$bundle" >/dev/null
  umoci config --image "$layout:$tag" --os linux --architecture "$(go env GOARCH)" \
    --config.entrypoint /ko-app/agent --config.workingdir /ko-app --config.user 65532:65532
  umoci gc --layout "$layout"
  # Written under a temporary name and renamed, like the binaries.
  tar -C "$layout" -cf "$scratch/kserve-agent.oci.tar" .
  mv -f "$scratch/kserve-agent.oci.tar" "$dest/kserve-agent.oci.tar"
fi
echo "$dest"
