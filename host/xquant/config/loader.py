"""Turn a dict or a JSON path into an ``XQuantConfig`` with the seed's defaults filled in.

Both spellings of the input list are accepted (``input_parametres`` as in the seed, and
``input_parameters`` as in XQuant's successor). Unknown keys are warned about with the
closest known key; they never stop a run.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import onnx

from ..errors import ConfigError, DataError
from ..suggest import closest, did_you_mean
from ..model_io import GraphInput, graph_inputs, load_model, model_stem, read_text
from . import schema
from .paths import optional_str, resolve_path

log = logging.getLogger(__name__)

SECTIONS = {
    "model_parameters": ("onnx_model", "output_prefix", "working_dir", "skip_onnxsim", "opset"),
    "calibration_parameters": (
        "calibration_step", "calibration_device", "calibration_type", "input_parametres",
        "input_parameters", "seed",
    ),
    "quantization_parameters": (
        "analysis_enable", "precision_level", "finetune_level", "max_percentile", "custom_setting",
        "truncate_var_names", "ignore_op_types", "ignore_op_names", "bias_dtype", "analysis_batches",
        "fp16_bias_correction", "fp16_min_snr_db",
    ),
    # validated by the harness (xqhil); listed here so the quantizer does not warn about it
    "verify_parameters": None,
}
INPUT_KEYS = (
    "input_name", "input_shape", "dtype", "file_type", "color_format", "mean_value", "std_value",
    "preprocess_file", "data_list_path",
)
CUSTOM_KEYS = ("input_names", "output_names", "precision_level", "calibration_type", "max_percentile")

ConfigSource = Union[str, "os.PathLike[str]", Dict[str, Any]]
ModelSource = Union[None, str, "os.PathLike[str]", onnx.ModelProto]


def read_raw_config(config: ConfigSource) -> Tuple[dict, Optional[str]]:
    """The config as a dict, and the absolute path of its file (None for dicts)."""
    if isinstance(config, dict):
        return config, None
    path = os.fspath(config)
    resolved = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(resolved):
        raise ConfigError(f"Config file not found: '{path}' (resolved to '{resolved}').")
    text = read_text(resolved, "Config file", ConfigError)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"Invalid JSON in '{resolved}' at line {exc.lineno}, column {exc.colno}: {exc.msg}.",
            "Fix the JSON syntax (comments and trailing commas are not allowed).",
        ) from exc
    except RecursionError:
        raise ConfigError(f"Config '{resolved}' nests arrays or objects too deeply to be read.",
                          "An XQuant config needs a few levels; check the file is the config you meant.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"Config '{resolved}' must be a JSON object at the top level.")
    return raw, resolved


def warn_unknown_keys(raw: dict) -> None:
    def check(keys: Sequence[str], known: Sequence[str], where: str) -> None:
        for key in keys:
            if key not in known:
                close = did_you_mean(key, known)
                hint = f"; did you mean '{close}'?" if close else f"; known keys: {', '.join(known)}"
                log.warning("unknown key '%s' in %s is ignored%s", key, where, hint)

    check(list(raw), list(SECTIONS), "the config")
    for section, known in SECTIONS.items():
        body = raw.get(section)
        if known is None or not isinstance(body, dict):
            continue
        check(list(body), known, section)
        if section == "calibration_parameters":
            for idx, item in enumerate(_input_list(body) or []):
                if isinstance(item, dict):
                    check(list(item), INPUT_KEYS, f"calibration_parameters.input_parametres[{idx}]")
        if section == "quantization_parameters":
            for idx, item in enumerate(body.get("custom_setting") or []):
                if isinstance(item, dict):
                    check(list(item), CUSTOM_KEYS, f"quantization_parameters.custom_setting[{idx}]")


def _section(raw: dict, name: str) -> dict:
    body = raw.get(name, {})
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ConfigError(f"'{name}' must be a JSON object, got {type(body).__name__}.")
    return body


def _input_list(calib: dict) -> Optional[list]:
    for key in ("input_parametres", "input_parameters"):
        if calib.get(key) is not None:
            value = calib[key]
            if not isinstance(value, list):
                raise ConfigError(f"calibration_parameters.{key} must be a list of objects.")
            return value
    return None


def _typed(value: Any, kind: type, where: str, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"{where} must be an integer, got {value!r}.")
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is not bool and isinstance(value, kind):
        return value
    raise ConfigError(f"{where} must be {kind.__name__}, got {value!r}.")


def _choice(value: Any, choices: Sequence[Any], where: str) -> Any:
    if value not in choices:
        close = did_you_mean(str(value), [str(c) for c in choices])
        hint = f" Did you mean '{close}'?" if close else ""
        raise ConfigError(f"{where} {value!r} is not valid. Supported: {', '.join(map(str, choices))}.{hint}")
    return value


def resolve_device(requested: Optional[str]) -> str:
    """'cuda' only when onnxruntime can really use it; otherwise 'cpu', with a notice when cuda was asked."""
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if requested is None or str(requested).strip() == "":
        return "cuda" if has_cuda else "cpu"
    device = str(requested).lower()
    _choice(device, ("cuda", "cpu"), "calibration_parameters.calibration_device")
    if device == "cuda" and not has_cuda:
        log.warning("calibration_device 'cuda' requested but onnxruntime has no CUDAExecutionProvider here; "
                    "calibrating on cpu (install onnxruntime-gpu to use cuda)")
        return "cpu"
    return device


def _model_parameters(
    section: dict, base_dir: str, model: ModelSource, output: Optional[str]
) -> Tuple[schema.ModelParameters, onnx.ModelProto]:
    written = optional_str(section.get("onnx_model"))
    if isinstance(model, onnx.ModelProto):
        proto, model_path = model, (resolve_path(written, base_dir, "onnx_model", False) if written else None)
    else:
        if model is not None:
            model_path = os.path.abspath(os.fspath(model))
            if not os.path.isfile(model_path):
                raise ConfigError(f"Model file not found: '{os.fspath(model)}' (resolved to '{model_path}').")
        elif written:
            model_path = resolve_path(written, base_dir, "model_parameters.onnx_model")
        else:
            raise ConfigError("No model given: model_parameters.onnx_model is empty.",
                              "Set it in the config or pass -i/--input MODEL.onnx.")
        proto = load_model(model_path)
    working = optional_str(section.get("working_dir"))
    if working:
        working_dir = resolve_path(working, base_dir, "model_parameters.working_dir", must_exist=False)
    elif model_path:
        working_dir = os.path.dirname(model_path)
    else:
        working_dir = os.getcwd()
    stem = model_stem(model_path) if model_path else (proto.graph.name or "model")
    prefix = optional_str(section.get("output_prefix")) or stem
    if output is not None:
        output_model = os.path.abspath(os.fspath(output))
    else:
        name = output_name(prefix)
        output_model = os.path.abspath(os.path.join(working_dir, name))
    skip = _typed(section.get("skip_onnxsim", False), bool, "model_parameters.skip_onnxsim")
    params = schema.ModelParameters(
        onnx_model=model_path or "<ModelProto>", output_model=output_model, output_prefix=prefix,
        working_dir=working_dir, skip_onnxsim=skip, opset=_opset(section.get("opset")),
    )
    return params, proto


def _opset(value: Any) -> Optional[int]:
    if value is None:
        return None
    from ..opset import NEWEST_OPSET, OLDEST_OPSET

    opset = _typed(value, int, "model_parameters.opset")
    if not OLDEST_OPSET <= opset <= NEWEST_OPSET:
        raise ConfigError(f"model_parameters.opset {opset} is outside {OLDEST_OPSET}-{NEWEST_OPSET}, the opsets "
                          "xquant converts to and onnxruntime runs.", "Pick a target opset in that range.")
    return opset


def output_name(prefix: str) -> str:
    """The .q.onnx file name for ``output_prefix``: ``.q.onnx`` appended, never doubled: ``name``,
    ``name.q`` (the vendor tool's own default prefix, which it completes with ``.onnx``) and
    ``name.q.onnx`` all give ``name.q.onnx``."""
    if prefix.endswith(".q.onnx"):
        return prefix
    if prefix.endswith(".q"):
        return f"{prefix}.onnx"
    return f"{prefix}.q.onnx"


def _shape(value: Any, graph_input: GraphInput, where: str) -> Tuple[int, ...]:
    batch = graph_input.batch_axis
    if value is None:
        dims = []
        for idx, dim in enumerate(graph_input.shape):
            if isinstance(dim, int):
                dims.append(dim)
            elif idx == batch:
                dims.append(1)  # a free batch defaults to 1, as in the seed
            else:
                raise ConfigError(
                    f"Input '{graph_input.name}' has a non-static dimension {idx} ({dim!r}) in the model.",
                    f"Set {where}.input_shape to a list of integers.",
                )
        return tuple(dims)
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                              for d in value):
        raise ConfigError(f"{where}.input_shape must be a list of positive integers, got {value!r}.")
    if len(value) != len(graph_input.shape):
        raise ConfigError(f"{where}.input_shape {value} has rank {len(value)}, but model input "
                          f"'{graph_input.name}' has rank {len(graph_input.shape)} {list(graph_input.shape)}.")
    for idx, (want, have) in enumerate(zip(value, graph_input.shape)):
        if isinstance(have, int) and have != want and idx != batch:
            raise ConfigError(f"{where}.input_shape {value} disagrees with model input '{graph_input.name}' "
                              f"shape {list(graph_input.shape)} at dimension {idx}.")
    return tuple(value)


def _dtype(item: dict, graph_input: GraphInput, where: str) -> str:
    """The model's input type; integer and bool inputs are fed as they are and never quantized."""
    dtype = graph_input.dtype
    if dtype not in schema.DTYPES:
        raise ConfigError(f"Input '{graph_input.name}' is {dtype}: xquant quantizes float32 models and feeds "
                          f"inputs of type {', '.join(schema.DTYPES)}.",
                          "Convert the model's inputs to float32 (or an integer type) and re-export it.")
    written = item.get("dtype")
    if written and written != dtype:
        if written not in schema.DTYPES:
            raise ConfigError(f"{where}.dtype '{written}' is not supported. Supported: {', '.join(schema.DTYPES)}.")
        log.warning("%s.dtype '%s' differs from the model's input '%s' (%s); feeding %s as the model expects",
                    where, written, graph_input.name, dtype, dtype)
    return dtype


def _floats(value: Any, where: str) -> Optional[Tuple[float, ...]]:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in value):
        return tuple(float(v) for v in value)
    raise ConfigError(f"{where} must be a number or a list of numbers, got {value!r}.")


