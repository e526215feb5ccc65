"""Synthetic but plausible ``verify.json`` documents, for the history tests and bench/ (not installed).

Latency samples follow what boards show: log-normal jitter around the median, a few large outliers
(interrupts, page faults) and an optional run-level offset (thermal state, background load).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np


def timed_samples(rng: np.random.Generator, median_ms: float, n: int = 30, jitter: float = 0.04,
                  outliers: float = 0.03, run_offset: float = 0.0) -> list[float]:
    """``n`` latencies in ms: log-normal jitter (sigma ``jitter``), outliers 1.5-4x at rate ``outliers``,
    the whole run shifted by a normal offset of relative sigma ``run_offset``."""
    level = median_ms * (1.0 + rng.normal(0.0, run_offset)) if run_offset else median_ms
    x = level * rng.lognormal(0.0, jitter, n)
    spikes = rng.random(n) < outliers
    x[spikes] *= rng.uniform(1.5, 4.0, int(spikes.sum()))
    return [round(float(v), 4) for v in x]


def latency_entry(samples: Sequence[float]) -> dict[str, Any]:
    x = np.asarray(samples, dtype=float)
    p50, p90, p99 = (float(v) for v in np.percentile(x, [50, 90, 99]))
    return {"first_ms": round(float(x[0]) * 1.8, 4), "mean_ms": float(x.mean()), "p50_ms": p50,
            "p90_ms": p90, "p99_ms": p99, "min_ms": float(x.min()), "max_ms": float(x.max()),
            "std_ms": float(x.std()), "samples_ms": list(samples)}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _fidelity(outputs: Sequence[str], snr_db: float, fp32_snr_db: float) -> dict[str, Any]:
    def pair(snr: float) -> dict[str, float]:
        return {"cosine": round(1.0 - 10 ** (-snr / 10) / 2, 8), "snr_db": snr, "max_abs": 10 ** (-snr / 20) * 4}
    return {"outputs": {name: {"chip_int8_vs_pc_int8": pair(snr_db), "chip_fp32_vs_pc_fp32": pair(fp32_snr_db),
                               "pc_int8_vs_pc_fp32": pair(24.0)} for name in outputs}}


def make_doc(model: str = "mobilenet_v2", board: str = "k1-lab-01", runtime: str = "1.20.1",
             verdict: str = "pass", int8_ms: float = 12.0, fp32_ms: float = 30.0, n: int = 30,
             jitter: float = 0.04, seed: int = 0, pc_int8: float | None = 71.4,
             chip_int8: float | None = 71.3, pc_fp32: float | None = 72.0,
             chip_fp32: float | None = 72.0, snr_db: float = 42.0, fp32_snr_db: float = 75.0,
             status: str = "pass", created: datetime | None = None, reports_dir: str | None = None,
             emulated: bool = False, board_kind: str = "ssh", config: str = "default",
             reasons: Sequence[str] = (), run_offset: float = 0.0) -> dict[str, Any]:
    """One verify document; ``chip_int8=None`` etc. give an unlabelled run."""
    rng = np.random.default_rng(seed)
    created = created or datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc) + timedelta(hours=seed)
    int8 = timed_samples(rng, int8_ms, n, jitter, run_offset=run_offset)
    fp32 = timed_samples(rng, fp32_ms, n, jitter, run_offset=run_offset)
    labelled = chip_int8 is not None
    base = reports_dir or f"out/{model}-{board}-{seed}"
    return {
        "schema": "xqhil.verify/1", "verdict": verdict, "reasons": list(reasons),
        "created": created.isoformat(timespec="seconds").replace("+00:00", "Z"), "duration_s": 41.5,
        "board": {"kind": board_kind, "name": board, "address": None if board_kind == "host" else "127.0.0.1",
                  "python": "python3"},  # the interpreter command (BoardSpec.public()), not a version
        "device": {"arch": "riscv64", "cpu": "SpacemiT X60", "cores": 8, "os": "Debian GNU/Linux 13 (trixie)",
                   "kernel": "6.6.36", "python": "3.11.2",
                   "numpy": "1.26.4", "onnxruntime": runtime, "providers": ["CPUExecutionProvider"],
                   "execution_provider": "CPUExecutionProvider", "emulated": emulated},
        "model": {"name": model, "fp32_path": f"models/{model}.onnx", "int8_path": f"models/{model}.q.onnx",
                  "fp32_sha256": _sha(model), "int8_sha256": _sha(model + config + "q"),
                  "config_sha256": _sha(config)},
        "accuracy": {"labelled": labelled, "samples": 500, "pc_fp32": pc_fp32 if labelled else None,
                     "pc_int8": pc_int8 if labelled else None, "chip_fp32": chip_fp32 if labelled else None,
                     "chip_int8": chip_int8, "drop_points": round((pc_int8 or 0) - (chip_int8 or 0), 3),
                     "top1_agreement": {"chip_int8_vs_pc_int8": 99.6, "chip_fp32_vs_pc_fp32": 100.0,
                                        "pc_int8_vs_pc_fp32": 97.8},
                     "samples_differing": 2, "measure": "labelled accuracy" if labelled else
                     "top-1 agreement with PC FP32", "status": status, "tolerance": 0.5, "bug_threshold": 2.0,
                     "top1_output": "logits"},
        "fidelity": _fidelity(["logits"], snr_db, fp32_snr_db),
        "latency": {"emulated": emulated, "threads": 4, "fp32": latency_entry(fp32), "int8": latency_entry(int8),
                    "speedup": round(float(np.median(fp32) / np.median(int8)), 3)},
        "data": {"source": "verify_parameters.data_list_path (eval_list.txt)", "samples": 500, "batch_size": 1},
        "harness": {"connect_s": 0.4, "upload_s": 1.2, "run_s": 38.0, "fetch_s": 0.3, "cleanup_s": 0.1},
        "notes": [],
        "reports": {"md": f"{base}/verify.md", "json": f"{base}/verify.json"},
    }
