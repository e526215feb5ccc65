"""Whether the chip's outputs can be trusted at all: the PC's output count and shapes, and no NaN/Inf values."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

CHIP_RUNS = (("chip_int8", "pc_int8", "INT8"), ("chip_fp32", "pc_fp32", "FP32"))
Runs = Dict[str, Optional[List[np.ndarray]]]


def shape_problems(names: Sequence[str], runs: Runs) -> Dict[str, str]:
    """Per chip run (chip_int8, chip_fp32) whose outputs do not match the PC's in count or shape: why."""
    problems = {}
    for chip, pc, what in CHIP_RUNS:
        got, ref = runs.get(chip), runs.get(pc)
        if got is None or ref is None:
            continue
        if len(got) != len(ref):
            problems[chip] = f"the chip {what} model returned {len(got)} output(s), the PC's {len(ref)}"
            continue
        for name, out, expected in zip(names, got, ref):
            if out.shape != expected.shape:
                problems[chip] = (f"chip {what} output '{name}' has shape {tuple(out.shape)} where the PC's has "
                                  f"{tuple(expected.shape)} ({expected.shape[0]} samples first)")
                break
    return problems


def count_nonfinite(array: np.ndarray) -> Dict[str, int]:
    """NaN and infinite values of ``array`` (integer tensors have none)."""
    if not np.issubdtype(array.dtype, np.inexact):
        return {"nan": 0, "inf": 0, "values": int(array.size)}
    return {"nan": int(np.isnan(array).sum()), "inf": int(np.isinf(array).sum()), "values": int(array.size)}


def nonfinite_summary(names: Sequence[str], runs: Runs) -> Dict[str, Dict[str, dict]]:
    """Per run, the outputs that hold NaN or Inf: {run: {output: {"nan", "inf", "values"}}} (no empty runs)."""
    found: Dict[str, Dict[str, dict]] = {}
    for run, outputs in runs.items():
        for name, array in zip(names, outputs or []):
            counts = count_nonfinite(array)
            if counts["nan"] or counts["inf"]:
                found.setdefault(run, {})[name] = counts
    return found


def nonfinite_reasons(nonfinite: Dict[str, Dict[str, dict]]) -> List[str]:
    """One reason per chip output with more non-finite values than the PC's same output."""
    reasons = []
    for chip, pc, what in CHIP_RUNS:
        for name, counts in sorted(nonfinite.get(chip, {}).items()):
            ref = nonfinite.get(pc, {}).get(name, {"nan": 0, "inf": 0})
            if counts["nan"] + counts["inf"] > ref["nan"] + ref["inf"]:
                reasons.append(f"chip {what} output '{name}' holds {counts['nan']} NaN and {counts['inf']} infinite "
                               f"value(s) of {counts['values']} (the PC's: {ref['nan']} NaN, {ref['inf']} infinite)")
    return reasons