def _preprocess(value: Any, base_dir: str, where: str) -> Optional[str]:
    text = optional_str(value)
    if text is None or text.lower() == "none":
        return None
    if text in schema.PRESETS:
        return text
    if ":" not in text:
        raise ConfigError(
            f"{where}.preprocess_file '{text}' is neither a preset nor 'file.py:function'.",
            f"Use one of {', '.join(schema.PRESETS)} or 'my_preprocess.py:my_function'.",
        )
    file_part, func = text.rsplit(":", 1)
    if not func.isidentifier():
        raise ConfigError(f"{where}.preprocess_file '{text}': '{func}' is not a valid Python function name.")
    path = resolve_path(file_part, base_dir, f"{where}.preprocess_file")
    return f"{path}:{func}"


def _input_parameter(item: Any, graph_input: GraphInput, base_dir: str, where: str) -> schema.InputParameter:
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a JSON object.")
    dtype = _dtype(item, graph_input, where)
    image_like = dtype == "float32" and len(graph_input.shape) == 4
    file_type = item.get("file_type") or ("img" if image_like else "npy")
    if file_type not in schema.FILE_TYPES:
        raise DataError(f"file_type {file_type} not implemented yet.",
                        f"Input '{graph_input.name}' ({where}): supported file types are "
                        f"{', '.join(schema.FILE_TYPES)}.")
    color = str(item.get("color_format") or "bgr").lower()
    _choice(color, schema.COLOR_FORMATS, f"{where}.color_format")
    list_path = optional_str(item.get("data_list_path"))
    if list_path:
        list_path = resolve_path(list_path, base_dir, f"{where}.data_list_path (input '{graph_input.name}')")
    return schema.InputParameter(
        input_name=graph_input.name,
        input_shape=_shape(item.get("input_shape"), graph_input, where),
        dtype=dtype,
        file_type=file_type,
        color_format=color,
        mean_value=_floats(item.get("mean_value"), f"{where}.mean_value"),
        std_value=_floats(item.get("std_value"), f"{where}.std_value"),
        preprocess_file=_preprocess(item.get("preprocess_file"), base_dir, where),
        data_list_path=list_path,
        batch_axis=graph_input.batch_axis,
    )


