"""Get an FP32 model ready to quantize: refuse quantized models, free dims made symbolic, opset >= 13
(older ones converted and checked, ``opset.py``), unique node names,
optional simplification (onnxslim, a maintained simplifier) and shape inference."""
from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from typing import Optional

import numpy as np
import onnx
from onnx import shape_inference

from .errors import GraphError, ModelError
from .model_io import graph_inputs, run_batch
from .opset import NEWEST_OPSET, OLDEST_OPSET, SampleFn, upgrade

log = logging.getLogger(__name__)
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear", "QLinearAdd", "QGemm"}
MIN_OPSET, MAX_OPSET = OLDEST_OPSET, NEWEST_OPSET
QDQ_OPSET = 13  # per-axis DequantizeLinear
PROTO_LIMIT = 2**31 - 2**26  # serialized models above ~2 GiB cannot be handed to onnxruntime from memory


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


def refuse_huge(model: onnx.ModelProto) -> None:
    size = model.ByteSize()
    if size >= PROTO_LIMIT:
        raise ModelError(f"The model holds {size / 2**30:.1f} GiB of weights; xquant runs models in memory, which "
                         "protobuf limits to 2 GiB.", "Quantize a model below 2 GiB.")


def upgrade_opset(model: onnx.ModelProto, sample: Optional[SampleFn] = None, device: str = "cpu") -> onnx.ModelProto:
    """Opsets 7 to 12 are converted to 13 (per-axis DequantizeLinear needs it) and checked on a
    calibration sample (``opset.upgrade``); 13 to 21 are kept."""
    opset = default_opset(model)
    if opset > MAX_OPSET:
        log.warning("model opset %d is newer than the tested range %d-%d", opset, MIN_OPSET, MAX_OPSET)
    if opset >= QDQ_OPSET:
        return model
    return upgrade(model, opset, QDQ_OPSET, sample, device)


def modern_ir(model: onnx.ModelProto) -> onnx.ModelProto:
    """IR version 3 models (opset 7 era) list every initializer as a graph input and demand that of every
    initializer; the IR version the opset needs (at least 4) drops that rule, and the initializers stop
    posing as inputs (in a copy)."""
    default = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    try:
        need = max(4, onnx.helper.find_min_ir_version_for(default))
    except ValueError:  # an opset newer than this onnx knows: keep the model's own IR version
        return model
    if model.ir_version >= need:
        return model
    model = _copy(model)
    model.ir_version = need
    inits = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return model


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


def simplify(model: onnx.ModelProto, sample: Optional[SampleFn] = None, device: str = "cpu") -> onnx.ModelProto:
    """onnxslim's model, unless it fails or (checked on ``sample`` when given) computes other outputs.

    onnxslim runs on a copy whose graph outputs declare no shape: it bakes a Reshape's output shape into
    a constant when it believes it known, and exporters write output shapes from the trace that can be
    wrong (ddddocr's time-major [T, 1, C] output declared [1, seqlen] became a [1, -1] Reshape). The
    declarations come back afterwards: the quantized model's interface stays the original's."""
    import onnxslim

    bare = _copy(model)
    for value in bare.graph.output:
        value.type.tensor_type.ClearField("shape")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            slim = onnxslim.slim(bare)
    except Exception as exc:  # a simplifier failure must not stop quantization
        log.warning("onnxslim could not simplify the model (%s); quantizing it as it is", exc)
        return model
    if slim is None or [o.name for o in slim.graph.output] != [o.name for o in model.graph.output]:
        log.warning("onnxslim changed the model's outputs; quantizing the model as it is")
        return model
    changed = _changed_output(model, slim, sample, device) if sample is not None else None
    if changed:
        log.warning("onnxslim changed what the model computes (%s, checked on a calibration sample); quantizing "
                    "the model as it is", changed)
        return model
    del slim.graph.output[:]
    slim.graph.output.extend(model.graph.output)
    return slim


