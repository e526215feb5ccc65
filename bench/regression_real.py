"""False alarms and detection of the latency regression check on real board runs, with injected slowdowns.

Each measurement is one real agent visit to the board (FP32 and INT8 timed interleaved for at least
``--min-time`` seconds, as quantize-and-verify does), turned into a verify document. The board's
onnxruntime is slowed down by the fault fixture (tests/xqhil/faults/sitecustomize.py): ``slow-int8:P``
makes every INT8 run P % longer, ``slow-all:P`` every run (a board-wide slowdown: not a regression).

Per board and model: 5 clean runs (the history), then trials: each case is measured once as a "new
release" (the runtime reports another version, ``XQHIL_FAULT_ORT_VERSION``, so the run records a change),
checked against a fresh history of the 5 latest clean runs, and one more clean run joins the history.
A case counts as flagged when the check reports a latency regression:

* ``old rule``: the absolute check of the single run (no within-run control);
* ``control``: the INT8/FP32 ratio check of the single run (no confirmation);
* ``confirmed``: the default of quantize-and-verify: suspected at a robust z=1, then re-measured one run at a
  time (up to ``--budget`` 10) until the exact rank test against the clean runs flags or clears
  (xqhil/history/sequential.py); ``re-runs/trial`` is what that cost;
* ``A/B`` (``--ab``): with the baseline's runtime at hand (the board's unmodified interpreter), every run
  here is on a new runtime, so each is decided by 7 alternating rounds against it, suspected or not.

    python bench/regression_real.py --boards host --models demo,oww_alexa_op7 --trials 20
    python bench/regression_real.py --boards qemu --models demo --trials 10 --cases "clean,INT8 +20%"
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "host"))
sys.path.insert(0, str(REPO / "bench"))

from xqhil.boards.spec import BoardSpec, qemu_python  # noqa: E402
from xqhil.history import record_and_check  # noqa: E402
from xqhil.history.confirm import Confirmer  # noqa: E402
from xqhil.history.regression import Policy  # noqa: E402
from xqhil.protocol import sha256_file  # noqa: E402
from xqhil.remeasure import LatencyProbe  # noqa: E402
from xqhil.runone import read_inputs  # noqa: E402

FAULTS = REPO / "tests" / "xqhil" / "faults"
ZOO = Path(os.environ.get("XQHIL_ZOO_CACHE", Path.home() / ".cache" / "xqhil-zoo")) / "models"
CASES = (("clean", "none"), ("INT8 +10%", "slow-int8:10"), ("INT8 +20%", "slow-int8:20"),
         ("INT8 +30%", "slow-int8:30"), ("board-wide +30%", "slow-all:30"))
VARIANTS = ("old rule", "control", "confirmed", "A/B")
HEADERS = ["board", "model", "case", "trials", *VARIANTS, "re-runs/trial"]
NEW_RELEASE = "+next"  # appended to the runtime version of the "new release" runs


def demo_models(work: Path) -> tuple[str, str]:
    from regression_noise import demo_config

    import xquant

    qmodel = work / "q" / "fashion_cnn.q.onnx"
    if not qmodel.exists():
        xquant.quantize_onnx_model(str(demo_config(work)))
    return str(REPO / "demo" / "model" / "fashion_cnn.onnx"), str(qmodel)


def zoo_models(name: str) -> tuple[str, str]:
    folder = ZOO / name
    int8 = sorted((folder / "work").glob("*.q.onnx")) + sorted((folder / "bench").glob("xquant_default.q.onnx"))
    if not (folder / "model.onnx").is_file() or not int8:
        raise SystemExit(f"zoo model {name}: no model.onnx and work/*.q.onnx under {folder} "
                         "(python -m bench.zoo fetch, then quantize it)")
    return str(folder / "model.onnx"), str(int8[0])


class Board:
    """One board kind with the faults fixture on its interpreter."""

    def __init__(self, kind: str, models: tuple[str, str], args: argparse.Namespace) -> None:
        rootfs = os.environ.get("XQHIL_RISCV64_ROOTFS", str(REPO / "ci" / ".cache" / "riscv64-rootfs"))
        self.kind, self.rootfs = kind, rootfs if kind == "qemu" else None
        self.python = (sys.executable,) if kind == "host" else qemu_python(rootfs)
        self.models = {"fp32": models[0], "int8": models[1]}
        self.names, self.arrays = read_inputs(models[0], None)
        self.args = args
        self.version: str | None = None

    def command(self, fault: str, release: bool) -> str:
        env = [f"PYTHONPATH={FAULTS}", f"XQHIL_FAULT={fault}"]
        if release:
            env.append(f"XQHIL_FAULT_ORT_VERSION={self.version}{NEW_RELEASE}")
        return " ".join(["env", *env, *self.python])

    def probe(self) -> LatencyProbe:
        spec = BoardSpec(self.kind, self.kind, python=self.python, rootfs=self.rootfs,
                         emulated=True if self.kind == "qemu" else None)
        return LatencyProbe(spec, self.models, self.names, self.arrays, self.args.warmup, self.args.repeat, 1,
                            self.args.min_time)

    def measure(self, fault: str, release: bool) -> dict:
        measured = dict(self.probe().measure(self.command(fault, release)))
        measured["load"] = float(open("/proc/loadavg").read().split()[0])
        self.version = self.version or measured["device"]["onnxruntime"]
        return measured


def verify_doc(measured: dict, board: Board, model: str) -> dict:
    """A verify document as quantize-and-verify writes it, as far as the history reads latency."""
    device = dict(measured["device"], execution_provider="CPUExecutionProvider")
    return {"schema": "xqhil.verify/1", "verdict": "pass", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "board": {"kind": board.kind, "name": board.kind}, "device": device,
            "model": {"name": model, "fp32_sha256": sha256_file(board.models["fp32"]),
                      "int8_sha256": sha256_file(board.models["int8"]), "config_sha256": "bench"},
            "latency": measured["latency"]}


def flagged(history: list, doc: dict, policy: Policy, confirmer: Confirmer | None = None) -> tuple[bool, dict]:
    """Whether the check flags ``doc`` after ``history``, and how a confirmation decided (re-runs, evidence)."""
    checked = copy.deepcopy(doc)
    with tempfile.TemporaryDirectory(prefix="xqhil-regress-") as tmp:
        db = Path(tmp) / "h.sqlite3"
        for earlier in history:
            record_and_check(copy.deepcopy(earlier), db, policy)
        summary = record_and_check(checked, db, policy, confirmer)
    record = checked["latency"].get("confirmation") or {}
    decided = [d.get("detail", "") for d in (record.get("decisions") or {}).values()]
    ratios = [float(np.log(r["int8"]["p50_ms"] / r["fp32"]["p50_ms"])) for r in record.get("reruns") or []
              if (r.get("int8") or {}).get("p50_ms") and (r.get("fp32") or {}).get("p50_ms")]
    how = {"reruns": len(record.get("reruns") or []), "evidence": "; ".join(decided) or "the single run",
           "rerun_ratios": ratios}
    return any(item["kind"] == "latency" for item in summary["regressions"]), how


def judge(board: Board, history: list, doc: dict, fault: str, ab: bool) -> tuple[dict, dict]:
    def again(python):
        return board.probe().measure(python or board.command(fault, True))

    policy = Policy()
    confirmed, how = flagged(history, doc, policy, Confirmer(again, reruns=board.args.budget))
    out = {"old rule": flagged(history, doc, Policy(latency_control=False))[0],
           "control": flagged(history, doc, policy)[0], "confirmed": confirmed}
    if ab:
        out["A/B"], decided = flagged(history, doc, policy,
                                      Confirmer(again, reruns=0, baseline_python=board.command("none", False)))
        how["ab_evidence"] = decided["evidence"]
    return out, how


def run_board(kind: str, model: str, models: tuple[str, str], args: argparse.Namespace) -> tuple[list, list]:
    board = Board(kind, models, args)
    clean = [verify_doc(board.measure("none", False), board, model) for _ in range(args.history)]
    counts: dict = defaultdict(lambda: defaultdict(int))
    loads, records = [], []
    cases = [(label, fault) for label, fault in CASES if label in args.cases]
    for trial in range(args.trials):
        for label, fault in cases:
            measured = board.measure(fault, True)
            loads.append(measured["load"])
            result, how = judge(board, clean[-args.history:], verify_doc(measured, board, model), fault, args.ab)
            history_ratios = [float(np.log(d["latency"]["int8"]["p50_ms"] / d["latency"]["fp32"]["p50_ms"]))
                              for d in clean[-args.history:]]
            records.append({"trial": trial, "case": label, **result, **how, "load": measured["load"],
                            "history_ratios": history_ratios,
                            "int8_p50_ms": measured["latency"]["int8"]["p50_ms"],
                            "fp32_p50_ms": measured["latency"]["fp32"]["p50_ms"]})
            for variant, hit in result.items():
                counts[label][variant] += hit
            counts[label]["reruns"] += how["reruns"]
        clean.append(verify_doc(board.measure("none", False), board, model))
        done = " ".join(f"{r['case']}={'FLAG' if r['confirmed'] else 'ok'}({r['reruns']})"
                        for r in records if r["trial"] == trial)
        print(f"{kind} {model}: trial {trial + 1}/{args.trials} done, load {loads[-1]:.1f}: {done}", file=sys.stderr,
              flush=True)
        if args.json:  # after each trial: a long run keeps what it measured
            Path(f"{args.json}.partial").write_text(json.dumps(records, indent=1))
    ratios = [np.log(d["latency"]["int8"]["p50_ms"] / d["latency"]["fp32"]["p50_ms"]) for d in clean]
    cpu = [np.log(d["latency"]["int8"]["cpu_p50_ms"] / d["latency"]["fp32"]["cpu_p50_ms"]) for d in clean]
    rows = [[kind, model, label, args.trials] + [f"{counts[label][v]}/{args.trials}" if v != "A/B" or args.ab
                                                 else "-" for v in VARIANTS]
            + [f"{counts[label]['reruns'] / max(1, args.trials):.1f}"] for label, _ in cases]
    wall_p50 = [d["latency"]["int8"]["p50_ms"] for d in clean]
    print(f"{kind} {model}: clean INT8 p50 {min(wall_p50):.4g}-{max(wall_p50):.4g} ms, INT8/FP32 ratio run-to-run "
          f"sigma {100 * float(np.std(ratios, ddof=1)):.1f}% (wall), {100 * float(np.std(cpu, ddof=1)):.1f}% (CPU), "
          f"load average {min(loads):.1f}-{max(loads):.1f} "
          f"(median {float(np.median(loads)):.1f}) on {os.cpu_count()} cores", flush=True)
    return rows, records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", default="host", help="comma-separated: host, qemu")
    parser.add_argument("--models", default="demo,oww_alexa_op7", help="demo, or zoo model names (cached)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--history", type=int, default=5, help="clean runs before each checked run")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of interleaved timing a run")
    parser.add_argument("--cases", default=",".join(label for label, _ in CASES),
                        help="comma-separated case labels to measure (default: all)")
    parser.add_argument("--budget", type=int, default=10, help="re-runs a confirmation may take (--confirm-reruns)")
    parser.add_argument("--ab", action="store_true", help="also decide by an A/B against the baseline runtime")
    parser.add_argument("--json", help="write every trial's outcome here")
    args = parser.parse_args()
    args.cases = [c.strip() for c in args.cases.split(",")]
    unknown = sorted(set(args.cases) - {label for label, _ in CASES})
    if unknown:
        parser.error(f"--cases: unknown {unknown}; known: {[label for label, _ in CASES]}")
    rows, records = [], []
    with tempfile.TemporaryDirectory(prefix="xqhil-regress-") as tmp:
        for model in args.models.split(","):
            models = demo_models(Path(tmp)) if model == "demo" else zoo_models(model)
            for kind in args.boards.split(","):
                more, trials = run_board(kind, model, models, args)
                rows += more
                records += [dict(r, board=kind, model=model) for r in trials]
                print(tabulate(more, headers=HEADERS, tablefmt="github"), flush=True)
                if args.json:  # after each board and model: a long run keeps what it measured
                    Path(args.json).write_text(json.dumps(records, indent=1))
    print(tabulate(rows, headers=HEADERS, tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
