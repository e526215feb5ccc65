"""Verdict rules: pass, warn or fail, with the reasons.

fail  the chip could not load or run a model; the accuracy check calls a chip-runtime bug (a drop of
      bug_threshold points or more); or a chip output departs from the PC's (cosine below fail_cosine).
warn  a drop between accuracy_tolerance and bug_threshold; or a cosine below warn_cosine.
pass  otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

from .fidelity import worst


@dataclass(frozen=True)
class Thresholds:
    warn_cosine: float = 0.999
    fail_cosine: float = 0.99


def _run_failures(board_errors: Dict[str, str]) -> List[str]:
    return [f"the chip could not run the {what}: {msg}" for what, msg in sorted(board_errors.items())]


def _fidelity_reasons(fidelity: dict, limits: Thresholds) -> Tuple[List[str], List[str]]:
    fails, warns = [], []
    for pair, what in (("chip_int8_vs_pc_int8", "INT8"), ("chip_fp32_vs_pc_fp32", "FP32")):
        found = worst(fidelity, pair)
        if found is None:
            continue
        text = (f"chip {what} output '{found['output']}' departs from the PC's: cosine {found['cosine']:.6f}, "
                f"SNR {found['snr_db']:.1f} dB, max abs error {found['max_abs']:.4g}")
        if found["cosine"] < limits.fail_cosine:
            fails.append(text + f" (below {limits.fail_cosine})")
        elif found["cosine"] < limits.warn_cosine:
            warns.append(text + f" (below {limits.warn_cosine})")
    return fails, warns


def _accuracy_reason(acc: dict) -> str:
    what = "accuracy" if acc["labelled"] else "top-1 agreement with PC FP32"
    return (f"chip INT8 {what} {acc['chip_int8']}% vs PC INT8 {acc['pc_int8']}%: drop {acc['drop_points']:.2f} "
            f"points over {acc['samples']} samples ({acc['samples_differing']} top-1 differ from PC INT8; "
            f"tolerance {acc['tolerance']}, bug threshold {acc['bug_threshold']})")


def decide(accuracy: dict, fidelity: dict, board_errors: Dict[str, str],
           limits: Thresholds = Thresholds()) -> Tuple[str, List[str]]:
    """The verdict and the reasons behind it (empty reasons for a clean pass)."""
    fails = _run_failures(board_errors)
    fid_fails, warns = _fidelity_reasons(fidelity, limits)
    fails += fid_fails
    if accuracy["chip_int8"] is None:
        pass  # the chip INT8 run failed: already a reason above
    elif accuracy["status"] == "bug":
        fails.append("chip-runtime bug: " + _accuracy_reason(accuracy))
    elif accuracy["status"] == "warn":
        warns.append(_accuracy_reason(accuracy))
    if fails:
        return "fail", fails + warns
    if warns:
        return "warn", warns
    return "pass", []
