"""precision_level 3 / --dynq: dynamic quantization of MatMul, LSTM and Attention.

Weights are stored in INT8 (symmetric, per output channel); activations are quantized at run time from
their own range (DynamicQuantizeLinear -> MatMulInteger, DynamicQuantizeLSTM), so no calibration data is
needed. Built on onnxruntime's quantizer (``onnxruntime.quantization.quantize_dynamic``), restricted to
MatMuls whose second input is a weight (activation x activation MatMuls, e.g. attention scores, stay float),
minus ``ignore_op_types`` and ``ignore_op_names``. A Gemm with a weight operand (a Linear layer exported for
2-D inputs) is a MatMul too: it is rewritten as MatMul (+ Add) first, keeping its name, unless its name or
the types Gemm or MatMul are ignored. Ops inside subgraphs (If, Loop, Scan branches) stay float: onnxruntime's
quantizer leaves such a branch's nodes out of topological order, which onnx.checker and onnxruntime refuse."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections import Counter
from typing import Iterable, List, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)
DYNQ_OPS = ("MatMul", "LSTM", "Attention")
QUANTIZED_OUTPUT_OPS = ("MatMulInteger", "DynamicQuantizeLSTM", "QAttention", "DynamicQuantizeMatMul")
LOST_SNR_DB = 30.0  # the harness's dynq bug line on the CPU provider (xqhil compare/runtime.py MODE_SNR_DB)


def op_types(ignore_types: Iterable[str]) -> List[str]:
    ignored = set(ignore_types)
    return [op for op in DYNQ_OPS if op not in ignored]


def _gemm_as_matmul(node: onnx.NodeProto, inits: dict, model: onnx.ModelProto) -> List[onnx.NodeProto]:
    """MatMul(A, alpha * B') [+ Add(beta * C)] for a Gemm whose B (and C) are weights; [] when it is not one."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) or len(node.input) < 2 or node.input[1] not in inits:
        return []
    if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
        return []
    weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
    weight = (weight.T if attrs.get("transB", 0) else weight) * np.float32(attrs.get("alpha", 1.0))
    name = f"{node.name}/weight"
    model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), name))
    if len(node.input) < 3 or not node.input[2]:
        return [helper.make_node("MatMul", [node.input[0], name], list(node.output), name=node.name)]
    bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32) * np.float32(attrs.get("beta", 1.0))
    model.graph.initializer.append(numpy_helper.from_array(bias, f"{node.name}/bias"))
    product = f"{node.output[0]}/matmul"
    return [helper.make_node("MatMul", [node.input[0], name], [product], name=node.name),
            helper.make_node("Add", [product, f"{node.name}/bias"], list(node.output), name=f"{node.name}/add")]


