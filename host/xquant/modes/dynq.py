"""precision_level 3 / --dynq: dynamic quantization of MatMul, LSTM and Attention.

Weights are stored in INT8 (symmetric, per output channel); activations are quantized at run time from
their own range (DynamicQuantizeLinear -> MatMulInteger, DynamicQuantizeLSTM), so no calibration data is
needed. Built on onnxruntime's quantizer (``onnxruntime.quantization.quantize_dynamic``), restricted to
MatMuls whose second input is a weight (activation x activation MatMuls, e.g. attention scores, stay float),
minus ``ignore_op_types`` and ``ignore_op_names``."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections import Counter
from typing import Iterable, List, Tuple

import onnx

log = logging.getLogger(__name__)
DYNQ_OPS = ("MatMul", "LSTM", "Attention")
QUANTIZED_OUTPUT_OPS = ("MatMulInteger", "DynamicQuantizeLSTM", "QAttention", "DynamicQuantizeMatMul")


def op_types(ignore_types: Iterable[str]) -> List[str]:
    ignored = set(ignore_types)
    return [op for op in DYNQ_OPS if op not in ignored]


@contextlib.contextmanager
def _quiet_root():
    """onnxruntime's quantizer logs its notes on the root logger: keep them out of the user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_dynamic(model: onnx.ModelProto, ignore_types: Iterable[str] = (),
                     ignore_names: Iterable[str] = ()) -> Tuple[onnx.ModelProto, dict]:
    """(the dynamically quantized model, {"quantized": {op: count}, "candidates": n}) from a prepared model."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    ops = op_types(ignore_types)
    excluded = [n.name for n in model.graph.node if n.name in set(ignore_names)]
    weights = {t.name for t in model.graph.initializer}
    candidates = sum(1 for n in model.graph.node if n.op_type in ops and n.name not in excluded
                     and (n.op_type != "MatMul" or n.input[1] in weights))
    if not ops or not candidates:
        log.warning("no MatMul, LSTM or Attention op left to quantize dynamically; the model is written as "
                    "simplified float32")
        return model, {"quantized": {}, "candidates": 0}
    with tempfile.TemporaryDirectory(prefix="xquant-dynq-") as tmp, _quiet_root():
        out = os.path.join(tmp, "dynq.onnx")
        with contextlib.redirect_stdout(io.StringIO()):
            ort_quantize_dynamic(model, out, op_types_to_quantize=ops, per_channel=True, reduce_range=False,
                                 weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                                 extra_options={"WeightSymmetric": True, "MatMulConstBOnly": True})
        quantized = onnx.load(out)
    made = Counter(n.op_type for n in quantized.graph.node if n.op_type in QUANTIZED_OUTPUT_OPS)
    return quantized, {"quantized": dict(made), "candidates": candidates}
