"""precision_level 4 / --fp16: the model's float32 ops run in float16, inputs and outputs stay float32.

An op stays float32, with Casts at its borders, when
* it is listed in ``ignore_op_types`` / ``ignore_op_names``;
* onnxruntime's CPU execution provider has no float16 kernel for it (``FP16_KERNELS``: the ops it registers
  float16 kernels for on FP16-capable CPUs; everything else, e.g. LSTM, GRU, Resize, TopK, Range, CumSum,
  Einsum, stays float32), or the ONNX schema of its opset does not accept float16 on one of its float inputs;
* it overflows float16: a tensor it reads or writes reaches ``OVERFLOW_LIMIT`` on the calibration data, or
  one of its weights does; or float16 rounds such a tensor below ``PRECISION_SNR_DB`` (values mostly in
  float16's subnormal range, e.g. probabilities near 1e-6); ``overflow.py`` measures and names them;
* it holds a subgraph (If, Loop, Scan) or feeds a tensor into one.
Weights read only by float16 ops are stored in float16; a Cast is inserted once per tensor and direction.
Before this, the pipeline fuses each erf GELU (five ops) into one com.microsoft Gelu (``gelu.py``): one
float16 rounding instead of five. Ops that only move data stay float32 unless a float input of theirs is
float16 or a weight (``DATA_MOVEMENT``). With calibration data, the float16 Convs' biases take out their
systematic error measured against FP32, layer by layer (``bias_fix.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_KERNELS = frozenset({
    "Abs", "Add", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat", "Conv", "ConvTranspose",
    "DepthToSpace", "Div", "Dropout", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather",
    "GatherElements", "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "HardSigmoid",
    "HardSwish", "Identity", "InstanceNormalization", "LayerNormalization", "LeakyRelu", "Less", "Log",
    "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Pad", "PRelu", "Reciprocal", "ReduceMax", "ReduceMean",
    "ReduceMin", "Relu", "Reshape", "Round", "Sigmoid", "Sign", "Slice", "Softmax", "Split", "Sqrt", "Squeeze",
    "Sub", "Tanh", "Tile", "Transpose", "Unsqueeze", "Where",
})

ANY_TYPE = frozenset({"Shape", "Size"})  # read float16 as well as float32: no Cast in front
# ops that only move values: in float16 only when a float input is float16 already or a weight, since
# converting a float32 activation just to move it rounds it for nothing (openWakeWord: input -> Transpose ->
# LSTM, 55 dB -> 66.3 dB held out)
DATA_MOVEMENT = frozenset({"Concat", "DepthToSpace", "Dropout", "Expand", "Flatten", "Gather", "GatherElements",
                           "Identity", "Pad", "Reshape", "Slice", "Split", "Squeeze", "Tile", "Transpose",
                           "Unsqueeze"})
CONTRIB_FP16 = frozenset({("com.microsoft", "Gelu")})  # contrib ops that take float16 (``gelu.py`` writes it)


@dataclass
class Fp16Info:
    """What the conversion did, for the summary and the report."""

    fp16_nodes: List[str] = field(default_factory=list)
    kept: Dict[str, str] = field(default_factory=dict)  # node name -> why it stays float32
    casts: int = 0
    overflow: Dict[str, float] = field(default_factory=dict)  # node name -> largest magnitude seen
    imprecise: Dict[str, float] = field(default_factory=dict)  # node name -> lowest rounding SNR (dB) seen
    sensitive: Dict[str, float] = field(default_factory=dict)  # node name -> output SNR, its weights rounded alone
    bias_corrected: List[str] = field(default_factory=list)  # layers whose bias takes their measured mean error


def _types(model: onnx.ModelProto) -> Dict[str, int]:
    graph = model.graph
    found = {v.name: v.type.tensor_type.elem_type for v in list(graph.input) + list(graph.value_info)
             + list(graph.output) if v.type.HasField("tensor_type")}
    found.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = node.attribute[0].t.data_type
    return found


def _schema_allows_half(node: onnx.NodeProto, opset: int, types: Dict[str, int]) -> bool:
    """Every float32 input and output of ``node`` may be float16 under its schema (default domain only)."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return False
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    formal = list(schema.inputs)
    for i, name in enumerate(node.input):
        if not name or types.get(name) != FLOAT or not formal:
            continue
        param = formal[min(i, len(formal) - 1)].type_str
        if "tensor(float16)" not in allowed.get(param, {param}):
            return False
    return True


