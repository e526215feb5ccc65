"""False-alarm and detection rates of the latency regression check on synthetic timed runs.

Samples: log-normal jitter (sigma = jitter), 3% outliers of 1.5-4x, optional run-level offsets (sigma =
offset, relative). For each setting and seed: two runs from the same distribution (false alarm?), and a
baseline against a run 20% slower (detected?); with "history", the medians of 8 earlier runs measure
run-to-run noise as the store does.

A second table models board-wide drift and short histories: both precisions of a run share a board
factor (log-normal, sigma = drift), the INT8/FP32 ratio has its own run-to-run scatter, 5 clean runs
make the history, the checked run is a new release; the old absolute rule against the within-run control
(``Policy.latency_control``). bench/regression_real.py measures the same on real board runs.

``--loaded-demo RUNS`` measures instead the false alarms of real runs: the demo model (configs/demo.json,
quantized once) verified RUNS times in a row on ``--board host`` into a temporary history, while
``--hogs`` busy-loop processes load every core. Nothing changes between the runs, so every latency
regression reported is a false alarm. The same documents are replayed with the absolute floor alone
(``latency_needs_change`` off) and with neither rule, to show what each removes. Exit 1 if the default
policy raised any false alarm.

    python bench/regression_noise.py [--seeds 1000]
    python bench/regression_noise.py --loaded-demo 8 [--hogs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from itertools import product
from pathlib import Path

import numpy as np
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test-only helpers (history_testlib)

from xqhil.history import record_and_check
from xqhil.history.regression import Policy, check_latency, find_regressions, noise_history
from xqhil.history.stats import successive_noise
from xqhil.history.store import RunStore
from history_testlib import timed_samples


def _doc(samples: list) -> dict:
    return {"latency": {"int8": {"samples_ms": samples}}}


def rates(n: int, jitter: float, offset: float, history: bool, seeds: int) -> tuple:
    false, hits = 0, 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        runs = [timed_samples(rng, 10.0, n, jitter, run_offset=offset) for _ in range(9 if history else 2)]
        medians = [float(np.median(r)) for r in runs[:-1]] if history else []
        slow = timed_samples(rng, 12.0, n, jitter, run_offset=offset)
        false += check_latency(_doc(runs[-2]), _doc(runs[-1]), "int8", medians) is not None
        hits += check_latency(_doc(runs[-2]), _doc(slow), "int8", medians) is not None
    return false / seeds, hits / seeds


def drift_doc(rng, int8_ms: float, drift: float, scatter: float, runtime: str, n: int = 50) -> dict:
    """A run with both precisions: a board factor both share, the ratio's own scatter, 1% jitter."""
    board = float(rng.lognormal(0.0, drift))
    ratio = float(rng.lognormal(0.0, scatter))
    latency = {"int8": {"samples_ms": timed_samples(rng, int8_ms * board * ratio, n, 0.01)},
               "fp32": {"samples_ms": timed_samples(rng, 20.0 * board, n, 0.01)}}
    return {"latency": latency, "device": {"onnxruntime": runtime}}


def drift_rates(drift: float, scatter: float, slowdown: float, policy: Policy, seeds: int) -> float:
    """Share of checked runs flagged for INT8 latency after 5 clean runs."""
    hits = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        runs = [drift_doc(rng, 10.0, drift, scatter, "1.0") for _ in range(5)]
        cur = drift_doc(rng, 10.0 * (1 + slowdown), drift, scatter, "1.1")
        found = find_regressions(cur, runs[-1], noise_history(runs), policy)
        hits += any(f.metric == "latency.int8.p50_ms" for f in found)
    return hits / seeds


def drift_table(seeds: int) -> None:
    rows = []
    for drift, scatter in product((0.0, 0.05, 0.2), (0.01, 0.02, 0.05)):
        row = [f"{drift:.0%}", f"{scatter:.0%}"]
        for policy in (Policy(latency_control=False), Policy()):
            row += [f"{drift_rates(drift, scatter, 0.0, policy, seeds):.1%}",
                    f"{drift_rates(drift, scatter, 0.2, policy, seeds):.1%}"]
        rows.append(row)
    print(tabulate(rows, headers=["board drift", "ratio scatter", "old rule: false alarms", "20% found",
                                  "control: false alarms", "20% found"], tablefmt="github"))


REPO = Path(__file__).resolve().parents[1]


