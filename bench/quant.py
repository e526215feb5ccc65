"""Fidelity and cost of xquant's calibration types against onnxruntime's quantize_static.

For every benchmark model of ``bench/models.py`` (trained on real Fashion-MNIST images) or ``bench/real.py``
(real pretrained models on real photos: ``effnet_lite0``, an ImageNet classifier at 224 px, or ``zoo:<name>``)
and every case (xquant minmax / percentile / kl / mse / default, onnxruntime MinMax / Percentile, both
per-channel QDQ INT8 on the same calibration files), prints: output SNR (dB) and cosine against FP32 on the
held-out eval set, top-1 agreement with FP32, top-1 accuracy, wall time of the quantization call (median of
--repeat fresh processes, imports excluded, the cases interleaved round by round), its ratio to onnxruntime
MinMax and Percentile timed in the same rounds ("x MinMax", "x Pct": median of per-round ratios), peak memory
of the process that ran it, and, for xquant, a second table of where its time went (calibration, each
fine-tune pass, writing).

    .venv/bin/python bench/quant.py                       # all models, all cases
    .venv/bin/python bench/quant.py --models demo resnet --cases xquant:default ort:minmax
    .venv/bin/python bench/quant.py --levels 0 1 2 3      # xquant default per finetune_level
    .venv/bin/python bench/quant.py --models zoo:layout_cdla --cases ort:minmax ort:percentile xquant:default \
        --levels cfg                                      # only the shipped default (no extra level row)
    .venv/bin/python bench/quant.py --markdown            # tables in GitHub markdown
    .venv/bin/python bench/quant.py --models effnet_lite0 --cases xquant:default ort:minmax ort:percentile \
        --levels 1 2 --repeat 1                           # a real ImageNet model, 40 calibration photos
"""
from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

XQ_METHODS = ("minmax", "percentile", "kl", "mse", "default")
ORT_METHODS = ("minmax", "percentile")
DEFAULT_CASES = [f"xquant:{m}" for m in XQ_METHODS] + [f"ort:{m}" for m in ORT_METHODS]


def out_dir(model: str) -> str:
    from models import WORK_ROOT

    path = os.path.join(WORK_ROOT, model)
    os.makedirs(path, exist_ok=True)
    return path


def get_benchmark(name: str) -> dict:
    """A Fashion-MNIST benchmark of models.py, else a real model of real.py."""
    from models import BENCHMARKS

    if name in BENCHMARKS:
        from models import get_benchmark as fashion

        return fashion(name)
    from real import real_benchmark

    return real_benchmark(name)


def run_xquant(bench: dict, method: str, level: Optional[int], output: str) -> dict:
    from xquant.quantize import run_quantization

    cfg = copy.deepcopy(bench["config"])
    cfg["calibration_parameters"]["calibration_type"] = method
    quant = cfg.setdefault("quantization_parameters", {})
    quant["analysis_enable"] = False
    if level is not None:  # None: the config's default finetune_level, as shipped
        quant["finetune_level"] = level
    result = run_quantization(cfg, None, output, show_progress=False, summary=False)
    from xquant.profile import stage_rows

    return {"stages": stage_rows(result.timings, result.finetune)}


class _Reader:
    """onnxruntime CalibrationDataReader over xquant's own calibration batches (same files, same preprocessing)."""

    def __init__(self, data, batch: int) -> None:
        self.it = iter(data.batches(batch))

    def get_next(self):
        return next(self.it, None)


def run_ort(bench: dict, method: str, output: str) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from xquant.config import load_config
    from xquant.data import CalibrationData

    cfg, _ = load_config(bench["config"])
    reader = _Reader(CalibrationData(cfg), cfg.calibration.input_parameters[0].input_shape[0])
    calib = CalibrationMethod.MinMax if method == "minmax" else CalibrationMethod.Percentile
    quantize_static(bench["onnx"], output, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=calib)


def warm_imports(tool: str) -> None:
    """Import each tool's modules before the clock starts: the table compares work, not import time."""
    if tool == "xquant":
        import cv2  # noqa: F401
        import onnxslim  # noqa: F401

        import xquant.quantize  # noqa: F401
    else:
        import onnxruntime.quantization  # noqa: F401


def _child(args: Tuple[str, str, Optional[int], str], queue) -> None:
    import resource

    model, case, level, output = args
    sys.stdout = open(os.devnull, "w")  # onnxruntime's quantizer prints progress; the table is the output
    bench = get_benchmark(model)
    tool, method = case.split(":")
    warm_imports(tool)
    start, extra = time.perf_counter(), {}
    try:
        if tool == "xquant":
            extra = run_xquant(bench, method, level, output)
        else:
            run_ort(bench, method, output)
        error = None
    except Exception as exc:  # reported in the table, never hidden
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
    wall = time.perf_counter() - start
    queue.put({"wall_s": wall, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "error": error, **extra})


def measure_rounds(model: str, runs: List[Tuple[str, Optional[int]]], repeat: int) -> List[dict]:
    """Each case ``repeat`` times in fresh processes, interleaved (round r runs every case once, onnxruntime
    first), so a change in machine load hits all cases alike. Per case: median wall time, largest peak
    memory, and "ratio": {baseline case: median over rounds of wall / that round's baseline wall}."""
    rounds = [[measure_once(model, case, level) for case, level in runs] for _ in range(repeat)]
    out = []
    for i in range(len(runs)):
        mine = [r[i] for r in rounds]
        best = dict(mine[0])
        best["wall_s"] = float(np.median([r["wall_s"] for r in mine]))
        best["peak_mib"] = max(r["peak_mib"] for r in mine)
        best["ratio"] = {}
        for j, (base, _) in enumerate(runs):
            if base.startswith("ort:") and all(not r[j]["error"] for r in rounds):
                best["ratio"][base] = float(np.median([r[i]["wall_s"] / r[j]["wall_s"] for r in rounds]))
        out.append(best)
    return out


