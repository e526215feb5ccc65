"""Verdict rules: pass, warn or fail, with the reasons and the rule behind each.

rule               fail                                              warn
board-error        the chip could not load or run a model            -
output-shape       a chip output's count or shape is not the PC's    -
nonfinite-output   a chip output holds NaN/Inf where the PC's not    -
nonfinite-latency  the chip reported a NaN/Inf latency               -
output-departure   chip vs PC cosine below fail_cosine (0.99)        below warn_cosine (0.999)
int8-runtime       chip INT8 vs PC INT8 SNR below the provider's     any difference (CPUExecutionProvider) or
                   fail limit (compare/runtime.py)                   SNR below the provider's warn limit
int8-agreement     chip INT8 vs PC INT8 top-1 disagreement of        above agreement_tolerance points
                   agreement_bug_threshold points or more
accuracy-drop      PC INT8 minus chip INT8 accuracy of               above accuracy_tolerance points
                   bug_threshold points or more
pass  when no rule fires.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .fidelity import worst

Finding = Dict[str, str]  # {"rule", "level" (fail | warn), "reason"}


@dataclass(frozen=True)
class Thresholds:
    warn_cosine: float = 0.999
    fail_cosine: float = 0.99


def _num(value: Optional[float], spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _departure_text(found: dict, what: str, against: str) -> str:
    return (f"chip {what} output '{found['output']}' departs from {against}: cosine {_num(found['cosine'], '.6f')}, "
            f"SNR {_num(found['snr_db'], '.1f')} dB, max abs error {_num(found['max_abs'], '.4g')}")


def _fidelity_findings(fidelity: dict, limits: Thresholds, label: str = "INT8") -> List[Finding]:
    found_all = []
    for pair, what in (("chip_int8_vs_pc_int8", label), ("chip_fp32_vs_pc_fp32", "FP32")):
        found = worst(fidelity, pair)
        if found is None:
            continue
        text = _departure_text(found, what, "the PC's")
        cosine = found["cosine"] if found["cosine"] is not None else float("-inf")
        if cosine < limits.fail_cosine:
            found_all.append(finding("output-departure", "fail", text + f" (below {limits.fail_cosine})"))
        elif cosine < limits.warn_cosine:
            found_all.append(finding("output-departure", "warn", text + f" (below {limits.warn_cosine})"))
    return found_all


def _accuracy_reason(acc: dict, label: str = "INT8") -> str:
    what = "accuracy" if acc["labelled"] else "top-1 agreement with PC FP32"
    return (f"chip {label} {what} {acc['chip_int8']}% vs PC {label} {acc['pc_int8']}%: drop {acc['drop_points']:.2f} "
            f"points over {acc['samples']} samples ({acc['samples_differing']} top-1 differ from PC {label}; "
            f"tolerance {acc['tolerance']}, bug threshold {acc['bug_threshold']})")


def _runtime_findings(runtime: dict, label: str = "INT8") -> List[Finding]:
    found = []
    agree = runtime.get("agreement")
    if agree and agree["status"] != "pass":
        text = (f"chip {label} top-1 disagrees with PC {label} on {agree['samples_differing']} of {agree['samples']} "
                f"samples ({agree['disagreement_points']:.2f} points; tolerance {agree['tolerance']}, bug "
                f"threshold {agree['bug_threshold']}), whatever the accuracy says")
        found.append(finding("int8-agreement", "fail" if agree["status"] == "bug" else "warn",
                             ("chip-runtime bug: " if agree["status"] == "bug" else "runtime difference: ") + text))
    dep = runtime.get("departure")
    if dep and dep["status"] != "pass":
        text = _departure_text(dep, label, f"PC {label}")
        provider = runtime["provider"]
        if dep["status"] == "bug":
            found.append(finding("int8-runtime", "fail", f"chip-runtime bug: {text} (SNR below {dep['fail_snr_db']} "
                                 f"dB, the limit for {label} on {provider})"))
        elif dep["expect_identical"]:
            found.append(finding("int8-runtime", "warn", f"runtime difference: {text}; {provider} is expected to "
                                 f"give PC and chip {label} outputs that are bit-identical"))
        else:
            found.append(finding("int8-runtime", "warn", f"runtime difference: {text} (SNR below "
                                 f"{dep['warn_snr_db']} dB, the warning limit for {label} on {provider})"))
    return found


def finding(rule: str, level: str, reason: str) -> Finding:
    return {"rule": rule, "level": level, "reason": reason}


def judge(accuracy: dict, fidelity: dict, board_errors: Dict[str, str], limits: Thresholds = Thresholds(),
          runtime: Optional[dict] = None, broken: Optional[Dict[str, List[str]]] = None,
          label: str = "INT8") -> List[Finding]:
    """Every rule that fired, failures first. ``broken`` maps rule -> reasons found before the comparison
    (output-shape, nonfinite-output, nonfinite-latency): each is a failure. ``label``: what the quantized
    model is called in the reasons (INT8, DYNQ, FP16); the rule names keep their int8- prefix."""
    found = [finding("board-error", "fail", f"the chip could not run the {what}: {msg}")
             for what, msg in sorted(board_errors.items())]
    for rule, reasons in (broken or {}).items():
        found += [finding(rule, "fail", reason) for reason in reasons]
    found += _fidelity_findings(fidelity, limits, label)
    found += _runtime_findings(runtime or {}, label)
    if accuracy["chip_int8"] is not None and accuracy["status"] in ("bug", "warn"):
        bug = accuracy["status"] == "bug"
        found.append(finding("accuracy-drop", "fail" if bug else "warn",
                             ("chip-runtime bug: " if bug else "") + _accuracy_reason(accuracy, label)))
    return [f for f in found if f["level"] == "fail"] + [f for f in found if f["level"] == "warn"]


def verdict_of(findings: List[Finding]) -> str:
    levels = {f["level"] for f in findings}
    return "fail" if "fail" in levels else "warn" if levels else "pass"


def decide(accuracy: dict, fidelity: dict, board_errors: Dict[str, str],
           limits: Thresholds = Thresholds(), runtime: Optional[dict] = None,
           broken: Optional[Dict[str, List[str]]] = None) -> Tuple[str, List[str]]:
    """The verdict and the reasons behind it (empty reasons for a clean pass)."""
    findings = judge(accuracy, fidelity, board_errors, limits, runtime, broken)
    return verdict_of(findings), [f["reason"] for f in findings]
