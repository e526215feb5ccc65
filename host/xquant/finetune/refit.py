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
from ..calibration.session import make_session, with_outputs
from .bias import REF_BATCH
from .layers import Layer, initializers, weighted_layers, with_initializers
from .reconstruct import _dequantized
from .samples import Samples
from .segments import runner_for
from .torch_ops import attrs, run_node

log = logging.getLogger(__name__)
RIDGE = 1e-3  # lam as a share of the mean diagonal of A^T A: keeps W' near W where the data says little
MIN_ROWS, ROWS_PER_FEATURE = 8192, 16  # rows of the normal equations a Conv samples its output positions to
# a grouped Conv solves one small system per group: MIN_ROWS are shared by its groups, each keeps
# GROUP_ROWS at least (measured on EfficientNet-Lite0: depthwise layers at 8192 rows per group were 90% of
# the refit's time, for the same held-out gain)
GROUP_ROWS = 1024


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
    (ROWS_PER_FEATURE per feature, MIN_ROWS at least, or GROUP_ROWS per group of a grouped Conv) without
    im2col of every position of every sample."""
    if node.op_type != "Conv" or len(out_shape) != 4:
        return 1
    want = max(MIN_ROWS // _groups(node), GROUP_ROWS, ROWS_PER_FEATURE * features)
    r = 1
    while r < max(out_shape[2:]) and samples * -(-out_shape[2] // r) * -(-out_shape[3] // r) > want:
        r += 1
    return r


def _input_rows(torch, node: onnx.NodeProto, x, weight_shape, r: int):
    """Inputs [groups, rows, features] of one chunk of samples, sample-major rows: a Conv's im2col patches
    at every r-th output position. ``x`` is what the layer reads in the QDQ model (its DequantizeLinear's
    output), so no quantization is redone here."""
    import torch.nn.functional as F

    if node.op_type != "Conv":
        return x.reshape(1, -1, x.shape[-1])
    at = attrs(node)
    pads = list(at.get("pads", [0, 0, 0, 0]))
    x = F.pad(x, [pads[1], pads[3], pads[0], pads[2]])
    stride = [s * r for s in at.get("strides", [1, 1])]
    cols = F.unfold(x, tuple(weight_shape[2:]), dilation=tuple(at.get("dilations", [1, 1])), stride=stride)
    g = _groups(node)
    n, feat, length = cols.shape
    return cols.reshape(n, g, feat // g, length).permute(1, 0, 3, 2).reshape(g, n * length, feat // g)


def _positions(node: onnx.NodeProto, y: np.ndarray, r: int) -> np.ndarray:
    """A Conv's output at every r-th position (a contiguous copy), what the rows compare with."""
    return np.ascontiguousarray(y[:, :, ::r, ::r]) if node.op_type == "Conv" and y.ndim == 4 else y


