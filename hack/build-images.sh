#!/usr/bin/env bash
# Builds optiloop's four images (operator, jobs, serve, drift) from the project's Dockerfile without
# a Docker engine or a registry, as archives that `ctr -n k8s.io image import` takes:
#
#   1. a Python base image made from Debian (`debootstrap --variant=minbase bookworm` with Debian's
#      python3 3.11 and python3-venv, from the mirror apt uses), packed with umoci; the Debian
#      package versions it got are recorded next to it (packages.txt) and in its labels;
#   2. each target with `buildah bud --layers` on that base (PYTHON_IMAGE), exported as a
#      docker-archive named optiloop/<target>:<input hash>.
#
# Everything is cached outside the clone, under $OPTILOOP_TOOLS_DIR (default ~/.cache/optiloop/tools)
# in images/: an image is rebuilt only when its inputs change (the Dockerfile, its lock, the code it
# copies, the base), and buildah's layer cache there means a code change never reinstalls the locked
# dependencies. Archives are written under a temporary name and renamed, so a half-built image is
# never taken for a finished one.
#
#   hack/build-images.sh [TARGET...]              build what is missing, print the output folder
#   hack/build-images.sh --print-dir [TARGET...]  print the folder if all are built, else fail
#
# The output folder holds <target>.tar (a link to the archive) and images.tsv, one line per target:
# target, image name, archive path. Set OPTILOOP_BUILDAH_DRIVER (overlay or vfs) to choose buildah's
# storage driver (default: overlay, which shares layers on disk; vfs copies every layer).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

all_targets=(operator jobs serve drift)
print_only=false
if [[ "${1:-}" == "--print-dir" ]]; then
  print_only=true
  shift
fi
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")
for target in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $target "* ]] || { echo "build-images: unknown target '$target' (known: ${all_targets[*]})" >&2; exit 2; }
done

say() { printf 'build-images: %s\n' "$*" >&2; }
die() { printf 'build-images: %s\n' "$*" >&2; exit 1; }

cache_root="${OPTILOOP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/optiloop/tools}"
root="$cache_root/images"
driver="${OPTILOOP_BUILDAH_DRIVER:-overlay}"
[[ "$driver" == overlay || "$driver" == vfs ]] || die "OPTILOOP_BUILDAH_DRIVER must be overlay or vfs, not '$driver'"

# --- inputs ------------------------------------------------------------------------
# The base image's recipe: changing any of it makes a new base (and so new images).
suite=bookworm
base_packages=python3,python3-venv,python-is-python3,ca-certificates
base_recipe="debootstrap --variant=minbase --include=$base_packages $suite; umoci; env LANG=C.UTF-8; recipe 1"
base_key="$(printf '%s' "$base_recipe" | sha256sum | cut -c1-12)"
base_dir="$root/base-$base_key"
base_ref="localhost/optiloop/python-base:$base_key"

# What each target's stages copy from the build context (keep in step with the Dockerfile;
# tests/images checks that these are exactly the Dockerfile's COPY sources).
target_inputs() {
  case "$1" in
    drift) echo "Dockerfile .dockerignore requirements/drift.lock pyproject.toml optiloop/__init__.py optiloop/drift optiloop/formats" ;;
    *) echo "Dockerfile .dockerignore requirements/$1.lock pyproject.toml optiloop" ;;
  esac
}

