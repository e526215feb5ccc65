"""Cross-layer equalization (Nagel et al., data-free quantization) where it is exact.

For Conv A -> [Relu | LeakyRelu | nothing] -> Conv B with nothing else reading in between, scaling
output channel i of A (weights and bias) by 1/s_i and input channel i of B by s_i leaves the FP32
model's outputs unchanged, because these activations are positively homogeneous (f(x / s) = f(x) / s
for s > 0). s_i = sqrt(r1_i / r2_i) equalizes the channel's weight ranges in A and B. Clip (ReLU6)
is not homogeneous, so it ends a pair."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import onnx

from ..plan.graph import GraphIndex
from ..plan.planner import QuantPlan
from .layers import initializers, with_initializers

HOMOGENEOUS = ("Relu", "LeakyRelu")
SWEEPS = 3


def _group(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


Pair = Tuple[onnx.NodeProto, onnx.NodeProto, List[str]]


def equalizable_pairs(model: onnx.ModelProto, plan: QuantPlan) -> List[Pair]:
    """(A, B, tensors between them) for every exact pair; the tensors' ranges change with the scales."""
    index = GraphIndex(model)
    used = {name: len(index.consumers.get(name, [])) for name in index.initializers}
    pairs = []
    for a in index.nodes:
        if a.op_type != "Conv" or a.name not in plan.quantized_nodes or a.input[1] not in index.initializers:
            continue
        between = [a.output[0]]
        nxt = index.sole_consumer(a.output[0])
        if nxt is not None and nxt.op_type in HOMOGENEOUS:
            between.append(nxt.output[0])
            nxt = index.sole_consumer(nxt.output[0])
        if nxt is None or nxt.op_type != "Conv" or nxt.name not in plan.quantized_nodes:
            continue
        w2 = index.initializers.get(nxt.input[1])
        channels = index.initializers[a.input[1]].dims[0]
        depthwise = _group(nxt) == channels and w2 is not None and w2.dims[1] == 1
        if w2 is None or not (_group(nxt) == 1 or depthwise):
            continue
        names = [a.input[1], nxt.input[1]] + ([a.input[2]] if len(a.input) > 2 and a.input[2] else [])
        if all(used.get(n) == 1 for n in names):
            pairs.append((a, nxt, between))
    return pairs


def _scale_pair(w: Dict[str, np.ndarray], a: onnx.NodeProto, b: onnx.NodeProto, depthwise: bool) -> None:
    w1, w2 = w[a.input[1]], w[b.input[1]]
    r1 = np.abs(w1).reshape(w1.shape[0], -1).max(1)
    r2 = np.abs(w2).reshape(w2.shape[0], -1).max(1) if depthwise else np.abs(np.swapaxes(w2, 0, 1)).reshape(
        w2.shape[1], -1).max(1)
    s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.maximum(r2, 1e-30)), 1.0).astype(np.float32)
    s = np.clip(s, 1e-3, 1e3)
    w[a.input[1]] = w1 / s.reshape(-1, *([1] * (w1.ndim - 1)))
    if len(a.input) > 2 and a.input[2]:
        w[a.input[2]] = w[a.input[2]] / s
    shape = (-1,) + (1,) * (w2.ndim - 1) if depthwise else (1, -1) + (1,) * (w2.ndim - 2)
    w[b.input[1]] = w2 * s.reshape(shape)


def equalize(model: onnx.ModelProto, plan: QuantPlan) -> Tuple[onnx.ModelProto, List[str], int]:
    """(equalized copy, activations whose ranges changed, number of pairs)."""
    pairs = equalizable_pairs(model, plan)
    if not pairs:
        return model, [], 0
    values = initializers(model)
    names = {a.input[1] for a, _, _ in pairs} | {b.input[1] for _, b, _ in pairs} | {
        a.input[2] for a, _, _ in pairs if len(a.input) > 2 and a.input[2]}
    w = {n: values[n].astype(np.float32) for n in names}
    for _ in range(SWEEPS):
        for a, b, _ in pairs:
            depthwise = _group(b) > 1
            _scale_pair(w, a, b, depthwise)
    changed = sorted({t for _, _, between in pairs for t in between if t in plan.activations})
    return with_initializers(model, w), changed, len(pairs)
