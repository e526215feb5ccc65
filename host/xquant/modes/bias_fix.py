"""Bias correction for float16 weights: the part of a Conv's weight rounding error that its input's mean
carries is taken out through the bias.

Rounding a Conv's weights to float16 changes every output by dW * x. That error is the same at every position
(it is structured, unlike the rounding of activations, which later Convs and pools average away), so it builds
up: on the PaddleOCR models, float16 weights alone (computed in float32) cost what the whole FP16 conversion
costs. Its mean part, dW * mean(x) per output channel, is known from the calibration data, and a bias that
subtracts it removes it (mean(x) is large where x follows a Relu). Measured with float16 Conv weights on
ppocr_v4_det: 44.2 dB -> 50.4 dB. Opt-in (``quantization_parameters.fp16_bias_correction``): on the whole FP16
conversion, held out, it gains 2.4-4 dB on three PaddleOCR models and loses 0.5 dB on ppocr_v6_det."""
from __future__ import annotations

from typing import Dict, Iterable, List, Set

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .overflow import FP16_MAX


def conv_inputs(model: onnx.ModelProto) -> Set[str]:
    """The inputs of the Convs with a float weight: the tensors whose channel means the correction needs."""
    weights = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    return {n.input[0] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1
            and n.input[1] in weights}


def _shift(weight: np.ndarray, group: int, mean: np.ndarray) -> np.ndarray:
    """Per output channel: the rounding error of ``weight`` (float16) times the input's channel mean."""
    out, per_group = weight.shape[:2]
    error = (weight.astype(np.float16).astype(np.float64) - weight).reshape(group, out // group, per_group, -1)
    return np.einsum("goi,gi->go", error.sum(-1), mean.reshape(group, per_group)).reshape(out)


def correct_biases(model: onnx.ModelProto, chosen: Iterable[str], means: Dict[str, np.ndarray]) -> List[str]:
    """In place, for the float16 Convs (``chosen``) whose float weight only float16 nodes read: bias -= the
    weight's float16 rounding error times the input's channel mean. The names of the Convs corrected."""
    chosen = set(chosen)
    inits = {t.name: t for t in model.graph.initializer}
    readers: Dict[str, List[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.name)
    done: List[str] = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name not in chosen or len(node.input) < 2 or node.input[0] not in means:
            continue
        weight = inits.get(node.input[1])
        bias_name = node.input[2] if len(node.input) > 2 else ""
        bias = inits.get(bias_name) if bias_name else None
        if (weight is None or weight.data_type != TensorProto.FLOAT or set(readers[weight.name]) - chosen
                or bias_name and (bias is None or readers[bias_name] != [node.name])):
            continue
        w = numpy_helper.to_array(weight).astype(np.float64)
        group = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
        mean = np.asarray(means[node.input[0]], np.float64).reshape(-1)
        if w.ndim < 3 or mean.size != w.shape[1] * group or np.abs(w).max() >= FP16_MAX:
            continue
        shift = _shift(w, group, mean)
        if bias is None:
            bias_name = f"{node.name}/bias"
            model.graph.initializer.append(numpy_helper.from_array(-shift.astype(np.float32), bias_name))
            node.input.extend([""] * (3 - len(node.input)))
            node.input[2] = bias_name
        else:
            b = numpy_helper.to_array(bias).astype(np.float64)
            bias.CopyFrom(numpy_helper.from_array((b - shift).astype(np.float32), bias_name))
        done.append(node.name)
    return done
