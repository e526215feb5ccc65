"""The weighted layers fine-tuning works on, and copies of a model with new initializer values."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import onnx
from onnx import numpy_helper

from ..plan.graph import GraphIndex
from ..plan.ops import ACTIVATIONS_FUSED
from ..plan.planner import QuantPlan


@dataclass(frozen=True)
class Layer:
    node: str
    op_type: str
    data: str  # the activation it reads
    weight: str
    bias: Optional[str]
    output: str  # its own output (before a fused activation)
    act: Optional[str]  # name of the fused Relu/Clip node, if any
    act_output: str  # what comes out after the fused activation (== output when none)


def initializers(model: onnx.ModelProto) -> Dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def with_initializers(model: onnx.ModelProto, updates: Dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers in ``updates`` hold the new values (same names, dtypes)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, init in enumerate(out.graph.initializer):
        if init.name in updates:
            value = np.asarray(updates[init.name]).astype(numpy_helper.to_array(init).dtype)
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, init.name))
    return out


def used_once(index: GraphIndex, name: str) -> bool:
    return len(index.consumers.get(name, [])) == 1


def weighted_layers(model: onnx.ModelProto, plan: QuantPlan) -> List[Layer]:
    """INT8 Conv / Gemm / MatMul nodes with a weight initializer used by them alone, in graph order."""
    index = GraphIndex(model)
    layers = []
    for node in index.nodes:
        if node.name not in plan.quantized_nodes or node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        if len(node.input) < 2 or node.input[1] not in plan.weights or not used_once(index, node.input[1]):
            continue
        if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in index.initializers else None
        if bias is not None and not used_once(index, bias):
            bias = None
        act = index.sole_consumer(node.output[0])
        fused = (act is not None and act.op_type in ACTIVATIONS_FUSED and act.name in plan.quantized_nodes
                 and node.output[0] not in plan.activations)
        layers.append(Layer(node.name, node.op_type, node.input[0], node.input[1], bias, node.output[0],
                            act.name if fused else None, act.output[0] if fused else node.output[0]))
    return layers
