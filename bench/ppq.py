"""Why xquant does not run on PPQ: can PPQ 0.6.6 (the vendor's engine) still run, and what it gives.

PPQ needs torch and pins nothing that matches today's onnx; install it in a venv OUTSIDE the repo:

    python3 -m venv ~/ppq && ~/ppq/bin/pip install torch==2.13.0 ppq==0.6.6 onnx onnxruntime opencv-python-headless
    .venv/bin/python bench/ppq.py --ppq-python ~/ppq/bin/python [--opsets 17 18 21] [--markdown]

For each step the table says whether PPQ got through: importing it as installed, importing it with the two
shims it needs on onnx >= 1.17 / protobuf >= 4 (the pure-Python protobuf backend and an ``onnx.mapping``
stand-in), then quantizing the bundled demo model (converted to each opset) with PPQ's default setting for
the onnxruntime platform on the demo's calibration images. Beside it, ``python -m xquant`` with its
defaults on the same model and images. Both are whole processes; fidelity is output SNR/top-1 agreement
against FP32 on the demo's held-out images.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import List

import numpy as np
import onnx
import onnxruntime as ort
from onnx import version_converter
from tabulate import tabulate

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from xslim import run_process  # noqa: E402  (the same whole-process timer as the vendor bench)

DEMO = os.path.join(REPO, "demo")
MEAN, STD = 72.9404, 90.0212  # configs/demo.json

SHIM = '''
import onnx, sys, types
from onnx import helper
m = types.ModuleType("onnx.mapping")
m.TENSOR_TYPE_TO_NP_TYPE = {k: helper.tensor_dtype_to_np_dtype(k)
                            for k in onnx.TensorProto.DataType.values() if k not in (0, 8) and k < 17}
m.NP_TYPE_TO_TENSOR_TYPE = {v: k for k, v in m.TENSOR_TYPE_TO_NP_TYPE.items()}
onnx.mapping = m
sys.modules["onnx.mapping"] = m
'''

RUN = '''
import glob, sys, time, cv2, numpy as np, torch
from ppq.api import quantize_onnx_model, export_ppq_graph
from ppq import TargetPlatform, QuantizationSettingFactory
model, out, calib = sys.argv[1], sys.argv[2], sys.argv[3]
files = [l.strip() for l in open(calib) if l.strip()]
data = [torch.tensor(((cv2.imread(f, 0).astype(np.float32) - %r) / %r)[None, None]) for f in files]
g = quantize_onnx_model(onnx_import_file=model, calib_dataloader=data, calib_steps=len(data),
                        input_shape=[1, 1, 28, 28], platform=TargetPlatform.ONNXRUNTIME,
                        setting=QuantizationSettingFactory.default_setting(), collate_fn=lambda x: x, device="cpu")
export_ppq_graph(g, platform=TargetPlatform.ONNXRUNTIME, graph_save_to=out)
''' % (MEAN, STD)


def calib_files(limit: int) -> List[str]:
    base = os.path.join(DEMO, "data")
    with open(os.path.join(base, "calib_list.txt")) as f:
        return [os.path.join(base, line.strip()) for line in f if line.strip()][:limit]


def eval_batch(limit: int = 300) -> np.ndarray:
    import cv2

    base = os.path.join(DEMO, "data")
    with open(os.path.join(base, "eval_list.txt")) as f:
        files = [os.path.join(base, line.strip()) for line in f if line.strip()][:limit]
    return np.stack([((cv2.imread(p, 0).astype(np.float32) - MEAN) / STD)[None] for p in files])


def outputs(path: str, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def fidelity(ref: np.ndarray, got: np.ndarray) -> tuple:
    snr = 10 * np.log10(float((ref ** 2).sum()) / max(float(((ref - got) ** 2).sum()), 1e-30))
    return round(snr, 2), round(100.0 * float((ref.argmax(1) == got.argmax(1)).mean()), 1)


def xquant_row(model: str, calib: str, work: str, x: np.ndarray, ref: np.ndarray) -> list:
    cfg = json.load(open(os.path.join(REPO, "configs", "demo.json")))
    cfg["model_parameters"].update(onnx_model=model, working_dir=work, output_prefix="xq")
    cfg["calibration_parameters"]["input_parametres"][0]["data_list_path"] = calib
    cfg["quantization_parameters"]["analysis_enable"] = False
    cfg.pop("verify_parameters", None)
    path = os.path.join(work, "xq.json")
    json.dump(cfg, open(path, "w"))
    rc, wall, peak = run_process([sys.executable, "-m", "xquant", "-c", path], work, os.path.join(work, "xq.log"))
    out = os.path.join(work, "xq.q.onnx")
    snr, agree = fidelity(ref, outputs(out, x)) if rc == 0 else ("", "")
    return ["xquant default", "ok" if rc == 0 else f"exit {rc}", round(wall, 1), round(peak), snr, agree]


def ppq_rows(ppq: str, model: str, calib: str, work: str, x: np.ndarray, ref: np.ndarray) -> List[list]:
    rows = []
    rc, _, _ = run_process([ppq, "-c", "import ppq.api"], work, os.path.join(work, "import.log"))
    rows.append(["ppq import as installed", "ok" if rc == 0 else last_line(os.path.join(work, "import.log")),
                 "", "", "", ""])
    with open(os.path.join(work, "shim.py"), "w") as f:
        f.write(SHIM)
    script = os.path.join(work, "run.py")
    with open(script, "w") as f:
        f.write("import sys; sys.path.insert(0, %r); import shim\n" % work + RUN)
    out = os.path.join(work, "ppq.onnx")
    log = os.path.join(work, "ppq.log")
    cmd = ["env", "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python", ppq, script, model, out, calib]
    rc, wall, peak = run_process(cmd, work, log)
    snr, agree = fidelity(ref, outputs(out, x)) if rc == 0 and os.path.exists(out) else ("", "")
    rows.append(["ppq default (with shims)", "ok" if rc == 0 else last_line(log), round(wall, 1), round(peak),
                 snr, agree])
    return rows


def last_line(path: str) -> str:
    """The last line of a log that names an exception (else its last line), shortened."""
    lines = [line.strip() for line in open(path, errors="replace") if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0]]
    return ((errors or lines or ["failed"])[-1])[:90]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ppq-python", required=True, help="python of a venv with ppq 0.6.6 installed")
    ap.add_argument("--opsets", type=int, nargs="+", default=[17, 18, 21])
    ap.add_argument("--calib", type=int, default=100, help="calibration images")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    x = eval_batch()
    base = onnx.load(os.path.join(DEMO, "model", "fashion_cnn.onnx"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        calib = os.path.join(tmp, "calib.txt")
        with open(calib, "w") as f:
            f.write("\n".join(calib_files(args.calib)) + "\n")
        for opset in args.opsets:
            work = os.path.join(tmp, f"op{opset}")
            os.makedirs(work)
            model = os.path.join(work, "model.onnx")
            onnx.save(version_converter.convert_version(base, opset), model)
            ref = outputs(model, x)
            for row in ppq_rows(args.ppq_python, model, calib, work, x, ref) + [
                    xquant_row(model, calib, work, x, ref)]:
                rows.append([opset] + row)
    headers = ["opset", "tool", "result", "wall s", "peak MiB", "SNR dB", "top-1 agree %"]
    print(tabulate(rows, headers, tablefmt="github" if args.markdown else "simple"))


if __name__ == "__main__":
    main()