def demo_config(work: Path) -> Path:
    """configs/demo.json with absolute paths, writing into ``work`` (fine-tuning off: latency only)."""
    cfg = json.loads((REPO / "configs" / "demo.json").read_text())
    base = REPO / "configs"
    cfg["model_parameters"].update(onnx_model=str((base / cfg["model_parameters"]["onnx_model"]).resolve()),
                                   working_dir=str(work / "q"))
    for item in cfg["calibration_parameters"]["input_parametres"]:
        item["data_list_path"] = str((base / item["data_list_path"]).resolve())
    verify = cfg["verify_parameters"]
    verify["data_list_path"] = [str((base / p).resolve()) for p in verify["data_list_path"]]
    verify["label_list_path"] = str((base / verify["label_list_path"]).resolve())
    cfg["quantization_parameters"].update(analysis_enable=False, finetune_level=0)
    path = work / "demo.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def verify_runs(config: Path, qmodel: Path, db: Path, work: Path, runs: int) -> list:
    env = dict(os.environ, PYTHONPATH=str(REPO / "host"))
    for i in range(runs):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "xqhil", "quantize-and-verify", str(config), "--board", "host",
                               "--qmodel", str(qmodel), "--db", str(db), "--out", str(work / f"run{i}"), "-q"],
                              env=env, capture_output=True, text=True, timeout=600)
        print(f"run {i + 1}/{runs}: exit {done.returncode} in {time.monotonic() - started:.0f} s", flush=True)
        if done.returncode not in (0, 1):
            raise SystemExit(f"quantize-and-verify failed: {done.stderr.strip()[-500:]}")
    with RunStore.open(db, readonly=True) as store:
        return [(run.doc, store.regressions(run.id)) for run in store.list()]


def loaded_demo(runs: int, hogs: int) -> int:
    import xquant

    with tempfile.TemporaryDirectory(prefix="xqhil-noise-") as tmp:
        work = Path(tmp)
        config = demo_config(work)
        xquant.quantize_onnx_model(str(config))
        qmodel = work / "q" / "fashion_cnn.q.onnx"
        load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
        try:
            recorded = verify_runs(config, qmodel, work / "history.sqlite3", work, runs)
        finally:
            for proc in load:
                proc.kill()
                proc.wait()
        policies = {"default": None, "floor only": Policy(latency_needs_change=False),
                    "neither": Policy(latency_needs_change=False, latency_min_absolute_ms=0.0)}
        rows, alarms = [], dict.fromkeys(policies, 0)
        for doc, _ in recorded:
            row = [len(rows) + 1, f"{doc['latency']['int8']['p50_ms'] * 1000:.1f}",
                   f"{doc['latency']['fp32']['p50_ms'] * 1000:.1f}"]
            for name, policy in policies.items():
                found = record_and_check(doc, work / f"{name}.sqlite3", *([policy] if policy else []))
                latency = [f for f in found["regressions"] if f["kind"] == "latency"]
                alarms[name] += bool(latency)
                row.append("; ".join(f"{f['metric'].split('.')[1]} +{(f['current'] - f['baseline']) * 1000:.1f} us"
                                     for f in latency) or "-")
            rows.append(row)
        medians = [doc["latency"]["int8"]["p50_ms"] * 1000 for doc, _ in recorded]
    print(tabulate(rows, headers=["run", "INT8 p50 us", "FP32 p50 us", "latency alarm (default)",
                                  "floor 20 us only", "neither rule"], tablefmt="github"))
    compared = max(len(rows) - 1, 1)
    print(f"INT8 run medians {min(medians):.1f}-{max(medians):.1f} us, run-to-run sigma "
          f"{successive_noise(medians):.1f} us; {hogs} busy-loop process(es) on {os.cpu_count()} core(s)")
    print("false alarms over " + f"{compared} compared runs: " +
          ", ".join(f"{name} {count}/{compared}" for name, count in alarms.items()))
    alarms = alarms["default"]
    return 1 if alarms else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--loaded-demo", type=int, metavar="RUNS", help="real demo runs on a loaded machine")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2, help="busy-loop processes (default: cores)")
    args = parser.parse_args()
    if args.loaded_demo:
        return loaded_demo(args.loaded_demo, args.hogs)
    rows = []
    for n, jitter, offset, history in product((5, 10, 30, 100), (0.01, 0.05, 0.15), (0.0, 0.01), (False, True)):
        false, hits = rates(n, jitter, offset, history, args.seeds)
        rows.append([n, f"{jitter:.0%}", f"{offset:.0%}", "yes" if history else "no", f"{false:.2%}",
                     f"{hits:.1%}"])
    print(tabulate(rows, headers=["samples", "jitter", "run offset", "history", "false alarms",
                                  "20% slowdown found"], tablefmt="github"))
    drift_table(args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
