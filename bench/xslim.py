"""xquant against the vendor tool (XQuant's successor ``xslim``) on the same models, data and config.

xslim needs torch 2.14.1 + torchvision 0.29.1 (about 5 GB): install it in a venv OUTSIDE the repo, then

    python3 -m venv ~/xs && ~/xs/bin/pip install torch==2.14.1 torchvision==0.29.1 xslim opencv-python-headless
    .venv/bin/python bench/xslim.py --xslim-python ~/xs/bin/python [--models resnet mobilenetv2] [--markdown]

Both tools run as whole command-line processes (``python -m xslim -c`` and ``python -m xquant -c``) with
their default settings on the same calibration files; the table shows output SNR/cosine against FP32 on
the held-out eval set, top-1 agreement and accuracy, wall time and peak memory of that process, and
whether the tool accepted the config as given.

Config differences handled here, each also a compatibility finding printed under the table:
* xslim 2.1.2 reads only ``input_parameters`` (the seed's ``input_parametres`` crashes it);
* it treats an empty ``preprocess_file`` as ``file.py:function`` and crashes;
* its img reader always decodes 3 channels, so a 1-channel model (the demo) gets .npy files instead.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


TIME = "/usr/bin/time"  # GNU time (Debian's 'time'): the peak RSS of the command alone


def run_process(cmd: List[str], cwd: str, log_path: str) -> Tuple[int, float, float]:
    """Exit code, wall seconds and peak RSS (MiB) of one command. The peak comes from GNU time: wait4's
    ru_maxrss of a child starts from the parent's RSS at the fork, so a bench process holding 400-600 MiB of
    models and data reported that for every small xquant run after it (MiB columns before 2026-12-02)."""
    start = time.perf_counter()
    peak_file = log_path + ".peak"
    wrapped = [TIME, "-f", "%M", "-o", peak_file] + cmd if os.path.exists(TIME) else cmd
    with open(log_path, "w") as log:
        proc = subprocess.Popen(wrapped, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    try:
        with open(peak_file, encoding="ascii") as handle:
            peak = int(handle.read().strip().splitlines()[-1]) / 1024
    except (OSError, ValueError, IndexError):
        peak = usage.ru_maxrss / 1024  # without GNU time: an upper bound (see above)
    return code, wall, peak


def npy_lists(bench: dict, folder: str) -> Dict[str, str]:
    """Calibration samples as .npy files (already preprocessed by xquant's reader), one list per input."""
    from xquant.config import load_config
    from xquant.data import CalibrationData

    cfg, _ = load_config(bench["config"])
    data = CalibrationData(cfg)
    lists: Dict[str, List[str]] = {name: [] for name in data.files}
    for i, batch in enumerate(data.batches(1)):
        for name, value in batch.items():
            path = os.path.join(folder, f"{name}_{i:04d}.npy")
            np.save(path, value)
            lists[name].append(path)
    out = {}
    for name, paths in lists.items():
        out[name] = os.path.join(folder, f"{name}_list.txt")
        with open(out[name], "w") as handle:
            handle.write("\n".join(paths) + "\n")
    return out


def xslim_config(bench: dict, folder: str) -> Tuple[dict, List[str]]:
    """The benchmark's config in the form xslim accepts, and what had to change."""
    os.makedirs(folder, exist_ok=True)
    cfg = copy.deepcopy(bench["config"])
    cfg.pop("verify_parameters", None)
    cfg["model_parameters"]["working_dir"] = folder
    calib = cfg["calibration_parameters"]
    params = calib.pop("input_parametres")
    calib["input_parameters"] = params
    changes = ["input_parametres -> input_parameters"]
    for item in params:
        if not item.get("preprocess_file"):
            item.pop("preprocess_file", None)
    gray = [p for p in params if p.get("file_type", "img") == "img" and p.get("input_shape", [0, 3])[1] == 1]
    if gray:
        lists = npy_lists(bench, folder)
        for item in params:
            item.update(file_type="npy", data_list_path=lists[item["input_name"]])
            item.pop("mean_value", None)
            item.pop("std_value", None)
        changes.append("1-channel img -> preprocessed npy")
    return cfg, changes


def run_tool(tool: str, python: str, cfg: dict, folder: str) -> dict:
    os.makedirs(folder, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    cfg["model_parameters"]["working_dir"] = folder
    path = os.path.join(folder, "cfg.json")
    with open(path, "w") as handle:
        json.dump(cfg, handle, indent=1)
    module = "xslim" if tool == "xslim" else "xquant"
    code, wall, peak = run_process([python, "-m", module, "-c", path], folder, os.path.join(folder, "log.txt"))
    prefix = cfg["model_parameters"].get("output_prefix") or "model"
    found = [f for f in os.listdir(folder) if f.endswith(".onnx") and f.startswith(prefix)]
    return {"code": code, "wall_s": wall, "peak_mib": peak,
            "output": os.path.join(folder, sorted(found)[0]) if found and code == 0 else None}


def bench_model(name: str, xslim_python: str, tools: List[str]) -> Tuple[List[list], List[str]]:
    import onnxruntime as ort

    from models import WORK_ROOT, get_benchmark
    from quant import evaluate, run_all

    bench = get_benchmark(name)
    root = os.path.join(WORK_ROOT, "xslim", name)
    os.makedirs(root, exist_ok=True)
    ref_sess = ort.InferenceSession(bench["onnx"], providers=["CPUExecutionProvider"])
    ref = run_all(ref_sess, bench["eval_inputs"])
    xs_cfg, changes = xslim_config(bench, os.path.join(root, "xslim"))
    rows: List[list] = []
    notes = [f"{name}: xslim needed {', '.join(changes)}"]
    for tool, python, cfg in (("xquant", sys.executable, bench["config"]), ("xslim", xslim_python, xs_cfg)):
        if tool not in tools:
            continue
        res = run_tool(tool, python, cfg, os.path.join(root, tool))
        if res["output"] is None:
            rows.append([name, tool, "failed", "", "", "", f"{res['wall_s']:.1f}", f"{res['peak_mib']:.0f}"])
            continue
        try:
            m = evaluate(bench, res["output"], ref)
        except Exception as exc:  # the tool wrote a model onnxruntime refuses: a finding, not a crash
            reason = str(exc).strip().splitlines()[0].split("FAIL : ")[-1][:160]
            rows.append([name, tool, "unloadable", "", "", "", f"{res['wall_s']:.1f}", f"{res['peak_mib']:.0f}"])
            notes.append(f"{name}: {tool}'s model does not load in onnxruntime: {reason}")
            continue
        rows.append([name, tool, f"{m['snr_db']:.2f}", f"{m['cosine']:.5f}", f"{m['agree']:.1f}", f"{m['acc']:.1f}",
                     f"{res['wall_s']:.1f}", f"{res['peak_mib']:.0f}"])
        print(f"  {name:12s} {tool:7s} SNR {m['snr_db']:6.2f} dB  {res['wall_s']:6.1f} s", file=sys.stderr)
    return rows, notes


def main(argv: Optional[List[str]] = None) -> int:
    from tabulate import tabulate

    from models import BENCHMARKS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xslim-python", default=os.environ.get("XSLIM_PYTHON"),
                        help="python of the venv where xslim is installed (or $XSLIM_PYTHON)")
    parser.add_argument("--models", nargs="+", default=list(BENCHMARKS), choices=BENCHMARKS)
    parser.add_argument("--tools", nargs="+", default=["xquant", "xslim"], choices=["xquant", "xslim"])
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    if not args.xslim_python or not os.path.exists(args.xslim_python):
        print("bench/xslim.py: give --xslim-python PATH (a venv with xslim; see this file's docstring)",
              file=sys.stderr)
        return 2
    rows: List[list] = []
    notes: List[str] = []
    for name in args.models:
        r, n = bench_model(name, args.xslim_python, args.tools)
        rows += r
        notes += n
    headers = ["model", "tool", "SNR dB", "cosine", "top-1 agree %", "acc %", "process s", "peak MiB"]
    print(tabulate(rows, headers=headers, tablefmt="github" if args.markdown else "simple"))
    print("\n".join(f"- {n}" for n in notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
