#!/usr/bin/env bash
# Build (once) the riscv64 Debian root filesystem that `xqhil ... --board qemu` runs the device agent in.
#
#   bash ci/build-rootfs.sh            # -> ci/.cache/riscv64-rootfs (or $XQHIL_RISCV64_ROOTFS)
#   bash ci/build-rootfs.sh --force    # rebuild even when the stamp says it is up to date
#
# Idempotent and cached: a stamp file records the package list and this script's version; a matching stamp
# makes the script exit at once. The build goes to a temporary folder that is renamed when it is complete, so
# an interrupted build never leaves a half-made rootfs. Needs root (or fakeroot-capable mmdebstrap),
# mmdebstrap and qemu-user-static (bash ci/install-system-deps.sh installs them).
# Optional: XQHIL_DEBIAN_MIRROR (a Debian mirror URL) and XQHIL_DEBIAN_SUITE (default: stable).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
root="${XQHIL_RISCV64_ROOTFS:-$here/.cache/riscv64-rootfs}"
suite="${XQHIL_DEBIAN_SUITE:-stable}"
pkgfile="$here/riscv64-packages.txt"
script_version=2
force=0
[ "${1:-}" = "--force" ] && force=1

mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$pkgfile" | grep -v '^$')
stamp_text="xqhil-rootfs v$script_version suite=$suite packages=$(IFS=,; echo "${pkgs[*]}")"
stamp="$root/.xqhil-rootfs-stamp"

if [ "$force" -eq 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_text" ]; then
  echo "riscv64 rootfs up to date: $root"
  exit 0
fi
for tool in mmdebstrap qemu-riscv64-static; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found; run: bash ci/install-system-deps.sh" >&2; exit 3; }
done

mkdir -p "$(dirname "$root")"
tmp="$root.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
echo "building riscv64 rootfs ($suite: ${pkgs[*]}) in $root ..."
mirror_args=()
[ -n "${XQHIL_DEBIAN_MIRROR:-}" ] && mirror_args=("$XQHIL_DEBIAN_MIRROR")
mmdebstrap --quiet --arch=riscv64 --variant=extract \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --include="$(IFS=,; echo "${pkgs[*]}")" "$suite" "$tmp" "${mirror_args[@]}"

# --variant=extract runs no maintainer scripts: make the merged-/usr links and the BLAS/LAPACK
# alternatives by hand so the guest's loader finds everything without LD_LIBRARY_PATH.
for d in lib bin sbin; do
  [ -e "$tmp/$d" ] || ln -s "usr/$d" "$tmp/$d"
done
libdir="$tmp/usr/lib/riscv64-linux-gnu"
for lib in blas/libblas.so.3 lapack/liblapack.so.3; do
  name="$(basename "$lib")"
  if [ -e "$libdir/$lib" ] && [ ! -e "$libdir/$name" ]; then
    ln -s "$lib" "$libdir/$name"
  fi
done

# smoke test: the guest Python imports numpy and onnxruntime
env -i PATH=/usr/bin:/bin qemu-riscv64-static -L "$tmp" "$tmp/usr/bin/python3" -c \
  'import platform, numpy, onnxruntime; print("riscv64 rootfs ok:", platform.machine(), "python", platform.python_version(), "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__)' \
  2> >(grep -v 'Schema error: Trying to register schema' >&2)

echo "$stamp_text" > "$tmp/.xqhil-rootfs-stamp"
rm -rf "$root"
mv "$tmp" "$root"
trap - EXIT
echo "riscv64 rootfs ready: $root ($(du -sh "$root" | cut -f1))"
