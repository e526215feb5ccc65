"""The pipeline of the modes that need no calibration: prepare (opset, simplify) -> convert -> check -> write.

Calibration data is optional here: when the config lists it, FP16 finds overflowing ops on it, opset
conversions are checked on a sample and the summary measures fidelity against FP32; without it (the
config-less command line) FP16 checks the weights only."""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import onnx

from ..config import XQuantConfig
from ..data import CalibrationData
from ..errors import ConfigError
from ..model_io import check_writable, fixed_batch, save_model_atomic
from ..prepare import QDQ_OPSET, prepare_model
from . import mode_of

log = logging.getLogger(__name__)
OVERFLOW_BATCHES = 8  # calibration samples of the float16 range check and bias correction (one FP32 pass)
# calibration samples fp16_min_snr_db is measured on: an FP16 model's SNR moves from sample to sample (ppocr_v6_rec
# held out: 38-90 dB), so 8 that happened to read 60.1 dB stood for 16 held-out ones at 48.4, and 16 of the zoo's
# crops lacked its hard cases (46.99 dB held out); with 24 or 32 it reads 68.82, and every zoo model the same or
# better with 24 than with 32 (bench/vendor.py --all-zoo --modes fp16), 0.1-0.9 s faster
FLOOR_BATCHES = 24
# ... or as many as hold the input values of twelve 320-px images (at least 8): one sample of a large input holds
# many regions (a page, a scene), so a few measure as much as many crops, and each costs more to run. The zoo's
# large-input models read the same held out with 8 or 12 samples as with 24 (layout_cdla 800x608 68.86 dB,
# ppocr_v4_det/v6_det and nudenet 320 px 64.00/66.04/70.20, orientation_b8 8x224 px 64.83); with the search's other
# savings of the same change, layout_cdla converts in 6.3 s instead of 14.7 and ddddocr_det in 3.5 instead of 8.8
FLOOR_INPUT_VALUES = 12 * 3 * 320 * 320
# the float16 bias correction, fitted on the range check's samples, is checked on at least this many others of the
# floor's: with 8 of them the range check takes the first 4 (ddddocr_det 416 px held out 66.55 -> 65.05 dB, and
# layout_cdla 68.86 either way, where the correction went unchecked with all 8 fitted)
CHECK_SAMPLES = 4
# the SNR an FP16 model holds on the calibration data unless fp16_min_snr_db says otherwise (0: plain FP16): the
# issue's bar for "FP16 is lossless"; without calibration data there is nothing to hold it on (plain FP16)
DEFAULT_FP16_FLOOR_DB = 60.0


@dataclass
class ModeResult:
    config: XQuantConfig
    mode: str
    fp32_model: onnx.ModelProto
    model: onnx.ModelProto
    output_path: str
    info: dict = field(default_factory=dict)
    fidelity: Dict[str, dict] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    num_samples: int = 0


def check_combination(cfg: XQuantConfig) -> None:
    """Settings that cannot go together: one line, exit 2, before any work."""
    quant, level = cfg.quantization, cfg.quantization.precision_level
    mode = mode_of(level)
    for key in ("fp16_bias_correction", "fp16_min_snr_db"):
        if getattr(quant, key) is not None and mode != "fp16":
            raise ConfigError(f"quantization_parameters.{key} applies to precision_level 4 (FP16), "
                              f"not to precision_level {level} ({mode}).", "Remove it, or use precision_level 4.")
    if quant.fp16_min_snr_db and not _has_data(cfg):
        raise ConfigError("quantization_parameters.fp16_min_snr_db is measured on the calibration data, but the "
                          "config lists none for some input.", "Give every input a data_list_path in "
                          "calibration_parameters, or remove fp16_min_snr_db.")
    if mode == "int8":
        if cfg.model.opset is not None and cfg.model.opset < QDQ_OPSET:
            raise ConfigError(f"model_parameters.opset {cfg.model.opset} cannot hold an INT8 (QDQ) model, which "
                              f"needs opset {QDQ_OPSET} or newer.", f"Use opset {QDQ_OPSET}-21, or precision_level "
                              "3 (dynamic quantization), 4 (FP16) or 100 (simplify only).")
        return
    for key, value in (("custom_setting", quant.custom_setting), ("truncate_var_names", quant.truncate_var_names)):
        if value:
            raise ConfigError(f"quantization_parameters.{key} applies to INT8 (precision_level 0-2), but "
                              f"precision_level {level} ({mode}) converts the whole model.",
                              f"Remove {key}, or use precision_level 0-2.")
    if quant.analysis_enable:
        log.warning("analysis_enable is for INT8 (precision_level 0-2); precision_level %d (%s) writes no analysis "
                    "report", level, mode)


