"""Top-1 predictions, agreement between runs, and labelled accuracy (all in percent, 0-100)."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np


def top1(output: np.ndarray) -> np.ndarray:
    """Class index per sample: argmax over all features of each sample (axis 0 is the sample axis)."""
    flat = output.reshape(output.shape[0], -1) if output.ndim > 1 else output.reshape(-1, 1)
    return np.argmax(flat, axis=1)


def percent_equal(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b) * 100.0) if a.size else 0.0


def status_of(drop: float, samples_differing: int, tolerance: float, bug_threshold: float) -> str:
    """pass within ``tolerance``; bug at ``bug_threshold`` or more (unless one sample alone makes it); warn."""
    if drop <= tolerance:
        return "pass"
    if drop >= bug_threshold and samples_differing > 1:
        return "bug"
    return "warn"


def accuracy_summary(preds: Dict[str, Optional[np.ndarray]], labels: Optional[np.ndarray],
                     tolerance: float, bug_threshold: float) -> dict:
    """``preds`` maps pc_fp32, pc_int8, chip_fp32, chip_int8 to top-1 arrays (None when the run failed).

    With labels the drop is PC INT8 accuracy minus chip INT8 accuracy; without, agreement with the PC FP32
    top-1 stands in for accuracy (PC INT8's agreement minus the chip INT8's).
    """
    pc_fp32, pc_int8, chip_int8 = preds["pc_fp32"], preds["pc_int8"], preds.get("chip_int8")
    samples = int(pc_fp32.shape[0])

    def agree(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[float]:
        return None if a is None or b is None else round(percent_equal(a, b), 4)

    if labels is not None:
        scores = {key: (None if p is None else round(percent_equal(p, labels), 4)) for key, p in preds.items()}
    else:
        scores = {"pc_fp32": 100.0, "pc_int8": agree(pc_int8, pc_fp32), "chip_fp32": agree(preds.get("chip_fp32"),
                  pc_fp32), "chip_int8": agree(chip_int8, pc_fp32)}
    if chip_int8 is None:
        drop, differing = float(scores["pc_int8"] or 0.0), samples
    else:
        drop = round(float(scores["pc_int8"]) - float(scores["chip_int8"]), 4)
        differing = int(np.sum(chip_int8 != pc_int8))
    return {
        "labelled": labels is not None, "samples": samples,
        "pc_fp32": scores["pc_fp32"], "pc_int8": scores["pc_int8"],
        "chip_fp32": scores.get("chip_fp32"), "chip_int8": scores.get("chip_int8"),
        "drop_points": drop,
        "top1_agreement": {"chip_int8_vs_pc_int8": agree(chip_int8, pc_int8),
                           "chip_fp32_vs_pc_fp32": agree(preds.get("chip_fp32"), pc_fp32),
                           "pc_int8_vs_pc_fp32": agree(pc_int8, pc_fp32)},
        "samples_differing": differing,
        "measure": "labelled accuracy" if labels is not None else "top-1 agreement with PC FP32",
        "status": status_of(drop, differing, tolerance, bug_threshold),
        "tolerance": tolerance, "bug_threshold": bug_threshold,
    }