def _input_parameters(calib: dict, proto: onnx.ModelProto, base_dir: str) -> Tuple[schema.InputParameter, ...]:
    model_inputs = graph_inputs(proto)
    items = _input_list(calib)
    if items is None:
        items = [{} for _ in model_inputs]
    names = ", ".join(f"'{gi.name}'" for gi in model_inputs)
    if len(items) != len(model_inputs):
        raise ConfigError(
            "Calibration input_parametres size should equal to model inputs size.",
            f"The config lists {len(items)} input(s); the model has {len(model_inputs)}: {names}.",
        )
    by_name = {gi.name: gi for gi in model_inputs}
    named = [item.get("input_name") if isinstance(item, dict) else None for item in items]
    result = []
    for idx, item in enumerate(items):
        where = f"calibration_parameters.input_parametres[{idx}]"
        name = optional_str(named[idx])
        if name is None:
            graph_input = model_inputs[idx]
        elif name in by_name:
            graph_input = by_name[name]
        else:
            close = closest(name, list(by_name))
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where}.input_name '{name}' is not an input of the model. "
                              f"Model inputs: {names}.{hint}")
        result.append(_input_parameter(item, graph_input, base_dir, where))
    seen = [p.input_name for p in result]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"calibration_parameters.input_parametres names an input twice: {seen}.")
    return tuple(result)