def fp16_floor_db(cfg: XQuantConfig) -> Optional[float]:
    """The floor FP16 holds: fp16_min_snr_db (0: none), else DEFAULT_FP16_FLOOR_DB with calibration data."""
    value = cfg.quantization.fp16_min_snr_db
    if value is None:
        return DEFAULT_FP16_FLOOR_DB if _has_data(cfg) else None
    return value or None


def floor_samples(batch: Dict[str, np.ndarray]) -> Tuple[int, int]:
    """(samples the FP16 floor measures, of which the range check and bias correction take the first), for
    calibration samples like ``batch`` (FLOOR_INPUT_VALUES, CHECK_SAMPLES)."""
    values = max(1, sum(np.asarray(v).size for v in batch.values()))
    count = max(2 * CHECK_SAMPLES, min(FLOOR_BATCHES, FLOOR_INPUT_VALUES // values))
    return count, min(OVERFLOW_BATCHES, count - CHECK_SAMPLES)


def _has_data(cfg: XQuantConfig) -> bool:
    """The config lists calibration data for every input."""
    params = cfg.calibration.input_parameters
    return bool(params) and all(p.data_list_path for p in params)


def _data(cfg: XQuantConfig) -> Optional[CalibrationData]:
    """The calibration data when the config lists it for every input, else None."""
    return CalibrationData(cfg) if _has_data(cfg) else None


def _fp16(fp32: onnx.ModelProto, cfg: XQuantConfig, data: Optional[CalibrationData]):
    """FP16 with the erf GELUs fused, the overflow and precision checks and, with data, the biases corrected
    against FP32 layer by layer (``bias_fix.py``; held out +3.9 to +8.4 dB on the PaddleOCR models;
    ``fp16_bias_correction: false`` turns it off)."""
    from .bias_fix import correct_biases, layer_outputs
    from .fp16 import convert_fp16
    from .gelu import fuse_gelu
    from .fp16_floor import keep_prefix
    from .overflow import imprecise_nodes, overflowing_nodes, sensitive_weights, tensor_stats

    quant, device = cfg.quantization, cfg.calibration.calibration_device
    floor_db = fp16_floor_db(cfg)
    fused = onnx.ModelProto()
    fused.CopyFrom(fp32)
    gelus = fuse_gelu(fused, quant.ignore_op_types, quant.ignore_op_names)
    stream = data.model_batches(fp32, 1) if data else iter(())
    batches = list(itertools.islice(stream, 1))
    floored = floor_db is not None and bool(batches)
    count, fit = floor_samples(batches[0]) if floored else (0, OVERFLOW_BATCHES)
    batches += itertools.islice(stream, fit - len(batches))
    correct = bool(batches) and quant.fp16_bias_correction is not False
    stats = tensor_stats(fused, batches, device, layer_outputs(fused) if correct else (), keep_outputs=floored)
    overflow = overflowing_nodes(fused, stats.peaks)
    imprecise = imprecise_nodes(fused, stats.rounding_snr())
    # with a floor, only the layers its float32 prefix leaves in float16 are checked, after it (ppocr_v4_rec: the
    # three it finds are in the prefix, and checking all 47 weight layers cost 72 of the conversion's 245 runs)
    sensitive = {} if floored else sensitive_weights(fused, batches, device)

    def convert(extra: Sequence[str] = ()):
        model, info = convert_fp16(fused, quant.ignore_op_types, [*quant.ignore_op_names, *extra], overflow,
                                   imprecise, sensitive)
        for name in set(extra) - set(quant.ignore_op_names):
            if name in info.kept:
                info.kept[name] = (f"{info.kept[name].split(':')[0]}: in the float32 prefix that keeps the model "
                                   f"at {floor_db:g} dB (fp16_min_snr_db)")
        return model, info

    floor = None
    if floored:
        samples = batches + list(itertools.islice(stream, count - len(batches)))
        model, info, floor = keep_prefix(fused, convert, samples, floor_db, device, stats.outputs)
        late = sensitive_weights(fused, batches, device, only=set(info.fp16_nodes))
        if late:
            sensitive.update(late)
            model, info = convert(floor.kept)
            floor.rescore(model)
    else:
        model, info = convert()
    if correct and (floor is None or floor.wants_correction()):
        plain = model
        model, info.bias_corrected = correct_biases(model, info.fp16_nodes, batches, stats.channel_means(),
                                                    fixed_batch(fp32), device)
        if floor is not None and not floor.correction_holds(plain, model, len(batches)):
            model, info.bias_corrected = plain, []
    found = {"fp16_ops": len(info.fp16_nodes), "fp32_ops": info.kept, "casts": info.casts,
             "overflow": info.overflow, "imprecise": info.imprecise, "sensitive": info.sensitive,
             "overflow_checked_on": len(batches), "gelu_fused": len(gelus),
             "bias_corrected": len(info.bias_corrected)}
    if floor is not None:
        found["floor"] = {**floor.summary(), "default": quant.fp16_min_snr_db is None}
    return model, found


def _convert(mode: str, fp32: onnx.ModelProto, cfg: XQuantConfig, data: Optional[CalibrationData]):
    quant, device = cfg.quantization, cfg.calibration.calibration_device
    if mode == "fp16":
        return _fp16(fp32, cfg, data)
    if mode == "dynq":
        from .dynq import quantize_dynamic_checked

        from ..quantize import summary_batches

        batches = summary_batches(fp32, data) if data else []
        return quantize_dynamic_checked(fp32, quant.ignore_op_types, quant.ignore_op_names, batches, device)
    return fp32, {}


def run_float_mode(cfg: XQuantConfig, proto: onnx.ModelProto, summary: bool = True) -> ModeResult:
    from ..quantize import summary_fidelity, validate

    start = time.perf_counter()
    timings: Dict[str, float] = {}
    mode = mode_of(cfg.quantization.precision_level)
    check_combination(cfg)
    check_writable(cfg.model.output_model, "Output model (-o, or model_parameters.working_dir/output_prefix)")
    data = _data(cfg)
    device = cfg.calibration.calibration_device
    sample = (lambda m, n: next(data.model_batches(m, n))) if data else None
    fp32 = prepare_model(proto, cfg.model.skip_onnxsim, sample, device, opset=cfg.model.opset, qdq=False)
    timings["prepare_s"] = time.perf_counter() - start
    mark = time.perf_counter()
    model, info = _convert(mode, fp32, cfg, data)
    timings["convert_s"] = time.perf_counter() - mark
    validate(model, device)
    result = ModeResult(cfg, mode, fp32, model, cfg.model.output_model, info, timings=timings,
                        num_samples=data.num_samples if data else 0)
    measured = info.pop("fidelity", None)  # dynq's check measured the written model on the summary's samples
    if summary and data is not None:
        mark = time.perf_counter()
        result.fidelity = measured or summary_fidelity(fp32, model, data, device)
        timings["summary_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - start
    mark = time.perf_counter()
    save_model_atomic(model, result.output_path)
    timings["write_s"] = time.perf_counter() - mark
    return result
