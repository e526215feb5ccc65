"""Weight, constant and bias quantization (numbers only; the writer places them in the graph)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..analysis.metrics import snr_db
from ..plan.planner import WeightSpec


@dataclass(frozen=True)
class QuantizedTensor:
    values: np.ndarray  # int8 or int32
    scale: np.ndarray  # float32, scalar or per-channel
    zero_point: np.ndarray  # same shape as scale
    axis: Optional[int]


def quantize_weight(weight: np.ndarray, spec: WeightSpec) -> QuantizedTensor:
    w = weight.astype(np.float32)
    if spec.symmetric:
        if spec.axis is not None and w.ndim > 1:
            reduce_axes = tuple(i for i in range(w.ndim) if i != spec.axis)
            amax = np.abs(w).max(axis=reduce_axes)
        else:
            amax = np.asarray(np.abs(w).max())
        scale = np.maximum(amax / 127.0, 1e-12).astype(np.float32)
        zp = np.zeros(scale.shape, dtype=np.int8)
        shaped = scale.reshape([-1 if i == spec.axis else 1 for i in range(w.ndim)]) if scale.ndim else scale
        q = np.clip(np.round(w / shaped), -127, 127).astype(np.int8)
        axis = spec.axis if scale.ndim else None
        return QuantizedTensor(q, scale, zp, axis)
    lo, hi = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
    scale = np.float32(max((hi - lo) / 255.0, 1e-12))
    zp = np.int8(np.clip(round(-128 - lo / scale), -128, 127))
    q = np.clip(np.round(w / scale) + int(zp), -128, 127).astype(np.int8)
    return QuantizedTensor(q, np.asarray(scale), np.asarray(zp), None)


def weight_snr_db(weight: np.ndarray) -> float:
    """SNR (dB) of ``weight`` against its symmetric per-tensor INT8 copy (the Gemm/MatMul scheme)."""
    q = quantize_weight(weight, WeightSpec("", None))
    return snr_db(weight, q.values.astype(np.float32) * q.scale)


def quantize_bias(bias: np.ndarray, input_scale: float, weight_scale: np.ndarray) -> QuantizedTensor:
    """int32 bias with scale input_scale * weight_scale (per output channel when the weight is)."""
    scale = (np.float32(input_scale) * weight_scale.astype(np.float32)).astype(np.float32)
    scale = np.maximum(scale, 1e-12).astype(np.float32)
    limit = np.iinfo(np.int32).max
    q = np.clip(np.round(bias.astype(np.float64) / scale), -limit, limit).astype(np.int32)
    return QuantizedTensor(q, scale, np.zeros(scale.shape, dtype=np.int32), 0 if scale.ndim else None)
