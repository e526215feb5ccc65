"""Learned rounding (AdaRound, Nagel et al. 2020) per layer, or per block (BRECQ, Li et al. 2021), in torch.

Each block is fitted against the FP32 model's values at its outputs, reading its inputs as the current
QDQ model produces them (so it also corrects the error it inherits). Inside a block the activations are
quantized exactly as the QDQ writer would; each weight is ``scale * clip(floor(w / scale) + h, -127, 127)``
with ``h`` in [0, 1] learned and driven to 0 or 1. A block keeps its new weights only if its error on the
held-out samples is lower than with the weights it had."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import onnx
from onnx import numpy_helper

from ..calibration.collector import progress
from ..calibration.ranges import QMAX, QMIN, QParams
from ..export.qdq_writer import write_qdq
from ..export.weights import quantize_weight
from ..plan.graph import GraphIndex
from ..plan.planner import QuantPlan
from .layers import Layer, initializers, weighted_layers, with_initializers
from .samples import Samples
from .segments import Chunks, runner_for
from .torch_ops import Unsupported, run_node, supported

log = logging.getLogger(__name__)
ITERATIONS = {False: 300, True: 600}  # per layer / per block (both level 3)
MINI_BATCH = 16
LEARNING_RATE = 1e-2
BIAS_LEARNING_RATE = 1e-3  # level 3 also refines the float biases of a block
MIN_BLOCK_LAYERS = 2
ROUND_WEIGHT = 0.01
WARMUP = 0.2
BETA = (20.0, 2.0)
ZETA, GAMMA = 1.1, -0.1
SEED = 0
QUANTIZED = "\x00quantized"  # feed key of a block input's quantized copy


def layer_blocks(model: onnx.ModelProto, layers: Sequence[Layer]) -> List[List[onnx.NodeProto]]:
    """One block per weighted layer: the layer and its fused Relu/Clip."""
    by_name = {n.name: n for n in model.graph.node}
    return [[by_name[x.node]] + ([by_name[x.act]] if x.act else []) for x in layers]


def cut_blocks(model: onnx.ModelProto, layers: Sequence[Layer], plan: QuantPlan) -> List[List[onnx.NodeProto]]:
    """Runs of nodes between single-tensor cuts, each holding MIN_BLOCK_LAYERS weighted layers (the last
    one may hold fewer). A cut is a quantized tensor that is the only live activation, so a block never
    ends between a Conv and its fused Relu."""
    index = GraphIndex(model)
    weighted = {x.node for x in layers}
    dynamic: Set[str] = set(index.inputs)
    remaining = {t: len(c) for t, c in index.consumers.items()}
    live: Set[str] = set(index.inputs)
    blocks: List[List[onnx.NodeProto]] = []
    current: List[onnx.NodeProto] = []
    for node in index.nodes:
        current.append(node)
        for name in node.input:
            if name in remaining:
                remaining[name] -= 1
                if remaining[name] == 0:
                    live.discard(name)
        if any(i in dynamic for i in node.input):
            dynamic.update(o for o in node.output if o)
            live.update(o for o in node.output if o and remaining.get(o, 0) > 0)
        cut = len(live) == 1 and next(iter(live)) in plan.activations
        if cut and sum(n.name in weighted for n in current) >= MIN_BLOCK_LAYERS:
            blocks.append(current)
            current = []
    if current and any(n.name in weighted for n in current):
        blocks.append(current)
    return blocks


def _soft(torch, v):
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


class _Rounding:
    """The learnable rounding of one weight tensor."""

    def __init__(self, torch, weight: np.ndarray, spec) -> None:
        qt = quantize_weight(weight, spec)
        scale = qt.scale.astype(np.float32)
        if qt.axis is not None:
            scale = scale.reshape([-1 if i == qt.axis else 1 for i in range(weight.ndim)])
        ratio = weight.astype(np.float32) / scale
        self.torch = torch
        self.scale = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(scale, weight.shape)).copy())
        self.floor = torch.from_numpy(np.floor(ratio))
        rest = np.clip(ratio - np.floor(ratio), 0.01, 0.99)
        self.v = torch.nn.Parameter(torch.from_numpy(-np.log((ZETA - GAMMA) / (rest - GAMMA) - 1).astype(np.float32)))
        self.nearest = np.clip(np.round(ratio), QMIN + 1, QMAX)
        self.extreme = np.abs(ratio) >= np.abs(ratio).max(axis=tuple(i for i in range(ratio.ndim)
                                                                       if qt.axis is None or i != qt.axis),
                                                              keepdims=True) * (1 - 1e-6)

    def soft(self):
        return self.scale * self.torch.clamp(self.floor + _soft(self.torch, self.v), QMIN + 1, QMAX)

    def reg(self, beta: float):
        return (1 - (2 * _soft(self.torch, self.v) - 1).abs().pow(beta)).sum()

    def hard(self) -> np.ndarray:
        h = (_soft(self.torch, self.v) >= 0.5).float()
        q = np.clip((self.floor + h).detach().numpy(), QMIN + 1, QMAX)
        q = np.where(self.extreme, self.nearest, q)  # keep the max-abs element: the writer's scale stays
        return (q * self.scale.numpy()).astype(np.float32)


class _Block:
    """A block's nodes, inputs, outputs, and how each read is quantized."""

    def __init__(self, nodes: List[onnx.NodeProto], index: GraphIndex, plan: QuantPlan,
                 params: Dict[str, QParams]) -> None:
        self.nodes = nodes
        names = {n.name for n in nodes}
        made = {o for n in nodes for o in n.output}
        self.inputs = sorted({i for n in nodes for i in n.input if i and i not in made and index.is_activation(i)})
        outside = set(index.outputs)
        self.outputs = [o for n in nodes for o in n.output if o and (o in outside or any(
            c.name not in names for c in index.consumers.get(o, [])))]
        self.params, self.plan, self.index = params, plan, index

    def quantized_read(self, node: onnx.NodeProto, tensor: str) -> bool:
        if tensor not in self.params:
            return False
        producer = self.index.producer.get(tensor)
        return node.name in self.plan.quantized_nodes or (producer is not None and
                                                          producer.name in self.plan.quantized_nodes)


