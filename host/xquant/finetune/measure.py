"""Fidelity and time of one finetune_level on one model, for bench/quant.py and the docs' figures.

    from xquant.finetune.measure import measure_level
    row = measure_level(config_dict, level=2, eval_inputs={"input": x})   # x: [N, ...] held-out data
    row["snr_db"], row["time_s"], row["finetune_s"], row["passes"]
"""
from __future__ import annotations

import copy
import os
import tempfile
import time
from typing import Dict, Optional

import numpy as np
import onnx

from ..analysis.tensors import ErrorStats
from ..config.loader import ConfigSource, ModelSource
from .samples import fixed_batch, run_tensors


def run_outputs(model: onnx.ModelProto, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """All outputs of ``model`` over ``inputs`` ([N, ...] arrays), in the model's batch size when it is fixed."""
    return run_tensors(model, inputs, [o.name for o in model.graph.output], fixed_batch(model))


def measure_level(config: ConfigSource, level: int, eval_inputs: Dict[str, np.ndarray], model: ModelSource = None,
                  output: Optional[str] = None) -> dict:
    """Quantize with ``finetune_level`` = ``level`` (analysis off) and compare with FP32 on ``eval_inputs``.

    Returns {"level", "snr_db" (worst output), "outputs": {name: {snr, snr_db, mse, cosine}}, "top1_agreement"
    (first output, when it is [N, classes]), "time_s" (whole quantization), "finetune_s", "passes" (what each
    fine-tune pass did, held-out noise ratios before/after, kept or not)}."""
    from ..quantize import run_quantization

    if isinstance(config, dict):
        cfg = copy.deepcopy(config)
    else:
        import json

        with open(os.fspath(config), encoding="utf-8") as handle:
            cfg = json.load(handle)
    quant = cfg.setdefault("quantization_parameters", {})
    quant.update(finetune_level=level, analysis_enable=False)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = run_quantization(cfg, model, output or os.path.join(tmp, f"ft{level}.q.onnx"),
                                  show_progress=False, summary=False)
        elapsed = time.perf_counter() - start
    ref, got = run_outputs(result.fp32_model, eval_inputs), run_outputs(result.model, eval_inputs)
    outputs = {}
    for name, value in ref.items():
        acc = ErrorStats()
        acc.update(value, got[name])
        outputs[name] = acc.as_dict()
    row = {"level": level, "snr_db": min(o["snr_db"] for o in outputs.values()), "outputs": outputs,
           "time_s": elapsed, "finetune_s": result.timings.get("finetune_s", 0.0),
           "passes": result.finetune.get("passes", [])}
    first = next(iter(ref))
    if ref[first].ndim == 2 and ref[first].shape[1] > 1:
        row["top1_agreement"] = float(np.mean(ref[first].argmax(1) == got[first].argmax(1)))
    return row
