"""Read-only views of a written QDQ model for analysis: where it quantizes, and a probe model.

Every activation QuantizeLinear the writer inserted is a quant point: the tensor it quantizes, the value
it reads (``source``: the tensor itself, or ``<name>_prequant`` for model outputs) and the
DequantizeLinear output that readers get (``dequantized``).

The probe model holds three graphs on the same inputs, so one run gives everything the analysis needs:
the QDQ graph as written (exposing every ``dequantized``), the FP32 graph (every tensor renamed
``<name>__fp32``) and an isolated copy of the QDQ graph (``<name>__iso``) whose QuantizeLinear nodes read
the FP32 graph's tensor instead of the QDQ chain: there every op sees its inputs as FP32 computes them,
quantized once, so the error at ``<source>__iso`` (re-quantized with the tensor's parameters) is the error
of that op alone. The models given are copied, never changed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Set

import onnx
from onnx import helper

FP32_SUFFIX = "__fp32"
ISOLATED_SUFFIX = "__iso"


@dataclass(frozen=True)
class QuantPoint:
    tensor: str
    source: str
    dequantized: str


def quant_points(qdq: onnx.ModelProto) -> List[QuantPoint]:
    """The activation quant points of ``qdq`` in graph order."""
    readers: Dict[str, onnx.NodeProto] = {}
    for node in qdq.graph.node:
        if node.op_type == "DequantizeLinear" and node.input:
            readers[node.input[0]] = node
    points = []
    for node in qdq.graph.node:
        if node.op_type != "QuantizeLinear" or node.output[0] not in readers:
            continue
        source = node.input[0]
        tensor = source[: -len("_prequant")] if source.endswith("_prequant") else source
        points.append(QuantPoint(tensor, source, readers[node.output[0]].output[0]))
    return points


def _renamed(graph: onnx.GraphProto, suffix: str, keep: Set[str]) -> onnx.GraphProto:
    """A copy of ``graph`` with every node, tensor and initializer renamed ``<name><suffix>`` except ``keep``."""
    out = onnx.GraphProto()
    out.CopyFrom(graph)
    rename = lambda name: name if not name or name in keep else name + suffix  # noqa: E731
    for node in out.node:
        node.name = node.name + suffix
        node.input[:] = [rename(i) for i in node.input]
        node.output[:] = [rename(o) for o in node.output]
        _rename_outer_refs(node, rename)
    for init in out.initializer:
        init.name = rename(init.name)
    return out


def _rename_outer_refs(node: onnx.NodeProto, rename) -> None:
    """In the bodies of If/Loop/Scan ``node``, rename the tensors they read from the enclosing graph."""
    for attr in node.attribute:
        for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            local = {v.name for v in body.input} | {t.name for t in body.initializer}
            local |= {o for n in body.node for o in n.output}
            for inner in body.node:
                inner.input[:] = [i if i in local else rename(i) for i in inner.input]
                _rename_outer_refs(inner, lambda name, local=local: name if name in local else rename(name))


def probe_model(fp32: onnx.ModelProto, qdq: onnx.ModelProto, points: List[QuantPoint]) -> onnx.ModelProto:
    """The three-graph probe model (module docstring); it outputs the model outputs of the QDQ graph,
    every ``dequantized``, every ``<tensor>__fp32`` and ``<output>__fp32``, and every ``<source>__iso``."""
    inputs = {v.name for v in qdq.graph.input} - {i.name for i in qdq.graph.initializer}
    reference = _renamed(fp32.graph, FP32_SUFFIX, inputs)
    isolated = _renamed(qdq.graph, ISOLATED_SUFFIX, inputs)
    by_source = {p.source + ISOLATED_SUFFIX: p for p in points if p.source not in inputs}
    for node in isolated.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in by_source:
            node.input[0] = by_source[node.input[0]].tensor + FP32_SUFFIX
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    graph = model.graph
    graph.node.extend(list(reference.node) + list(isolated.node))
    graph.initializer.extend(list(reference.initializer) + list(isolated.initializer))
    wanted = [p.dequantized for p in points]
    wanted += [p.tensor + FP32_SUFFIX for p in points if p.tensor not in inputs]
    wanted += [o.name + FP32_SUFFIX for o in fp32.graph.output]
    wanted += [p.source + ISOLATED_SUFFIX for p in points if p.source not in inputs]
    present = {o.name for o in graph.output} | inputs
    types = {o.name + FP32_SUFFIX: o.type.tensor_type.elem_type for o in fp32.graph.output}  # bool outputs
    for name in dict.fromkeys(wanted):
        if name not in present:
            elem = types.get(name) or onnx.TensorProto.FLOAT
            graph.output.append(helper.make_tensor_value_info(name, elem, None))
    return model