def _subgraph_reads(node: onnx.NodeProto) -> Set[str]:
    names: Set[str] = set()
    for attr in node.attribute:
        for graph in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            for inner in graph.node:
                names.update(i for i in inner.input if i)
                names.update(_subgraph_reads(inner))
    return names


def _why_float32(node: onnx.NodeProto, opset: int, types: Dict[str, int], ignore_types: Iterable[str],
                 ignore_names: Iterable[str]) -> Optional[str]:
    floats = [t for t in list(node.input) + list(node.output) if t and types.get(t) == FLOAT]
    if node.name in ignore_names:
        return "ignore_op_names"
    if node.op_type in ignore_types:
        return "ignore_op_types"
    if not floats or node.op_type == "Cast":
        return "no float32 tensor"  # not converted, nothing to say
    if any(t and t not in types for t in node.output):
        return "output type unknown"
    if (node.domain, node.op_type) in CONTRIB_FP16:
        return None
    if node.domain not in ("", "ai.onnx") or node.op_type not in FP16_KERNELS:
        return "no float16 kernel in onnxruntime's CPU provider"
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return "holds a subgraph"
    if not _schema_allows_half(node, opset, types):
        return "its schema takes no float16 here"
    return None


def choose_nodes(model: onnx.ModelProto, ignore_types: Iterable[str], ignore_names: Iterable[str],
                 overflow: Dict[str, float], info: Fp16Info,
                imprecise: Optional[Dict[str, float]] = None, sensitive: Optional[Dict[str, float]] = None) -> Set[str]:
    """Names of the nodes to run in float16; ``info.kept`` says why each other node with float32 data is not."""
    from ..prepare import default_opset

    types, opset = _types(model), default_opset(model)
    ignore_types, ignore_names = set(ignore_types), set(ignore_names)
    into_subgraphs = set().union(*[_subgraph_reads(n) for n in model.graph.node])
    made = {o: n.name for n in model.graph.node for o in n.output if o}
    weights = {t.name for t in model.graph.initializer}
    chosen: Set[str] = set()
    for node in model.graph.node:
        why = _why_float32(node, opset, types, ignore_types, ignore_names)
        if why is None and node.name in overflow:
            why = f"overflows float16 (|x| up to {overflow[node.name]:.4g})"
        if why is None and node.name in (imprecise or {}):
            why = f"loses precision in float16 (tiny values: rounding SNR {imprecise[node.name]:.1f} dB)"
        if why is None and node.name in (sensitive or {}):
            why = f"its float16 weights alone put the output at {sensitive[node.name]:.1f} dB"
        if why is None and any(o in into_subgraphs for o in node.output):
            why = "feeds a subgraph"
        if why is None and node.op_type in DATA_MOVEMENT and not any(
                made.get(t) in chosen or t in weights for t in node.input if t and types.get(t) == FLOAT):
            why = "moves float32 data only (a float16 copy would round it for nothing)"
        if why is None:
            chosen.add(node.name)
        elif why != "no float32 tensor":
            info.kept[node.name] = f"{node.op_type}: {why}"
    return chosen


