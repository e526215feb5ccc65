"""The quantization pipeline: config -> data -> plan -> calibration -> ranges -> QDQ model (+ report)."""
from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Union

import onnx

from .analysis.fidelity import compare_models
from .calibration.collector import batch_size_for, collect_stats
from .calibration.ranges import QParams
from .calibration.session import make_session
from .calibration.stats import TensorStats
from .config import XQuantConfig, load_config
from .config.schema import FLOAT_LEVELS
from .config.loader import ConfigSource, ModelSource
from .data import CalibrationData
from .errors import ModelError
from .model_io import check_writable, run_batch, save_model_atomic
from .plan.planner import QuantPlan
from .plan.policy import plan_model
from .prepare import prepare_model
from .export.qdq_writer import write_qdq
from .finetune import fine_tune
from .finetune.bias import calibration_means, calibration_request
from .modes.pipeline import ModeResult, check_combination, run_float_mode

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
                      show_progress: Optional[bool], means: Optional[Dict[str, list]] = None
                      ) -> Dict[str, TensorStats]:
    """``means``: {tensor: []} filled with per-sample channel means in the same pass (``collect_stats``)."""
    tensors = list(plan.activations)
    batch = batch_size_for(model, tensors + list(means or {}))
    return collect_stats(model, tensors, data, cfg.calibration.calibration_device, batch, show_progress, means)


def analyse(result: QuantizationResult, data: CalibrationData) -> dict:
    """Build the analysis report (written by ``save_outputs``)."""
    from .analysis.report import analysis_batches, build_report

    cfg = result.config
    batches = analysis_batches(result.fp32_model, cfg, data)
    return build_report(result.fp32_model, result.float_model or result.fp32_model, result.model, cfg,
                        result.plan, result.params, result.stats, batches)


def save_outputs(result: QuantizationResult) -> None:
    """The .q.onnx, then the report (<working_dir>/<output_prefix>_report.md and .json) beside it; a
    report that cannot be written takes the model with it: a failed run leaves no .q.onnx."""
    mark = time.perf_counter()
    save_model_atomic(result.model, result.output_path)
    result.timings["write_s"] = time.perf_counter() - mark
    if result.report is None:
        return
    from .analysis.render import save_report
    from .profile import stage_rows

    result.report["timings"] = dict(result.timings)
    result.report["stages"] = [[label, seconds] for label, seconds in stage_rows(result.timings, result.finetune)]
    try:
        save_report(result.report, result.config.report_stem)
    except BaseException:
        os.unlink(result.output_path)
        raise


def summary_batches(fp32: onnx.ModelProto, data: CalibrationData) -> list:
    """The calibration samples the summary measures fidelity on (up to ``SUMMARY_SAMPLES``)."""
    size = run_batch(fp32, 8)
    return list(itertools.islice(data.model_batches(fp32, size), -(-SUMMARY_SAMPLES // size)))


def summary_fidelity(fp32: onnx.ModelProto, qdq: onnx.ModelProto, data: CalibrationData,
                     device: str) -> Dict[str, dict]:
    return fidelity_rows(fp32, qdq, summary_batches(fp32, data), device)


def fidelity_rows(fp32: onnx.ModelProto, qdq: onnx.ModelProto, batches: list, device: str) -> Dict[str, dict]:
    """Per output: SNR, cosine, ... of ``qdq`` against ``fp32`` over ``batches``."""
    rows = compare_models(fp32, qdq, batches, device)
    samples = sum(int(next(iter(b.values())).shape[0]) for b in batches)
    for row in rows.values():  # outputs with the batch off axis 0 (recurrent state) count samples wrongly
        row["samples"] = samples
    return rows


def check_outputs(cfg: XQuantConfig) -> None:
    """Before any work: the quantized model (and the analysis report) can be written where asked."""
    where = "Output model (-o, or model_parameters.working_dir/output_prefix)"
    check_writable(cfg.model.output_model, where)
    if cfg.quantization.analysis_enable:
        check_writable(f"{cfg.report_stem}_report.md", "Analysis report (model_parameters.working_dir)")


def run_quantization(config: ConfigSource, model: ModelSource = None, output: Optional[str] = None,
                     show_progress: Optional[bool] = None, summary: bool = True,
                     overrides: Optional[dict] = None) -> Union[QuantizationResult, "ModeResult"]:
    """``overrides``: config keys that win over the config's (the command line's flags), by section.
    precision_level 3, 4 and 100 return a ``modes.pipeline.ModeResult``."""
    timings: Dict[str, float] = {}
    start = time.perf_counter()
    cfg, proto = load_config(config, model, output, overrides)
    if cfg.quantization.precision_level in FLOAT_LEVELS:
        return run_float_mode(cfg, proto, summary)
    check_combination(cfg)
    check_outputs(cfg)
    data = CalibrationData(cfg)
    device = cfg.calibration.calibration_device
    fp32 = prepare_model(proto, cfg.model.skip_onnxsim, lambda m, n: next(data.model_batches(m, n)), device,
                         opset=cfg.model.opset)
    timings["prepare_s"] = time.perf_counter() - start
    plan = plan_model(fp32, cfg)
    mark = time.perf_counter()
    request = calibration_request(fp32, plan, cfg.quantization.finetune_level)  # bias correction's FP32 means
    stats = calibration_stats(fp32, cfg, plan, data, show_progress, request)
    timings["calibrate_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    tuned = fine_tune(fp32, cfg, plan, stats, data, show_progress, calibration_means(request, data.num_samples))
    timings["finetune_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    qdq = write_qdq(tuned.model, plan, tuned.params)
    validate(qdq, cfg.calibration.calibration_device)
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
    save_outputs(result)
    return result


def quantize_onnx_model(config: ConfigSource, model: ModelSource = None,
                        output: Optional[str] = None) -> onnx.ModelProto:
    """Quantize ``model`` (or the config's onnx_model) as ``config`` says; write it and return it.

    ``config`` is a dict or a JSON path; ``model`` a path or an ``onnx.ModelProto``; ``output`` the
    path of the .q.onnx (default ``<working_dir>/<output_prefix>.q.onnx``)."""
    return run_quantization(config, model, output, summary=False).model
