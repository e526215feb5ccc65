"""The quantization pipeline: config -> data -> plan -> calibration -> ranges -> QDQ model (+ report)."""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Dict, Optional

import onnx

from .analysis.fidelity import compare_outputs, run_both
from .calibration.collector import batch_size_for, collect_stats
from .calibration.ranges import QParams
from .calibration.session import make_session
from .calibration.stats import TensorStats
from .config import XQuantConfig, load_config
from .config.loader import ConfigSource, ModelSource
from .data import CalibrationData
from .errors import ModelError
from .model_io import save_model_atomic
from .plan.planner import QuantPlan
from .plan.policy import plan_model
from .prepare import prepare_model
from .export.qdq_writer import write_qdq
from .finetune import fine_tune

log = logging.getLogger(__name__)
SUMMARY_SAMPLES = 64


@dataclass
class QuantizationResult:
    config: XQuantConfig
    fp32_model: onnx.ModelProto
    model: onnx.ModelProto
    plan: QuantPlan
    params: Dict[str, QParams]
    output_path: str
    fidelity: Dict[str, dict] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    num_samples: int = 0
    stats: Dict[str, TensorStats] = field(default_factory=dict)  # calibration statistics per activation
    float_model: Optional[onnx.ModelProto] = None  # the float weights the writer quantized (fine-tuned)
    finetune: dict = field(default_factory=dict)  # what each fine-tune pass did
    report: Optional[dict] = None  # the analysis report (analysis_enable)


def validate(model: onnx.ModelProto, device: str) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"The quantized model fails onnx.checker: {str(exc).splitlines()[0]}.",
                         "Please report this with the FP32 model.") from exc
    make_session(model, device, "quantized model")


def calibration_stats(model: onnx.ModelProto, cfg: XQuantConfig, plan: QuantPlan, data: CalibrationData,
                      show_progress: Optional[bool]) -> Dict[str, TensorStats]:
    tensors = list(plan.activations)
    batch = batch_size_for(model, cfg.calibration.input_parameters[0].input_shape[0], tensors)
    return collect_stats(model, tensors, data, cfg.calibration.calibration_device, batch, show_progress)


def analyse(result: QuantizationResult, data: CalibrationData) -> dict:
    """Build the analysis report and write <working_dir>/<output_prefix>_report.md and .json."""
    from .analysis.render import save_report
    from .analysis.report import analysis_batches, build_report
    from .profile import stage_rows

    cfg = result.config
    batches = analysis_batches(result.fp32_model, cfg, data)
    report = build_report(result.fp32_model, result.float_model or result.fp32_model, result.model, cfg,
                          result.plan, result.params, result.stats, batches)
    report["timings"] = dict(result.timings)
    report["stages"] = [[label, seconds] for label, seconds in stage_rows(result.timings, result.finetune)]
    save_report(report, cfg.report_stem)
    return report


def summary_fidelity(fp32: onnx.ModelProto, qdq: onnx.ModelProto, data: CalibrationData,
                     device: str) -> Dict[str, dict]:
    batches = itertools.islice(data.batches(8), max(1, SUMMARY_SAMPLES // 8))
    return compare_outputs(run_both(fp32, qdq, batches, device))


def run_quantization(config: ConfigSource, model: ModelSource = None, output: Optional[str] = None,
                     show_progress: Optional[bool] = None, summary: bool = True) -> QuantizationResult:
    timings: Dict[str, float] = {}
    start = time.perf_counter()
    cfg, proto = load_config(config, model, output)
    data = CalibrationData(cfg)
    fp32 = prepare_model(proto, cfg.model.skip_onnxsim)
    timings["prepare_s"] = time.perf_counter() - start
    plan = plan_model(fp32, cfg)
    mark = time.perf_counter()
    stats = calibration_stats(fp32, cfg, plan, data, show_progress)
    timings["calibrate_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    tuned = fine_tune(fp32, cfg, plan, stats, data, show_progress)
    timings["finetune_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    qdq = write_qdq(tuned.model, plan, tuned.params)
    validate(qdq, cfg.calibration.calibration_device)
    save_model_atomic(qdq, cfg.model.output_model)
    timings["write_s"] = time.perf_counter() - mark
    result = QuantizationResult(cfg, fp32, qdq, plan, tuned.params, cfg.model.output_model, timings=timings,
                                num_samples=data.num_samples, stats=tuned.stats, float_model=tuned.model,
                                finetune=tuned.info)
    if cfg.quantization.analysis_enable:
        mark = time.perf_counter()
        result.report = analyse(result, data)
        timings["analysis_s"] = time.perf_counter() - mark
    if summary:
        mark = time.perf_counter()
        result.fidelity = summary_fidelity(fp32, qdq, data, cfg.calibration.calibration_device)
        timings["summary_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - start
    return result


def quantize_onnx_model(config: ConfigSource, model: ModelSource = None,
                        output: Optional[str] = None) -> onnx.ModelProto:
    """Quantize ``model`` (or the config's onnx_model) as ``config`` says; write it and return it.

    ``config`` is a dict or a JSON path; ``model`` a path or an ``onnx.ModelProto``; ``output`` the
    path of the .q.onnx (default ``<working_dir>/<output_prefix>.q.onnx``)."""
    return run_quantization(config, model, output, summary=False).model