def _changed_output(model: onnx.ModelProto, slim: onnx.ModelProto, sample: SampleFn, device: str) -> Optional[str]:
    """The first output whose shape or values the simplified model changed (e.g. onnxslim folding a Reshape
    after a wrong declared output shape), or None; a model that does not run here is not judged."""
    from .calibration.session import make_session
    from .opset import _differs

    try:
        feeds = sample(model, 1)
        ref = make_session(model, device, "FP32 model").run(None, feeds, quiet=True)
        got = make_session(slim, device, "simplified model").run(None, feeds, quiet=True)
    except Exception:  # noqa: BLE001 - calibration reports a model that cannot run
        return None
    for value, a, b in zip(model.graph.output, ref, got):
        if _differs(np.asarray(a), np.asarray(b)):
            return f"output '{value.name}' {list(np.shape(a))} became {list(np.shape(b))}"
    return None


def convert_opset(model: onnx.ModelProto, target: Optional[int], sample: Optional[SampleFn] = None,
                  device: str = "cpu") -> onnx.ModelProto:
    """The default ai.onnx opset converted to ``target`` (model_parameters.opset / --opset), up or down,
    checked on a sample like the QDQ upgrade; None or the model's own opset: unchanged."""
    opset = default_opset(model)
    if target is None or opset == target:
        return model
    hint = f"Pick another target opset (model_parameters.opset / --opset) or re-export the model with opset {target}."
    return upgrade(model, opset, target, sample, device, hint=hint)


def prepare_model(model: onnx.ModelProto, skip_simplify: bool, sample: Optional[SampleFn] = None,
                  device: str = "cpu", opset: Optional[int] = None, qdq: bool = True) -> onnx.ModelProto:
    """``sample(model)``: a calibration batch for ``model``, to check an opset conversion on. ``opset``: the
    target opset; ``qdq``: the model becomes a QDQ model (opset 13 at least), else its opset is kept."""
    refuse_quantized(model)
    refuse_huge(model)
    model = name_free_dims(model)
    model = convert_opset(modern_ir(model), opset, sample, device)
    if qdq:
        model = upgrade_opset(model, sample, device)
    elif 0 < default_opset(model) < OLDEST_OPSET:
        upgrade(model, default_opset(model), OLDEST_OPSET, None, device)  # raises: older than onnxruntime runs
    model = modern_ir(model)
    if not skip_simplify:
        model = simplify(model, sample, device)
    try:
        model = shape_inference.infer_shapes(model)
    except Exception as exc:
        log.warning("shape inference failed (%s); quantizing tensors whose types are known", exc)
    name_nodes(model)
    return pin_batch_if_hard_coded(model, sample, device)


def pin_batch_if_hard_coded(model: onnx.ModelProto, sample: Optional[SampleFn], device: str) -> onnx.ModelProto:
    """A model that declares a free batch but only runs with one sample (a Reshape or a constant of the
    export hard-codes batch 1) gets its batch fixed to 1, with a notice, so every stage feeds one sample."""
    if sample is None or run_batch(model, 2) != 2:
        return model
    feeds = sample(model, 2)
    if int(next(iter(feeds.values())).shape[0]) < 2:
        return model
    from .calibration.session import make_session

    sess = make_session(model, device, "FP32 model")
    try:
        sess.run(None, feeds, quiet=True)
        return model
    except Exception as exc:
        try:
            sess.run(None, {k: v[:1] for k, v in feeds.items()}, quiet=True)
        except Exception:
            return model  # it does not run at all: calibration reports that
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.warning("the model declares a free batch but fails on 2 samples and runs on 1 (%s); quantizing it with "
                "batch 1", reason[:200])
    axes = {gi.name: gi.batch_axis for gi in graph_inputs(model)}
    model = _copy(model)
    for value in model.graph.input:
        if axes.get(value.name) is not None:
            dim = value.type.tensor_type.shape.dim[axes[value.name]]  # type: ignore[index]
            dim.Clear()
            dim.dim_value = 1
    return model
