"""Chip INT8 against PC INT8 directly: a runtime difference must not hide behind accuracy.

Two rules, both independent of labels:

agreement   top-1 disagreement between chip INT8 and PC INT8, in points: above ``agreement_tolerance``
            (default 0.5) -> warn, ``agreement_bug_threshold`` (default 2.0) or more -> chip-runtime bug
            (unless one sample alone makes it). The seed manual's +-0.5 % / >2 % applied to agreement.
departure   the worst chip INT8 vs PC INT8 output SNR, against per-mode, per-provider limits (``MODE_SNR_DB``).
            CPUExecutionProvider runs
            the same kernels on both sides (riscv64 onnxruntime 1.21 under qemu and x86 onnxruntime 1.32 were
            measured bit-identical), so any difference warns and an SNR below 40 dB is a bug; other (vendor)
            providers round differently: warn below 30 dB, bug below 20 dB. Dynamic quantization on the CPU
            provider: warn below 40 dB, bug below 30; FP16: warn below 60 dB, bug below 40 (other providers
            30/20 and 40/30). ``runtime_snr_warn_db`` and
            ``runtime_snr_fail_db`` override both defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .accuracy import status_of
from .fidelity import worst

PAIR = "chip_int8_vs_pc_int8"  # the quantized model's pair, whatever the mode (int8, dynq, fp16)
PROVIDER_SNR_DB: Dict[str, Tuple[Optional[float], float]] = {"CPUExecutionProvider": (None, 40.0)}
OTHER_SNR_DB: Tuple[Optional[float], float] = (30.0, 20.0)  # (warn, fail); warn None: any difference warns
# the other modes (xquant precision_level 3 and 4): (per provider, any other provider). Dynamic quantization
# takes its activation ranges from the run itself, so a last-bit FP32 difference upstream can move a whole
# quantization step; an FP16 model rounds every float16 tensor, where a last-bit FP32 difference can flip one
# float16 ulp (2**-11 relative): neither is expected bit-identical across CPUs, both stay far above these limits.
MODE_SNR_DB: Dict[str, Tuple[Dict[str, Tuple[Optional[float], float]], Tuple[Optional[float], float]]] = {
    "int8": (PROVIDER_SNR_DB, OTHER_SNR_DB),
    "dynq": ({"CPUExecutionProvider": (40.0, 30.0)}, (30.0, 20.0)),
    "fp16": ({"CPUExecutionProvider": (60.0, 40.0)}, (40.0, 30.0)),
}


@dataclass(frozen=True)
class RuntimeLimits:
    agreement_tolerance: float = 0.5
    agreement_bug_threshold: float = 2.0
    snr_warn_db: Optional[float] = None  # None: the provider's default
    snr_fail_db: Optional[float] = None
    mode: str = "int8"  # int8, dynq or fp16 (xquant.modes)

    def snr_limits(self, provider: str) -> Tuple[Optional[float], float]:
        per_provider, other = MODE_SNR_DB.get(self.mode, MODE_SNR_DB["int8"])
        warn, fail = per_provider.get(provider, other)
        return (warn if self.snr_warn_db is None else self.snr_warn_db,
                fail if self.snr_fail_db is None else self.snr_fail_db)


def _agreement(accuracy: dict, limits: RuntimeLimits) -> Optional[dict]:
    agree = accuracy["top1_agreement"]["chip_int8_vs_pc_int8"]
    if agree is None:
        return None
    points = round(100.0 - float(agree), 4)
    differing = int(accuracy["samples_differing"])
    return {"disagreement_points": points, "samples_differing": differing, "samples": accuracy["samples"],
            "tolerance": limits.agreement_tolerance, "bug_threshold": limits.agreement_bug_threshold,
            "status": status_of(points, differing, limits.agreement_tolerance, limits.agreement_bug_threshold)}


def _departure(fidelity: dict, provider: str, limits: RuntimeLimits) -> Optional[dict]:
    found = worst(fidelity, PAIR, key="snr_db")
    if found is None:
        return None
    warn, fail = limits.snr_limits(provider)
    identical = all(m[PAIR]["max_abs"] == 0.0 and not m[PAIR].get("nonfinite")
                    for m in fidelity["outputs"].values() if PAIR in m)
    snr = found["snr_db"]
    if snr is None or snr < fail:
        status = "bug"
    elif (warn is None and not identical) or (warn is not None and snr < warn):
        status = "warn"
    else:
        status = "pass"
    return {"output": found["output"], "snr_db": snr, "cosine": found["cosine"], "max_abs": found["max_abs"],
            "identical": identical, "expect_identical": warn is None, "warn_snr_db": warn, "fail_snr_db": fail,
            "status": status}


def runtime_summary(accuracy: dict, fidelity: dict, provider: str, limits: RuntimeLimits = RuntimeLimits()) -> dict:
    """Both rules' findings; their parts are None when the chip INT8 model did not run."""
    return {"provider": provider, "mode": limits.mode, "agreement": _agreement(accuracy, limits),
            "departure": _departure(fidelity, provider, limits)}
