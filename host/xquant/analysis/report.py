"""The quantization analysis report as one dict (rendered by ``render.py``; nothing here writes files).

Contents: per quantized tensor the accumulated and isolated error (``tensors.py``), worst first with
XQuant's flags; a summary with the model's output fidelity, the layers most to blame and a measured
remedy (``remedy.py``); the statistics of the preprocessed calibration inputs (``inputs.py``)."""
from __future__ import annotations

import itertools
import logging
import time
from typing import Dict, List, Sequence

import numpy as np
import onnx

from ..calibration.ranges import QParams
from ..calibration.stats import TensorStats
from ..config.schema import XQuantConfig
from ..data.source import CalibrationData
from ..plan.graph import GraphIndex
from ..plan.planner import QuantPlan
from .inputs import input_statistics
from .judge import OutputJudge, worst_db
from .remedy import op_nodes, suggest
from .tensors import COSINE_FLAG, SNR_FLAG, flagged, tensor_errors

log = logging.getLogger(__name__)
HIST_BINS = 16
NUM_CULPRITS = 3
TARGET_SHARE = 0.1  # culprits whose isolated error is below this share of the worst one get no remedy
OWN_SHARE = 0.5  # isolated / accumulated error above this: the layer's own quantization is the cause
SAMPLES_PER_BATCH = 4  # analysis batch size when the model's batch dimension is free


def analysis_batches(model: onnx.ModelProto, cfg: XQuantConfig, data: CalibrationData) -> List[Dict[str, np.ndarray]]:
    """The first ``analysis_batches`` batches of calibration data (fixed batch models: their batch size)."""
    return list(itertools.islice(data.model_batches(model, SAMPLES_PER_BATCH), cfg.quantization.analysis_batches))


def small_histogram(stats: TensorStats, bins: int = HIST_BINS) -> dict:
    """The calibration histogram of a tensor re-binned to ``bins`` over its observed [min, max]."""
    mask = stats.hist > 0
    lo, hi = float(stats.min), float(stats.max)
    counts, _ = np.histogram(stats.centers()[mask], bins=bins, range=(lo, hi if hi > lo else lo + 1e-6),
                             weights=stats.hist[mask])
    return {"range": [lo, hi], "counts": counts.astype(np.int64).tolist()}


def _op_label(index: GraphIndex, plan: QuantPlan, tensor: str) -> Dict[str, str]:
    nodes = op_nodes(index, plan, tensor)
    if not nodes:
        return {"op": "input", "node": ""}
    return {"op": "+".join(n.op_type for n in nodes), "node": nodes[0].name}


def tensor_rows(index: GraphIndex, plan: QuantPlan, params: Dict[str, QParams], stats: Dict[str, TensorStats],
                errors: Dict[str, dict]) -> List[dict]:
    rows = []
    for tensor, err in errors.items():
        acc, iso, p = err["accumulated"], err["isolated"], params[tensor]
        own = iso["snr"] >= OWN_SHARE * acc["snr"] if acc["snr"] > 0 else False
        rows.append({"tensor": tensor, **_op_label(index, plan, tensor), "accumulated": acc, "isolated": iso,
                     "flagged": flagged(acc), "cause": "own" if own else "inherited",
                     "scale": p.scale, "zero_point": p.zero_point, "clip_range": [p.lo, p.hi],
                     "float_range": err["float_range"], "quant_range": err["quant_range"],
                     "histogram": small_histogram(stats[tensor]) if tensor in stats else None,
                     "group": plan.activations[tensor].group if tensor in plan.activations else tensor})
    rows.sort(key=lambda r: (-r["accumulated"]["snr"], r["accumulated"]["cosine"]))
    return rows


def culprits(rows: Sequence[dict], count: int = NUM_CULPRITS) -> List[dict]:
    """The quant points most to blame: largest isolated error first, one per shared-scale group; every
    Q/DQ the writer inserted is a candidate, model inputs included (their isolated error is that of
    quantizing the input itself)."""
    chosen, groups = [], set()
    for row in sorted(rows, key=lambda r: -r["isolated"]["snr"]):
        if row["group"] in groups or row["isolated"]["snr"] <= 0:
            continue
        groups.add(row["group"])
        chosen.append({k: row[k] for k in ("tensor", "op", "node", "flagged", "cause")} |
                      {"isolated_snr": row["isolated"]["snr"], "accumulated_snr": row["accumulated"]["snr"]})
        if len(chosen) == count:
            break
    return chosen


def remedy_targets(blamed: Sequence[dict]) -> List[str]:
    """The culprits worth a remedy: isolated error within a factor TARGET_SHARE of the worst one."""
    top = max((c["isolated_snr"] for c in blamed), default=0.0)
    return [c["tensor"] for c in blamed if c["isolated_snr"] >= TARGET_SHARE * top]


def build_report(fp32: onnx.ModelProto, model: onnx.ModelProto, qdq: onnx.ModelProto, cfg: XQuantConfig,
                 plan: QuantPlan, params: Dict[str, QParams], stats: Dict[str, TensorStats],
                 batches: Sequence[Dict[str, np.ndarray]]) -> dict:
    """The report of ``qdq`` (written from the float ``model`` with ``plan``/``params``) against ``fp32``."""
    start = time.perf_counter()
    device = cfg.calibration.calibration_device
    measured = tensor_errors(fp32, qdq, params, batches, device)
    rows = tensor_rows(GraphIndex(model), plan, params, stats, measured["tensors"])
    blamed = culprits(rows)
    n_flagged = sum(r["flagged"] for r in rows)
    summary = {"outputs": measured["outputs"], "output_snr_db": worst_db(measured["outputs"]),
               "flagged": n_flagged, "tensors": len(rows), "culprits": blamed, "suggestion": None}
    if n_flagged or any(flagged(e) for e in measured["outputs"].values()):
        judge = OutputJudge(fp32, batches, device)
        summary["suggestion"] = suggest(model, cfg, plan, stats, remedy_targets(blamed), judge, measured["outputs"])
    return {
        "model": cfg.model.onnx_model, "quantized_model": cfg.model.output_model,
        "settings": {"precision_level": cfg.quantization.precision_level,
                     "finetune_level": cfg.quantization.finetune_level,
                     "calibration_type": cfg.calibration.calibration_type,
                     "custom_setting": len(cfg.quantization.custom_setting),
                     "truncate_var_names": list(cfg.quantization.truncate_var_names)},
        "flag_rule": {"snr_above": SNR_FLAG, "cosine_below": COSINE_FLAG},
        "samples": measured["samples"], "batches": len(batches),
        "summary": summary, "inputs": input_statistics(batches, cfg.calibration.input_parameters),
        "tensors": rows, "analysis_s": time.perf_counter() - start,
    }