def _target_rows(node: onnx.NodeProto, ys, groups: int):
    """FP32 outputs [groups, rows, outputs per group] from ``ys`` (already at the sampled positions)."""
    if node.op_type != "Conv":
        return ys.reshape(1, -1, ys.shape[-1])
    n, c = ys.shape[:2]
    return ys.reshape(n, groups, c // groups, -1).permute(1, 0, 3, 2).reshape(groups, -1, c // groups)


def _rows(torch, node: onnx.NodeProto, x, y, weight_shape, r: int):
    """(inputs [groups, rows, features], FP32 outputs [groups, rows, outputs per group]) of one chunk."""
    ys = torch.from_numpy(_positions(node, y.numpy(), r))
    return _input_rows(torch, node, x, weight_shape, r), _target_rows(node, ys, _groups(node))


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


def normal_equations(torch, a, t, bias: bool):
    """(A^T A, A^T T) in float64 of the rows ``a`` with a column of ones appended when ``bias``, without
    building that augmented copy: its last row and column are the column sums and the row count."""
    at = a.transpose(1, 2)
    gram, rhs = (at @ a).double(), (at @ t).double()
    if not bias:
        return gram, rhs
    sums = a.sum(dim=1, dtype=torch.float64).unsqueeze(2)  # [groups, features, 1]
    rows = torch.full((a.shape[0], 1, 1), float(a.shape[1]), dtype=torch.float64)
    gram = torch.cat([torch.cat([gram, sums], dim=2), torch.cat([sums.transpose(1, 2), rows], dim=2)], dim=1)
    return gram, torch.cat([rhs, t.sum(dim=1, dtype=torch.float64).unsqueeze(1)], dim=1)


def solve_normal(torch, node: onnx.NodeProto, gram, rhs, w: np.ndarray, b: Optional[np.ndarray]):
    """(W', b') by ridge regression towards (w, b), from the summed normal equations of the fit rows."""
    g = _groups(node)
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


def solve(torch, node: onnx.NodeProto, a, t, w: np.ndarray, b: Optional[np.ndarray]):
    """(W', b') by ridge regression towards (w, b) of the rows ``a`` (inputs) onto ``t`` (FP32 outputs)."""
    return solve_normal(torch, node, *normal_equations(torch, a, t, b is not None), w, b)


def _tensor(torch, array: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _activate(act: Optional[onnx.NodeProto], consts: Dict[str, np.ndarray], y):
    """``y`` through the layer's fused Relu/Clip (when the Clip bounds are initializers)."""
    if act is None or any(i and i not in consts for i in act.input[1:]):
        return y
    return run_node(act, [y] + [consts[i] if i else None for i in act.input[1:]])


def _error(torch, node: onnx.NodeProto, act, consts, held, w: np.ndarray, b: Optional[np.ndarray], spec) -> float:
    """Squared error on the held-out rows [(inputs, activated FP32 outputs)] of the layer's (activated)
    output, ``w`` as the writer quantizes it."""
    g = _groups(node)
    m = _tensor(torch, _as_matrix(node, _dequantized(w, spec), g))
    shift = _tensor(torch, b.reshape(g, 1, -1)) if b is not None else None
    total = 0.0
    with torch.no_grad():
        for a, ref in held:
            got = a @ m if shift is None else a @ m + shift
            total += float((_activate(act, consts, got) - ref).pow(2).sum())
    return total


FLUSH_ELEMENTS = 1 << 22  # fit rows buffered (inputs x features) before their normal equations are summed


class _LayerRows:
    """One layer's rows streamed chunk by chunk: the fit samples' rows summed into the normal equations
    (a few chunks at a time, never all at once), the held-out samples' rows kept for the accept test."""

    def __init__(self, torch, node: onnx.NodeProto, act, consts, bias: bool) -> None:
        self.torch, self.node, self.act, self.consts, self.bias = torch, node, act, consts, bias
        self.gram = self.rhs = None
        self.held: List[tuple] = []
        self.pending: List[tuple] = []

    def add(self, a, t, fit_rows: int) -> None:
        if fit_rows > 0:
            self.pending.append((a[:, :fit_rows], t[:, :fit_rows]))
            if sum(p[0].numel() for p in self.pending) >= FLUSH_ELEMENTS:
                self.flush()
        if fit_rows < a.shape[1]:
            with self.torch.no_grad():
                ref = _activate(self.act, self.consts, t[:, fit_rows:])
            self.held.append((a[:, fit_rows:], ref))

    def flush(self) -> None:
        if not self.pending:
            return
        cat = self.torch.cat
        a, t = (cat([p[k] for p in self.pending], dim=1) for k in (0, 1))
        self.pending = []
        gram, rhs = normal_equations(self.torch, a, t, self.bias)
        self.gram = gram if self.gram is None else self.gram + gram
        self.rhs = rhs if self.rhs is None else self.rhs + rhs


def reference_positions(fp32: onnx.ModelProto, layers: List[Layer], weights: Dict[str, np.ndarray],
                        feeds: Dict[str, np.ndarray], batch: int, device: str) -> Tuple[Dict, Dict]:
    """({layer output: FP32 output at the sampled positions, all samples}, {layer output: r}) from one
    whole-model pass (REF_BATCH samples at a time when the batch is free): only the sampled positions are
    kept, so no segment-by-segment FP32 run is needed."""
    names = [x.output for x in layers]
    sess = make_session(with_outputs(fp32, names), device, "FP32 model for the least-squares refit")
    nodes = {n.name: n for n in fp32.graph.node}
    total, step = int(next(iter(feeds.values())).shape[0]), batch or REF_BATCH
    parts: Dict[str, List[np.ndarray]] = {n: [] for n in names}
    strides: Dict[str, int] = {}
    for start in range(0, total, step):
        values = sess.run(names, {k: v[start:start + step] for k, v in feeds.items()})
        for layer, value in zip(layers, values):
            node = nodes[layer.node]
            if layer.output not in strides:
                features = int(np.prod(weights[layer.weight].shape[1:])) + 1
                strides[layer.output] = _stride(node, total, value.shape, features)
            parts[layer.output].append(_positions(node, value, strides[layer.output]))
    return {n: np.concatenate(v) for n, v in parts.items()}, strides


def _layer_rows(torch, node, act, consts, got: List[np.ndarray], ys: np.ndarray, r: int, w: np.ndarray,
                bias: bool, split: int) -> _LayerRows:
    """The rows of one layer over all samples (the first ``split`` are fit samples); ``got`` the layer's
    input chunk by chunk, ``ys`` its FP32 output at the sampled positions (every sample)."""
    rows, start = _LayerRows(torch, node, act, consts, bias), 0
    for x in got:
        n = int(x.shape[0])
        a = _input_rows(torch, node, _tensor(torch, x), w.shape, r)
        t = _target_rows(node, _tensor(torch, ys[start:start + n]), _groups(node))
        rows.add(a, t, min(max(split - start, 0), n) * (a.shape[1] // n))
        start += n
    rows.flush()
    return rows


def _refit_one(torch, rows: _LayerRows, w: np.ndarray, b: Optional[np.ndarray], spec):
    """New (weight, bias) of one layer from its fit rows, or None when they do not lower its error on
    its held-out rows."""
    if rows.gram is None or not rows.held:
        return None
    new_w, new_b = solve_normal(torch, rows.node, rows.gram, rows.rhs, w, b)
    before = _error(torch, rows.node, rows.act, rows.consts, rows.held, w, b, spec)
    after = _error(torch, rows.node, rows.act, rows.consts, rows.held, new_w, new_b, spec)
    return (new_w, new_b) if after < before else None


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
    reads = [_input_in(qdq, x.node) for x in layers]  # its DequantizeLinear's output: quantized by onnxruntime
    everything = {k: np.concatenate([samples.fit[k], samples.held[k]]) for k in samples.fit}
    got_run = runner_for(qdq, [[r] for r in reads], everything, samples.fixed_batch, device,
                         "segment of the model for the least-squares refit")
    ys, strides = reference_positions(fp32, layers, values, everything, samples.fixed_batch, device)
    current, kept, split = model, 0, samples.num_fit
    for layer, read in zip(layers, reads):
        node = _node(model, layer.node)
        act = _node(model, layer.act) if layer.act else None
        b = values[layer.bias] if layer.bias else None
        w = values[layer.weight]
        try:
            rows = _layer_rows(torch, node, act, values, got_run.step()[read], ys.pop(layer.output),
                               strides[layer.output], w, b is not None, split)
            new = _refit_one(torch, rows, w, b, plan.weights[layer.weight])
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


def _input_in(qdq: onnx.ModelProto, node: str) -> str:
    """The tensor the layer ``node`` reads in the QDQ model (a DequantizeLinear's output when quantized)."""
    return _node(qdq, node).input[0]


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)
