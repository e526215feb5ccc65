"""Least-squares refit of each layer's weights and bias to the FP32 layer output (level 2), in closed form.

Layer by layer in graph order, each Conv (2-D) / Gemm / MatMul gets the float weights W' and bias b' that
minimise ``|| A W' + b' - Y ||^2 + lam || [W'; b'] - [W; b] ||^2``, where A holds the layer's inputs as the
current QDQ model gives them (quantized, every earlier layer already refitted; a Conv's as im2col patches)
and Y the FP32 model's output of the layer on the same samples. So, unlike bias correction (which removes
only the per-channel mean of the error), it also undoes the linear part of the error the layer inherits,
and, unlike learned rounding (each weight moves by at most one step), by as much as the data asks. The
normal equations are summed over every output position of every fit sample (no gradient steps), so a
layer costs one pass over its inputs plus one small solve per group. The writer then rounds W' to nearest
with its max-abs scale. A layer keeps W', b' only if its output error (after its fused Relu/Clip) on the
held-out samples is lower than with the weights it had. Inputs and FP32 outputs come from the segment
runners (finetune/segments.py), so every node of either model runs about once per sample."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx

from ..calibration.ranges import QParams
from ..export.qdq_writer import write_qdq
from ..plan.planner import QuantPlan
from .layers import initializers, weighted_layers, with_initializers
from .reconstruct import _dequantized, _fake_quant, _raw_name
from .samples import Samples
from .segments import runner_for
from .torch_ops import attrs, run_node

log = logging.getLogger(__name__)
RIDGE = 1e-3  # lam as a share of the mean diagonal of A^T A: keeps W' near W where the data says little
MIN_ROWS, ROWS_PER_FEATURE = 8192, 16  # rows of the normal equations a Conv samples its output positions to


def _fits(node: onnx.NodeProto, weight: np.ndarray) -> bool:
    a = attrs(node)
    if node.op_type == "Conv":
        return weight.ndim == 4 and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
    if node.op_type == "Gemm":
        return weight.ndim == 2 and a.get("alpha", 1.0) == 1.0 and a.get("beta", 1.0) == 1.0
    return node.op_type == "MatMul" and weight.ndim == 2


def _groups(node: onnx.NodeProto) -> int:
    return int(attrs(node).get("group", 1)) if node.op_type == "Conv" else 1


def _stride(node: onnx.NodeProto, samples: int, out_shape, features: int) -> int:
    """Every r-th output position (per spatial axis) of a Conv: enough rows for the normal equations
    (ROWS_PER_FEATURE per feature, MIN_ROWS at least) without im2col of every position of every sample."""
    if node.op_type != "Conv" or len(out_shape) != 4:
        return 1
    want = max(MIN_ROWS, ROWS_PER_FEATURE * features)
    r = 1
    while r < max(out_shape[2:]) and samples * -(-out_shape[2] // r) * -(-out_shape[3] // r) > want:
        r += 1
    return r


def _rows(torch, node: onnx.NodeProto, x, y, weight_shape, p: Optional[QParams], r: int):
    """(inputs [groups, rows, features], FP32 outputs [groups, rows, outputs per group]) of one chunk of
    samples, sample-major rows: a Conv's im2col patches at every r-th output position, quantized as the
    QDQ model reads them (zero padding is exact on the INT8 grid)."""
    import torch.nn.functional as F

    if node.op_type != "Conv":
        a, t = x.reshape(1, -1, x.shape[-1]), y.reshape(1, -1, y.shape[-1])
        return (_fake_quant(torch, a, p) if p is not None else a), t
    at = attrs(node)
    pads = list(at.get("pads", [0, 0, 0, 0]))
    x = F.pad(x, [pads[1], pads[3], pads[0], pads[2]])
    stride = [s * r for s in at.get("strides", [1, 1])]
    cols = F.unfold(x, tuple(weight_shape[2:]), dilation=tuple(at.get("dilations", [1, 1])), stride=stride)
    g = _groups(node)
    n, feat, length = cols.shape
    a = cols.reshape(n, g, feat // g, length).permute(1, 0, 3, 2).reshape(g, n * length, feat // g)
    c = y.shape[1]
    t = y[:, :, ::r, ::r].reshape(n, g, c // g, -1).permute(1, 0, 3, 2).reshape(g, -1, c // g)
    return (_fake_quant(torch, a, p) if p is not None else a), t


def _as_matrix(node: onnx.NodeProto, w: np.ndarray, g: int) -> np.ndarray:
    """ONNX weight -> [groups, features, outputs per group]."""
    if node.op_type == "Conv":
        return w.reshape(g, w.shape[0] // g, -1).transpose(0, 2, 1)
    transposed = node.op_type == "Gemm" and attrs(node).get("transB", 0)
    return (w.T if transposed else w)[None]


def _from_matrix(node: onnx.NodeProto, m: np.ndarray, shape) -> np.ndarray:
    if node.op_type == "Conv":
        return m.transpose(0, 2, 1).reshape(shape)
    transposed = node.op_type == "Gemm" and attrs(node).get("transB", 0)
    return m[0].T.reshape(shape) if transposed else m[0].reshape(shape)


def _augmented(torch, a, bias: bool):
    return torch.cat([a, torch.ones(a.shape[:2] + (1,), dtype=a.dtype)], dim=2) if bias else a


def solve(torch, node: onnx.NodeProto, a, t, w: np.ndarray, b: Optional[np.ndarray]):
    """(W', b') by ridge regression towards (w, b) of the rows ``a`` (inputs) onto ``t`` (FP32 outputs)."""
    g = _groups(node)
    a = _augmented(torch, a, b is not None)
    gram, rhs = (a.transpose(1, 2) @ a).double(), (a.transpose(1, 2) @ t).double()
    prior = _as_matrix(node, w.astype(np.float64), g)
    if b is not None:
        prior = np.concatenate([prior, b.astype(np.float64).reshape(g, 1, -1)], axis=1)
    diag = torch.diagonal(gram, dim1=1, dim2=2)
    lam = (RIDGE * diag.mean(dim=1) + 1e-12).reshape(-1, 1, 1)
    eye = torch.eye(gram.shape[1], dtype=gram.dtype).expand_as(gram)
    sol = torch.linalg.solve(gram + lam * eye, rhs + lam * torch.from_numpy(np.ascontiguousarray(prior))).numpy()
    if b is None:
        return _from_matrix(node, sol, w.shape).astype(np.float32), None
    return (_from_matrix(node, sol[:, :-1], w.shape).astype(np.float32),
            sol[:, -1].reshape(-1).astype(np.float32))


def _tensor(torch, array: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _activate(act: Optional[onnx.NodeProto], consts: Dict[str, np.ndarray], y):
    """``y`` through the layer's fused Relu/Clip (when the Clip bounds are initializers)."""
    if act is None or any(i and i not in consts for i in act.input[1:]):
        return y
    return run_node(act, [y] + [consts[i] if i else None for i in act.input[1:]])


