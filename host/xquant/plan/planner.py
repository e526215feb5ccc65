"""Mark what gets quantized and how (never edits the graph): the quant plan.

Every float tensor touched by a quantized op gets an ``ActivationSpec`` (or a ``WeightSpec`` when it is an
initializer); tensors that must share one scale (data-movement ops, Concat) share a ``group``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set

import numpy as np
import onnx
from onnx import numpy_helper

from ..config.schema import XQuantConfig
from .custom import NodeSetting
from .graph import GraphIndex
from .ops import ACTIVATIONS_FUSED, OpRule, rule_for
from .precision import keeps_float


@dataclass
class ActivationSpec:
    name: str
    method: str
    max_percentile: float
    group: str = ""


@dataclass(frozen=True)
class WeightSpec:
    name: str
    axis: Optional[int]  # per-channel axis, None for per-tensor
    symmetric: bool = True


@dataclass(frozen=True)
class BiasSpec:
    name: str
    input_name: str
    weight_name: str


@dataclass
class QuantPlan:
    quantized_nodes: Set[str] = field(default_factory=set)
    activations: Dict[str, ActivationSpec] = field(default_factory=dict)
    weights: Dict[str, WeightSpec] = field(default_factory=dict)
    biases: Dict[str, BiasSpec] = field(default_factory=dict)

    def groups(self) -> Dict[str, List[str]]:
        out: Dict[str, List[str]] = {}
        for spec in self.activations.values():
            out.setdefault(spec.group, []).append(spec.name)
        return out


RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")  # the values as they are, re-laid
DIVISOR_CLAMPS = ("Clip", "Relu", "Max", "Min", "Abs")
RELATIVE_READERS = ("Reciprocal", "Log")  # their output's error is their input's relative error
# a decomposed LayerNorm/RMSNorm's variance branch: Pow(d, 2) or Mul(d, d) -> ReduceMean -> Add(eps) ->
# Sqrt -> the Div's divisor; each passes its input's relative error on to the divisor. jax2tf writes the
# variance as moments, ReduceSum(x*x) * 1/n - mean*mean, with reshapes on the way
TOWARD_DIVISOR = ("Sqrt", "ReduceMean", "ReduceSum", "Add", "Mul", "Sub", "Expand") + RESHAPES
# a per-tensor INT8 weight below this SNR (dB) keeps its op float: one scale cannot hold rows that differ
# tens of times in size (a CTC head's blank class: zoo ddddocr_rec, 13.7 dB per tensor, 40.8 per row)
WEIGHT_FLOOR_DB = 20.0
DECISION_OPS = ("Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual", "If", "Loop")
# between a detector's dense layer, its Sigmoid and the model output: reshapes, a bias Add, a threshold
HEAD_MOVES = RESHAPES + ("Transpose",)
DENSE_LAYERS = ("Gemm", "MatMul")  # a detector's head; integer kernels with a float output


class _UnionFind:
    def __init__(self) -> None:
        self.parent: Dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


class Planner:
    def __init__(self, model: onnx.ModelProto, cfg: XQuantConfig, float_nodes: Optional[Set[str]] = None,
                 settings: Optional[Dict[str, NodeSetting]] = None) -> None:
        self.index = GraphIndex(model)
        self.cfg = cfg
        self.quant = cfg.quantization
        self.float_nodes = float_nodes or set()  # decided elsewhere (truncation tail)
        self.settings = settings or {}  # per-node custom_setting overrides (plan/custom.py)
        self.plan = QuantPlan()
        self.heads = self._sigmoid_heads()

    def _setting(self, node_name: str, key: str, default):
        value = getattr(self.settings.get(node_name, NodeSetting()), key)
        return default if value is None else value

    def wants_int8(self, node: onnx.NodeProto) -> bool:
        rule = rule_for(node.op_type)
        if rule is None or node.name in self.float_nodes or node.name in self.heads:
            return False
        if node.op_type in self.quant.ignore_op_types or node.name in self.quant.ignore_op_names:
            return False
        if keeps_float(node, self.index, self._setting(node.name, "precision_level", self.quant.precision_level)):
            return False
        if (self._only_decides(node) or self._only_divides(node) or self._divides_by_activation(node)
                or self._feeds_a_divisor_path(node)):
            return False
        if self._weight_too_coarse(node, rule):
            return False
        data = self._data_inputs(node, rule)
        return any(self.index.is_float(name) and name in self.index.data for name in data)

    def _weight_too_coarse(self, node: onnx.NodeProto, rule: OpRule) -> bool:
        """A per-tensor weight (Gemm, MatMul: the vendor's scheme) whose INT8 copy is below WEIGHT_FLOOR_DB:
        the op stays float rather than run on a weight that lost most of its small rows."""
        slot = rule.weight_input
        if rule.weight_axis is not None or slot is None or slot >= len(node.input):
            return False
        name = node.input[slot]
        if name not in self.index.initializers or not self.index.is_float(name):
            return False
        from ..export.weights import weight_snr_db  # export imports the plan's specs

        return weight_snr_db(numpy_helper.to_array(self.index.initializers[name])) < WEIGHT_FLOOR_DB

    def _sigmoid_heads(self) -> Set[str]:
        """A detector's decision head stays float: a Sigmoid whose probability is a model output (directly,
        through reshapes or a threshold) and the dense layer (Gemm, MatMul with a constant weight) that makes
        its logit, with the bias Add and reshapes between. Calibration sets are mostly negatives, so an INT8
        logit clips at the largest logit calibration saw and a hit can never reach the threshold (zoo
        oww_hey_mycroft: every probability capped at 0.355 by both us and onnxruntime). The head is one small
        layer; a Sigmoid over a conv map (a text detector's) is not a head and keeps its rules."""
        heads: Set[str] = set()
        for node in self.index.nodes:
            if node.op_type != "Sigmoid" or not self._reaches_output(node.output[0]):
                continue
            chain, tensor = [node.name], node.input[0]
            while (producer := self.index.producer.get(tensor)) is not None:
                chain.append(producer.name)
                if producer.op_type in DENSE_LAYERS and producer.input[1] in self.index.initializers:
                    heads.update(chain)
                    break
                inputs = [n for n in producer.input if n and n not in self.index.initializers]
                if producer.op_type not in HEAD_MOVES + ("Add",) or len(inputs) != 1:
                    break
                tensor = inputs[0]
        return heads

    def _reaches_output(self, tensor: str, depth: int = 0) -> bool:
        if tensor in self.index.outputs:
            return True
        readers = self.index.consumers.get(tensor, [])
        return depth < 8 and any(c.op_type in HEAD_MOVES + DECISION_OPS + ("Cast",)
                                 and any(self._reaches_output(o, depth + 1) for o in c.output if o)
                                 for c in readers)

    def _only_decides(self, node: onnx.NodeProto) -> bool:
        """Every reader of the op's outputs is a comparison (feeding an If, a Where, a Loop's condition):
        one quantization step could flip the decision, so the op stays float."""
        readers = [c for out in node.output if out for c in self.index.consumers.get(out, [])]
        if not readers or any(out in self.index.outputs for out in node.output):
            return False
        return all(c.op_type in DECISION_OPS for c in readers)

    def _only_divides(self, node: onnx.NodeProto) -> bool:
        """Every reader uses the op's output as a divisor (Div's input 1, Reciprocal) or takes its log,
        directly or through clamps: a quotient's relative error is the divisor's, a log's absolute error
        is its input's relative error, and one INT8 grid either rounds small values coarsely (to 0, where
        a log reads -inf, clamped) or saturates large ones (a masked mean's token count above the
        calibrated maximum: zoo arabic_encoder 27.9 dB, with the count float 39.2 dB; a mel power
        spectrum spanning 80 dB before its Log: zoo oww_melspectrogram 4.76 -> 5.42 dB). Such ops stay
        float."""
        readers = [(c, out) for out in node.output if out for c in self.index.consumers.get(out, [])]
        if not readers or any(out in self.index.outputs for out in node.output):
            return False
        return all((c.op_type == "Div" and list(c.input).index(out) == 1 and c.input[0] != out)
                   or c.op_type in RELATIVE_READERS
                   or (c.op_type in DIVISOR_CLAMPS and self._only_divides(c))
                   or (self._toward_divisor(c, out) and self._only_divides(c))
                   for c, out in readers)

    def _feeds_a_divisor_path(self, node: onnx.NodeProto) -> bool:
        """Some reader carries the op's output on toward a divisor and does nothing else with it (a mean
        that is squared for E[x]^2 as well as subtracted): the op stays float so that path reads its exact
        value; its INT8 readers get their own Q/DQ, as any float op's do."""
        readers = [(c, out) for out in node.output if out for c in self.index.consumers.get(out, [])]
        return any(self._toward_divisor(c, out) and self._only_divides(c) for c, out in readers)

    def _toward_divisor(self, node: onnx.NodeProto, tensor: str) -> bool:
        """``node`` carries ``tensor`` on toward a divisor without mixing in another activation: a
        LayerNorm's variance (ReduceMean or ReduceSum, a Mul or Add of a constant, Sqrt, reshapes). So its
        squared deviations stay float too: on one INT8 grid most of them round to 0 beside a few outlier
        channels (zoo ppocr_v6_rec: 74% in its last LayerNorm; 7.00 -> 15.4 dB with the variance branch
        float). A Sub may mix in a second activation: a variance written as moments, E[x^2] - E[x]^2,
        cancels, and both terms' INT8 errors land on the small difference (zoo magika, jax2tf)."""
        if node.op_type not in TOWARD_DIVISOR:
            return False
        others = [name for name in node.input if name and name != tensor and self.index.is_float(name)]
        # a Sub of two moments (E[x^2] - E[x]^2) cancels: both terms' errors land on the small difference
        return node.op_type == "Sub" or all(not self.index.is_activation(name) for name in others)

    def _divides_by_activation(self, node: onnx.NodeProto) -> bool:
        """A Div by a computed divisor (a count, a norm) is a float op: the divisor stays float (above), so
        an INT8 numerator would only add error, and saturate where the numerator grows with the input (a
        masked mean's sum over time on names longer than calibration's: zoo arabic_encoder 33.2 -> 39.0
        dB). Its quotient is still INT8 where an INT8 op reads it. Division by a constant stays INT8.
        (Reciprocal and Log, the other RELATIVE_READERS, have no rule: float ops at every level.)"""
        return node.op_type == "Div" and len(node.input) > 1 and self.index.is_activation(node.input[1])

    def _int8_movement(self, movers: List[onnx.NodeProto]) -> None:
        """Data movement (Reshape, Transpose, Slice, Concat, ...) is INT8 only next to INT8: when an INT8
        op makes what it moves (that tensor is quantized anyway) or an INT8 op reads what it gives. Between
        float ops (an LSTM, a model input) it stays float, so no Q/DQ squeezes a tensor nobody computes on
        in INT8. Chains of movement ops settle together."""
        int8 = self.plan.quantized_nodes
        changed = True
        while changed:
            changed = False
            for node in movers:
                if node.name in int8:
                    continue
                rule = rule_for(node.op_type)
                made = [self.index.producer.get(n) for n in self._data_inputs(node, rule)]  # type: ignore[arg-type]
                read = [c for out in node.output if out for c in self.index.consumers.get(out, [])
                        if c.name in int8 and self._reads_as_data(c, out)]
                if read or any(p is not None and p.name in int8 for p in made):
                    int8.add(node.name)
                    changed = True

    def _reads_as_data(self, node: onnx.NodeProto, tensor: str) -> bool:
        rule = rule_for(node.op_type)
        if rule is None:
            return False
        positions = self._data_positions(node, rule)
        weight = () if rule.weight_input is None else (rule.weight_input,)
        return any(name == tensor and (pos in positions or pos in weight) for pos, name in enumerate(node.input))

    def _data_inputs(self, node: onnx.NodeProto, rule: OpRule) -> List[str]:
        idx = range(len(node.input)) if rule.data_inputs is None else rule.data_inputs
        return [node.input[i] for i in idx if i < len(node.input) and node.input[i]]

    def build(self) -> QuantPlan:
        movers = []
        for node in self.index.nodes:
            if self.wants_int8(node):
                if rule_for(node.op_type).kind == "compute":  # type: ignore[union-attr]
                    self.plan.quantized_nodes.add(node.name)
                else:
                    movers.append(node)
        self._int8_movement(movers)
        for node in self.index.nodes:
            if node.name in self.plan.quantized_nodes:
                self._mark_node(node, rule_for(node.op_type))  # type: ignore[arg-type]
        self._assign_groups()
        return self.plan

    def _mark_activation(self, name: str) -> None:
        if name and name not in self.plan.activations and self.index.is_float(name):
            producer = self.index.producer.get(name)
            node = producer.name if producer is not None else ""
            method = self._setting(node, "calibration_type", self.cfg.calibration.calibration_type)
            pct = self._setting(node, "max_percentile", self.quant.max_percentile)
            self.plan.activations[name] = ActivationSpec(name, method, pct)

    def _mark_node(self, node: onnx.NodeProto, rule: OpRule) -> None:
        for pos, name in enumerate(node.input):
            if not name or not self.index.is_float(name):
                continue
            is_weight_slot = pos == rule.weight_input
            if name in self.index.initializers:
                if is_weight_slot:
                    self.plan.weights[name] = WeightSpec(name, rule.weight_axis)
                elif (pos in self._data_positions(node, rule) and name not in self.plan.weights
                      and self._finite(name)):  # Max(-inf, x) (a softmax guard): no INT8 grid holds inf
                    self.plan.weights[name] = WeightSpec(name, None, symmetric=False)
            elif pos in self._data_positions(node, rule) or is_weight_slot:
                if self.index.is_activation(name) and not self._fused_edge(name):
                    self._mark_activation(name)
        if rule.bias_input is not None and self.quant.bias_dtype == "int32":
            self._mark_bias(node, rule)
        for name in node.output:
            if name and not self._fused_edge(name) and not self._hands_over_in_float(node, name):
                self._mark_activation(name)

    def _hands_over_in_float(self, node: onnx.NodeProto, tensor: str) -> bool:
        """An INT8 Gemm or MatMul whose readers are all float ops (a Tanh, a GRU) and whose output is no model
        output keeps that output float: its integer kernel has a float-output form (QGemm without y_scale,
        MatMulIntegerToFloat), and requantizing to INT8 would only add a rounding the float reader takes as
        error (zoo arabic_encoder: its `Tanh(Gemm(...))` 38.92 -> 42.68 dB on 256 held-out names). Other ops
        keep their INT8 output: a Conv without one is a float Conv on the chip."""
        readers = self.index.consumers.get(tensor, [])
        return (node.op_type in DENSE_LAYERS and bool(readers) and tensor not in self.index.outputs
                and all(c.name not in self.plan.quantized_nodes for c in readers))

    def _finite(self, name: str) -> bool:
        return bool(np.isfinite(numpy_helper.to_array(self.index.initializers[name])).all())

    @staticmethod
    def _data_positions(node: onnx.NodeProto, rule: OpRule) -> range | tuple:
        return range(len(node.input)) if rule.data_inputs is None else rule.data_inputs

    def _mark_bias(self, node: onnx.NodeProto, rule: OpRule) -> None:
        pos = rule.bias_input
        if pos is None or pos >= len(node.input) or node.input[pos] not in self.index.initializers:
            return
        weight = node.input[rule.weight_input] if rule.weight_input is not None else ""
        if weight in self.index.initializers and self.index.is_activation(node.input[0]):
            self.plan.biases[node.input[pos]] = BiasSpec(node.input[pos], node.input[0], weight)

    def _fused_edge(self, tensor: str) -> bool:
        """Conv/Gemm/MatMul/Add -> Relu/Clip with nothing else reading the tensor: one fused INT8 op."""
        producer = self.index.producer.get(tensor)
        rule = rule_for(producer.op_type) if producer is not None else None
        if rule is None or not rule.fuses_activation or producer.name not in self.plan.quantized_nodes:
            return False
        consumer = self.index.sole_consumer(tensor)
        return (consumer is not None and consumer.op_type in ACTIVATIONS_FUSED
                and consumer.name in self.plan.quantized_nodes)

    def _assign_groups(self) -> None:
        uf = _UnionFind()
        acts = self.plan.activations
        for node in self.index.nodes:
            rule = rule_for(node.op_type)
            if node.name not in self.plan.quantized_nodes or rule is None or rule.kind == "compute":
                continue
            members = [n for n in self._data_inputs(node, rule) if n in acts]
            members += [n for n in node.output if n in acts]
            if rule.kind == "passthrough":
                members = [n for n in members if n == node.input[0] or n in node.output]
            for other in members[1:]:
                uf.union(members[0], other)
        for name, spec in acts.items():
            spec.group = uf.find(name)


def build_plan(model: onnx.ModelProto, cfg: XQuantConfig, float_nodes: Optional[Set[str]] = None,
               settings: Optional[Dict[str, NodeSetting]] = None) -> QuantPlan:
    return Planner(model, cfg, float_nodes, settings).build()
