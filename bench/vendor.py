"""xquant's FP16, dynamic-quantization and simplify-only modes against the vendor's xslim 2.1.2, per model.

Both tools run as whole processes with the same config (``precision_level`` 4, 3 or 100) on the same model:
``python -m xquant -c cfg.json -o out.onnx`` and ``<xslim venv>/python -m xslim -c cfg.json -o out.onnx``.
Each output is then loaded in this machine's onnxruntime (CPU provider) and run on the model's held-out
samples (its verify_parameters lists) beside the FP32 model: SNR (worst output), cosine (first output), top-1
agreement with FP32 where the first output is [N, classes], and the tool's wall time and peak memory.

Models: the bundled demo CNN (labelled Fashion-MNIST) and pretrained models of the zoo (``bench/zoo/fetch.py``,
cache ``$XQHIL_ZOO_CACHE`` or ~/.cache/xqhil-zoo): khmer_segmenter (transformer: attention, LayerNorm),
oww_hey_mycroft (LSTM), ddddocr_rec (CNN + LSTM). xslim needs its own venv (see bench/xslim.py)::

    .venv/bin/python bench/vendor.py --xslim-python ~/xs/bin/python [--models ...] [--modes fp16 dynq] [--markdown]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from xslim import run_process  # noqa: E402 - bench/xslim.py: exit code, wall s and peak MiB of one command
from zoo import fetch  # noqa: E402

ZOO = Path(os.environ.get("XQHIL_ZOO_CACHE", Path.home() / ".cache" / "xqhil-zoo")) / "models"
ZOO_MODELS = ("khmer_segmenter", "oww_hey_mycroft", "ddddocr_rec")
MODELS = ("demo",) + ZOO_MODELS
# further zoo models the README's table measures (the modes' hard cases): pass them by name
EXTRA_MODELS = ("ppocr_v4_det", "ppocr_v4_rec", "ppocr_v6_det", "ppocr_v6_rec", "silero_vad_op15")
LEVELS = {"fp16": 4, "dynq": 3, "simplify": 100}
WORK = Path(os.environ.get("XQHIL_BENCH_WORK", "/tmp/xqhil-bench-vendor"))


def zoo_models() -> List[str]:
    """The zoo models fetched here that have a config (an already quantized one has none)."""
    return sorted({p.parent.name for p in ZOO.glob("*/xquant_c*_e16_*.json")})


def base_config(model: str, calib: int = 32) -> dict:
    """The model's XQuant config with absolute paths (verify_parameters kept: the held-out lists)."""
    if model == "demo":
        path = HERE.parent / "configs" / "demo.json"
        cfg = json.loads(path.read_text())

        def absolute(p: str) -> str:
            return str((path.parent / p).resolve())

        cfg["model_parameters"]["onnx_model"] = absolute(cfg["model_parameters"]["onnx_model"])
        for item in cfg["calibration_parameters"]["input_parametres"]:
            item["data_list_path"] = absolute(item["data_list_path"])
        ver = cfg["verify_parameters"]
        ver["data_list_path"] = [absolute(p) for p in ver["data_list_path"]]
        ver["label_list_path"] = absolute(ver["label_list_path"])
        return cfg
    try:
        path = fetch.prepare(model, calib, 16, cache=str(ZOO.parent))  # made once (calib + 16 held-out samples)
    except fetch.FetchError as exc:
        raise SystemExit(f"bench/vendor.py: zoo model {model} could not be fetched: {exc}") from exc
    return json.loads(Path(path).read_text())


def tool_config(cfg: dict, level: int, folder: Path, tool: str, floor: Optional[float] = None) -> Path:
    """``cfg`` at ``precision_level`` ``level``; for xslim in the spelling it reads (input_parameters, no
    verify_parameters, no empty preprocess_file); ``floor``: xquant's fp16_min_snr_db at level 4."""
    cfg = copy.deepcopy(cfg)
    cfg["model_parameters"].update(working_dir=str(folder), output_prefix="out")
    cfg["quantization_parameters"] = {"precision_level": level}
    if floor is not None and tool == "xquant" and level == LEVELS["fp16"]:
        cfg["quantization_parameters"]["fp16_min_snr_db"] = floor
    if tool == "xslim":
        cfg.pop("verify_parameters", None)
        calib = cfg["calibration_parameters"]
        calib["input_parameters"] = calib.pop("input_parametres")
        for item in calib["input_parameters"]:
            if not item.get("preprocess_file"):
                item.pop("preprocess_file", None)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cfg.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def eval_data(cfg: dict) -> Tuple[List[str], List[np.ndarray], List[Optional[int]]]:
    """The held-out samples as the harness feeds them: input names, arrays (samples first), batch axes."""
    from xquant.config import load_config
    from xqhil.reference import input_layout
    from xqhil.verify_config import load_verify_data, parse_verify_params

    parsed, _ = load_config(cfg)
    inputs = len(parsed.calibration.input_parameters)
    params = parse_verify_params(cfg.get("verify_parameters"), parsed.base_dir, inputs)
    data = load_verify_data(parsed, params)
    return data.names, data.arrays, input_layout(parsed.model.onnx_model, data.names)