def gemms_as_matmuls(model: onnx.ModelProto, ignore_names: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` with each weight Gemm (not in ``ignore_names``) as MatMul (+ Add)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    ignored = set(ignore_names)
    nodes: List[onnx.NodeProto] = []
    for node in out.graph.node:
        swapped = _gemm_as_matmul(node, inits, out) if node.op_type == "Gemm" and node.name not in ignored else []
        nodes += swapped or [node]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    from .fp16 import _subgraph_reads

    used = {i for n in out.graph.node for i in n.input} | {o.name for o in out.graph.output}
    used |= set().union(*[_subgraph_reads(n) for n in out.graph.node])  # weights only a branch reads
    kept = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
    """Only errors from ``logger`` for the block: onnxruntime's quantizer logs its notes on the root
    logger, and the trial quantizations' own 'nothing left to quantize' warning says nothing to the user."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _detach_subgraphs(model: onnx.ModelProto) -> dict:
    """Take the subgraph attributes off ``model``'s nodes (in place): {node name: [attributes]}."""
    taken = {}
    for node in model.graph.node:
        graphs = [a for a in node.attribute if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)]
        if graphs:
            taken[node.name] = [onnx.AttributeProto.FromString(a.SerializeToString()) for a in graphs]
            kept = [a for a in node.attribute if a not in graphs]
            del node.attribute[:]
            node.attribute.extend(kept)
    return taken


def _attach_subgraphs(model: onnx.ModelProto, taken: dict, source: onnx.ModelProto) -> None:
    """Put the subgraphs back, with the weights of ``source`` that only they read (the quantizer, not seeing
    them, pruned those)."""
    from .fp16 import _subgraph_reads

    for node in model.graph.node:
        node.attribute.extend(taken.get(node.name, []))
    have = {t.name for t in model.graph.initializer}
    reads = set().union(*[_subgraph_reads(n) for n in model.graph.node])
    model.graph.initializer.extend(t for t in source.graph.initializer if t.name in reads - have)


def sort_with_subgraphs(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (in place) with each node after the producers of what it and its subgraphs read: onnxruntime's
    quantizer, and some exporters, order by the visible inputs only."""
    from .fp16 import _subgraph_reads

    if not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for n in model.graph.node for a in n.attribute):
        return model
    nodes = list(model.graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    needs = [{producer[t] for t in set(n.input) | _subgraph_reads(n) if t in producer} - {i}
             for i, n in enumerate(nodes)]
    order: List[int] = []
    placed: set = set()
    while len(order) < len(nodes):
        ready = [i for i in range(len(nodes)) if i not in placed and needs[i] <= placed]
        if not ready:  # a cycle: leave the rest as they were, onnx.checker will say what is wrong
            order += [i for i in range(len(nodes)) if i not in placed]
            break
        order += ready
        placed.update(ready)
    del model.graph.node[:]
    model.graph.node.extend([nodes[i] for i in order])
    return model


def candidate_names(model: onnx.ModelProto, ops: Iterable[str], excluded: Iterable[str] = ()) -> List[str]:
    """The ops of ``model`` (Gemms already as MatMuls) that dynamic quantization would take."""
    weights = {t.name for t in model.graph.initializer}
    ops, excluded = set(ops), set(excluded)
    return [n.name for n in model.graph.node if n.name not in excluded and n.op_type in ops
            and (n.op_type != "MatMul" or n.input[1] in weights)]


def quantize_dynamic(model: onnx.ModelProto, ignore_types: Iterable[str] = (),
                     ignore_names: Iterable[str] = ()) -> Tuple[onnx.ModelProto, dict]:
    """(the dynamically quantized model, {"quantized": {op: count}, "candidates": n}) from a prepared model."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    ops = op_types(ignore_types)
    if "MatMul" in ops and "Gemm" not in set(ignore_types):
        model = gemms_as_matmuls(model, ignore_names)
    excluded = [n.name for n in model.graph.node if n.name in set(ignore_names)]
    candidates = len(candidate_names(model, ops, excluded))
    if not ops or not candidates:
        log.warning("no MatMul, LSTM or Attention op left to quantize dynamically; the model is written as "
                    "simplified float32")
        return sort_with_subgraphs(model), {"quantized": {}, "candidates": 0}
    model = _copy(model)
    taken = _detach_subgraphs(model)
    with tempfile.TemporaryDirectory(prefix="xquant-dynq-") as tmp, _quiet(logging.getLogger()):
        out = os.path.join(tmp, "dynq.onnx")
        with contextlib.redirect_stdout(io.StringIO()):
            ort_quantize_dynamic(model, out, op_types_to_quantize=ops, per_channel=True, reduce_range=False,
                                 weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                                 extra_options={"WeightSymmetric": True, "MatMulConstBOnly": True})
        quantized = onnx.load(out)
    _attach_subgraphs(quantized, taken, model)
    sort_with_subgraphs(quantized)
    made = Counter(n.op_type for n in quantized.graph.node if n.op_type in QUANTIZED_OUTPUT_OPS)
    return quantized, {"quantized": dict(made), "candidates": candidates}


def _worst_snr(fp32: onnx.ModelProto, model: onnx.ModelProto, batches: list, device: str) -> float:
    from ..analysis.fidelity import compare_models

    return min(row["snr_db"] for row in compare_models(fp32, model, batches, device).values())


def _measure(fp32: onnx.ModelProto, model: onnx.ModelProto, batches: list, device: str, info: dict) -> float:
    """The worst output SNR of ``model``; ``info["fidelity"]`` gets the per-output rows (the summary's)."""
    from ..quantize import fidelity_rows

    info["fidelity"] = fidelity_rows(fp32, model, batches, device)
    info["snr_db"] = min(row["snr_db"] for row in info["fidelity"].values())
    return info["snr_db"]


def quantize_dynamic_checked(model: onnx.ModelProto, ignore_types: Iterable[str], ignore_names: Iterable[str],
                             batches: list, device: str = "cpu",
                             floor_db: float = LOST_SNR_DB) -> Tuple[onnx.ModelProto, dict]:
    """``quantize_dynamic``, then, when the model's worst output on ``batches`` (calibration samples) is below
    ``floor_db`` against FP32: each op is quantized alone, the ops that alone take the output below ``floor_db``
    (an LSTM whose gates read inputs in the hundreds, so that INT8 weights flip them) stay float32, and, while
    the rest together is still below ``floor_db``, so does the op with the next-lowest SNR alone. The ops kept
    are named in a warning and in ``info["lost"]`` (op -> output SNR dB with that op alone quantized).
    ``info["fidelity"]``: the written model's per-output rows on ``batches``, when measured."""
    quantized, info = quantize_dynamic(model, ignore_types, ignore_names)
    if not batches or not info["candidates"]:
        return quantized, info
    if _measure(model, quantized, batches, device, info) >= floor_db:
        return quantized, info
    ops, ignored = op_types(ignore_types), list(ignore_names)
    as_matmuls = gemms_as_matmuls(model, ignored) if "MatMul" in ops and "Gemm" not in set(ignore_types) else model
    names = candidate_names(as_matmuls, ops, ignored)
    with _quiet(log):
        alone = {name: _worst_snr(model, quantize_dynamic(model, ignore_types, ignored + [n for n in names
                                                                                          if n != name])[0],
                                  batches, device) for name in names}
        order = sorted(names, key=alone.get)
        kept = [n for n in order if alone[n] < floor_db] or order[:1]
        rest = order[len(kept):]
        while True:
            quantized, info = quantize_dynamic(model, ignore_types, ignored + kept)
            if not info["candidates"]:
                break
            if _measure(model, quantized, batches, device, info) >= floor_db or not rest:
                break
            kept.append(rest.pop(0))
    lost = {n: alone[n] for n in kept}
    if lost:
        log.warning("%d op(s) lose the signal when dynamically quantized and stay float32 (the model's output "
                    "on the calibration data stays above %.0f dB against FP32 without them): %s", len(lost), floor_db,
                    ", ".join(f"{n} ({v:.1f} dB alone)" for n, v in lost.items()))
    info["lost"] = lost
    return quantized, info
