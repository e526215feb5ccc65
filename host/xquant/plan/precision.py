"""Precision levels: which op types stay float at each ``precision_level``.

0  everything the rules know is INT8.
1  partial INT8: numerically fragile ops stay float (FRAGILE).
2  more float: level 1 plus parameter-free elementwise arithmetic (Add/Sub/Mul/Div/Sum whose operands
   are all activations) and the saturating activations in LEVEL2_FLOAT.
``ignore_op_types`` / ``ignore_op_names`` keep ops float at every level.
"""
from __future__ import annotations

from typing import FrozenSet

import onnx

from .graph import GraphIndex

FRAGILE: FrozenSet[str] = frozenset({
    "Softmax", "LayerNormalization", "InstanceNormalization", "Exp", "Log", "Sqrt", "Pow", "Reciprocal",
    "Div", "Erf", "Gelu",
})
PARAMETER_FREE_ARITH: FrozenSet[str] = frozenset({"Add", "Sub", "Mul", "Div", "Sum"})
LEVEL2_FLOAT: FrozenSet[str] = frozenset({"Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softmax"})


def keeps_float(node: onnx.NodeProto, index: GraphIndex, level: int) -> bool:
    """True when ``precision_level`` ``level`` keeps ``node`` in float."""
    if level >= 1 and node.op_type in FRAGILE:
        return True
    if level >= 2:
        if node.op_type in LEVEL2_FLOAT:
            return True
        if node.op_type in PARAMETER_FREE_ARITH and all(index.is_activation(i) for i in node.input if i):
            return True
    return False
