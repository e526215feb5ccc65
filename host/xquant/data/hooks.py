"""User preprocess hooks: ``"file.py:function"`` with the seed's signature
``function(path_list, input_parametr) -> torch.Tensor | numpy.ndarray`` returning one batch."""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from ..config.schema import InputParameter
from ..errors import DataError


@lru_cache(maxsize=None)
def load_hook(spec: str) -> Callable:
    path, func_name = spec.rsplit(":", 1)
    module_name = "xquant_hook_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    try:
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError("not a Python file")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise DataError(f"preprocess_file '{path}' could not be loaded: {type(exc).__name__}: {exc}.",
                        "Fix the Python file (it is imported as a module).") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        found = [n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module_name]
        raise DataError(f"preprocess_file '{path}' has no function '{func_name}'.",
                        f"Functions found: {', '.join(found) or 'none'}.")
    return func


def to_numpy(value: object, spec: str, dtype: str = "float32") -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; torch is imported only by the user's hook
        value = value.detach().cpu().numpy()  # type: ignore[union-attr]
    if not isinstance(value, np.ndarray):
        raise DataError(f"preprocess_file '{spec}' returned {type(value).__name__}; "
                        "it must return a torch.Tensor or a numpy.ndarray holding one batch.")
    return value.astype(dtype, copy=False)


def run_hook(spec: str, paths: Sequence[str], param: InputParameter) -> np.ndarray:
    func = load_hook(spec)
    try:
        result = func(list(paths), param.as_dict())
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"preprocess_file '{spec}' raised {type(exc).__name__}: {exc}.",
                        f"It was called with {len(paths)} file(s), the first '{paths[0]}'.") from exc
    batch = to_numpy(result, spec, param.dtype)
    expected = (len(paths),) + param.sample_shape
    if batch.shape != expected:
        raise DataError(f"preprocess_file '{spec}' returned shape {list(batch.shape)} for {len(paths)} file(s); "
                        f"input '{param.input_name}' expects {list(expected)}.")
    return batch
