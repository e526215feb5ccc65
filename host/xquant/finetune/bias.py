"""Empirical bias correction, layer by layer in graph order: shift an INT8 layer's float bias by the
per-channel mean of its output error (QDQ model minus FP32) on the fit samples, then move on to the next
layer with this one corrected, so no shift is corrected twice. Only systematic shifts are corrected: a
channel's mean error must exceed SIGNIFICANCE standard errors of that mean (over samples)."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import onnx

from ..calibration.ranges import QParams
from ..export.qdq_writer import write_qdq
from ..plan.planner import QuantPlan
from .layers import Layer, initializers, weighted_layers, with_initializers
from .samples import Samples, run_tensors

SIGNIFICANCE = 3.0


def _qdq_name(qdq: onnx.ModelProto, name: str) -> str:
    produced = {o for n in qdq.graph.node for o in n.output}
    return name if name in produced else f"{name}_prequant"


def systematic_shift(diff: np.ndarray) -> np.ndarray:
    """Per-channel (axis 1) mean of ``diff``, zero where it is within SIGNIFICANCE standard errors of 0."""
    per_sample = diff.astype(np.float64).reshape(diff.shape[0], diff.shape[1], -1).mean(axis=2)
    mean = per_sample.mean(axis=0)
    stderr = per_sample.std(axis=0) / np.sqrt(max(per_sample.shape[0] - 1, 1))
    return np.where(np.abs(mean) > SIGNIFICANCE * stderr, mean, 0.0)


def correct_biases(fp32: onnx.ModelProto, model: onnx.ModelProto, plan: QuantPlan, params: Dict[str, QParams],
                   samples: Samples, device: str) -> Tuple[onnx.ModelProto, int]:
    """(copy of ``model`` with corrected biases, number of layers whose bias changed)."""
    layers: List[Layer] = [layer for layer in weighted_layers(model, plan) if layer.bias is not None]
    if not layers:
        return model, 0
    ref = run_tensors(fp32, samples.fit, [layer.output for layer in layers], samples.fixed_batch, device)
    values = initializers(model)
    current, changed = model, 0
    for layer in layers:
        bias = layer.bias or ""
        qdq = write_qdq(current, plan, params)
        name = _qdq_name(qdq, layer.output)
        got = run_tensors(qdq, samples.fit, [name], samples.fixed_batch, device)[name]
        if got.ndim < 2 or got.shape[1] != values[bias].shape[0]:
            continue
        shift = systematic_shift(got - ref[layer.output])
        if np.any(shift):
            current = with_initializers(current, {bias: (values[bias] - shift).astype(np.float32)})
            changed += 1
    return current, changed
