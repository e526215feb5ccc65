"""Read one calibration sample from an image, .npy or raw float32 file, as the model input expects it."""
from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from ..config.schema import InputParameter
from ..errors import DataError


def layout(shape: Sequence[int]) -> Tuple[str, int, int, int]:
    """('NCHW'|'NHWC', C, H, W) for a 4-D image input; NCHW unless the last dim looks like channels."""
    if len(shape) != 4:
        raise DataError(f"file_type img needs a 4-D input_shape (N, C, H, W), got {list(shape)}.",
                        "Use file_type npy or raw for other ranks.")
    if shape[1] not in (1, 3) and shape[3] in (1, 3):
        return "NHWC", shape[3], shape[1], shape[2]
    return "NCHW", shape[1], shape[2], shape[3]


def imread(path: str, channels: int, color_format: str) -> np.ndarray:
    """HWC uint8 image; grayscale for 1-channel inputs; channel order per color_format."""
    import cv2

    if channels not in (1, 3):
        raise DataError(f"file_type img supports 1 or 3 channels, the input has {channels}.")
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, flag) if data.size else None
    if img is None:
        raise DataError(f"Cannot decode image '{path}'.", "Is it a valid image file (png, jpg, bmp, ...)?")
    if channels == 1:
        return img[:, :, None]
    if color_format == "rgb":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def normalise(img: np.ndarray, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]) -> np.ndarray:
    out = img.astype(np.float32)
    channels = out.shape[-1]
    for values, what in ((mean, "mean_value"), (std, "std_value")):
        if values is not None and len(values) not in (1, channels):
            raise DataError(f"{what} has {len(values)} values but the input has {channels} channel(s).")
    if mean is not None:
        out -= np.asarray(mean, dtype=np.float32)
    if std is not None:
        std_arr = np.asarray(std, dtype=np.float32)
        if np.any(std_arr == 0):
            raise DataError("std_value contains 0; it divides the input.")
        out /= std_arr
    return out


def to_layout(hwc: np.ndarray, order: str) -> np.ndarray:
    return np.ascontiguousarray(hwc.transpose(2, 0, 1) if order == "NCHW" else hwc)


def read_img(path: str, param: InputParameter) -> np.ndarray:
    import cv2

    if param.dtype != "float32":
        raise DataError(f"file_type img cannot feed {param.dtype} input '{param.input_name}'.",
                        "Use file_type npy or raw for integer inputs.")
    order, channels, height, width = layout(param.input_shape)
    img = imread(path, channels, param.color_format)
    if img.shape[:2] != (height, width):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        if img.ndim == 2:
            img = img[:, :, None]
    return to_layout(normalise(img, param.mean_value, param.std_value), order)


def read_npy(path: str, param: InputParameter) -> np.ndarray:
    """One sample: the input's shape without its batch axis (``sample_shape``), or the whole input_shape
    with a batch of 1 on the batch axis; a scalar input may also be stored as shape [1]."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"Cannot read .npy file '{path}': {exc}.") from exc
    sample_shape = param.sample_shape
    axis, stored = param.batch_axis, list(arr.shape)
    if axis is not None and arr.ndim == len(sample_shape) + 1 and arr.shape[axis] == 1:
        arr = np.take(arr, 0, axis=axis)  # the whole input_shape with batch 1
    elif arr.shape == (1,) + sample_shape:
        arr = arr[0]
    if arr.shape != sample_shape:
        one = list(param.input_shape) if axis is not None else [1] + list(sample_shape)
        raise DataError(f"npy file '{path}' has shape {stored}; input '{param.input_name}' expects "
                        f"{list(sample_shape)} or {one} (input_shape {list(param.input_shape)}).")
    return _as_dtype(arr, param, path)


def _as_dtype(arr: np.ndarray, param: InputParameter, path: str) -> np.ndarray:
    """``arr`` as the input's dtype; values an integer or bool input cannot hold exactly are an error."""
    out = arr.astype(param.dtype)
    if param.dtype != "float32" and not np.array_equal(out.astype(np.float64), arr.astype(np.float64)):
        raise DataError(f"File '{path}' holds values that {param.dtype} input '{param.input_name}' cannot take "
                        f"exactly (e.g. fractions or out-of-range numbers).", f"Store {param.dtype} data for it.")
    return out


def read_raw(path: str, param: InputParameter) -> np.ndarray:
    sample_shape = param.sample_shape
    itemsize = np.dtype(param.dtype).itemsize
    expected = int(np.prod(sample_shape)) * itemsize
    size = os.path.getsize(path)
    if size != expected:
        raise DataError(f"raw file '{path}' has {size} bytes; input '{param.input_name}' expects {expected} "
                        f"({param.dtype} x {list(sample_shape)}).", f"raw files hold {param.dtype} data of one sample.")
    return np.fromfile(path, dtype=param.dtype).reshape(sample_shape)


READERS: Dict[str, Callable[[str, InputParameter], np.ndarray]] = {
    "img": read_img,
    "npy": read_npy,
    "raw": read_raw,
}