def _calibration(calib: dict, proto: onnx.ModelProto, base_dir: str,
                 data_optional: bool = False) -> schema.CalibrationParameters:
    """``data_optional``: a mode that needs no calibration (precision_level 3, 4, 100) and a config that lists
    no inputs: none are read from the model either (its shapes may be free)."""
    step = _typed(calib.get("calibration_step", 100), int, "calibration_parameters.calibration_step")
    if step <= 0:
        raise ConfigError(f"calibration_parameters.calibration_step must be positive, got {step}.")
    ctype = calib.get("calibration_type") or "default"
    if ctype not in schema.CALIBRATION_TYPES:
        raise ConfigError(f"calibration_type {ctype} not implemented yet.",
                          f"Supported: {', '.join(schema.CALIBRATION_TYPES)}.")
    return schema.CalibrationParameters(
        calibration_step=step,
        calibration_device=resolve_device(calib.get("calibration_device")),
        calibration_type=ctype,
        input_parameters=() if data_optional and _input_list(calib) is None else
        _input_parameters(calib, proto, base_dir),
        seed=_typed(calib.get("seed", 0), int, "calibration_parameters.seed"),
    )


def _names(value: Any, where: str) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a list of tensor or op names, got {value!r}.")
    return tuple(value)


def _percentile(value: Any, where: str) -> float:
    pct = _typed(value, float, where)
    if not 0.5 < pct <= 1.0:
        raise ConfigError(f"{where} must be in (0.5, 1.0], got {pct}.", "XQuant uses fractions, e.g. 0.9999.")
    return pct


def _custom_settings(value: Any) -> Tuple[schema.CustomSetting, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("quantization_parameters.custom_setting must be a list of objects.")
    result = []
    for idx, item in enumerate(value):
        where = f"quantization_parameters.custom_setting[{idx}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a JSON object.")
        inputs = _names(item.get("input_names"), f"{where}.input_names")
        outputs = _names(item.get("output_names"), f"{where}.output_names")
        if not inputs or not outputs:
            raise ConfigError(f"{where} needs non-empty input_names and output_names.")
        level = item.get("precision_level")
        if level is not None:
            _choice(_typed(level, int, f"{where}.precision_level"), schema.PRECISION_LEVELS,
                    f"{where}.precision_level")
        ctype = item.get("calibration_type")
        if ctype is not None and ctype not in schema.CALIBRATION_TYPES:
            raise ConfigError(f"calibration_type {ctype} not implemented yet.",
                              f"In {where}; supported: {', '.join(schema.CALIBRATION_TYPES)}.")
        pct = item.get("max_percentile")
        result.append(schema.CustomSetting(
            input_names=inputs, output_names=outputs, precision_level=level, calibration_type=ctype,
            max_percentile=_percentile(pct, f"{where}.max_percentile") if pct is not None else None,
        ))
    return tuple(result)


