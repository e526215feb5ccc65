#!/usr/bin/env bash
# Build (once) the riscv64 container image of Dockerfile.riscv with podman, without any container registry.
#
#   bash ci/build-image.sh            # build if needed; last stdout line: the image tag
#   bash ci/build-image.sh --check    # exit 0 and print the tag if the image is up to date, 1 otherwise
#   eval "$(bash ci/build-image.sh --env)"   # export CONTAINERS_CONF for your own podman commands
#
# The base image (Debian stable, riscv64, minbase) is made locally with mmdebstrap and cached as
# ci/.cache/podman/base-<suite>.tar. The image tag carries a content hash of Dockerfile.riscv,
# ci/riscv64-packages.txt, device/xqhil_agent.py and this script, so a rerun with nothing changed takes
# seconds. The built image is also saved as ci/.cache/podman/image-<hash>.tar: a fresh machine that kept
# ci/.cache loads it instead of building. Needs root (binfmt_misc registration of qemu-riscv64, podman's storage), podman, runc,
# mmdebstrap, arch-test and qemu-user-static (bash ci/install-system-deps.sh installs them).
# Optional: XQHIL_DEBIAN_MIRROR (a Debian mirror URL) and XQHIL_DEBIAN_SUITE (default: stable).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
cache="$here/.cache/podman"
suite="${XQHIL_DEBIAN_SUITE:-stable}"
base_tar="$cache/base-$suite.tar"
base_tag="localhost/xqhil-debian-riscv64:$suite"
mode="${1:-build}"

hash="$(cat "$repo/Dockerfile.riscv" "$here/riscv64-packages.txt" "$repo/device/xqhil_agent.py" "$0" \
        <(echo "suite=$suite") | sha256sum | cut -c1-12)"
tag="localhost/xqhil-rv64:$hash"

die() { echo "error: $*" >&2; exit 3; }

write_containers_conf() {
  # root lacks CAP_SYS_RESOURCE on some CI machines: podman's default ulimits fail there; crun rejects a
  # mixed cgroup layout: runc works on both.
  local nofile
  nofile="$(ulimit -Hn)"
  [ "$nofile" = unlimited ] && nofile=1048576
  mkdir -p "$cache"
  printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n' \
    "$nofile" "$nofile" > "$cache/containers.conf"
  export CONTAINERS_CONF="$cache/containers.conf"
}

register_binfmt() {
  # The kernel runs riscv64 binaries in the container through qemu-riscv64-static (flag F: loaded now).
  local entry=/proc/sys/fs/binfmt_misc/qemu-riscv64
  [ -e "$entry" ] && return 0
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "cannot mount binfmt_misc (needs root)"
  [ -e "$entry" ] || cat /usr/lib/binfmt.d/qemu-riscv64.conf > /proc/sys/fs/binfmt_misc/register \
    || die "cannot register qemu-riscv64 with binfmt_misc (needs root and qemu-user-static)"
}

if [ "$mode" = "--env" ]; then
  write_containers_conf
  echo "export CONTAINERS_CONF=$CONTAINERS_CONF"
  exit 0
fi
for tool in podman runc mmdebstrap arch-test qemu-riscv64-static; do
  command -v "$tool" >/dev/null || die "$tool not found; run: bash ci/install-system-deps.sh"
done
write_containers_conf
register_binfmt
if podman image exists "$tag"; then
  echo "riscv64 image up to date"
  echo "$tag"
  exit 0
fi
archive="$cache/image-$hash.tar"   # the built image, for a fresh machine whose ci/.cache was kept
if [ -s "$archive" ] && [ "$mode" != "--check" ]; then
  podman load --quiet -i "$archive" >/dev/null && podman image exists "$tag" \
    && { echo "riscv64 image loaded from $archive"; echo "$tag"; exit 0; }
fi
[ "$mode" = "--check" ] && { echo "riscv64 image $tag not built; run: bash ci/build-image.sh" >&2; exit 1; }

start=$SECONDS
if [ ! -s "$base_tar" ]; then
  echo "making the riscv64 base image ($suite, minbase) with mmdebstrap ..."
  mirror_args=()
  [ -n "${XQHIL_DEBIAN_MIRROR:-}" ] && mirror_args=("$XQHIL_DEBIAN_MIRROR")
  # Check-Valid-Until is baked into the base, so the Dockerfile's own `apt-get update` accepts the same
  # Release files mmdebstrap accepted.
  mmdebstrap --quiet --arch=riscv64 --variant=minbase --format=tar \
    --aptopt='Acquire::Check-Valid-Until "false"' "$suite" "$base_tar.tmp" "${mirror_args[@]}"
  mv "$base_tar.tmp" "$base_tar"
fi
if ! podman image exists "$base_tag"; then
  podman import --arch riscv64 --os linux --change 'CMD ["bash"]' "$base_tar" "$base_tag" >/dev/null
fi
echo "building $tag from Dockerfile.riscv (emulated riscv64, several minutes when cold) ..."
if ! podman build --pull=never --network=host --platform linux/riscv64 --build-arg "BASE=$base_tag" \
     -f "$repo/Dockerfile.riscv" -t "$tag" "$repo" > "$cache/build.log" 2>&1; then
  tail -n 30 "$cache/build.log" >&2
  die "podman build failed (full log: $cache/build.log)"
fi
# keep the newest image only: drop the older tags and archives
podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/xqhil-rv64:' | grep -vx "$tag" \
  | xargs -r podman rmi >/dev/null 2>&1 || true
find "$cache" -maxdepth 1 -name 'image-*.tar*' ! -name "image-$hash.tar" -delete
podman save --quiet -o "$archive.tmp" "$tag" && mv "$archive.tmp" "$archive"
echo "riscv64 image built in $((SECONDS - start)) s"
echo "$tag"
