"""Old opsets: convert to the QDQ opset with onnx's version converter and check that the converted model
computes what the original computes on a calibration sample; refuse (naming the op) when it does not."""
from __future__ import annotations

import logging
import re
from typing import Callable, Dict, List, Optional

import numpy as np
import onnx
from onnx import helper, version_converter

from .calibration.session import make_session, with_outputs
from .errors import ModelError

log = logging.getLogger(__name__)
OLDEST_OPSET = 7  # the oldest opset onnxruntime runs (and the converter has adapters from)
NEWEST_OPSET = 21  # the newest opset tested (the boards' onnxruntime 1.21 runs it)
REEXPORT = "Re-export the model with opset 13 or newer."
RTOL, ATOL = 1e-3, 1e-4  # relative to the tensor's largest magnitude
SampleFn = Callable[[onnx.ModelProto, int], Dict[str, np.ndarray]]  # (model, samples) -> one batch


def _convert(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    return version_converter.convert_version(model, target)


def _failing_op(model: onnx.ModelProto, opset: int, target: int) -> str:
    """The first node the converter cannot convert on its own (as a one-node model), or ''."""
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        names = [i for i in node.input if i]
        graph = helper.make_graph(
            [node], "one", [helper.make_tensor_value_info(i, onnx.TensorProto.FLOAT, None) for i in names
                            if i not in inits],
            [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in node.output if o],
            [inits[i] for i in names if i in inits])
        single = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        single.ir_version = model.ir_version
        try:
            _convert(single, target)
        except Exception:
            return _describe(node)
    return ""


def _named_op(model: onnx.ModelProto, detail: str) -> str:
    """The first node of the op type the converter's message names ("No Previous Version of X"), or ''."""
    found = re.search(r"Version of (\w+)", detail)
    node = next((n for n in model.graph.node if found and n.op_type == found.group(1)), None)
    return _describe(node) if node is not None else ""


def _describe(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node '{node.name or node.output[0]}'"


def _differs(ref: np.ndarray, got: np.ndarray) -> bool:
    if ref.shape != got.shape:
        return True
    if not np.issubdtype(ref.dtype, np.floating):
        return not np.array_equal(ref, got)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return not np.allclose(got, ref, rtol=RTOL, atol=ATOL * max(scale, 1.0), equal_nan=True)


def _float_tensors(model: onnx.ModelProto) -> List[str]:
    return [o for n in model.graph.node for o in n.output if o]


def _first_difference(original: onnx.ModelProto, converted: onnx.ModelProto, feeds: Dict[str, np.ndarray],
                      device: str) -> Optional[str]:
    """The original node whose conversion changed the results (None when the outputs agree): the producer
    of the first tensor, in graph order, whose values differ, or, when that node reads a tensor the
    conversion renamed (a replaced op), the original node that made it."""
    converted_names = set(_float_tensors(converted))
    shared = [t for t in _float_tensors(original) if t in converted_names]
    outputs = [o.name for o in original.graph.output]
    names = list(dict.fromkeys(shared + outputs))
    ref = _run_all(original, names, feeds, device, "original model")
    got = _run_all(converted, names, feeds, device, "converted model")
    if not any(_differs(ref[o], got[o]) for o in outputs if o in ref and o in got):
        return None
    producer = {o: n for n in original.graph.node for o in n.output}
    bad = next((n for n in names if n in ref and n in got and _differs(ref[n], got[n])), outputs[0])
    node = producer.get(bad)
    while node is not None:
        renamed = [i for i in node.input if i in producer and i not in converted_names]
        if not renamed:
            return _describe(node)
        node = producer[renamed[0]]
    return "an op"


def _run_all(model: onnx.ModelProto, names: List[str], feeds: Dict[str, np.ndarray], device: str,
             what: str) -> Dict[str, np.ndarray]:
    exposed = with_outputs(model, [n for n in names if n not in {o.name for o in model.graph.output}])
    for value in exposed.graph.output:  # intermediate tensors may be of any type: let onnxruntime say
        if value.name in names and not value.type.tensor_type.HasField("shape"):
            value.type.Clear()
    sess = make_session(exposed, device, what)
    wanted = [o.name for o in sess.get_outputs() if o.name in names]
    return dict(zip(wanted, sess.run(wanted, feeds)))


def upgrade(model: onnx.ModelProto, opset: int, target: int, sample: Optional[SampleFn],
            device: str = "cpu", hint: str = REEXPORT) -> onnx.ModelProto:
    """``model`` converted from ``opset`` to ``target`` (either way), checked on ``sample(model)`` when given;
    ``hint``: what the user can do when it cannot be."""
    if opset < OLDEST_OPSET:
        raise ModelError(f"Model opset {opset} is older than opset {OLDEST_OPSET}, the oldest onnxruntime runs.",
                         "Re-export the model with opset 13 or newer.")
    # 11 and 12 convert as XQuant's did, quietly; a target opset the user asked for is no surprise either
    level = logging.WARNING if opset < 11 and hint == REEXPORT else logging.INFO
    log.log(level, "the model has opset %d; converting it to opset %d (onnx version converter) and checking the "
            "converted model against the original on a calibration sample", opset, target)
    try:
        converted = _convert(model, target)
    except Exception as exc:
        detail = str(exc).strip().splitlines()[-1].split("failed: ")[-1]
        op = _named_op(model, detail) or _failing_op(model, opset, target) or "an op"
        raise ModelError(f"Cannot convert the model from opset {opset} to {target}: {op} has no conversion "
                         f"({detail}).",
                         hint) from exc
    if sample is not None:
        feeds = sample(model, 1)
        found = _first_difference(model, converted, feeds, device)
        if found is not None:
            raise ModelError(f"Converting the model from opset {opset} to {target} changes its results: "
                             f"{found} computes differently after conversion (checked on a calibration sample).",
                             hint)
    return converted
