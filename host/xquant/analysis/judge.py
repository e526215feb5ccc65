"""Output fidelity of candidate QDQ models against FP32 on fixed batches (FP32 outputs run once)."""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import onnx

from ..calibration.session import make_session
from .tensors import ErrorStats


class OutputJudge:
    def __init__(self, fp32: onnx.ModelProto, batches: Sequence[Dict[str, np.ndarray]], device: str = "cpu") -> None:
        self.batches, self.device = list(batches), device
        sess = make_session(fp32, device, "FP32 model")
        self.names = [o.name for o in sess.get_outputs()]
        self.ref: List[list] = [sess.run(self.names, b) for b in self.batches]

    def errors(self, qdq: onnx.ModelProto) -> Dict[str, dict]:
        """{output: {snr, snr_db, mse, cosine}} of ``qdq`` over the batches (float outputs only)."""
        sess = make_session(qdq, self.device, "candidate quantized model")
        acc = {n: ErrorStats() for n in self.names}
        for batch, ref in zip(self.batches, self.ref):
            for name, r, t in zip(self.names, ref, sess.run(self.names, batch)):
                if np.issubdtype(np.asarray(r).dtype, np.floating):
                    acc[name].update(r, t)
        return {n: a.as_dict() for n, a in acc.items() if a.count}


def worst_db(errors: Dict[str, dict]) -> float:
    """The lowest output SNR in dB (inf when there is no float output)."""
    return min(e["snr_db"] for e in errors.values()) if errors else float("inf")


def worst_ratio(errors: Dict[str, dict]) -> float:
    """The highest output noise / signal ratio (XQuant's SNR; 0 when there is no float output)."""
    return max((e["snr"] for e in errors.values()), default=0.0)