class _Rewriter:
    """Rebuild the node list with float16 nodes, half weights and Casts where precisions meet."""

    def __init__(self, model: onnx.ModelProto, chosen: Set[str]) -> None:
        self.model, self.chosen = model, chosen
        self.types = _types(model)
        self.inits = {t.name: t for t in model.graph.initializer}
        self.half: Set[str] = set()  # float tensors that hold float16 values under their own name
        self.made: Dict[tuple, str] = {}  # (tensor, to) -> name of its cast copy
        self.nodes: List[onnx.NodeProto] = []
        self.casts = 0
        self.into_subgraphs = set().union(*[_subgraph_reads(n) for n in model.graph.node])
        readers: Dict[str, List[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        self.readers = readers

    def _is_float(self, name: str) -> bool:
        return self.types.get(name) == FLOAT

    def _cast(self, name: str, to: int) -> str:
        key = (name, to)
        if key not in self.made:
            out = f"{name}/to_{'fp16' if to == HALF else 'fp32'}"
            if name in self.inits and to == HALF:
                array = numpy_helper.to_array(self.inits[name]).astype(np.float16)
                self.model.graph.initializer.append(numpy_helper.from_array(array, out))
            else:
                self.nodes.append(helper.make_node("Cast", [name], [out], name=out, to=to))
                self.casts += 1
            self.made[key] = out
        return self.made[key]

    def _halve_weights(self) -> None:
        """Float weights read only by float16 nodes are stored in float16 (no Cast)."""
        for name, tensor in self.inits.items():
            users = self.readers.get(name, [])
            if (tensor.data_type == FLOAT and users and name not in self.into_subgraphs
                    and all(u.name in self.chosen for u in users)):
                tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), name))
                self.half.add(name)

    def _input_for(self, node: onnx.NodeProto, name: str) -> str:
        if not name or not self._is_float(name) and name not in self.half or node.op_type in ANY_TYPE:
            return name
        want_half = node.name in self.chosen
        if want_half == (name in self.half):
            return name
        return self._cast(name, HALF if want_half else FLOAT)

    def run(self) -> int:
        self._halve_weights()
        outputs = {o.name for o in self.model.graph.output}
        tail: List[onnx.NodeProto] = []
        for node in self.model.graph.node:
            node.input[:] = [self._input_for(node, name) for name in node.input]
            self.nodes.append(node)
            if node.name not in self.chosen:
                continue
            for i, name in enumerate(node.output):
                if not self._is_float(name):
                    continue
                if name in outputs:  # graph outputs stay float32: the node writes a half copy, a Cast restores
                    node.output[i] = f"{name}/fp16"
                    self._retarget(name, node.output[i])
                    tail.append(helper.make_node("Cast", [node.output[i]], [name], name=f"{name}/to_fp32", to=FLOAT))
                    self.casts += 1
                    self.half.add(node.output[i])
                else:
                    self.half.add(name)
        del self.model.graph.node[:]
        self.model.graph.node.extend(self.nodes + tail)
        return self.casts

    def _retarget(self, old: str, new: str) -> None:
        """Readers of a graph output now made by a float16 node read its half copy."""
        self.types[new] = FLOAT
        for reader in self.readers.get(old, []):
            for i, name in enumerate(reader.input):
                if name == old:
                    reader.input[i] = new


def _retype(model: onnx.ModelProto) -> onnx.ModelProto:
    """Value infos re-derived for the new types (float32 outputs are pinned by the graph's declarations)."""
    del model.graph.value_info[:]
    try:
        return shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - the types are right without value infos; onnxruntime infers its own
        return model


def convert_fp16(model: onnx.ModelProto, ignore_types: Iterable[str] = (), ignore_names: Iterable[str] = (),
                 overflow: Optional[Dict[str, float]] = None,
                 imprecise: Optional[Dict[str, float]] = None, sensitive: Optional[Dict[str, float]] = None) -> tuple:
    """(the float16 model, ``Fp16Info``) from a prepared (shape-inferred, uniquely named) float32 model.
    The biases are corrected afterwards, on data (``bias_fix.py``)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    info = Fp16Info(overflow=dict(overflow or {}), imprecise=dict(imprecise or {}), sensitive=dict(sensitive or {}))
    chosen = choose_nodes(out, ignore_types, ignore_names, info.overflow, info, info.imprecise, info.sensitive)
    info.fp16_nodes = [n.name for n in out.graph.node if n.name in chosen]
    info.casts = _Rewriter(out, chosen).run()
    return _retype(out), info
