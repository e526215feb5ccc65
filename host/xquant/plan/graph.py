"""Read-only index of an ONNX graph: producers, consumers, initializers and float tensors."""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Set

import onnx
from onnx import TensorProto


SHAPE_OPS = ("Shape", "Size")


class GraphIndex:
    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.model = model
        self.nodes: List[onnx.NodeProto] = list(graph.node)
        self.initializers: Dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.inputs = [v.name for v in graph.input if v.name not in self.initializers]
        self.outputs = [v.name for v in graph.output]
        self.producer: Dict[str, onnx.NodeProto] = {}
        self.consumers: Dict[str, List[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.elem_type: Dict[str, int] = {}
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            if value.type.HasField("tensor_type"):
                self.elem_type[value.name] = value.type.tensor_type.elem_type
        for name, init in self.initializers.items():
            self.elem_type[name] = init.data_type
        self.constants: Set[str] = {n.output[0] for n in self.nodes if n.op_type == "Constant"}
        self.data = self._data_tensors()

    def _data_tensors(self) -> Set[str]:
        """Tensors that carry the inputs' values: the inputs and what is computed from them, not through
        Shape or Size only (anchor grids, strides and sizes computed from shapes are constant-like)."""
        data = set(self.inputs)
        for node in self.nodes:  # graph order is topological
            if node.op_type not in SHAPE_OPS and any(i in data for i in node.input if i):
                data.update(o for o in node.output if o)
        return data

    def is_float(self, name: str) -> bool:
        return self.elem_type.get(name) == TensorProto.FLOAT

    def is_activation(self, name: str) -> bool:
        return bool(name) and name not in self.initializers and name not in self.constants

    def sole_consumer(self, name: str) -> Optional[onnx.NodeProto]:
        users = self.consumers.get(name, [])
        if len(users) == 1 and name not in self.outputs:
            return users[0]
        return None

    def shape(self, name: str) -> Optional[List[Optional[int]]]:
        for value in list(self.model.graph.value_info) + list(self.model.graph.input) + list(self.model.graph.output):
            if value.name == name and value.type.tensor_type.HasField("shape"):
                return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        return None
