"""Latency of the FP32 and INT8 models on the device, and the INT8 speedup."""
from __future__ import annotations

import math
from typing import List, Optional, Tuple


def _finite_copy(stats: Optional[dict]) -> Tuple[Optional[dict], List[str]]:
    """``stats`` with every NaN/Inf number replaced by None, and the names of the fields that held one."""
    if not stats:
        return stats, []
    clean, bad = {}, []
    for key, value in stats.items():
        if isinstance(value, list):
            kept = [v if isinstance(v, (int, float)) and math.isfinite(v) else None for v in value]
            if None in kept:
                bad.append(f"{key} ({kept.count(None)} of {len(kept)})")
            clean[key] = kept
        elif isinstance(value, float) and not math.isfinite(value):
            clean[key] = None
            bad.append(key)
        else:
            clean[key] = value
    return clean, bad


def latency_summary(fp32: Optional[dict], int8: Optional[dict], threads: int, emulated: bool) -> dict:
    """``fp32``/``int8`` are the agent's latency dicts (None when that run failed).

    speedup = FP32 p50 / INT8 p50 (above 1: INT8 is faster). Under emulation the numbers are not the chip's.
    NaN/Inf values are written as null and listed under ``nonfinite`` (the verdict fails on them).
    """
    (fp32, bad_fp32), (int8, bad_int8) = _finite_copy(fp32), _finite_copy(int8)
    speedup = None
    if fp32 and int8 and fp32.get("p50_ms") is not None and int8.get("p50_ms"):
        speedup = round(float(fp32["p50_ms"]) / float(int8["p50_ms"]), 4)
    summary = {"emulated": bool(emulated), "threads": int(threads), "fp32": fp32, "int8": int8, "speedup": speedup}
    nonfinite = {k: v for k, v in (("fp32", bad_fp32), ("int8", bad_int8)) if v}
    if nonfinite:
        summary["nonfinite"] = nonfinite
    return summary