def _fake_quant(torch, x, p: QParams):
    q = torch.clamp(torch.round(x / p.scale) + p.zero_point, QMIN, QMAX)
    return x + ((q - p.zero_point) * p.scale - x).detach()


def _forward(torch, block: _Block, feeds: Dict, consts: Dict, weights: Dict) -> Dict:
    env = dict(feeds)
    for node in block.nodes:
        if node.op_type == "Constant":
            env[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            continue
        args = []
        for name in node.input:
            value = weights.get(name, consts.get(name, env.get(name))) if name else None
            if name and block.quantized_read(node, name) and name not in weights and name not in consts:
                value = env[name + QUANTIZED] if name + QUANTIZED in env else _fake_quant(torch, value,
                                                                                         block.params[name])
            args.append(value)
        out = run_node(node, args)
        env[node.output[0]] = out
    return env


def _dequantized(value: np.ndarray, spec) -> np.ndarray:
    """What the QDQ model's DequantizeLinear gives for the float weight ``value``."""
    qt = quantize_weight(value, spec)
    scale, zp = qt.scale, qt.zero_point.astype(np.float32)
    if qt.axis is not None:
        shape = [-1 if i == qt.axis else 1 for i in range(value.ndim)]
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((qt.values.astype(np.float32) - zp) * scale).astype(np.float32)


def _constants(torch, model: onnx.ModelProto, plan: QuantPlan, learned: Set[str]) -> Dict:
    """Initializers as the QDQ model sees them: quantized weights dequantized, the rest as stored."""
    out = {}
    for name, value in initializers(model).items():
        if name in learned:
            continue
        if name in plan.weights and value.dtype == np.float32:
            value = _dequantized(value, plan.weights[name])
        out[name] = torch.from_numpy(value.copy()) if value.dtype == np.float32 else value
    return out


def _raw_name(qdq_produced: Set[str], name: str) -> str:
    return name if name in qdq_produced or f"{name}_prequant" not in qdq_produced else f"{name}_prequant"


def _loss(torch, block: _Block, env: Dict, targets: Dict, rows) -> "object":
    total = 0.0
    for name in block.outputs:
        if name in targets and torch.is_tensor(env.get(name)):
            diff = env[name] - targets[name][rows]
            total = total + diff.pow(2).reshape(diff.shape[0], -1).sum(1).mean()
    return total


def _fit(torch, block: _Block, roundings: Dict[str, _Rounding], biases: Dict, consts: Dict, feeds: Dict,
         targets: Dict, iters: int) -> None:
    gen = torch.Generator().manual_seed(SEED)
    groups = [{"params": [r.v for r in roundings.values()], "lr": LEARNING_RATE}]
    if biases:
        groups.append({"params": list(biases.values()), "lr": BIAS_LEARNING_RATE})
    opt = torch.optim.Adam(groups)
    n = next(iter(feeds.values())).shape[0]
    for it in range(iters):
        rows = torch.randint(0, n, (min(MINI_BATCH, n),), generator=gen)
        weights = {**{k: r.soft() for k, r in roundings.items()}, **biases}
        env = _forward(torch, block, {k: v[rows] for k, v in feeds.items()}, consts, weights)
        loss = _loss(torch, block, env, targets, rows)
        progress_share = (it / iters - WARMUP) / (1 - WARMUP)
        if progress_share > 0:
            beta = BETA[0] + (BETA[1] - BETA[0]) * progress_share
            loss = loss + ROUND_WEIGHT * sum(r.reg(beta) for r in roundings.values())
        opt.zero_grad()
        loss.backward()
        opt.step()


def _held_loss(torch, block: _Block, consts: Dict, weights: Dict, feeds: Dict, targets: Dict) -> float:
    with torch.no_grad():
        rows = torch.arange(next(iter(feeds.values())).shape[0])
        return float(_loss(torch, block, _forward(torch, block, feeds, consts, weights), targets, rows))


def _block_data(torch, block: _Block, got: Dict[str, Chunks], ref: Dict[str, Chunks], raw: Dict[str, str],
                params) -> Tuple[Dict, Dict]:
    """(inputs as the current QDQ model feeds the block, FP32 values of its outputs) on fit + held-out samples,
    from the segment runners' chunks."""
    feeds = {name: _tensor(torch, np.concatenate(got[raw[name]])) for name in block.inputs}
    feeds.update({name + QUANTIZED: _fake_quant(torch, feeds[name], params[name]) for name in block.inputs
                  if name in params})  # inputs are data: quantize them once, not every iteration
    targets = {name: _tensor(torch, np.concatenate(v)) for name, v in ref.items()
               if np.issubdtype(v[0].dtype, np.floating)}
    return feeds, targets


def _tensor(torch, array: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(array.astype(np.float32)))


def _tune_block(torch, block: _Block, data, current, plan, params, samples, blocks: bool) -> Optional[Dict]:
    """New weights (and, for blocks, biases) of the block's layers, or None when they do not beat the
    current ones on the held-out samples. ``data``: (QDQ chunks, FP32 chunks, raw input names)."""
    nodes = block.nodes
    layers = [n for n in nodes if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[1] in plan.weights]
    if not layers or not all(supported(n) or n.op_type == "Constant" for n in nodes):
        return None
    now = initializers(current)
    learned = {n.input[1] for n in layers}
    bias_names = {n.input[2] for n in layers if blocks and len(n.input) > 2 and n.input[2] in now} - learned
    feeds, targets = _block_data(torch, block, *data, params)
    consts = _constants(torch, current, plan, learned | bias_names)
    roundings = {w: _Rounding(torch, now[w].astype(np.float32), plan.weights[w]) for w in learned}
    biases = {b: torch.nn.Parameter(_tensor(torch, now[b])) for b in bias_names}
    split = samples.num_fit
    fit = lambda d: {k: v[:split] for k, v in d.items()}  # noqa: E731
    held = lambda d: {k: v[split:] for k, v in d.items()}  # noqa: E731
    _fit(torch, block, roundings, biases, consts, fit(feeds), fit(targets), ITERATIONS[blocks])
    new = {**{w: r.hard() for w, r in roundings.items()}, **{b: v.detach().numpy().copy() for b, v in biases.items()}}
    old = {**{w: _tensor(torch, _dequantized(now[w], plan.weights[w])) for w in learned},
           **{b: _tensor(torch, now[b]) for b in bias_names}}
    before = _held_loss(torch, block, consts, old, held(feeds), held(targets))
    after = _held_loss(torch, block, consts, {k: _tensor(torch, v) for k, v in new.items()}, held(feeds),
                       held(targets))
    return new if after < before else None


def reconstruct(fp32: onnx.ModelProto, model: onnx.ModelProto, plan: QuantPlan, params: Dict[str, QParams],
                samples: Samples, device: str, blocks: bool,
                show_progress: Optional[bool] = None) -> Tuple[onnx.ModelProto, str]:
    """(copy of ``model`` with learned rounding where it helps, what was done). Rounding starts from
    ``model``'s weights: nearest for float weights, the same integers for weights already on the grid."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small blocks: one thread is several times faster than contended ones
    try:
        return _reconstruct(torch, fp32, model, plan, params, samples, device, blocks, show_progress)
    finally:
        torch.set_num_threads(threads)


def _reconstruct(torch, fp32, model, plan, params, samples, device, blocks, show_progress):
    torch.manual_seed(SEED)
    layers = weighted_layers(model, plan)
    groups = cut_blocks(model, layers, plan) if blocks else layer_blocks(model, layers)
    index = GraphIndex(model)
    parts = [_Block(nodes, index, plan, params) for nodes in groups]
    qdq = write_qdq(model, plan, params)
    produced = {o for n in qdq.graph.node for o in n.output} | {v.name for v in qdq.graph.input}
    raws = [{name: _raw_name(produced, name) for name in block.inputs} for block in parts]
    everything = {k: np.concatenate([samples.fit[k], samples.held[k]]) for k in samples.fit}
    got_run = runner_for(qdq, [sorted(set(r.values())) for r in raws], everything, samples.fixed_batch, device,
                            "segment of the model for learned rounding")
    ref_run = runner_for(fp32, [block.outputs for block in parts], everything, samples.fixed_batch, device,
                            "segment of the FP32 model")
    current, kept, skipped = model, 0, 0
    desc = "block reconstruction" if blocks else "learned rounding"
    for block, raw in progress(list(zip(parts, raws)), len(parts), desc, show_progress):
        data = (got_run.step(), ref_run.step(), raw)
        try:
            new = _tune_block(torch, block, data, current, plan, params, samples, blocks)
        except Unsupported as exc:
            log.info("%s: block at %s kept as it is (%s)", desc, block.nodes[0].name, exc)
            skipped += 1
            continue
        if new is not None:
            current = with_initializers(current, new)
            got_run.use_initializers(write_qdq(current, plan, params))
            kept += 1
    what = "blocks" if blocks else "layers"
    return current, f"{kept} of {len(groups)} {what} improved" + (f", {skipped} unsupported" if skipped else "")