def outputs(model: str, data) -> List[np.ndarray]:
    from xqhil.reference import run_on_pc

    import onnx

    from xquant.model_io import fixed_batch

    names, arrays, axes = data
    batch = fixed_batch(onnx.load(model, load_external_data=False)) or 1  # orientation_b8 runs 8 at a time
    return run_on_pc(model, "model", names, arrays, batch, 0, axes)[0]


def fidelity(ref: List[np.ndarray], got: List[np.ndarray]) -> Dict[str, float]:
    from xqhil.compare.fidelity import tensor_metrics

    rows = [tensor_metrics(r, g) for r, g in zip(ref, got)]
    found = {"snr_db": min(r["snr_db"] for r in rows), "cosine": rows[0]["cosine"], "agree": float("nan")}
    first, test = ref[0].reshape(ref[0].shape[0], -1), got[0].reshape(got[0].shape[0], -1)
    if ref[0].ndim == 2 and first.shape[1] > 1:
        found["agree"] = 100.0 * float(np.mean(first.argmax(1) == test.argmax(1)))
    return found


def load_error(path: str) -> str:
    """Why this machine's onnxruntime (CPU provider) refuses the model at ``path``, or ''."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        return str(exc).strip().splitlines()[0].split("failed:")[-1].strip()[:80]
    return ""


def run_tool(tool: str, python: str, cfg: dict, level: int, folder: Path, floor: Optional[float] = None) -> dict:
    path = tool_config(cfg, level, folder, tool, floor)
    out = folder / "out.onnx"
    if out.exists():
        out.unlink()
    cmd = [python, "-m", tool, "-c", str(path), "-o", str(out)] + (["-q"] if tool == "xquant" else [])
    code, wall, peak = run_process(cmd, str(folder), str(folder / "log.txt"))
    return {"code": code, "wall_s": wall, "peak_mib": peak, "output": str(out) if code == 0 and out.exists() else None}


def half_share(path: str) -> str:
    """The share of a model's ops (Casts aside) that read a float16 tensor, in %."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    halves = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    halves |= {v.name for v in list(model.graph.value_info) + list(model.graph.input)
               if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
    nodes = [n for n in model.graph.node if n.op_type not in ("Cast", "Constant")]
    return f"{100.0 * sum(any(i in halves for i in n.input) for n in nodes) / max(1, len(nodes)):.0f}"


def bench(model: str, modes: List[str], tools: Dict[str, str], floor: Optional[float] = None,
          calib: int = 32) -> List[list]:
    cfg = base_config(model, calib)
    data = eval_data(cfg)
    ref = outputs(cfg["model_parameters"]["onnx_model"], data)
    rows = []
    for mode in modes:
        for tool, python in tools.items():
            res = run_tool(tool, python, cfg, LEVELS[mode], WORK / model / mode / tool, floor)
            row = [model, mode, tool]
            times = [f"{res['wall_s']:.1f}", f"{res['peak_mib']:.0f}"]
            if res["output"] is None:
                rows.append(row + [f"failed (exit {res['code']})", "", "", "", "", *times])
                continue
            loads = load_error(res["output"])
            if loads:
                rows.append(row + [f"no: {loads}", "", "", "", "", *times])
                continue
            try:
                m = fidelity(ref, outputs(res["output"], data))
            except Exception as exc:  # noqa: BLE001 - an output that runs differently is a finding
                rows.append(row + ["yes, but " + str(exc).splitlines()[0][:80], "", "", "", "", *times])
                continue
            agree = "" if np.isnan(m["agree"]) else f"{m['agree']:.1f}"
            share = half_share(res["output"]) if mode == "fp16" else ""
            rows.append(row + ["yes", f"{m['snr_db']:.2f}", f"{m['cosine']:.6f}", agree, share, *times])
            print(f"  {model:16s} {mode:8s} {tool:6s} SNR {m['snr_db']:7.2f} dB  {res['wall_s']:6.1f} s",
                  file=sys.stderr)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    from tabulate import tabulate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xslim-python", default=os.environ.get("XSLIM_PYTHON"),
                        help="python of the venv where xslim is installed (or $XSLIM_PYTHON); omit: xquant only")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS + EXTRA_MODELS)
    parser.add_argument("--all-zoo", action="store_true",
                        help="every fetched zoo model (bench/zoo.py), instead of --models: does each mode work on all")
    parser.add_argument("--modes", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    parser.add_argument("--fp16-min-snr", type=float, metavar="DB",
                        help="xquant's FP16 with fp16_min_snr_db DB (default: xquant's own, 60 dB; 0: plain FP16, "
                             "no float32 prefix); xslim has no such setting")
    parser.add_argument("--calib", type=int, default=32, metavar="N",
                        help="calibration samples per zoo model (default 32: the FP16 floor measures up to 32)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    tools = {"xquant": sys.executable}
    if args.xslim_python:
        if not os.path.exists(args.xslim_python):
            print(f"bench/vendor.py: --xslim-python {args.xslim_python} not found", file=sys.stderr)
            return 2
        tools["xslim"] = args.xslim_python
    rows: List[list] = []
    for model in zoo_models() if args.all_zoo else args.models:
        rows += bench(model, args.modes, tools, args.fp16_min_snr, args.calib)
    headers = ["model", "mode", "tool", "loads in onnxruntime", "SNR dB", "cosine", "top-1 agree %", "FP16 ops %",
               "process s", "peak MiB"]
    print(tabulate(rows, headers=headers, tablefmt="github" if args.markdown else "simple"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
