"""Per-op quantization rules: which inputs carry data, which carry weights, and how outputs relate.

Rules only describe; the planner marks tensors and the QDQ writer is the only place that edits graphs.
Kinds:
  compute      inputs and output get their own scales (Conv, Add, Sigmoid, ...)
  passthrough  moves or selects data: output shares the input's scale (MaxPool, Reshape, ...)
  concat       all data inputs and the output share one scale (Concat; Max/Min, whose output is one of
               their inputs' values: one shared scale makes them exact in INT8)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class OpRule:
    kind: str
    data_inputs: Optional[Tuple[int, ...]] = (0,)  # None: every input
    weight_input: Optional[int] = None
    weight_axis: Optional[int] = None  # per-channel axis of the weight; None = per-tensor
    bias_input: Optional[int] = None
    fuses_activation: bool = False  # a sole Relu/Clip consumer is folded: no Q/DQ in between


_RULES: Dict[str, OpRule] = {
    "Conv": OpRule("compute", (0,), weight_input=1, weight_axis=0, bias_input=2, fuses_activation=True),
    "ConvTranspose": OpRule("compute", (0,), weight_input=1, weight_axis=1, bias_input=2, fuses_activation=True),
    "Gemm": OpRule("compute", (0,), weight_input=1, bias_input=2, fuses_activation=True),
    "MatMul": OpRule("compute", (0, 1), weight_input=1, fuses_activation=True),
    "Add": OpRule("compute", None, fuses_activation=True),
    "Sub": OpRule("compute", None),
    "Mul": OpRule("compute", None),
    "Div": OpRule("compute", (0,)),  # the divisor stays float: see Planner._only_divides
    "Sum": OpRule("compute", None),
    "AveragePool": OpRule("compute"),
    "GlobalAveragePool": OpRule("compute"),
    "ReduceMean": OpRule("compute"),
    "Relu": OpRule("compute"),
    "Clip": OpRule("compute"),
    "LeakyRelu": OpRule("compute"),
    "PRelu": OpRule("compute", (0,)),
    "Sigmoid": OpRule("compute"),
    "HardSigmoid": OpRule("compute"),
    "HardSwish": OpRule("compute"),
    "Softmax": OpRule("compute"),
    "Exp": OpRule("compute"),
    "Sqrt": OpRule("compute"),
    "Pow": OpRule("compute", (0,)),
    "Erf": OpRule("compute"),
    "Gelu": OpRule("compute"),
    "LayerNormalization": OpRule("compute", (0,)),
    "InstanceNormalization": OpRule("compute", (0,)),
    "BatchNormalization": OpRule("compute", (0,)),
    "Concat": OpRule("concat", None),
    "Max": OpRule("concat", None),
    "Min": OpRule("concat", None),
    "MaxPool": OpRule("passthrough"),
    "GlobalMaxPool": OpRule("passthrough"),
    "Reshape": OpRule("passthrough"),
    "Transpose": OpRule("passthrough"),
    "Flatten": OpRule("passthrough"),
    "Squeeze": OpRule("passthrough"),
    "Unsqueeze": OpRule("passthrough"),
    "Slice": OpRule("passthrough"),
    "Split": OpRule("passthrough"),
    "Gather": OpRule("passthrough"),
    "Resize": OpRule("passthrough"),
    "Upsample": OpRule("passthrough"),
    "Pad": OpRule("passthrough"),
    "DepthToSpace": OpRule("passthrough"),
    "SpaceToDepth": OpRule("passthrough"),
    "Expand": OpRule("passthrough"),
    "Tile": OpRule("passthrough"),
    "Identity": OpRule("passthrough"),
}

ACTIVATIONS_FUSED = ("Relu", "Clip")
# Not in _RULES, so float at every precision_level (the vendor's XQuant quantizes none of them either):
# Tanh (the chip gets it as a float op; an INT8 Tanh only added its output's rounding: zoo arabic_encoder
# -0.24 dB), Log and Reciprocal (their error is their input's relative error: see Planner._only_divides).


def rule_for(op_type: str) -> Optional[OpRule]:
    return _RULES.get(op_type)


def quantizable_op_types() -> Tuple[str, ...]:
    return tuple(sorted(_RULES))
