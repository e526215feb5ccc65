"""Tensor fidelity: cosine similarity, signal-to-noise ratio and largest absolute error, per output."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

SNR_CAP_DB = 200.0  # identical tensors: reported as 200 dB instead of infinity (JSON has no inf)
PAIRS = (("chip_int8_vs_pc_int8", "pc_int8", "chip_int8"), ("chip_fp32_vs_pc_fp32", "pc_fp32", "chip_fp32"),
         ("pc_int8_vs_pc_fp32", "pc_fp32", "pc_int8"))


def tensor_metrics(reference: np.ndarray, test: np.ndarray) -> Dict[str, Optional[float]]:
    """Metrics of ``test`` against ``reference`` (same shape), over the positions where both are finite.

    When some are not, ``nonfinite`` counts the positions left out; with none left, the metrics are None.
    """
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {test.shape}")
    ref = reference.astype(np.float64).ravel()
    out = test.astype(np.float64).ravel()
    finite = np.isfinite(ref) & np.isfinite(out)
    left_out = int(finite.size - np.count_nonzero(finite))
    if left_out:
        ref, out = ref[finite], out[finite]
    metrics: Dict[str, Optional[float]] = {"cosine": None, "snr_db": None, "max_abs": None}
    if ref.size or not left_out:
        metrics = _finite_metrics(ref, out)
    if left_out:
        metrics["nonfinite"] = left_out
    return metrics


def _finite_metrics(ref: np.ndarray, out: np.ndarray) -> Dict[str, Optional[float]]:
    noise = float(np.sum((ref - out) ** 2))
    signal = float(np.sum(ref ** 2))
    norms = float(np.linalg.norm(ref) * np.linalg.norm(out))
    if norms == 0.0:
        cosine = 1.0 if noise == 0.0 else 0.0
    else:
        cosine = float(np.dot(ref, out) / norms)
    if noise == 0.0:
        snr = SNR_CAP_DB
    elif signal == 0.0:
        snr = -SNR_CAP_DB
    else:
        snr = min(SNR_CAP_DB, 10.0 * float(np.log10(signal / noise)))
    max_abs = float(np.max(np.abs(ref - out))) if ref.size else 0.0
    return {"cosine": round(cosine, 8), "snr_db": round(snr, 4), "max_abs": max_abs}


def fidelity_summary(names: Sequence[str], runs: Dict[str, Optional[List[np.ndarray]]]) -> Dict[str, dict]:
    """``runs`` maps pc_fp32, pc_int8, chip_fp32, chip_int8 to outputs in graph order (None: did not run)."""
    outputs: Dict[str, dict] = {}
    for index, name in enumerate(names):
        entry = {}
        for label, ref_key, test_key in PAIRS:
            ref, test = runs.get(ref_key), runs.get(test_key)
            if ref is not None and test is not None and index < len(ref) and index < len(test):
                entry[label] = tensor_metrics(ref[index], test[index])
        outputs[name] = entry
    return {"outputs": outputs}


def worst(fidelity: Dict[str, dict], pair: str, key: str = "cosine") -> Optional[Dict[str, object]]:
    """The output with the lowest ``key`` (cosine or snr_db) for ``pair``: {"output", "cosine", ...}; None when
    absent. An output whose metric could not be computed (no finite values) counts as the worst."""
    found = [(m[pair][key] if m[pair][key] is not None else -np.inf, name, m[pair])
             for name, m in fidelity["outputs"].items() if pair in m]
    if not found:
        return None
    _, name, metrics = min(found, key=lambda item: item[0])
    return dict(metrics, output=name)
