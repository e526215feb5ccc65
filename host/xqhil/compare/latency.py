"""Latency of the FP32 and INT8 models on the device, and the INT8 speedup."""
from __future__ import annotations

from typing import Optional


def latency_summary(fp32: Optional[dict], int8: Optional[dict], threads: int, emulated: bool) -> dict:
    """``fp32``/``int8`` are the agent's latency dicts (None when that run failed).

    speedup = FP32 p50 / INT8 p50 (above 1: INT8 is faster). Under emulation the numbers are not the chip's.
    """
    speedup = None
    if fp32 and int8 and int8.get("p50_ms"):
        speedup = round(float(fp32["p50_ms"]) / float(int8["p50_ms"]), 4)
    return {"emulated": bool(emulated), "threads": int(threads), "fp32": fp32, "int8": int8, "speedup": speedup}
