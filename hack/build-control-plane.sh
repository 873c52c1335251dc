#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kube-controller-manager and etcd) and Helm
# (which lints and renders the chart in the tests) from the Go module proxy. The controller-manager runs only its garbage collector in the tests, so
# owner references really delete children.
#
# Kubernetes publishes no binaries to the registries CI can reach, so both are
# compiled from the exactly pinned wrapper modules under hack/tools/. The
# binaries go to a cache folder outside the clone, keyed by the pinned versions
# and go.sum hashes, so a warm machine skips the build entirely.
#
#   hack/build-control-plane.sh          build if needed, print the folder
#   hack/build-control-plane.sh --print-dir   print the folder if built, else fail
#   KUBEBUILDER_ASSETS=/dir ...           use existing binaries from /dir instead
set -euo pipefail

print_only=false
[[ "${1:-}" == "--print-dir" ]] && print_only=true

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$here/tools"

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for bin in kube-apiserver kube-controller-manager etcd helm; do
    [[ -x "$KUBEBUILDER_ASSETS/$bin" ]] || { echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $bin" >&2; exit 1; }
  done
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

pinned() { awk -v m="$2" '$1 == m { print $2; exit }' "$tools/$1/go.mod"; }
k8s_version="$(pinned kube-apiserver k8s.io/kubernetes)"
etcd_version="$(grep -E '^require go.etcd.io/etcd/server/v3 ' "$tools/etcd/go.mod" | awk '{print $3}')"
[[ -n "$k8s_version" && -n "$etcd_version" ]] || { echo "cannot read pinned versions from $tools/*/go.mod" >&2; exit 1; }

major="${k8s_version#v}"; major="${major%%.*}"
minor="${k8s_version#v*.}"; minor="${minor%%.*}"
version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_flags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

helm_version="$(pinned helm helm.sh/helm/v3)"
[[ -n "$helm_version" ]] || { echo "cannot read the pinned Helm version from $tools/helm/go.mod" >&2; exit 1; }
helm_flags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"

# The cache key covers everything that changes the binaries: the pinned modules and the link flags.
# Only this script's wrappers count (hack/tools holds others, such as KServe's, built elsewhere).
wrappers=("$tools/etcd" "$tools/helm" "$tools/kube-apiserver" "$tools/kube-controller-manager")
fingerprint="$( (cat "${wrappers[@]/%//go.mod}" "${wrappers[@]/%//go.sum}" "$tools"/etcd/main.go; echo "$version_flags $helm_flags"; go env GOVERSION) | sha256sum | cut -c1-12)"
cache_root="${OPTILOOP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/optiloop/tools}"
dest="$cache_root/k8s-${k8s_version}-etcd-${etcd_version}-${fingerprint}"

if [[ -x "$dest/kube-apiserver" && -x "$dest/kube-controller-manager" && -x "$dest/etcd" && -x "$dest/helm" ]]; then
  echo "$dest"
  exit 0
fi
if $print_only; then
  echo "the test control plane ($k8s_version, etcd $etcd_version) is not built in $cache_root: run 'make install'" >&2
  exit 1
fi
mkdir -p "$dest"

# Binaries are written under a temporary name and renamed, so an interrupted
# build never leaves a file that the check above would take for a finished one.
build() {  # build <wrapper dir> <package> <output name> <ldflags>
  local tmp="$dest/.$3.tmp.$$"
  echo "building $3 ($2) ..." >&2
  (cd "$tools/$1" && CGO_ENABLED=0 go build -trimpath -ldflags "$4" -o "$tmp" "$2")
  mv -f "$tmp" "$dest/$3"
}


build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "-s -w$version_flags"
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "-s -w$version_flags"
build etcd . etcd "-s -w"
build helm helm.sh/helm/v3/cmd/helm helm "$helm_flags"

"$dest/kube-apiserver" --version >&2
"$dest/etcd" --version | head -1 >&2
"$dest/helm" version --short >&2
echo "$dest"
