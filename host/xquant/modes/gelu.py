"""The erf form of GELU, x * 0.5 * (1 + erf(x / sqrt(2))), as exporters write it (Div or Mul, Erf, Add, Mul, Mul:
five ops), fused into one com.microsoft Gelu for FP16.

In float16 each of the five ops rounds its output; one Gelu rounds once (onnxruntime computes its Gelu in
float32 inside, on x86 and on the boards' 1.21 alike). The vendor's xslim does the same fusion with the
opset-20 Gelu, which needs opset 20 or newer (xslim writes 24, which the boards' onnxruntime 1.21 cannot load);
com.microsoft Gelu loads in every onnxruntime since 1.x with contrib ops, whatever the model's opset."""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"
SQRT2 = float(np.sqrt(2.0))


def _scalar(name: str, consts: Dict[str, np.ndarray]) -> Optional[float]:
    value = consts.get(name)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _near(value: Optional[float], want: float, rtol: float = 1e-3) -> bool:
    return value is not None and abs(value - want) <= rtol * abs(want)


def _other(node: onnx.NodeProto, name: str) -> str:
    return node.input[1] if node.input[0] == name else node.input[0]


class _Finder:
    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.readers: Dict[str, List[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.producer = {o: n for n in graph.node for o in n.output}
        self.outputs = {o.name for o in graph.output}

    def only_reader(self, name: str, op: str) -> Optional[onnx.NodeProto]:
        readers = self.readers.get(name, [])
        if len(readers) != 1 or readers[0].op_type != op or name in self.outputs:
            return None
        return readers[0]

    def scaled_input(self, erf: onnx.NodeProto) -> Optional[tuple]:
        """(x, the Div or Mul node) when erf reads x / sqrt(2) or x * (1 / sqrt(2))."""
        scale = self.producer.get(erf.input[0])
        if scale is None or scale.op_type not in ("Div", "Mul") or erf.input[0] in self.outputs:
            return None
        if len(self.readers.get(erf.input[0], [])) != 1:
            return None
        if scale.op_type == "Div":
            ok = _near(_scalar(scale.input[1], self.consts), SQRT2)
            return (scale.input[0], scale) if ok else None
        for i in (0, 1):
            if _near(_scalar(scale.input[i], self.consts), 1.0 / SQRT2):
                return scale.input[1 - i], scale
        return None

    def match(self, erf: onnx.NodeProto) -> Optional[tuple]:
        """(x, [the five nodes], the output) of a GELU around ``erf``, else None."""
        found = self.scaled_input(erf)
        if found is None:
            return None
        x, scale = found
        add = self.only_reader(erf.output[0], "Add")
        if add is None or not _near(_scalar(_other(add, erf.output[0]), self.consts), 1.0):
            return None
        mul = self.only_reader(add.output[0], "Mul")
        if mul is None:
            return None
        other = _other(mul, add.output[0])
        if other == x:  # x * (1 + erf) * 0.5
            half = self.only_reader(mul.output[0], "Mul")
            if half is None or not _near(_scalar(_other(half, mul.output[0]), self.consts), 0.5):
                return None
            return x, [scale, erf, add, mul, half], half.output[0]
        first = self.producer.get(other)  # (x * 0.5) * (1 + erf)
        if (first is None or first.op_type != "Mul" or x not in first.input
                or not _near(_scalar(_other(first, x), self.consts), 0.5)
                or len(self.readers.get(other, [])) != 1):
            return None
        return x, [scale, erf, add, first, mul], mul.output[0]


def fuse_gelu(model: onnx.ModelProto, ignore_types: Iterable[str] = (),
              ignore_names: Iterable[str] = ()) -> List[str]:
    """Replace each erf GELU of ``model``'s main graph with a com.microsoft Gelu (in place), except those with an
    op in ``ignore_types`` / ``ignore_names``; the new nodes' names (each named after the GELU's last op)."""
    ignore_types, ignore_names = set(ignore_types), set(ignore_names)
    finder = _Finder(model)
    drop, made = set(), {}
    for node in model.graph.node:
        if node.op_type != "Erf" or node.domain not in ("", "ai.onnx"):
            continue
        found = finder.match(node)
        if found is None or any(id(n) in drop or n.name in ignore_names or n.op_type in ignore_types
                                for n in found[1]):
            continue
        x, nodes, out = found
        drop.update(id(n) for n in nodes)
        made[id(nodes[-1])] = helper.make_node("Gelu", [x], [out], name=nodes[-1].name, domain=MS_DOMAIN)
    if not made:
        return []
    kept = [made.get(id(n), n) for n in model.graph.node if id(n) not in drop or id(n) in made]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return [n.name for n in made.values()]
