#!/usr/bin/env bash
# Builds what the test node needs beyond the control plane (tests/support/node.py): kubelet,
# kube-scheduler, kube-proxy and kubectl (the same Kubernetes release as kube-apiserver; kubectl is
# how a person or a test drives the node), CoreDNS, and two tiny OCI image archives made without
# any registry:
#   pause.oci.tar     the pod sandbox image: our own static Go program (hack/tools/pause) on scratch
#   busybox.oci.tar   a shell for test pods (busybox httpd, nslookup, Jobs): Debian's busybox-static
#
# Nothing here is published to a registry CI can reach, so the binaries are compiled from the exactly
# pinned wrapper modules under hack/tools/ and the images are packed with umoci. Everything goes to a
# cache folder outside the clone, keyed by the pinned modules, the link flags, the Go version and the
# busybox binary, so a warm machine skips the build entirely.
#
#   hack/build-node.sh               build if needed, print the folder
#   hack/build-node.sh --print-dir   print the folder if built, else fail
set -euo pipefail

print_only=false
[[ "${1:-}" == "--print-dir" ]] && print_only=true

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$here/tools"
die() { printf 'build-node: %s\n' "$*" >&2; exit 1; }

pinned() { awk -v m="$2" '$1 == m { print $2; exit }' "$tools/$1/go.mod"; }
k8s_version="$(pinned kubelet k8s.io/kubernetes)"
coredns_version="$(pinned coredns github.com/coredns/coredns)"
[[ -n "$k8s_version" && -n "$coredns_version" ]] || die "cannot read pinned versions from $tools/{kubelet,coredns}/go.mod"

major="${k8s_version#v}"; major="${major%%.*}"
minor="${k8s_version#v*.}"; minor="${minor%%.*}"
version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_flags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

busybox="$(command -v busybox || true)"
[[ -n "$busybox" ]] || die "busybox is missing (Debian's busybox-static): run 'make install'"
command -v umoci >/dev/null || die "umoci is missing: run 'make install'"

# The cache key covers everything that changes the outputs.
wrappers=("$tools/kubelet" "$tools/kube-scheduler" "$tools/kube-proxy" "$tools/kubectl" "$tools/coredns" "$tools/pause")
fingerprint="$( (cat "${wrappers[@]/%//go.mod}" "$tools"/{kubelet,kube-scheduler,kube-proxy,kubectl,coredns}/go.sum \
  "$tools/pause/main.go" "$busybox" "$0"; echo "$version_flags"; go env GOVERSION) | sha256sum | cut -c1-12)"
cache_root="${OPTILOOP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/optiloop/tools}"
dest="$cache_root/node-k8s-${k8s_version}-coredns-${coredns_version}-${fingerprint}"
outputs=(kubelet kube-scheduler kube-proxy kubectl coredns pause.oci.tar busybox.oci.tar)

complete() { local out; for out in "${outputs[@]}"; do [[ -s "$dest/$out" ]] || return 1; done; }
if complete; then
  echo "$dest"
  exit 0
fi
if $print_only; then
  die "the test node ($k8s_version, CoreDNS $coredns_version) is not built in $cache_root: run 'make install'"
fi
mkdir -p "$dest"
scratch="$(mktemp -d "$dest/.work.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

# Every output is written under a temporary name and renamed, so an interrupted build never
# leaves a file that the check above would take for a finished one.
build() {  # build <wrapper dir> <package> <output name> <ldflags>
  [[ -s "$dest/$3" ]] && return 0
  echo "building $3 ($2) ..." >&2
  (cd "$tools/$1" && CGO_ENABLED=0 go build -trimpath -ldflags "$4" -o "$scratch/$3" "$2")
  mv -f "$scratch/$3" "$dest/$3"
}

# pack <name> <rootfs dir> <umoci config flags...>: an OCI image archive (an OCI layout in a tar)
# whose one manifest is tagged <name>; the tests import it with `ctr image import`.
pack() {
  local name="$1" rootfs="$2"; shift 2
  local layout="$scratch/$name-layout" bundle="$scratch/$name-bundle"
  umoci init --layout "$layout"
  umoci new --image "$layout:$name"
  umoci unpack --image "$layout:$name" "$bundle" >/dev/null
  cp -a "$rootfs/." "$bundle/rootfs/"
  umoci repack --image "$layout:$name" "$bundle" >/dev/null
  umoci config --image "$layout:$name" --os linux --architecture "$(go env GOARCH)" "$@"
  umoci gc --layout "$layout"
  tar -C "$layout" -cf "$scratch/$name.oci.tar" .
  mv -f "$scratch/$name.oci.tar" "$dest/$name.oci.tar"
}

build kubelet k8s.io/kubernetes/cmd/kubelet kubelet "-s -w$version_flags"
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler "-s -w$version_flags"
build kube-proxy k8s.io/kubernetes/cmd/kube-proxy kube-proxy "-s -w$version_flags"
build kubectl k8s.io/kubernetes/cmd/kubectl kubectl "-s -w$version_flags"
build coredns github.com/coredns/coredns coredns "-s -w"
build pause . pause "-s -w"

if [[ ! -s "$dest/pause.oci.tar" ]]; then
  echo "packing pause.oci.tar ..." >&2
  mkdir -p "$scratch/pause-root"
  cp "$dest/pause" "$scratch/pause-root/pause"
  pack pause "$scratch/pause-root" --config.entrypoint /pause --config.user 65535:65535
fi
if [[ ! -s "$dest/busybox.oci.tar" ]]; then
  echo "packing busybox.oci.tar ($busybox) ..." >&2
  root="$scratch/busybox-root"
  mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/www"
  chmod 1777 "$root/tmp"
  cp "$busybox" "$root/bin/busybox"
  # One link per applet, so pods can run `sh`, `httpd`, `nslookup`, `wget` ... by name.
  applets="$("$busybox" --list)"
  for applet in $applets; do
    [[ "$applet" == busybox ]] || ln -sf busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  pack busybox "$root" --config.cmd sh --config.env PATH=/bin
fi

complete || die "the build finished without every output in $dest"
"$dest/kubelet" --version >&2
"$dest/coredns" -version >&2
echo "$dest"
