"""Quantization boundaries of a QDQ model, exposing tensors as outputs, and cutting subgraphs.

A *boundary* is an activation QuantizeLinear output (an integer tensor): it survives operator fusion, so a
runtime that fuses DQ -> op -> Q into one kernel still produces it, while the float tensors inside the
fused kernel do not exist on the chip. Each boundary has a *region*: the nodes that compute it from the
boundaries (or graph inputs) upstream of it. The model's graph outputs are boundaries too (a float tail).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Set, Tuple

import onnx
from onnx import TensorProto, helper

PLUMBING = {"QuantizeLinear", "DequantizeLinear", "Constant", "Identity"}


@dataclass(frozen=True)
class Boundary:
    tensor: str  # the boundary tensor (a QuantizeLinear output, or a graph output)
    region: Tuple[str, ...]  # names of the nodes that compute it from ``inputs``, in graph order
    ops: Tuple[Tuple[str, str], ...]  # (node name, op type) of the region's compute nodes (no Q/DQ plumbing)
    inputs: Tuple[str, ...]  # upstream boundaries and graph inputs the region reads
    last_op: str = "QuantizeLinear"  # the op type that makes the boundary tensor

    @property
    def op(self) -> str:
        """The op type that names the finding (the region's first compute node, else the one making it)."""
        return self.ops[0][1] if self.ops else self.last_op

    @property
    def node(self) -> str:
        return self.ops[0][0] if self.ops else self.region[-1]


def node_names(model: onnx.ModelProto) -> List[str]:
    """Every node's name, made unique and non-empty (``<op>_<index>`` for unnamed nodes)."""
    return [n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node)]


def _constants(model: onnx.ModelProto) -> Set[str]:
    """Tensors that do not depend on any graph input (initializers and what is computed only from them)."""
    const = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if all(not x or x in const for x in node.input):
            const.update(node.output)
    return const


def activation_quant_outputs(model: onnx.ModelProto) -> List[str]:
    const = _constants(model)
    return [n.output[0] for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in const]


def _producers(model: onnx.ModelProto) -> Dict[str, int]:
    return {out: i for i, n in enumerate(model.graph.node) for out in n.output if out}


def _cone(model: onnx.ModelProto, outputs: Iterable[str], stop: Set[str]) -> Tuple[List[int], List[str]]:
    """Node indices that compute ``outputs`` without crossing ``stop`` tensors, and the stop/graph-input
    tensors reached (in first-reached order)."""
    producers, nodes = _producers(model), model.graph.node
    inits = {i.name for i in model.graph.initializer}
    seen: Set[int] = set()
    reached: List[str] = []
    todo = list(outputs)
    while todo:
        tensor = todo.pop()
        if not tensor or tensor in inits:
            continue
        if tensor in stop or tensor not in producers:
            if tensor not in reached:
                reached.append(tensor)
            continue
        index = producers[tensor]
        if index not in seen:
            seen.add(index)
            todo.extend(nodes[index].input)
    return sorted(seen), reached


def boundaries(model: onnx.ModelProto) -> List[Boundary]:
    """The model's boundaries in topological (graph) order, graph outputs last."""
    names = node_names(model)
    quant = activation_quant_outputs(model)
    stop = set(quant)
    found = []
    for tensor in quant + [o.name for o in model.graph.output if o.name not in stop]:
        region, inputs = _cone(model, [tensor], stop - {tensor})
        nodes = [model.graph.node[i] for i in region]
        ops = tuple((names[i], n.op_type) for i, n in zip(region, nodes) if n.op_type not in PLUMBING)
        last = nodes[-1].op_type if nodes else "Identity"
        found.append(Boundary(tensor, tuple(names[i] for i in region), ops, tuple(inputs), last))
    return found


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model shape inference cannot handle: what is declared
        return model


def value_infos(model: onnx.ModelProto) -> Dict[str, onnx.ValueInfoProto]:
    """Type (and shape where shape inference knows it) of every tensor; QuantizeLinear outputs typed from
    their zero point (uint8 when it has none), DequantizeLinear outputs float."""
    graph = _inferred(model).graph
    infos = {v.name: v for v in list(graph.value_info) + list(graph.input) + list(graph.output)}
    zps = {i.name: i.data_type for i in graph.initializer}
    for node in model.graph.node:
        out = node.output[0] if node.output else ""
        if node.op_type == "QuantizeLinear" and out not in infos:
            zp = node.input[2] if len(node.input) > 2 and node.input[2] else ""
            infos[out] = helper.make_tensor_value_info(out, zps.get(zp, TensorProto.UINT8), None)
        elif node.op_type == "DequantizeLinear" and out not in infos:
            infos[out] = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
    return infos


def _typed(infos: Dict[str, onnx.ValueInfoProto], name: str, shaped: bool) -> onnx.ValueInfoProto:
    info = infos.get(name)
    if info is None:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
    if shaped:
        return info
    return helper.make_tensor_value_info(name, info.type.tensor_type.elem_type, None)


def expose(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns ``tensors`` (after its own outputs, in the order given)."""
    infos = value_infos(model)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for name in tensors:
        if name not in present:
            exposed.graph.output.append(_typed(infos, name, shaped=False))
            present.add(name)
    return exposed


def cut(model: onnx.ModelProto, stop: Iterable[str], outputs: Sequence[str]) -> onnx.ModelProto:
    """The smallest subgraph that computes ``outputs`` from the ``stop`` tensors (and graph inputs where
    they are reached): its inputs are the stop tensors it reads. Node names and attributes are kept."""
    region, reached = _cone(model, outputs, set(stop))
    infos = value_infos(model)
    nodes = [model.graph.node[i] for i in region]
    used = {x for n in nodes for x in n.input}
    inits = [i for i in model.graph.initializer if i.name in used]
    graph = helper.make_graph(nodes, f"{model.graph.name}_cut", [_typed(infos, t, shaped=True) for t in reached],
                              [_typed(infos, o, shaped=False) for o in outputs], inits)
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return sub


def dequantized(model: onnx.ModelProto, tensor: str) -> str:
    """The float tensor a DequantizeLinear makes of ``tensor`` (``tensor`` itself when none reads it)."""
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] == tensor:
            return node.output[0]
    return tensor
