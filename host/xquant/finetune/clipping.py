"""Weight clipping search: per output channel, the clipping ratio whose INT8 weights are closest (MSE)
to the float ones. The float weights are clipped there, so the QDQ writer's max-abs scale lands on it."""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import onnx

from ..plan.planner import QuantPlan
from .layers import initializers, with_initializers

RATIOS = np.linspace(0.5, 1.0, 26)
QMAX = 127


def best_ratio(rows: np.ndarray) -> np.ndarray:
    """[C, K] weights -> [C] clipping ratio minimising the INT8 rounding + clipping error of each row."""
    amax = np.abs(rows).max(1, keepdims=True)
    best_err = np.full(rows.shape[0], np.inf)
    best = np.ones(rows.shape[0])
    for ratio in RATIOS:
        scale = np.maximum(amax * ratio / QMAX, 1e-12)
        err = ((np.clip(np.round(rows / scale), -QMAX, QMAX) * scale - rows) ** 2).sum(1)
        better = err < best_err
        best_err, best = np.where(better, err, best_err), np.where(better, ratio, best)
    return best


def clip_weights(model: onnx.ModelProto, plan: QuantPlan) -> Tuple[onnx.ModelProto, int]:
    """(copy with every symmetric weight clipped at its MSE-optimal ratio, number of channels clipped)."""
    values = initializers(model)
    updates: Dict[str, np.ndarray] = {}
    clipped = 0
    for name, spec in plan.weights.items():
        w = values.get(name)
        if w is None or not spec.symmetric or w.dtype != np.float32 or w.size < 2:
            continue
        axis = spec.axis if spec.axis is not None and w.ndim > 1 else None
        rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1) if axis is not None else w.reshape(1, -1)
        ratio = best_ratio(rows.astype(np.float64))
        if np.all(ratio >= 1.0):
            continue
        limit = (np.abs(rows).max(1) * ratio).astype(np.float32)
        shaped = limit.reshape([-1 if i == axis else 1 for i in range(w.ndim)]) if axis is not None else limit[0]
        updates[name] = np.clip(w, -shaped, shaped)
        clipped += int((ratio < 1.0).sum())
    return (with_initializers(model, updates) if updates else model), clipped
