"""The harness's own cost per board kind, and the INT8/FP32 latency ratio on the riscv64 target.

    python bench/hil.py [--rounds 3] [--repeat 10] [--skip-ssh] [--skip-qemu]

Per board (host; qemu riscv64; ssh to 127.0.0.1 running the host Python; ssh to 127.0.0.1 running the agent
under qemu-riscv64): connect, transfer (upload of the agent, both demo models and the inputs, plus fetch),
agent start (an empty request: interpreter start, numpy+onnxruntime import, fingerprint), model load
(both models, no run), cleanup;
then the compare step on the PC (fidelity + accuracy of 500 samples). No inference is timed in that table.
The second table runs the demo's FP32 and INT8 models in performance mode on host and qemu.
Medians over --rounds. Uses ci/sshd.sh for a throw-away loopback sshd.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "host"))

from xqhil.boards import resolve_board  # noqa: E402
from xqhil.compare import accuracy_summary, fidelity_summary, top1  # noqa: E402
from xqhil.paths import default_rootfs  # noqa: E402
from xqhil.protocol import Task  # noqa: E402
from xqhil.session import BoardSession  # noqa: E402
from xqhil.transport import Deadlines  # noqa: E402

FP32 = REPO / "demo" / "model" / "fashion_cnn.onnx"


def quantized_demo(folder: Path) -> Path:
    import xquant

    out = folder / "fashion_cnn.q.onnx"
    xquant.quantize_onnx_model(str(REPO / "configs" / "demo.json"), output=str(out))
    return out


def boards(args, sshd_dir: Path):
    rootfs = default_rootfs()
    have_qemu = not args.skip_qemu and os.path.isfile(os.path.join(rootfs, "usr/bin/python3")) \
        and shutil.which("qemu-riscv64-static")
    qemu_py = f"qemu-riscv64-static -L {rootfs} {rootfs}/usr/bin/python3"
    found = [("host", resolve_board("host"))]
    if have_qemu:
        found.append(("qemu riscv64", resolve_board("qemu")))
    if not args.skip_ssh and os.path.exists("/usr/sbin/sshd"):
        subprocess.run(["bash", str(REPO / "ci" / "sshd.sh"), "start", str(sshd_dir)], check=True,
                       stdout=subprocess.DEVNULL)
        url = f"ssh://{os.environ.get('USER', 'root')}@127.0.0.1:{(sshd_dir / 'port').read_text().strip()}"
        common = {"ssh_key": str(sshd_dir / "userkey"), "known_hosts": str(sshd_dir / "known_hosts")}
        found.append(("ssh 127.0.0.1 (host python)", resolve_board(url, python=sys.executable, **common)))
        if have_qemu:
            found.append(("ssh 127.0.0.1 -> qemu riscv64", resolve_board(url, python=qemu_py, **common)))
    return found


def overhead(spec, int8: Path, rounds: int) -> dict:
    rows = {k: [] for k in ("connect", "transfer", "agent start", "model load", "cleanup", "total")}
    for _ in range(rounds):
        start = time.perf_counter()
        empty = BoardSession(spec, Deadlines()).run({}, [], [], []).timings
        mid = time.perf_counter()
        full = BoardSession(spec, Deadlines()).run({"fp32": str(FP32), "int8": str(int8)}, [], [], []).timings
        rows["connect"].append(empty["connect_s"])
        rows["transfer"].append(full["upload_s"] + full["fetch_s"])
        rows["agent start"].append(empty["run_s"])
        rows["model load"].append(max(0.0, full["run_s"] - empty["run_s"]))
        rows["cleanup"].append(empty["cleanup_s"])
        rows["total"].append(mid - start)
    return {k: statistics.median(v) for k, v in rows.items()}


def compare_cost(rounds: int) -> float:
    rng = np.random.default_rng(1)
    outs = {k: [rng.standard_normal((500, 10)).astype(np.float32)] for k in ("pc_fp32", "pc_int8", "chip_fp32",
                                                                              "chip_int8")}
    labels = rng.integers(0, 10, 500)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fidelity_summary(["logits"], outs)
        accuracy_summary({k: top1(v[0]) for k, v in outs.items()}, labels, 0.5, 2.0)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def latency(spec, int8: Path, repeat: int) -> dict:
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    tasks = [Task(f"{m}-perf", m, "performance", 1, 2, repeat) for m in ("fp32", "int8")]
    run = BoardSession(spec, Deadlines()).run({"fp32": str(FP32), "int8": str(int8)}, ["input"], [x], tasks)
    fp32, q = run.task("fp32-perf")["latency"], run.task("int8-perf")["latency"]
    return {"fp32": fp32["p50_ms"], "int8": q["p50_ms"], "ratio": q["p50_ms"] / fp32["p50_ms"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--skip-ssh", action="store_true")
    parser.add_argument("--skip-qemu", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xqhil-bench-") as tmp:
        tmp_path = Path(tmp)
        int8 = quantized_demo(tmp_path)
        sshd_dir = tmp_path / "sshd"
        try:
            found = boards(args, sshd_dir)
            rows = []
            for label, spec in found:
                cost = overhead(spec, int8, args.rounds)
                rows.append([label] + [f"{cost[k] * 1000:.0f}" for k in
                                       ("connect", "transfer", "agent start", "model load", "cleanup", "total")])
            cmp_ms = compare_cost(args.rounds) * 1000
            print(f"harness overhead per board (ms, median of {args.rounds}; no inference; models: demo "
                  f"fashion_cnn FP32 {FP32.stat().st_size // 1024} KiB + INT8 {int8.stat().st_size // 1024} KiB)")
            print(tabulate(rows, headers=["board", "connect", "transfer", "agent start", "model load", "cleanup",
                                          "empty request total"], tablefmt="github"))
            print(f"\ncompare on the PC (fidelity + accuracy, 500 samples x 10 logits, 4 runs): {cmp_ms:.1f} ms\n")
            lat_rows = []
            for label, spec in found:
                if spec.kind in ("host", "qemu"):
                    lat = latency(spec, int8, args.repeat)
                    lat_rows.append([label + (" (emulated)" if spec.kind == "qemu" else ""), f"{lat['fp32']:.3f}",
                                     f"{lat['int8']:.3f}", f"{lat['ratio']:.2f}"])
            print(f"demo model latency, batch 1, p50 of {args.repeat} runs after 2 warm-up runs")
            print(tabulate(lat_rows, headers=["board", "FP32 ms", "INT8 ms", "INT8/FP32"], tablefmt="github"))
        finally:
            if (sshd_dir / "sshd.pid").exists():
                subprocess.run(["bash", str(REPO / "ci" / "sshd.sh"), "stop", str(sshd_dir)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
