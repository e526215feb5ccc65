"""Model-level fidelity of a QDQ model against its FP32 source on a few batches (pure, returns dicts)."""
from __future__ import annotations

from typing import Dict, Iterable, List

import numpy as np
import onnx

from ..calibration.session import make_session
from . import metrics


def run_both(fp32: onnx.ModelProto, qdq: onnx.ModelProto, batches: Iterable[Dict[str, np.ndarray]],
             device: str = "cpu") -> Dict[str, List[np.ndarray]]:
    """Outputs of both models over the batches: {output: [fp32 concat, qdq concat]}."""
    ref_sess = make_session(fp32, device, "FP32 model")
    q_sess = make_session(qdq, device, "quantized model", optimize=True)
    names = [o.name for o in ref_sess.get_outputs()]
    ref: Dict[str, list] = {n: [] for n in names}
    test: Dict[str, list] = {n: [] for n in names}
    for batch in batches:
        for name, value in zip(names, ref_sess.run(names, batch)):
            ref[name].append(value)
        for name, value in zip(names, q_sess.run(names, batch)):
            test[name].append(value)
    return {n: [np.concatenate(ref[n]), np.concatenate(test[n])] for n in names if ref[n]}


def compare_outputs(pairs: Dict[str, List[np.ndarray]]) -> Dict[str, dict]:
    out = {}
    for name, (ref, test) in pairs.items():
        row = {"snr_db": metrics.snr_db(ref, test), "cosine": metrics.cosine(ref, test),
               "noise_ratio": metrics.noise_ratio(ref, test), "max_abs": metrics.max_abs(ref, test),
               "samples": int(ref.shape[0]) if ref.ndim else 1}
        if ref.ndim == 2 and ref.shape[1] > 1:
            row["top1_agreement"] = metrics.top1_agreement(ref, test)
        out[name] = row
    return out