def _quantization(quant: dict) -> schema.QuantizationParameters:
    where = "quantization_parameters"
    level = _typed(quant.get("precision_level", 0), int, f"{where}.precision_level")
    finetune = _typed(quant.get("finetune_level", 1), int, f"{where}.finetune_level")
    batches = _typed(quant.get("analysis_batches", 8), int, f"{where}.analysis_batches")
    if batches <= 0:
        raise ConfigError(f"{where}.analysis_batches must be positive, got {batches}.")
    return schema.QuantizationParameters(
        analysis_enable=_typed(quant.get("analysis_enable", False), bool, f"{where}.analysis_enable"),
        precision_level=_choice(level, schema.PRECISION_LEVELS + schema.FLOAT_LEVELS, f"{where}.precision_level"),
        finetune_level=_choice(finetune, schema.FINETUNE_LEVELS, f"{where}.finetune_level"),
        max_percentile=_percentile(quant.get("max_percentile", 0.9999), f"{where}.max_percentile"),
        custom_setting=_custom_settings(quant.get("custom_setting")),
        truncate_var_names=_names(quant.get("truncate_var_names"), f"{where}.truncate_var_names"),
        ignore_op_types=_names(quant.get("ignore_op_types"), f"{where}.ignore_op_types"),
        ignore_op_names=_names(quant.get("ignore_op_names"), f"{where}.ignore_op_names"),
        bias_dtype=_choice(quant.get("bias_dtype", "float"), schema.BIAS_DTYPES, f"{where}.bias_dtype"),
        analysis_batches=batches,
        fp16_bias_correction=(None if quant.get("fp16_bias_correction") is None else
                              _typed(quant["fp16_bias_correction"], bool, f"{where}.fp16_bias_correction")),
        fp16_min_snr_db=_snr_floor(quant.get("fp16_min_snr_db"), f"{where}.fp16_min_snr_db"),
    )


def _snr_floor(value: Any, where: str) -> Optional[float]:
    """An SNR floor in dB: 0 (off) or a number above 0 and at most 150 (float32's own rounding is about 150 dB)."""
    value = _typed(value, float, where, allow_none=True)
    if value is not None and not 0 <= value <= 150:
        raise ConfigError(f"{where} must be a number of dB from 0 (off: plain FP16) to 150, got {value!r}.",
                          "60 (the default with calibration data) is the usual bar for an FP16 model.")
    return value


def apply_overrides(raw: dict, overrides: Optional[dict]) -> dict:
    """A copy of ``raw`` with ``overrides`` ({section: {key: value}}) written over its keys."""
    if not overrides:
        return raw
    merged = dict(raw)
    for section, values in overrides.items():
        body = _section(raw, section)
        merged[section] = {**body, **values}
    return merged


def load_config(
    config: ConfigSource, model: ModelSource = None, output: Optional[str] = None,
    overrides: Optional[dict] = None,
) -> Tuple[schema.XQuantConfig, onnx.ModelProto]:
    """Parse and validate ``config``; ``model`` and ``output`` override the config (CLI -i/-o, API args),
    and so do ``overrides`` ({section: {key: value}}, the CLI's --fp16, --dynq, --opset, --ignore_op_*).

    Returns the config and the loaded (not yet simplified) model.
    """
    raw, config_path = read_raw_config(config)
    raw = apply_overrides(raw, overrides)
    warn_unknown_keys(raw)
    base_dir = os.path.dirname(config_path) if config_path else os.getcwd()
    model_params, proto = _model_parameters(_section(raw, "model_parameters"), base_dir, model, output)
    quantization = _quantization(_section(raw, "quantization_parameters"))
    calibration = _calibration(_section(raw, "calibration_parameters"), proto, base_dir,
                               quantization.precision_level in schema.FLOAT_LEVELS)
    extra = {name: raw[name] for name in raw if name not in ("model_parameters", "calibration_parameters",
                                                            "quantization_parameters")}
    return schema.XQuantConfig(model_params, calibration, quantization, config_path, base_dir, extra), proto


def describe_inputs(params: Sequence[schema.InputParameter]) -> List[str]:
    return [f"{p.input_name} {list(p.input_shape)} {p.file_type}" for p in params]
