"""Statistics of the calibration tensors after preprocessing, with warnings when they look wrong (pure)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from ..config.schema import InputParameter

MEAN_LIMIT = 1.0  # |mean| of a normalised input beyond this (in std units) is suspicious
STD_RANGE = (0.2, 5.0)  # std of a normalised input outside this is suspicious
SWAP_GAIN = 0.5  # a channel swap must bring the channel means at least this much closer to 0


def _channel_axis(x: np.ndarray) -> Optional[int]:
    return 1 if x.ndim >= 3 and x.shape[1] <= 16 else None


def _moments(x: np.ndarray, axis: Optional[int]) -> dict:
    if axis is None:
        flat = x.reshape(1, -1)
    else:
        flat = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    flat = flat.astype(np.float64)
    return {"mean": flat.mean(1).tolist(), "std": flat.std(1).tolist(),
            "min": flat.min(1).tolist(), "max": flat.max(1).tolist()}


def _swap_hint(means: Sequence[float], param: InputParameter) -> Optional[str]:
    """Do the channel means look like BGR data normalised as RGB (or the reverse)?"""
    mean, std = param.mean_value, param.std_value
    if len(means) != 3 or not mean or not std or len(mean) != 3 or len(std) != 3 or mean[0] == mean[2]:
        return None
    raw = [m * s + mu for m, s, mu in zip(means, std, mean)]  # channel means back in pixel units
    swapped = [(raw[c] - mean[2 - c]) / std[2 - c] for c in range(3)]
    now, then = sum(abs(m) for m in means), sum(abs(m) for m in swapped)
    if max(abs(m) for m in means) > 0.25 and then < SWAP_GAIN * now:
        other = "rgb" if param.color_format == "bgr" else "bgr"
        return (f"channel means {_fmt(means)} would be {_fmt(swapped)} with channels 0 and 2 swapped: the data "
                f"looks like {other.upper()} read as {param.color_format.upper()}; check color_format "
                f"('{param.color_format}') or the order of mean_value/std_value.")
    return None


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def _warnings(x: np.ndarray, overall: dict, channels: Optional[dict], param: InputParameter) -> List[str]:
    found: List[str] = []
    if not np.isfinite(x).all():
        return ["the calibration tensors contain NaN or Inf: check the data files and preprocess_file."]
    mean, std = overall["mean"][0], overall["std"][0]
    if std < 1e-6:
        return [f"every value is {mean:.4g}: the calibration tensors are constant; check the data files."]
    normalised = param.mean_value is not None or param.std_value is not None or bool(param.preprocess_file)
    if normalised and abs(mean) > MEAN_LIMIT * max(std, 1.0):
        found.append(f"mean {mean:.3g} is far from 0 after normalisation: check mean_value/std_value "
                     "(pixel units, in the order of color_format).")
    if normalised and not STD_RANGE[0] <= std <= STD_RANGE[1]:
        found.append(f"std {std:.3g} is far from 1 after normalisation: check std_value.")
    if not normalised and param.file_type == "img" and overall["max"][0] > 10:
        found.append(f"values span {overall['min'][0]:.3g}..{overall['max'][0]:.3g}: raw pixels reach the model "
                     "(no mean_value/std_value); make sure the model was trained on such inputs.")
    if channels is not None:
        hint = _swap_hint(channels["mean"], param)
        if hint:
            found.append(hint)
    return found


def input_statistics(batches: Sequence[Dict[str, np.ndarray]], params: Sequence[InputParameter]) -> Dict[str, dict]:
    """{input name: {shape, samples, overall, channels, warnings}} over ``batches`` (preprocessed inputs)."""
    result = {}
    for param in params:
        arrays = [b[param.input_name] for b in batches if param.input_name in b]
        if not arrays:
            continue
        x = np.concatenate(arrays).astype(np.float32)
        axis = _channel_axis(x)
        overall = _moments(x, None)
        channels = _moments(x, axis) if axis is not None else None
        result[param.input_name] = {
            "shape": list(x.shape[1:]), "samples": int(x.shape[0]), "overall": overall, "channels": channels,
            "warnings": _warnings(x, overall, channels, param)}
    return result