# The content hash of a target's inputs (file names and bytes, caches excluded as in .dockerignore),
# of the base image and of this script's build command.
input_key() {
  local -a paths
  read -r -a paths <<<"$(target_inputs "$1")"
  {
    echo "$1 $base_key $driver build-images 1"
    find "${paths[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-12
}

declare -A keys
for target in "${targets[@]}"; do
  keys[$target]="$(input_key "$target")"
done
set_key="$(for target in "${targets[@]}"; do echo "$target ${keys[$target]}"; done | sha256sum | cut -c1-12)"
out="$root/set-$set_key"

archive_of() { echo "$root/$1-${keys[$1]}/$1.tar"; }

# The output folder for these targets: links to their archives and images.tsv, written whole under
# a temporary name and renamed.
write_set() {
  [[ -f "$out/images.tsv" ]] && return
  local tmp_out="$root/.set-$set_key.tmp.$$" target
  rm -rf "$tmp_out"
  mkdir -p "$tmp_out"
  for target in "${targets[@]}"; do
    ln -s "$(archive_of "$target")" "$tmp_out/$target.tar"
    printf '%s\t%s\t%s\n' "$target" "optiloop/$target:${keys[$target]}" "$(archive_of "$target")" >>"$tmp_out/images.tsv"
  done
  rm -rf "$out"
  mv "$tmp_out" "$out"
}

complete=true
for target in "${targets[@]}"; do [[ -f "$(archive_of "$target")" ]] || complete=false; done
if $complete; then
  write_set
  echo "$out"
  exit 0
fi
if $print_only; then
  die "images (${targets[*]}) for this checkout are not built in $root: run 'make install' or hack/build-images.sh"
fi

missing=()
for tool in debootstrap umoci buildah; do command -v "$tool" >/dev/null || missing+=("$tool"); done
command -v runc >/dev/null || missing+=(runc)
if ((${#missing[@]})); then
  [[ "$(id -u)" == 0 ]] || die "missing tools: run 'sudo apt-get install -y ${missing[*]}' and try again"
  say "installing ${missing[*]} (Debian's packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[[ "$(id -u)" == 0 ]] || die "building images needs root (debootstrap, buildah's chroot isolation)"

mkdir -p "$root"
# One build at a time per cache (another checkout may build into the same storage): the pruning
# below must never remove a layer that a build in progress is about to use.
exec 9>"$root/.lock"
flock 9
# buildah writes every exported layer to its temporary folder first (gigabytes for the jobs and
# drift images), and a killed build leaves that behind (/var/tmp by default): keep it in the cache,
# emptied before each build, so no run can fill the disk with a previous run's remains.
export TMPDIR="$root/tmp"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"
buildah_cmd=(buildah --root "$root/storage-$driver" --runroot "$root/run-$driver" --storage-driver "$driver")

# --- 1. the base image -------------------------------------------------------------------
# The Debian mirror apt uses (deb822 sources first, then sources.list), unless told otherwise.
debian_mirror() {
  if [[ -n "${OPTILOOP_DEBIAN_MIRROR:-}" ]]; then echo "$OPTILOOP_DEBIAN_MIRROR"; return; fi
  local found
  found="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  [[ -n "$found" ]] || found="$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)"
  echo "${found:-http://deb.debian.org/debian}"
}

# Removes a folder without ever following a mount inside it (such as a target's /dev or /proc).
remove_tree() {
  local mount
  while read -r mount; do umount -l "$mount" 2>/dev/null || true; done < <(awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r)
  rm -rf --one-file-system "$1"
}

build_base() {
  local tmp="$root/.base-$base_key.tmp.$$" mirror
  mirror="$(debian_mirror)"
  remove_tree "$tmp"
  mkdir -p "$tmp"
  # Expanded now: $tmp is local, and the trap may run after this function has returned (set -e).
  trap "remove_tree '$tmp'" EXIT
  say "base image: debootstrap $suite (minbase + $base_packages) from $mirror"
  umoci init --layout "$tmp/oci"
  umoci new --image "$tmp/oci:base"
  umoci unpack --image "$tmp/oci:base" "$tmp/bundle" >/dev/null
  # In a private mount namespace: the /proc, /sys and /dev mounts debootstrap makes in the target
  # vanish with it, whatever happens, and never show on the host.
  unshare --mount --propagation private debootstrap --variant=minbase --include="$base_packages" "$suite" "$tmp/bundle/rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -20 "$tmp/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  chroot "$tmp/bundle/rootfs" dpkg-query -W -f '${Package}=${Version}\n' | LC_ALL=C sort >"$tmp/packages.txt"
  # No apt lists, package cache or logs in the image: they are large and say nothing at run time.
  rm -rf "$tmp/bundle/rootfs"/var/lib/apt/lists/* "$tmp/bundle/rootfs"/var/cache/apt/* \
    "$tmp/bundle/rootfs"/var/cache/debconf/*-old "$tmp/bundle/rootfs"/var/log/* "$tmp/bundle/rootfs"/tmp/*
  umoci repack --image "$tmp/oci:base" "$tmp/bundle"
  local python_version packages_sha
  python_version="$(awk -F= '$1 == "python3" { print $2 }' "$tmp/packages.txt")"
  packages_sha="$(sha256sum <"$tmp/packages.txt" | cut -c1-64)"
  umoci config --image "$tmp/oci:base" \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --config.env LANG=C.UTF-8 \
    --config.cmd python3 \
    --config.label "org.opencontainers.image.description=Debian $suite minbase with Debian's Python (debootstrap)" \
    --config.label "dev.optiloop.base.recipe=$base_recipe" \
    --config.label "dev.optiloop.base.python3=$python_version" \
    --config.label "dev.optiloop.base.packages-sha256=$packages_sha"
  umoci gc --layout "$tmp/oci"
  remove_tree "$tmp/bundle"
  mv "$tmp/packages.txt" "$tmp/oci/packages.txt"
  rm -rf "$base_dir"
  mv "$tmp/oci" "$base_dir"
  remove_tree "$tmp"
  trap - EXIT
  say "base image: $(wc -l <"$base_dir/packages.txt") Debian packages, python3 $python_version ($base_dir/packages.txt)"
}

[[ -f "$base_dir/packages.txt" ]] || build_base
if ! "${buildah_cmd[@]}" inspect --type image "$base_ref" >/dev/null 2>&1; then
  # buildah names an image pulled from a layout after the layout's path, which must then be a valid
  # image name: hence the relative path (the cache's absolute path has dots, as in ~/.cache).
  base_id="$(cd "$root" && "${buildah_cmd[@]}" pull --quiet "oci:base-$base_key:base")" \
    || die "could not load the base image $base_dir into buildah's storage"
  "${buildah_cmd[@]}" tag "$base_id" "$base_ref"
  "${buildah_cmd[@]}" rmi "localhost/base-$base_key:latest" >/dev/null
fi

# --- 2. the four targets ---------------------------------------------------------------------
ca_bundle=/etc/ssl/certs/ca-certificates.crt
build_target() {
  local target="$1" key="${keys[$1]}"
  local name="optiloop/$target:$key" dir="$root/$target-$key"
  local tmp="$dir/.$target.tar.tmp.$$" started seconds
  # A torch image (jobs, drift) takes about 10 GB more while its layer and archive are written, the
  # others about 2: refuse to start rather than fill a disk others share (OPTILOOP_IMAGES_MIN_FREE_GB).
  local free_gb need_gb=2
  [[ "$target" == jobs || "$target" == drift ]] && need_gb=12
  need_gb="${OPTILOOP_IMAGES_MIN_FREE_GB:-$need_gb}"
  free_gb=$(($(df -Pk "$root" | awk 'NR == 2 { print $4 }') / 1024 / 1024))
  ((free_gb >= need_gb)) \
    || die "$target: only ${free_gb} GB free under $root; building it needs ${need_gb} GB (OPTILOOP_IMAGES_MIN_FREE_GB)"
  mkdir -p "$dir"
  trap "rm -f '$tmp'" EXIT
  say "$target: building $name"
  started=$(date +%s)
  # The host's CA bundle lets pip reach the package index through this network's TLS chain;
  # it is mounted for the RUN steps only and never stored in a layer.
  "${buildah_cmd[@]}" bud --quiet --isolation chroot --layers --format docker \
    --build-arg "PYTHON_IMAGE=$base_ref" --target "$target" --tag "$name" \
    --volume "$ca_bundle:$ca_bundle:ro" --file Dockerfile . >"$dir/build.log" 2>&1 \
    || { tail -30 "$dir/build.log" >&2; die "$target: buildah bud failed (whole log: $dir/build.log)"; }
  rm -f "$tmp"
  "${buildah_cmd[@]}" push --quiet "$name" "docker-archive:$tmp:$name" >/dev/null
  mv -f "$tmp" "$dir/$target.tar"
  trap - EXIT
  seconds=$(($(date +%s) - started))
  printf '{"name": "%s", "target": "%s", "base": "%s", "archive_bytes": %s, "build_seconds": %s}\n' \
    "$name" "$target" "$base_ref" "$(stat -c %s "$dir/$target.tar")" "$seconds" >"$dir/image.json"
  say "$target: $name in ${seconds}s, $(du -h "$dir/$target.tar" | cut -f1) ($dir/$target.tar)"
  # Keep only the newest build of this target: the jobs and drift archives are gigabytes each.
  local old
  for old in $(ls -1dt "$root/$target"-*/ 2>/dev/null | tail -n +2); do
    "${buildah_cmd[@]}" rmi "optiloop/$target:$(basename "$old" | sed "s/^$target-//")" >/dev/null 2>&1 || true
    rm -rf "$old"
  done
}

for target in "${targets[@]}"; do
  [[ -f "$(archive_of "$target")" ]] || build_target "$target"
done

# Drop the layers no image needs any more (earlier builds' code layers, leftover stages), so the
# storage holds each target's dependency layer and its newest image, not every build ever made.
# Pruning removes images without tag or child; repeat until their parents are gone as well.
"${buildah_cmd[@]}" rm --all >/dev/null 2>&1 || true
for _ in 1 2 3 4 5 6 7 8 9 10; do
  [[ -n "$("${buildah_cmd[@]}" images --quiet --filter dangling=true 2>/dev/null)" ]] || break
  "${buildah_cmd[@]}" rmi --prune >/dev/null 2>&1 || break
done

rm -rf "$out"
write_set
# Output folders whose archives were pruned are of no use any more.
for stale in "$root"/set-*/; do
  for link in "$stale"*.tar; do [[ -e "$link" ]] || { rm -rf "$stale"; break; }; done
done
echo "$out"