def _error(torch, node: onnx.NodeProto, act, consts, a, ref, w: np.ndarray, b: Optional[np.ndarray],
           spec) -> float:
    """Squared error on rows ``a`` of the layer's (activated) output, ``w`` as the writer quantizes it."""
    g = _groups(node)
    m = _as_matrix(node, _dequantized(w, spec), g)
    if b is not None:
        m = np.concatenate([m, b.reshape(g, 1, -1)], axis=1)
    with torch.no_grad():
        got = _augmented(torch, a, b is not None) @ _tensor(torch, m)
        return float((_activate(act, consts, got) - ref).pow(2).sum())


def _refit_one(torch, node_act, a, t, split: int, w: np.ndarray, b: Optional[np.ndarray], spec):
    """New (weight, bias) of one layer from rows [:split], or None when they do not lower its error on
    the held-out rows [split:]."""
    node, act, consts = node_act
    new_w, new_b = solve(torch, node, a[:, :split], t[:, :split], w, b)
    with torch.no_grad():
        ref = _activate(act, consts, t[:, split:])
    before = _error(torch, node, act, consts, a[:, split:], ref, w, b, spec)
    after = _error(torch, node, act, consts, a[:, split:], ref, new_w, new_b, spec)
    return (new_w, new_b) if after < before else None


def _layer_rows(torch, node, got: List[np.ndarray], ref: List[np.ndarray], w: np.ndarray, p, samples: int):
    """(inputs, FP32 outputs, rows per sample) of one layer over all samples, chunk by chunk."""
    r = _stride(node, samples, ref[0].shape, int(np.prod(w.shape[1:])) + 1)
    parts = [_rows(torch, node, _tensor(torch, x), _tensor(torch, y), w.shape, p, r) for x, y in zip(got, ref)]
    a, t = torch.cat([q[0] for q in parts], dim=1), torch.cat([q[1] for q in parts], dim=1)
    return a, t, a.shape[1] // samples


def refit_layers(fp32: onnx.ModelProto, model: onnx.ModelProto, plan: QuantPlan, params: Dict[str, QParams],
                 samples: Samples, device: str) -> Tuple[onnx.ModelProto, str]:
    """(copy of ``model`` with refitted weights and biases where they help, what was done)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # measured: on a loaded 2-core machine 2 torch threads are ~10x slower than 1
    try:
        return _refit_layers(torch, fp32, model, plan, params, samples, device)
    finally:
        torch.set_num_threads(threads)


def _refit_layers(torch, fp32, model, plan, params, samples, device) -> Tuple[onnx.ModelProto, str]:
    values = initializers(model)
    layers = [x for x in weighted_layers(model, plan) if _fits(_node(model, x.node), values[x.weight])]
    if not layers:
        return model, "no Conv/Gemm/MatMul layer to refit"
    qdq = write_qdq(model, plan, params)
    produced = {o for n in qdq.graph.node for o in n.output} | {v.name for v in qdq.graph.input}
    raws = [_raw_name(produced, x.data) for x in layers]
    everything = {k: np.concatenate([samples.fit[k], samples.held[k]]) for k in samples.fit}
    got_run = runner_for(qdq, [[r] for r in raws], everything, samples.fixed_batch, device,
                         "segment of the model for the least-squares refit")
    ref_run = runner_for(fp32, [[x.output] for x in layers], everything, samples.fixed_batch, device,
                         "segment of the FP32 model")
    current, kept, split = model, 0, samples.num_fit
    total = split + int(next(iter(samples.held.values())).shape[0])
    for layer, raw in zip(layers, raws):
        node = _node(model, layer.node)
        act = _node(model, layer.act) if layer.act else None
        b = values[layer.bias] if layer.bias else None
        w = values[layer.weight]
        try:
            a, t, per_sample = _layer_rows(torch, node, got_run.step()[raw], ref_run.step()[layer.output], w,
                                           params.get(layer.data), total)
            new = _refit_one(torch, (node, act, values), a, t, split * per_sample, w, b, plan.weights[layer.weight])
        except (RuntimeError, ValueError) as exc:  # a singular system, a shape the rows do not take
            log.info("least-squares refit: %s kept as it is (%s)", layer.node, exc)
            continue
        if new is not None:
            updates = {layer.weight: new[0], **({layer.bias: new[1].reshape(b.shape)} if b is not None else {})}
            values.update(updates)
            current = with_initializers(current, updates)
            got_run.use_initializers(write_qdq(current, plan, params))
            kept += 1
    return current, f"{kept} of {len(layers)} layers improved"


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)
