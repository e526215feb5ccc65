#!/usr/bin/env bash
# Debian packages the tests need: qemu-user + mmdebstrap (riscv64 board), openssh-server (loopback board),
# podman + runc + arch-test (the Dockerfile.riscv container, ci/build-image.sh), chromium (dashboard check),
# dataset-fashion-mnist (demo and benchmark data), python3-venv (Debian's python3 cannot make a venv without
# it), espeak-ng + fonts-dejavu-core + locales (the zoo's realistic inputs: speech, rendered text, Khmer words
# of the km_KH locale file), postgresql (the history tests start a throwaway server from its initdb/pg_ctl;
# under root they run it as the unprivileged user nobody via runuser). Idempotent.
#   usage: install-system-deps.sh          everything the tests need
#          install-system-deps.sh venv     only what `make demo` needs to create its venv
set -euo pipefail
pkgs=(qemu-user-static mmdebstrap openssh-server podman runc arch-test chromium dataset-fashion-mnist python3-venv
      espeak-ng fonts-dejavu-core locales postgresql)
[ "${1:-}" = "venv" ] && pkgs=(python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
