#!/usr/bin/env bash
# `make demo`: quantize the bundled demo model and verify it on this machine (--board host).
#   usage: bash ci/demo.sh BIN_DIR OUT_DIR        (BIN_DIR holds the xqhil console script)
set -euo pipefail
bin="${1:-.venv/bin}"
out="${2:-out/demo}"
cd "$(dirname "$0")/.."
mkdir -p "$out"
set +e
"$bin/xqhil" quantize-and-verify configs/demo.json --board host --out "$out"
rc=$?
set -e
if [ -f "$out/verify.md" ]; then
  echo "reports: $out/verify.md and $out/verify.json"
  echo "same check on the riscv64 target: $bin/xqhil quantize-and-verify configs/demo.json --board qemu --out $out/qemu"
fi
exit "$rc"
