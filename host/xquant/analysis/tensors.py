"""Per-tensor quantization error, accumulated and isolated, streamed over a few batches (pure: returns dicts).

* accumulated: the QDQ model against FP32, at every quantized tensor (all error up to that point);
* isolated: only the op that makes the tensor quantized: its inputs are the FP32 values quantized once,
  its weights are the INT8 weights, its output is quantized (``export/probe.py``).
A layer whose isolated error is a large part of its accumulated error is a bad layer; one whose
isolated error is small only inherits the error of the layers before it."""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional

import numpy as np
import onnx

from ..calibration.ranges import QMAX, QMIN, QParams
from ..calibration.session import make_session
from ..export.probe import FP32_SUFFIX, ISOLATED_SUFFIX, QuantPoint, probe_model, quant_points
from .metrics import ratio_db

SNR_FLAG = 0.1  # XQuant: flag tensors whose noise power / signal power is above this
COSINE_FLAG = 0.99  # ... or whose cosine similarity is below this


class ErrorStats:
    """Streaming fidelity of a test tensor against its reference (sums in float64)."""

    def __init__(self) -> None:
        self.signal = self.noise = self.dot = self.test_power = 0.0
        self.count = 0

    def update(self, ref: np.ndarray, test: np.ndarray) -> None:
        r = np.asarray(ref, np.float32).ravel()  # einsum sums in float64, without a BLAS thread pool
        t = np.asarray(test, np.float32).ravel()
        d = r - t
        rr = float(np.einsum("i,i->", r, r, dtype=np.float64))
        dd = float(np.einsum("i,i->", d, d, dtype=np.float64))
        rd = float(np.einsum("i,i->", r, d, dtype=np.float64))
        self.signal += rr
        self.noise += dd
        self.dot += rr - rd  # r.t with t = r - d
        self.test_power += rr - 2.0 * rd + dd
        self.count += r.size

    def as_dict(self) -> dict:
        if self.signal == 0.0:
            ratio = 0.0 if self.noise == 0.0 else float("inf")
        else:
            ratio = self.noise / self.signal
        denom = np.sqrt(self.signal * self.test_power)
        cosine = float(self.dot / denom) if denom > 0 else (1.0 if self.signal == self.test_power else 0.0)
        return {"snr": ratio, "snr_db": ratio_db(ratio), "mse": self.noise / max(self.count, 1), "cosine": cosine}


class Extremes:
    def __init__(self) -> None:
        self.lo, self.hi = np.inf, -np.inf

    def update(self, value: np.ndarray) -> None:
        if value.size:
            self.lo, self.hi = min(self.lo, float(value.min())), max(self.hi, float(value.max()))

    def as_list(self) -> List[Optional[float]]:
        return [None if not np.isfinite(v) else v for v in (self.lo, self.hi)]


def fake_quant(x: np.ndarray, p: QParams) -> np.ndarray:
    """QuantizeLinear then DequantizeLinear with ``p`` (round half to even, as onnxruntime)."""
    q = np.clip(np.round(x / np.float32(p.scale)) + p.zero_point, QMIN, QMAX)
    return ((q - p.zero_point) * np.float32(p.scale)).astype(np.float32)


def flagged(errors: dict) -> bool:
    return errors["snr"] > SNR_FLAG or errors["cosine"] < COSINE_FLAG


class _Probe:
    """One session of the three-graph probe model (``export/probe.py``)."""

    def __init__(self, fp32: onnx.ModelProto, qdq: onnx.ModelProto, points: List[QuantPoint], device: str) -> None:
        self.inputs = {v.name for v in fp32.graph.input}
        self.outputs = [o.name for o in fp32.graph.output]
        self.points = points
        model = probe_model(fp32, qdq, points)
        self.names = [o.name for o in model.graph.output]
        self.session = make_session(model, device, "analysis probe model")

    def run(self, batch: Dict[str, np.ndarray]):
        """({tensor: FP32 value}, {name: QDQ value}, {source: isolated value}) for one batch."""
        values = dict(zip(self.names, self.session.run(self.names, batch)))
        fp = dict(batch)
        fp.update({n[: -len(FP32_SUFFIX)]: v for n, v in values.items() if n.endswith(FP32_SUFFIX)})
        iso = {n[: -len(ISOLATED_SUFFIX)]: v for n, v in values.items() if n.endswith(ISOLATED_SUFFIX)}
        return fp, values, iso


def tensor_errors(fp32: onnx.ModelProto, qdq: onnx.ModelProto, params: Dict[str, QParams],
                  batches: Iterable[Dict[str, np.ndarray]], device: str = "cpu") -> dict:
    """{"tensors": {tensor: {accumulated, isolated, float_range, quant_range}}, "outputs": {output: errors},
    "samples": n} over ``batches``."""
    points = [p for p in quant_points(qdq) if p.tensor in params]
    probe = _Probe(fp32, qdq, points, device)
    acc = {p.tensor: ErrorStats() for p in points}
    iso = {p.tensor: ErrorStats() for p in points}
    f_range = {p.tensor: Extremes() for p in points}
    q_range = {p.tensor: Extremes() for p in points}
    out = {name: ErrorStats() for name in probe.outputs}
    samples = 0
    for batch in batches:
        fp, q, isolated = probe.run(batch)
        samples += int(next(iter(batch.values())).shape[0])
        for p in points:
            ref, test = fp[p.tensor], q[p.dequantized]
            acc[p.tensor].update(ref, test)
            iso[p.tensor].update(ref, fake_quant(isolated.get(p.source, ref), params[p.tensor]))
            f_range[p.tensor].update(ref)
            q_range[p.tensor].update(test)
        for name in probe.outputs:
            if np.issubdtype(np.asarray(fp[name]).dtype, np.floating):
                out[name].update(fp[name], q[name])
    tensors = {p.tensor: {"accumulated": acc[p.tensor].as_dict(), "isolated": iso[p.tensor].as_dict(),
                          "float_range": f_range[p.tensor].as_list(), "quant_range": q_range[p.tensor].as_list()}
               for p in points}
    return {"tensors": tensors, "outputs": {k: v.as_dict() for k, v in out.items() if v.count},
            "samples": samples}
