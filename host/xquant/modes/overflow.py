"""Which ops overflow float16: the largest magnitude of every float tensor on calibration data, and of
every weight; a node that reads or writes a tensor at ``OVERFLOW_LIMIT`` or beyond stays float32."""
from __future__ import annotations

import logging
from typing import Dict, Iterable

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..calibration.session import make_session, with_outputs

log = logging.getLogger(__name__)
FP16_MAX = 65504.0
OVERFLOW_LIMIT = FP16_MAX / 4  # head-room for inputs larger than the calibration data's


def _float_tensors(model: onnx.ModelProto) -> list:
    known = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.output)}
    return [o for n in model.graph.node for o in n.output if o and known.get(o) == TensorProto.FLOAT]


def tensor_peaks(model: onnx.ModelProto, batches: Iterable[Dict[str, np.ndarray]],
                 device: str = "cpu") -> Dict[str, float]:
    """Largest finite |x| of every float tensor (intermediate, graph input, weight) over ``batches``."""
    peaks: Dict[str, float] = {}

    def note(name: str, value: np.ndarray) -> None:
        if value.size and np.issubdtype(value.dtype, np.floating):
            finite = np.abs(value[np.isfinite(value)])
            if finite.size:
                peaks[name] = max(peaks.get(name, 0.0), float(finite.max()))

    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            note(init.name, numpy_helper.to_array(init))
    batches = list(batches)
    if not batches:
        return peaks
    names = _float_tensors(model)
    session = make_session(with_outputs(model, names), device, "FP32 model (float16 overflow check)")
    wanted = [o.name for o in session.get_outputs()]
    for batch in batches:
        for name, value in batch.items():
            note(name, np.asarray(value))
        for name, value in zip(wanted, session.run(wanted, batch)):
            note(name, np.asarray(value))
    return peaks


def overflowing_nodes(model: onnx.ModelProto, peaks: Dict[str, float],
                      limit: float = OVERFLOW_LIMIT) -> Dict[str, float]:
    """Node name -> the largest magnitude it reads or writes, for nodes at ``limit`` or beyond."""
    found: Dict[str, float] = {}
    for node in model.graph.node:
        peak = max((peaks.get(t, 0.0) for t in list(node.input) + list(node.output) if t), default=0.0)
        if peak >= limit:
            found[node.name] = peak
    if found:
        log.warning("%d op(s) overflow float16 and stay float32: %s", len(found),
                    ", ".join(f"{name} (|x| {peak:.4g})" for name, peak in list(found.items())[:8])
                    + (", ..." if len(found) > 8 else ""))
    return found
