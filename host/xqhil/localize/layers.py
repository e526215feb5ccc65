"""Per-layer errors at every boundary: quantization error (PC INT8 vs PC FP32) apart from runtime error
(chip INT8 vs PC INT8), on the localisation's samples, with the top offenders of each.

A boundary's INT8 value is compared in the dequantized domain: (q - zero point) against the FP32 model's
tensor of the same name divided by the scale (SNR does not depend on the scale, so integer values suffice).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from xquant.graph_cut import Boundary, dequantized

from ..compare.fidelity import tensor_metrics
from .runs import Outputs

TOP = 5


def _quant_params(model: onnx.ModelProto) -> Dict[str, tuple]:
    """Q output -> (source float tensor, scale, zero point), per-tensor parameters only."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    params = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[1] not in inits:
            continue
        scale = inits[node.input[1]]
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        if scale.size == 1 and (zp is None or zp.size == 1):
            params[node.output[0]] = (node.input[0], float(scale.reshape(-1)[0]),
                                      0 if zp is None else int(zp.reshape(-1)[0]))
    return params


def _snr(reference: np.ndarray, test: np.ndarray) -> Optional[float]:
    if reference.size != test.size:
        return None
    return tensor_metrics(reference.reshape(-1), test.reshape(-1))["snr_db"]


def _fp32_name(model: onnx.ModelProto, tensor: str, source: str, present: set) -> Optional[str]:
    """The FP32 model's tensor for a boundary: the one it quantizes, else (a renamed output such as
    ``logits_prequant``) the FP32 output its DequantizeLinear stands for."""
    if source in present:
        return source
    dq = dequantized(model, tensor)
    return dq if dq in present else None


def fp32_sources(model: onnx.ModelProto, bounds: Sequence[Boundary], fp32: onnx.ModelProto) -> Dict[str, str]:
    """Boundary -> the FP32 tensor it quantizes (for those the FP32 model has)."""
    present = {o for n in fp32.graph.node for o in n.output} | {i.name for i in fp32.graph.input}
    params = _quant_params(model)
    found = {b.tensor: _fp32_name(model, b.tensor, params[b.tensor][0], present) for b in bounds
             if b.tensor in params}
    return {k: v for k, v in found.items() if v}


def layer_errors(model: onnx.ModelProto, bounds: Sequence[Boundary], pc: Outputs, chip: Optional[Outputs],
                 fp32: Optional[Outputs], sources: Dict[str, str]) -> Dict[str, object]:
    params, rows = _quant_params(model), []
    for b in bounds:
        if b.tensor not in params or b.tensor not in pc:
            continue
        _, scale, zp = params[b.tensor]
        source = sources.get(b.tensor)
        pc_int = pc[b.tensor].astype(np.float64) - zp
        runtime = _snr(pc_int, chip[b.tensor].astype(np.float64) - zp) if chip and b.tensor in chip else None
        row = {"tensor": b.tensor, "op": b.op, "node": b.node, "runtime_snr_db": runtime, "quant_snr_db": None}
        if fp32 is not None and source in fp32:
            row["quant_snr_db"] = _snr(fp32[source].astype(np.float64) / scale, pc_int)
        rows.append(row)

    def worst(key):
        ranked = sorted((r for r in rows if r[key] is not None), key=lambda r: r[key])
        return [r["tensor"] for r in ranked[:TOP]]

    return {"rows": rows, "worst_quantization": worst("quant_snr_db"), "worst_runtime": worst("runtime_snr_db")}
