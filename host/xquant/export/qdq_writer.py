"""The one place that inserts QuantizeLinear/DequantizeLinear: materialises a quant plan as a QDQ model.

Activations: ``t -> Q -> DQ -> t_dequantized[_k]``, one DQ per consumer, each consumer reading its own DQ
output (for graph outputs a DQ keeps the original name). Weights and biases: stored quantized, with a
DequantizeLinear that outputs the original initializer name, so op nodes are untouched."""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..calibration.ranges import QParams
from ..plan.planner import QuantPlan
from .weights import QuantizedTensor, quantize_bias, quantize_weight


class QDQWriter:
    def __init__(self, model: onnx.ModelProto, plan: QuantPlan, params: Dict[str, QParams]) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.plan = plan
        self.params = params
        self.graph = self.model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.new_inits: List[onnx.TensorProto] = []
        self.weight_scales: Dict[str, np.ndarray] = {}

    def _const(self, name: str, array: np.ndarray) -> str:
        self.new_inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def _dq_from(self, name: str, qt: QuantizedTensor) -> onnx.NodeProto:
        args = [self._const(f"{name}_quantized", qt.values), self._const(f"{name}_scale", qt.scale),
                self._const(f"{name}_zero_point", qt.zero_point)]
        kwargs = {"axis": qt.axis} if qt.axis is not None else {}
        return helper.make_node("DequantizeLinear", args, [name], name=f"{name}_DequantizeLinear", **kwargs)

    def _weight_nodes(self) -> List[onnx.NodeProto]:
        nodes = []
        for name, spec in self.plan.weights.items():
            qt = quantize_weight(numpy_helper.to_array(self.inits[name]), spec)
            self.weight_scales[name] = qt.scale
            nodes.append(self._dq_from(name, qt))
        for name, spec in self.plan.biases.items():
            act = self.params.get(spec.input_name)
            if act is None or spec.weight_name not in self.weight_scales or name in self.plan.weights:
                continue
            qt = quantize_bias(numpy_helper.to_array(self.inits[name]), act.scale, self.weight_scales[spec.weight_name])
            nodes.append(self._dq_from(name, qt))
        return nodes

    def _activation_nodes(self, tensor: str, source: str, targets: List[str], p: QParams) -> List[onnx.NodeProto]:
        """One QuantizeLinear of ``source`` and one DequantizeLinear per target: a DQ of its own for every
        consumer lets onnxruntime fuse each consumer with its Q/DQ into an INT8 kernel."""
        scale = self._const(f"{tensor}_scale", np.asarray(p.scale, dtype=np.float32))
        zp = self._const(f"{tensor}_zero_point", np.asarray(p.zero_point, dtype=np.int8))
        quant = f"{tensor}_quantized"
        nodes = [helper.make_node("QuantizeLinear", [source, scale, zp], [quant], name=f"{tensor}_QuantizeLinear")]
        for i, target in enumerate(targets):
            suffix = f"_{i}" if i else ""
            nodes.append(helper.make_node("DequantizeLinear", [quant, scale, zp], [target],
                                          name=f"{tensor}_DequantizeLinear{suffix}"))
        return nodes

    @staticmethod
    def _rewire_each(readers: List[onnx.NodeProto], old: str, base: str) -> List[str]:
        """Point every reader of ``old`` at a copy of its own (base, base_1, ...); return the copies' names."""
        names: List[str] = []
        for node in readers:
            if old not in node.input:
                continue
            new = f"{base}_{len(names)}" if names else base
            names.append(new)
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new
        return names

    def write(self) -> onnx.ModelProto:
        graph_outputs = {o.name for o in self.graph.output}
        graph_inputs = {i.name for i in self.graph.input}
        original = list(self.graph.node)
        head = self._weight_nodes()
        after: Dict[str, List[onnx.NodeProto]] = {}
        producers = {out: n for n in original for out in n.output}
        int8 = self.plan.quantized_nodes
        for name, p in self.params.items():
            if name in graph_outputs and name in graph_inputs:
                continue
            int8_producer = name in producers and producers[name].name in int8
            if name in graph_outputs and int8_producer:
                producer = producers[name]
                pre = f"{name}_prequant"
                producer.output[list(producer.output).index(name)] = pre
                # the graph output keeps its name, now a DQ output; other readers get DQs of their own
                targets = [name] + self._rewire_each(original, name, f"{name}_dequantized")
                nodes = self._activation_nodes(name, pre, targets, p)
            else:
                # a float producer's tensor is quantized only on the edges into INT8 ops: float readers keep it float
                readers = original if int8_producer else [n for n in original if n.name in int8]
                targets = self._rewire_each(readers, name, f"{name}_dequantized")
                nodes = self._activation_nodes(name, name, targets, p) if targets else []
            after.setdefault(name, []).extend(nodes)
        for name in graph_inputs:
            head.extend(after.pop(name, []))
        ordered = list(head)
        for node in original:
            ordered.append(node)
            for out in node.output:
                key = out[: -len("_prequant")] if out.endswith("_prequant") else out
                ordered.extend(after.pop(key, []))
        self._replace_initializers()
        del self.graph.node[:]
        self.graph.node.extend(ordered)
        return self.model

    def _replace_initializers(self) -> None:
        replaced = set(self.plan.weights) | {n for n in self.plan.biases if any(
            t.name == f"{n}_quantized" for t in self.new_inits)}
        keep = [t for t in self.graph.initializer if t.name not in replaced]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep + self.new_inits)
        inputs = [v for v in self.graph.input if v.name not in replaced]
        del self.graph.input[:]
        self.graph.input.extend(inputs)


def write_qdq(model: onnx.ModelProto, plan: QuantPlan, params: Dict[str, QParams]) -> onnx.ModelProto:
    return QDQWriter(model, plan, params).write()
