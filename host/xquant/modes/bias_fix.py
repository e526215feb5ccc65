"""Bias correction of a float16 model, measured layer by layer against FP32 on the calibration data.

Rounding a model to float16 leaves errors that are the same at every position: a weight's rounding error dW
gives dW * x at every output, a bias rounds once for all of them. Unlike the rounding of activations, which
later Convs and pools average away, such errors build up through the layers: on the PaddleOCR models float16
weights alone (computed in float32) cost what the whole FP16 conversion costs, and rounding a single
per-channel constant of ppocr_v6_rec (the bias Add after a Conv) costs it 39.9 dB on its own.

Their mean part per output channel is what the bias can take out. Going through the float16 Convs and Gemms
in graph order, each layer's output on the calibration samples is compared with FP32's; a channel whose mean
error is systematic (``finetune.bias.shift_of``: beyond SIGNIFICANCE standard errors) has it subtracted from
its float16 bias, and the next layer is measured with this one corrected, so upstream errors are corrected
where they arise and never twice (the INT8 fine-tuning's rule and segment runner, ``finetune/bias.py``:
every node runs once per sample, the layer's output shifted in place for the segments after it). Figures
held out in docs/quantizer.md. (The first version corrected only dW * mean(x), computed from the weights:
+2.4 to +4 dB on three PaddleOCR models and -0.5 dB on ppocr_v6_det, so it was opt-in.) On by default with
calibration data; ``quantization_parameters.fp16_bias_correction: false`` turns it off."""
from __future__ import annotations

import logging
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..calibration.stats import channel_means
from ..finetune.bias import shift_of
from ..finetune.layers import used_once, with_initializers
from ..finetune.samples import stack
from ..finetune.segments import SegmentRunner, supported
from ..plan.graph import GraphIndex

log = logging.getLogger(__name__)
HALF = TensorProto.FLOAT16
RENAMED = "/fp16"  # fp16.py: a graph output made by a float16 node is renamed so, a Cast makes the original


def _channels(node: onnx.NodeProto, weight: onnx.TensorProto) -> int:
    """Output channels of a Conv (weight [C_out, ...]) or Gemm (B [K, N], or [N, K] with transB)."""
    if node.op_type == "Conv":
        return int(weight.dims[0])
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return int(weight.dims[0] if trans_b else weight.dims[1])


def biased_layers(model: onnx.ModelProto, fp16_nodes: Iterable[str]) -> List[Tuple[onnx.NodeProto, str]]:
    """(node, bias initializer) of the float16 Convs and Gemms whose float16 weight and bias (a Conv without
    one gets a zero bias) are theirs alone, in graph order."""
    chosen, index = set(fp16_nodes), GraphIndex(model)
    found = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or node.name not in chosen or len(node.input) < 2:
            continue
        weight = index.initializers.get(node.input[1])
        if weight is None or weight.data_type != HALF or not used_once(index, weight.name) or len(weight.dims) < 2:
            continue
        if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
            continue
        channels = _channels(node, weight)
        bias = node.input[2] if len(node.input) > 2 else ""
        if not bias and node.op_type == "Conv":  # a new bias of its own
            bias = f"{node.name}/fp16_bias"
            model.graph.initializer.append(numpy_helper.from_array(np.zeros(channels, np.float16), bias))
            node.input.extend([""] * (3 - len(node.input)))
            node.input[2] = bias
            found.append((node, bias))
            continue
        init = index.initializers.get(bias)
        if init is None or init.data_type != HALF or not used_once(index, bias) or list(init.dims) != [channels]:
            continue
        found.append((node, bias))
    return found


def _fp32_name(name: str) -> str:
    """The FP32 model's name of a float16 node's output (fp16.py renames a graph output it makes)."""
    return name[: -len(RENAMED)] if name.endswith(RENAMED) else name


def layer_outputs(model: onnx.ModelProto) -> List[str]:
    """The outputs of the float model's Convs and Gemms: the FP32 reference the correction needs (taken in
    the range check's pass over the same samples, ``overflow.tensor_stats``)."""
    return [n.output[0] for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.output]


def correct_biases(model: onnx.ModelProto, fp16_nodes: Iterable[str], batches: Sequence[Dict[str, np.ndarray]],
                   ref: Dict[str, np.ndarray], batch: int, device: str) -> Tuple[onnx.ModelProto, List[str]]:
    """(copy of the float16 ``model`` with corrected biases, names of the layers whose bias changed).
    ``batches``: calibration feeds (the float16 model has the FP32 model's float32 inputs); ``ref``: FP32
    layer output -> [samples, channels] means on them (``layer_outputs``); ``batch``: the model's fixed batch
    size, 0 when it is free."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    layers = biased_layers(out, fp16_nodes)
    if not layers or not batches:
        return model, []
    if not supported(out):
        log.info("float16 bias correction skipped: the model has subgraphs or a batch axis other than 0")
        return model, []
    fit = stack(batches)
    names = [node.output[0] for node, _ in layers]
    runner = SegmentRunner(out, [[n] for n in names], fit, batch, device, "float16 model for bias correction")
    biases = {b for _, b in layers}
    values = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer if t.name in biases}
    updates, changed = {}, []
    for (node, bias), name in zip(layers, names):
        got, want = runner.step()[name], ref.get(_fp32_name(name))
        if got[0].ndim < 2 or got[0].shape[1] != values[bias].shape[0] or want is None:
            continue
        shift = shift_of(channel_means(got) - want)
        old = values[bias].astype(np.float64)
        new = (old - shift).astype(np.float16)
        applied = new.astype(np.float64) - old  # what float16 can hold of the shift
        if not np.any(applied):
            continue
        updates[bias] = new
        changed.append(node.name)
        for chunk in got:  # what the corrected layer gives, for the segments after it
            chunk += applied.astype(chunk.dtype).reshape((1, -1) + (1,) * (chunk.ndim - 2))
    return with_initializers(out, updates), changed
