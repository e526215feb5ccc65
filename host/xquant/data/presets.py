"""The two preset preprocessings of ``preprocess_file``.

Both decode the image, resize its shorter side to ``round(side * 256 / 224)`` of the model's input side
(bilinear), centre-crop to the input's H x W, and lay the result out as the input expects (NCHW or NHWC).
They differ in pixel handling:

* ``PT_IMAGENET`` (torchvision style): RGB order, pixels scaled to [0, 1], then
  ``(x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]``. ``color_format``, ``mean_value`` and
  ``std_value`` are ignored.
* ``IMAGENET`` (classic Caffe style): channel order from ``color_format`` (bgr by default), pixels in
  0-255, then ``(x - mean_value) / std_value``; when unset, mean ``[103.94, 116.78, 123.68]`` and std
  ``[57, 57, 57]`` given in BGR order (reversed for rgb), the values of the seed's example config.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..config.schema import InputParameter
from .readers import imread, layout, normalise, to_layout

PT_MEAN_RGB = (0.485, 0.456, 0.406)
PT_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.94, 116.78, 123.68)
CAFFE_STD_BGR = (57.0, 57.0, 57.0)


def resize_center_crop(img: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    short_target = round(min(height, width) * 256 / 224)
    h, w = img.shape[:2]
    scale = short_target / min(h, w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    resized = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[top:top + height, left:left + width]


def pt_imagenet(path: str, param: InputParameter) -> np.ndarray:
    order, channels, height, width = layout(param.input_shape)
    img = resize_center_crop(imread(path, channels, "rgb"), height, width).astype(np.float32) / 255.0
    mean, std = (PT_MEAN_RGB, PT_STD_RGB) if channels == 3 else ((0.449,), (0.226,))
    return to_layout(normalise(img, mean, std), order)


def imagenet(path: str, param: InputParameter) -> np.ndarray:
    order, channels, height, width = layout(param.input_shape)
    img = resize_center_crop(imread(path, channels, param.color_format), height, width)
    mean, std = param.mean_value, param.std_value
    if mean is None:
        mean = CAFFE_MEAN_BGR if param.color_format == "bgr" else CAFFE_MEAN_BGR[::-1]
        mean = mean if channels == 3 else (float(np.mean(CAFFE_MEAN_BGR)),)
    if std is None:
        std = CAFFE_STD_BGR if channels == 3 else (57.0,)
    return to_layout(normalise(img, mean, std), order)


PRESETS = {"PT_IMAGENET": pt_imagenet, "IMAGENET": imagenet}


def run_preset(name: str, paths: Sequence[str], param: InputParameter) -> np.ndarray:
    reader = PRESETS[name]
    return np.stack([reader(p, param) for p in paths]).astype(np.float32)
