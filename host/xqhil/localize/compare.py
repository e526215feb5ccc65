"""Per-provider tolerances and the comparison of one tensor, PC against chip.

The CPU provider computes INT8 kernels exactly, so a boundary (an integer tensor) must match bit for bit and
a float tensor must be equal. Other providers may round differently: an integer tensor may be off by one
step on at most 1 % of its elements, a float tensor by 1e-3 of its largest magnitude.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

EXACT = {"int_steps": 0, "int_fraction": 0.0, "float_rel": 0.0}
LOOSE = {"int_steps": 1, "int_fraction": 0.01, "float_rel": 1e-3}


def tolerance_for(provider: str) -> Dict[str, float]:
    return dict(EXACT if provider in ("CPUExecutionProvider", "", None) else LOOSE)


def difference(pc: np.ndarray, chip: np.ndarray, tol: Dict[str, float]) -> Dict[str, object]:
    """How ``chip`` departs from ``pc`` (same element count); ``departs`` says whether beyond ``tol``."""
    a = np.asarray(pc).reshape(-1)
    b = np.asarray(chip).reshape(-1)
    if a.size != b.size:
        return {"departs": True, "max_abs": None, "mismatched": None, "why": f"{b.size} values, PC has {a.size}"}
    if np.issubdtype(a.dtype, np.integer):
        diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
        over = diff > 0
        departs = bool(diff.max(initial=0) > tol["int_steps"] or over.mean() > tol["int_fraction"])
    else:
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        diff = np.abs(a64 - b64)
        diff[np.isnan(a64) & np.isnan(b64)] = 0.0
        diff[np.isnan(diff)] = np.inf
        over = diff > 0
        limit = tol["float_rel"] * float(np.max(np.abs(a64), initial=0.0))
        departs = bool(diff.max(initial=0.0) > limit)
    return {"departs": departs, "max_abs": float(diff.max(initial=0)), "mismatched": int(over.sum()),
            "values": int(a.size)}


def per_sample(pc: Sequence[np.ndarray], chip: Sequence[np.ndarray]) -> np.ndarray:
    """For each sample, the largest departure over the outputs relative to that output's PC range."""
    count = int(np.asarray(pc[0]).shape[0])
    scores = np.zeros(count)
    for a, b in zip(pc, chip):
        a2 = np.asarray(a, np.float64).reshape(count, -1)
        b2 = np.asarray(b, np.float64).reshape(count, -1)
        scale = float(np.max(np.abs(a2), initial=0.0)) or 1.0
        diff = np.abs(a2 - b2) / scale
        diff[np.isnan(diff)] = np.inf
        scores = np.maximum(scores, diff.max(axis=1, initial=0.0))
    return scores


def pick_samples(pc: Sequence[np.ndarray], chip: Sequence[np.ndarray], top: int) -> List[int]:
    """Indices of up to ``top`` samples where chip and PC differ most (none when they agree everywhere)."""
    scores = per_sample(pc, chip)
    order = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] > 0]
    return order[:top]