def measure_once(model: str, case: str, level: Optional[int]) -> dict:
    """Quantize in a fresh process (honest time and peak memory), return its costs."""
    suffix = case.replace(":", "_") + ("" if level is None else f"_ft{level}")
    output = os.path.join(out_dir(model), f"{suffix}.q.onnx")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=((model, case, level, output), queue))
    proc.start()
    result = queue.get()
    proc.join()
    result["output"] = output
    return result


def evaluate(bench: dict, qmodel: str, ref: Dict[str, np.ndarray]) -> dict:
    import onnxruntime as ort

    from xquant.analysis import metrics

    sess = ort.InferenceSession(qmodel, providers=["CPUExecutionProvider"])
    got = run_all(sess, bench["eval_inputs"])
    name = sess.get_outputs()[0].name
    r, g = ref[name], got[name]
    row = {"snr_db": min(metrics.snr_db(ref[n], got[n]) for n in ref), "cosine": metrics.cosine(r, g),
           "agree": float("nan"), "acc": float("nan")}  # top-1 only for a [N, classes] first output
    if r.ndim == 2:
        row.update(agree=100 * metrics.top1_agreement(r, g),
                   acc=100 * float(np.mean(g.argmax(1) == bench["eval_labels"])))
    return row


def run_all(sess, inputs: Dict[str, np.ndarray], batch: int = 50) -> Dict[str, np.ndarray]:
    """Every output of ``sess`` over all of ``inputs`` (one sample at a time for a fixed-batch model)."""
    from xquant.finetune.samples import run_session

    fixed = any(isinstance(d, int) for d in sess.get_inputs()[0].shape[:1])
    return run_session(sess, inputs, [o.name for o in sess.get_outputs()], 1 if fixed else batch)


def bench_model(model: str, cases: List[str], levels: List[Optional[int]], repeat: int,
                stages: List[list]) -> List[list]:
    import onnxruntime as ort

    bench = get_benchmark(model)
    ref_sess = ort.InferenceSession(bench["onnx"], providers=["CPUExecutionProvider"])
    ref = run_all(ref_sess, bench["eval_inputs"])
    first = ref[ref_sess.get_outputs()[0].name]
    fp32_acc = 100 * float(np.mean(first.argmax(1) == bench["eval_labels"])) if first.ndim == 2 else float("nan")
    rows = [[model, "fp32", "", "inf", "1.00000", "100.0", f"{fp32_acc:.1f}", "", "", "", ""]]
    runs = [(c, lv) for c in cases for lv in (levels if c.startswith("xquant:") else [None])]
    if "xquant:default" in cases and None not in levels:
        runs.append(("xquant:default", None))  # everything as shipped: the row the targets compare
    runs.sort(key=lambda r: not r[0].startswith("ort:"))  # onnxruntime first in every round
    for (case, level), cost in zip(runs, measure_rounds(model, runs, repeat)):
        label = case if level is None or not case.startswith("xquant") else f"{case} ft{level}"
        label = f"{label} (shipped)" if level is None and case.startswith("xquant") else label
        ratios = [f"{cost['ratio'][c]:.2f}" if c in cost["ratio"] else "" for c in ("ort:minmax", "ort:percentile")]
        if cost["error"]:
            rows.append([model, label, "", "error", cost["error"], "", "", f"{cost['wall_s']:.1f}", "", "", ""])
            continue
        m = evaluate(bench, cost["output"], ref)
        ft = "cfg" if level is None and case.startswith("xquant") else level
        rows.append([model, label, ft, f"{m['snr_db']:.2f}", f"{m['cosine']:.5f}", f"{m['agree']:.1f}",
                     f"{m['acc']:.1f}", f"{cost['wall_s']:.2f}", *ratios, f"{cost['peak_mib']:.0f}"])
        stages.extend([model, label, stage, f"{seconds:.2f}"] for stage, seconds in cost.get("stages", []))
        print(f"  {model:12s} {label:24s} SNR {m['snr_db']:6.2f} dB  {cost['wall_s']:6.2f} s", file=sys.stderr)
    return rows


def _level(text: str) -> Optional[int]:
    return None if text == "cfg" else int(text)


def main(argv: Optional[List[str]] = None) -> int:
    from tabulate import tabulate

    from models import BENCHMARKS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BENCHMARKS),
                        help=f"{', '.join(BENCHMARKS)}, effnet_lite0 (real, 224 px) or zoo:<name> (default: the first)")
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES)
    parser.add_argument("--levels", nargs="+", type=_level,
                        help="finetune levels for the xquant cases, 'cfg' for the config's own (default 0)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of fresh-process runs (every case once per round); time is their median")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    levels: List[Optional[int]] = list(args.levels) if args.levels else [0]
    headers = ["model", "case", "ft", "SNR dB", "cosine", "top-1 agree %", "acc %", "time s", "x MinMax", "x Pct",
               "peak MiB"]
    rows: List[list] = []
    stages: List[list] = []
    for model in args.models:
        rows.extend(bench_model(model, args.cases, levels, args.repeat, stages))
    fmt = "github" if args.markdown else "simple"
    print(tabulate(rows, headers=headers, tablefmt=fmt))
    if stages:
        print()
        print(tabulate(stages, headers=["model", "case", "stage (first run)", "seconds"], tablefmt=fmt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
