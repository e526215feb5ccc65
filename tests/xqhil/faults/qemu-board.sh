#!/bin/sh
# The qemu riscv64 board with a node fault (sitecustomize.py): its Python has no onnx package, so the host
# Python first writes the faulty INT8 models beside the uploaded ones, then the riscv64 Python runs the agent.
# usage (as --python): env PYTHONPATH=FAULTS XQHIL_FAULT=... sh FAULTS/qemu-board.sh HOST_PYTHON ROOTFS
host="$1"; root="$2"; shift 2
"$host" -c 'import os, sitecustomize; sitecustomize.prefault(os.getcwd())' || exit 3
exec qemu-riscv64-static -L "$root" "$root/usr/bin/python3" "$@"
