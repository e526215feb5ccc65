"""Get an FP32 model ready to quantize: refuse quantized models, opset >= 13, unique node names,
optional simplification (onnxslim, a maintained simplifier) and shape inference."""
from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter

import onnx
from onnx import shape_inference, version_converter

from .errors import GraphError, ModelError

log = logging.getLogger(__name__)
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear", "QLinearAdd", "QGemm"}
MIN_OPSET, MAX_OPSET = 11, 21
QDQ_OPSET = 13  # per-axis DequantizeLinear


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 0


def refuse_quantized(model: onnx.ModelProto) -> None:
    found = Counter(n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS)
    if found:
        ops = ", ".join(f"{op} x{count}" for op, count in found.most_common())
        raise GraphError(f"The model is already quantized (it contains {ops}).",
                         "Give xquant the FP32 model it came from.")


def upgrade_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise ModelError(f"Model opset {opset} is not supported (supported: {MIN_OPSET} to {MAX_OPSET}).",
                         "Re-export the model with opset 13 or newer.")
    if opset > MAX_OPSET:
        log.warning("model opset %d is newer than the tested range %d-%d", opset, MIN_OPSET, MAX_OPSET)
    if opset >= QDQ_OPSET:
        return model
    log.info("converting the model from opset %d to %d for per-channel QDQ", opset, QDQ_OPSET)
    try:
        return version_converter.convert_version(model, QDQ_OPSET)
    except Exception as exc:
        raise ModelError(f"Cannot convert the model from opset {opset} to {QDQ_OPSET}: {exc}.",
                         "Re-export the model with opset 13 or newer.") from exc


def name_free_dims(model: onnx.ModelProto) -> onnx.ModelProto:
    """Input and output sizes stored as ``dim_value`` -1 or 0 (Paddle2ONNX's free batch) become symbolic
    (``dim_param``), as onnxruntime and shape inference expect free sizes to be (in a copy)."""
    values = list(model.graph.input) + list(model.graph.output)
    if not any(d.HasField("dim_value") and d.dim_value <= 0 for v in values for d in v.type.tensor_type.shape.dim):
        return model
    model = _copy(model)
    for value in list(model.graph.input) + list(model.graph.output):
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value <= 0:
                dim.Clear()
                dim.dim_param = "batch" if i == 0 else f"{value.name}_dim{i}"
    return model


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def name_nodes(model: onnx.ModelProto) -> None:
    used = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in used:
            name = f"{name}_{i}"
        node.name = name
        used.add(name)


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            slim = onnxslim.slim(model)
    except Exception as exc:  # a simplifier failure must not stop quantization
        log.warning("onnxslim could not simplify the model (%s); quantizing it as it is", exc)
        return model
    if slim is None or [o.name for o in slim.graph.output] != [o.name for o in model.graph.output]:
        log.warning("onnxslim changed the model's outputs; quantizing the model as it is")
        return model
    return slim


def prepare_model(model: onnx.ModelProto, skip_simplify: bool) -> onnx.ModelProto:
    refuse_quantized(model)
    model = name_free_dims(model)
    model = upgrade_opset(model)
    if not skip_simplify:
        model = simplify(model)
    try:
        model = shape_inference.infer_shapes(model)
    except Exception as exc:
        log.warning("shape inference failed (%s); quantizing tensors whose types are known", exc)
    name_nodes(model)
    return model
