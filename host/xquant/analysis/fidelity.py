"""Model-level fidelity of a QDQ model against its FP32 source on a few batches (pure, returns dicts)."""
from __future__ import annotations

from typing import Dict, Iterable

import numpy as np
import onnx

from ..calibration.session import make_session
from . import metrics


class _Running:
    """One output's comparison, summed batch by batch: nothing of the outputs is kept (ppocr_v6_rec's
    [N, 40, 18710] output over 32 samples, both models, concatenated and in float64, was 400 MiB)."""

    def __init__(self) -> None:
        self.signal = self.noise = self.dot = self.test_sq = self.max_abs = 0.0
        self.samples = self.agree = 0
        self.classes = False  # a [N, classes] output: top-1 agreement applies

    def add(self, ref: np.ndarray, test: np.ndarray) -> None:
        r, t = np.asarray(ref, np.float64), np.asarray(test, np.float64)
        diff = r - t
        self.signal += float(np.sum(r * r))
        self.noise += float(np.sum(diff * diff))
        self.dot += float(np.sum(r * t))
        self.test_sq += float(np.sum(t * t))
        self.max_abs = max(self.max_abs, float(np.abs(diff).max()) if diff.size else 0.0)
        self.samples += int(r.shape[0]) if r.ndim else 1
        self.classes = r.ndim == 2 and r.shape[1] > 1
        if self.classes:
            self.agree += int(np.sum(np.asarray(ref).argmax(axis=1) == np.asarray(test).argmax(axis=1)))

    def row(self) -> dict:
        """SNR, cosine, noise ratio, max |error| as ``metrics`` computes them on the whole outputs."""
        ratio = metrics.ratio_of_sums(self.signal, self.noise)
        found = {"snr_db": metrics.ratio_db(ratio), "noise_ratio": ratio,
                 "cosine": metrics.cosine_of_sums(self.dot, self.signal, self.test_sq),
                 "max_abs": self.max_abs, "samples": self.samples}
        if self.classes:
            found["top1_agreement"] = self.agree / self.samples
        return found


def compare_models(fp32: onnx.ModelProto, qdq: onnx.ModelProto, batches: Iterable[Dict[str, np.ndarray]],
                   device: str = "cpu") -> Dict[str, dict]:
    """Per output of both models over the batches: SNR, cosine, noise ratio, max |error|, samples and, for
    [N, classes] outputs, top-1 agreement; summed batch by batch."""
    ref_sess = make_session(fp32, device, "FP32 model")
    q_sess = make_session(qdq, device, "quantized model", optimize=True)
    names = [o.name for o in ref_sess.get_outputs()]
    running = {name: _Running() for name in names}
    for batch in batches:
        for name, ref, test in zip(names, ref_sess.run(names, batch), q_sess.run(names, batch)):
            running[name].add(ref, test)
    return {name: r.row() for name, r in running.items() if r.samples}
