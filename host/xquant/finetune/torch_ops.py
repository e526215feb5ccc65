"""A small ONNX-to-torch interpreter for the ops of a reconstruction block (torch imported lazily).

``run_block`` evaluates a list of ONNX nodes on torch tensors; ops it does not know raise
``Unsupported`` so that the caller keeps that block as it was."""
from __future__ import annotations

from typing import Callable, Dict, List

import numpy as np
import onnx
from onnx import helper

from ..errors import ConfigError


class Unsupported(Exception):
    """The block holds an op (or attribute) the interpreter does not implement."""


def require_torch(level: int) -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"quantization_parameters.finetune_level {level} needs torch, which is not installed.",
                          "Install the 'finetune' extra of xqhil (torch), or use finetune_level 0 or 1.") from exc


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pads(a: dict, x, spatial: int):
    import torch.nn.functional as F

    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise Unsupported("auto_pad")
    pads = list(a.get("pads", [0] * (2 * spatial)))
    begin, end = pads[:spatial], pads[spatial:]
    if begin == end:
        return x, tuple(begin)
    flat = []
    for b, e in zip(reversed(begin), reversed(end)):
        flat += [b, e]
    return F.pad(x, flat), (0,) * spatial


def _conv(node, a, x, w, b=None):
    import torch.nn.functional as F

    if x.dim() != 4:
        raise Unsupported("Conv other than 2-D")
    x, pad = _pads(a, x, 2)
    return F.conv2d(x, w, b, stride=tuple(a.get("strides", [1, 1])), padding=pad,
                    dilation=tuple(a.get("dilations", [1, 1])), groups=a.get("group", 1))


def _gemm(node, a, x, w, c=None):
    if a.get("transA", 0):
        raise Unsupported("Gemm transA")
    y = a.get("alpha", 1.0) * (x @ (w.t() if a.get("transB", 0) else w))
    return y + a.get("beta", 1.0) * c if c is not None else y


def _pool(node, a, x):
    import torch.nn.functional as F

    if x.dim() != 4:
        raise Unsupported("pooling other than 2-D")
    x, pad = _pads(a, x, 2)
    kernel, strides = tuple(a["kernel_shape"]), tuple(a.get("strides", [1, 1]))
    ceil = bool(a.get("ceil_mode", 0))
    if node.op_type == "MaxPool":
        return F.max_pool2d(x, kernel, strides, pad, dilation=tuple(a.get("dilations", [1, 1])), ceil_mode=ceil)
    return F.avg_pool2d(x, kernel, strides, pad, ceil_mode=ceil, count_include_pad=bool(a.get("count_include_pad", 0)))


def _clip(node, a, x, lo=None, hi=None):
    import torch

    lo = a.get("min", -np.inf) if lo is None else lo
    hi = a.get("max", np.inf) if hi is None else hi
    return torch.clamp(x, min=float(lo), max=float(hi))


def _reshape(node, a, x, shape):
    dims = [int(d) for d in shape.tolist()]
    dims = [x.shape[i] if d == 0 and not a.get("allowzero", 0) else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _flatten(node, a, x):
    axis = a.get("axis", 1) % x.dim() if x.dim() else 0
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _unsqueeze(node, a, x, axes=None):
    axes = [int(v) for v in (axes.tolist() if axes is not None else a["axes"])]
    for ax in sorted(ax % (x.dim() + len(axes)) for ax in axes):
        x = x.unsqueeze(ax)
    return x


def _squeeze(node, a, x, axes=None):
    axes = axes.tolist() if axes is not None else a.get("axes")
    if axes is None:
        return x.squeeze()
    for ax in sorted((int(v) % x.dim() for v in axes), reverse=True):
        x = x.squeeze(ax)
    return x


def _table() -> Dict[str, Callable]:
    import torch
    import torch.nn.functional as F

    return {
        "Conv": _conv, "Gemm": _gemm, "MatMul": lambda n, a, x, w: torch.matmul(x, w),
        "Relu": lambda n, a, x: F.relu(x), "Sigmoid": lambda n, a, x: torch.sigmoid(x),
        "Tanh": lambda n, a, x: torch.tanh(x), "Clip": _clip,
        "LeakyRelu": lambda n, a, x: F.leaky_relu(x, a.get("alpha", 0.01)),
        "HardSigmoid": lambda n, a, x: torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1),
        "HardSwish": lambda n, a, x: x * torch.clamp(x / 6 + 0.5, 0, 1),
        "Add": lambda n, a, x, y: x + y, "Sub": lambda n, a, x, y: x - y,
        "Mul": lambda n, a, x, y: x * y, "Div": lambda n, a, x, y: x / y,
        "MaxPool": _pool, "AveragePool": _pool,
        "GlobalAveragePool": lambda n, a, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
        "GlobalMaxPool": lambda n, a, x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
        "Flatten": _flatten, "Reshape": _reshape, "Identity": lambda n, a, x: x,
        "Concat": lambda n, a, *xs: torch.cat(xs, dim=a["axis"]),
        "Transpose": lambda n, a, x: x.permute(*a["perm"]) if "perm" in a else x.permute(*reversed(range(x.dim()))),
        "Softmax": lambda n, a, x: torch.softmax(x, dim=a.get("axis", -1)),
        "Unsqueeze": _unsqueeze, "Squeeze": _squeeze,
    }


_OPS: Dict[str, Callable] = {}


def supported(node: onnx.NodeProto) -> bool:
    return node.op_type in ("Conv", "Gemm", "MatMul", "Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu",
                            "HardSigmoid", "HardSwish", "Add", "Sub", "Mul", "Div", "MaxPool", "AveragePool",
                            "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Identity", "Concat",
                            "Transpose", "Softmax", "Unsqueeze", "Squeeze")


def run_node(node: onnx.NodeProto, inputs: List):
    if not _OPS:
        _OPS.update(_table())
    if node.op_type not in _OPS:
        raise Unsupported(node.op_type)
    while inputs and inputs[-1] is None:
        inputs = inputs[:-1]
    return _OPS[node.op_type](node, attrs(node), *inputs)
