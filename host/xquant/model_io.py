"""Reading models and text files, checking output paths up front, and writing files atomically."""
from __future__ import annotations

import codecs
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Type, Union

import onnx

from .errors import ConfigError, DataError, ModelError, XQuantError

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


def load_model(model: Union[str, "os.PathLike[str]", onnx.ModelProto],
               load_external_data: bool = True) -> onnx.ModelProto:
    """The one way xquant and xqhil read an ONNX file: a missing or unparsable file is a ``ModelError``
    (exit 2) naming it. ``load_external_data=False`` reads the graph only (enough for its inputs)."""
    if isinstance(model, onnx.ModelProto):
        return model
    path = os.fspath(model)
    if not os.path.exists(path):
        raise ModelError(f"Model file not found: '{path}' (resolved to '{os.path.abspath(path)}').")
    try:
        return onnx.load(path, load_external_data=load_external_data)
    except Exception as exc:  # onnx raises DecodeError and friends
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(f"Cannot read ONNX model '{path}': {reason}.", "Is it an .onnx file?") from exc


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


def read_text(path: str, what: str, error: Type[XQuantError] = DataError) -> str:
    """The UTF-8 text of ``path`` (a BOM is dropped); an unreadable or non-UTF-8 file is one ``error``
    naming ``what``, the file and the line of the first bad byte."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise error(f"Cannot read {what} '{path}': {exc.strerror}.") from exc
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        raise error(f"{what} '{path}' is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line}.",
                    "It starts with a UTF-16 byte-order mark: save it as UTF-8." if utf16
                    else "Save it as UTF-8.") from None


def check_writable(path: str, what: str, folder: bool = False) -> None:
    """Raise ``ConfigError`` unless a file (or, with ``folder``, files inside a folder) can be written at
    ``path``. Nothing is left behind: the nearest existing folder is probed with a temporary file."""
    path = os.path.abspath(path)
    if os.path.isdir(path) and not folder:
        raise ConfigError(f"{what} '{path}' is a folder, not a file.",
                          f"Give a file path, e.g. '{os.path.join(path, 'model.q.onnx')}'.")
    target = path if folder else os.path.dirname(path)
    existing = target
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{what} '{path}' cannot be written: '{existing}' is a file, not a folder.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".xquant-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{what} '{path}' cannot be written: {exc.strerror} in '{existing}'.",
                          "Choose a folder you can write to.") from exc


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
