"""Reading models and writing them atomically."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

import onnx

from .errors import ModelError

ONNX_TO_NAME = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
}


@dataclass(frozen=True)
class GraphInput:
    name: str
    shape: Tuple[Union[int, str, None], ...]  # ints, symbolic names, or None for unknown dims
    dtype: str


def load_model(model: Union[str, "os.PathLike[str]", onnx.ModelProto]) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = os.fspath(model)
    if not os.path.exists(path):
        raise ModelError(f"Model file not found: '{path}' (resolved to '{os.path.abspath(path)}').")
    try:
        return onnx.load(path)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"Cannot read ONNX model '{path}': {exc}.", "Is it an .onnx file?") from exc


def _value_info(value: "onnx.ValueInfoProto") -> GraphInput:
    tensor_type = value.type.tensor_type
    dims: list = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return GraphInput(value.name, tuple(dims), ONNX_TO_NAME.get(tensor_type.elem_type, "unknown"))


def graph_inputs(model: onnx.ModelProto) -> List[GraphInput]:
    """The model's real inputs (graph inputs that are not initializers), in order."""
    initializers = {init.name for init in model.graph.initializer}
    return [_value_info(v) for v in model.graph.input if v.name not in initializers]


def graph_outputs(model: onnx.ModelProto) -> List[GraphInput]:
    """The model's outputs as declared, in order (same record as an input: name, dims, dtype)."""
    return [_value_info(v) for v in model.graph.output]


def _write_atomic(path: str, suffix: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then rename: never a half-written file."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".xquant-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model_atomic(model: onnx.ModelProto, path: str) -> None:
    _write_atomic(path, ".onnx.tmp", lambda tmp: onnx.save(model, tmp))


def write_text_atomic(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    _write_atomic(path, ".tmp", write)


def model_stem(path: Optional[str]) -> str:
    name = os.path.basename(path or "model.onnx")
    return name[: -len(".onnx")] if name.endswith(".onnx") else os.path.splitext(name)[0]
