"""Reading models and text files, checking output paths up front, and writing files atomically."""
from __future__ import annotations

import codecs
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import numpy as np
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


BATCH_NAMES = ("batch", "n", "b", "bs", "batch_size", "batchsize", "n_batch", "num_batch")

Dim = Union[int, str, None]


@dataclass(frozen=True)
class GraphInput:
    """What one model input takes. ``shape``: fixed sizes as ints, symbolic names as str, None where the
    size is free but unnamed (no dim info, or ``dim_value`` -1 / 0 as Paddle2ONNX writes a free batch).
    ``batch_axis``: where samples stack (None: no batch axis, e.g. a scalar; such a model runs one sample
    at a time). Calibration data holds one sample per file, shaped ``sample_shape``."""

    name: str
    shape: Tuple[Dim, ...]
    dtype: str
    batch_axis: Optional[int] = 0

    @property
    def fixed_batch(self) -> int:
        """The batch size the model demands on this input, 0 when it is free (or there is no batch axis)."""
        if self.batch_axis is None:
            return 0
        dim = self.shape[self.batch_axis]
        return dim if isinstance(dim, int) else 0

    @property
    def is_float(self) -> bool:
        return self.dtype == "float32"

    def to_model(self, samples: np.ndarray) -> np.ndarray:
        """Samples stacked on axis 0 ([N] + sample shape) laid out as the model takes them."""
        if self.batch_axis is None:
            if samples.shape[0] != 1:
                raise ValueError(f"input '{self.name}' has no batch axis; feed one sample at a time")
            return np.asarray(samples[0])
        return samples if self.batch_axis == 0 else np.moveaxis(samples, 0, self.batch_axis)


def _dims(value: onnx.ValueInfoProto) -> Tuple[Dim, ...]:
    dims: List[Dim] = []
    for dim in value.type.tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            dims.append(dim.dim_param)
        else:
            dims.append(None)  # no info, or -1 / 0: a free size
    return tuple(dims)


def _named_batch(shape: Sequence[Dim]) -> Optional[int]:
    return next((i for i, d in enumerate(shape) if isinstance(d, str) and d.lower() in BATCH_NAMES), None)


def batch_axis(shape: Sequence[Dim], free_model: bool, batch: Optional[int] = None) -> Optional[int]:
    """Where the batch is. In a model whose batch is free (some input has a batch-named free dim or a free
    dim 0): the batch-named free dim, else a free dim 0, else the first free dim (state [layers, ?, hidden]);
    fully fixed inputs there have none. In a model whose batch is fixed: the first axis of size ``batch``
    (the first input's dim 0; other free dims are sizes such as an image width). Scalars have none."""
    if not shape:
        return None
    if free_model:
        named = _named_batch(shape)
        if named is not None:
            return named
        return next((i for i, d in enumerate(shape) if not isinstance(d, int)), None)
    if batch is None:
        return 0
    return next((i for i, d in enumerate(shape) if d == batch), None)


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


def graph_inputs(model: onnx.ModelProto) -> List[GraphInput]:
    """The model's real inputs (graph inputs that are not initializers), in order."""
    initializers = {init.name for init in model.graph.initializer}
    result = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        result.append(GraphInput(value.name, _dims(value), ONNX_TO_NAME.get(value.type.tensor_type.elem_type,
                                                                             "unknown")))
    return _with_batch_axes(result)


def _with_batch_axes(inputs: List[GraphInput]) -> List[GraphInput]:
    """Batch axes that agree across inputs (``batch_axis``)."""
    free = any(gi.shape and (_named_batch(gi.shape) is not None or not isinstance(gi.shape[0], int))
               for gi in inputs)
    batch: Optional[int] = None
    result = []
    for gi in inputs:
        axis = batch_axis(gi.shape, free, batch)
        if not free and batch is None and axis is not None:
            batch = gi.shape[axis]  # type: ignore[assignment]
        result.append(GraphInput(gi.name, gi.shape, gi.dtype, axis))
    return result


def graph_outputs(model: onnx.ModelProto) -> List[GraphInput]:
    """The model's outputs as declared, in order (same record as an input: name, dims, dtype)."""
    return [GraphInput(v.name, _dims(v), ONNX_TO_NAME.get(v.type.tensor_type.elem_type, "unknown"))
            for v in model.graph.output]


def run_batch(model: onnx.ModelProto, preferred: int) -> int:
    """The batch size to run ``model`` with: the batch its inputs fix, 1 when an input has no batch axis,
    else ``preferred``."""
    inputs = graph_inputs(model)
    if any(gi.batch_axis is None for gi in inputs):
        return 1
    fixed = [gi.fixed_batch for gi in inputs if gi.fixed_batch]
    return fixed[0] if fixed else preferred


def fixed_batch(model: onnx.ModelProto) -> int:
    """The batch size ``model`` must be run with, 0 when it is free."""
    return run_batch(model, 0)


def model_feeds(inputs: Sequence[GraphInput], batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``batch`` (samples on axis 0) laid out for the model; names it does not describe pass unchanged."""
    by_name = {gi.name: gi for gi in inputs}
    return {name: by_name[name].to_model(value) if name in by_name else value for name, value in batch.items()}


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
