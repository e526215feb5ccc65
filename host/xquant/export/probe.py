"""Read-only views of a written QDQ model for analysis: where it quantizes, and an 'isolated' copy.

Every activation QuantizeLinear the writer inserted is a quant point: the tensor it quantizes, the value
it reads (``source``: the tensor itself, or ``<name>_prequant`` for model outputs) and the
DequantizeLinear output that readers get (``dequantized``). The isolated copy feeds each QuantizeLinear
from a new graph input ``<tensor>__fp32`` instead of from the QDQ chain, so that every op sees its
inputs as the FP32 model computes them, quantized once: the error at ``source`` (re-quantized with the
tensor's parameters) is then the error of that op alone. Both functions copy; the model is not changed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import onnx
from onnx import helper

ISOLATED_SUFFIX = "__fp32"


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


def isolated_model(qdq: onnx.ModelProto, points: List[QuantPoint]) -> onnx.ModelProto:
    """A copy of ``qdq`` whose QuantizeLinear nodes read ``<tensor>__fp32`` inputs; it outputs every source
    that is not a model input."""
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    graph_inputs = {v.name for v in model.graph.input}
    by_source = {p.source: p for p in points if p.source not in graph_inputs}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in by_source:
            node.input[0] = by_source[node.input[0]].tensor + ISOLATED_SUFFIX
    for point in by_source.values():
        model.graph.input.append(helper.make_tensor_value_info(point.tensor + ISOLATED_SUFFIX,
                                                               onnx.TensorProto.FLOAT, None))
    present = {o.name for o in model.graph.output} | graph_inputs
    model.graph.output.extend(helper.make_tensor_value_info(p.source, onnx.TensorProto.FLOAT, None)
                              for p in points if p.source not in present)
    return model
