"""Typed, frozen view of an XQuant JSON config (seed manual, section 2.2).

The loader (``loader.py``) turns a dict or JSON file into these objects, filling the
defaults of the seed's table; everything downstream reads only these objects.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

CALIBRATION_TYPES = ("default", "minmax", "percentile", "kl", "mse")
FILE_TYPES = ("img", "npy", "raw")
DTYPES = ("float32", "int8", "uint8", "int16", "int32", "int64", "bool")  # integer inputs pass through unquantized
COLOR_FORMATS = ("bgr", "rgb")
PRESETS = ("PT_IMAGENET", "IMAGENET")
BIAS_DTYPES = ("float", "int32")
PRECISION_LEVELS = (0, 1, 2)  # INT8 (QDQ); also what custom_setting takes
FLOAT_LEVELS = (3, 4, 100)  # 3 dynamic quantization, 4 FP16, 100 simplify only (xquant/modes)
FINETUNE_LEVELS = (0, 1, 2, 3)


@dataclass(frozen=True)
class InputParameter:
    """One entry of ``calibration_parameters.input_parametres``, defaults filled from the model."""

    input_name: str
    input_shape: Tuple[int, ...]
    dtype: str = "float32"
    file_type: str = "img"
    color_format: str = "bgr"
    mean_value: Optional[Tuple[float, ...]] = None
    std_value: Optional[Tuple[float, ...]] = None
    preprocess_file: Optional[str] = None  # preset name, or absolute "file.py:function"
    data_list_path: Optional[str] = None  # absolute path of the list file
    batch_axis: Optional[int] = 0  # where samples stack in input_shape; None: no batch axis (a scalar)

    @property
    def sample_shape(self) -> Tuple[int, ...]:
        """``input_shape`` without the batch axis: the shape one data file holds."""
        dims = list(self.input_shape)
        if self.batch_axis is not None and self.batch_axis < len(dims):
            del dims[self.batch_axis]
        return tuple(dims)

    def as_dict(self) -> dict:
        """The shape the seed's preprocess hooks receive as ``input_parametr``."""
        return {
            "input_name": self.input_name,
            "input_shape": list(self.input_shape),
            "dtype": self.dtype,
            "file_type": self.file_type,
            "color_format": self.color_format,
            "mean_value": list(self.mean_value) if self.mean_value is not None else None,
            "std_value": list(self.std_value) if self.std_value is not None else None,
            "preprocess_file": self.preprocess_file,
            "data_list_path": self.data_list_path,
        }


@dataclass(frozen=True)
class CustomSetting:
    """A subgraph captured by its boundary edges, with its own quantization settings."""

    input_names: Tuple[str, ...]
    output_names: Tuple[str, ...]
    precision_level: Optional[int] = None
    calibration_type: Optional[str] = None
    max_percentile: Optional[float] = None


@dataclass(frozen=True)
class ModelParameters:
    onnx_model: str  # absolute path
    output_model: str  # absolute path of the .q.onnx to write
    output_prefix: str
    working_dir: str  # absolute
    skip_onnxsim: bool = False
    opset: Optional[int] = None  # convert the default ai.onnx opset to this version first


@dataclass(frozen=True)
class CalibrationParameters:
    calibration_step: int = 100
    calibration_device: str = "cpu"  # resolved: "cuda" only when onnxruntime can use it
    calibration_type: str = "default"
    input_parameters: Tuple[InputParameter, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class QuantizationParameters:
    analysis_enable: bool = False
    precision_level: int = 0
    finetune_level: int = 1
    max_percentile: float = 0.9999
    custom_setting: Tuple[CustomSetting, ...] = ()
    truncate_var_names: Tuple[str, ...] = ()
    ignore_op_types: Tuple[str, ...] = ()
    ignore_op_names: Tuple[str, ...] = ()
    bias_dtype: str = "float"
    analysis_batches: int = 8
    fp16_bias_correction: Optional[bool] = None  # precision_level 4 only (None: on): modes/bias_fix.py
    fp16_min_snr_db: Optional[float] = None  # precision_level 4 only; None: 60 with calibration data, 0: off
    # (modes/fp16_floor.py)


@dataclass(frozen=True)
class XQuantConfig:
    model: ModelParameters
    calibration: CalibrationParameters
    quantization: QuantizationParameters
    config_path: Optional[str] = None  # absolute path of the JSON file, None for dict configs
    base_dir: str = "."  # folder that relative paths in the config are read against
    extra_sections: dict = field(default_factory=dict)  # e.g. verify_parameters, validated by xqhil

    @property
    def report_stem(self) -> str:
        """``<working_dir>/<output_prefix>``: the stem of the report files."""
        import os

        out = self.model.output_model
        name = os.path.basename(out)
        for suffix in (".q.onnx", ".onnx"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        return os.path.join(os.path.dirname(out), name)
