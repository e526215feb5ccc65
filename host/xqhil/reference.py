"""The PC side: FP32 and INT8 on the host's onnxruntime, with the agent's own batching code.

The agent file is loaded as a module (it never imports host code, the host may import it), so PC and
chip runs split samples into batches and concatenate outputs in exactly the same way.
"""
from __future__ import annotations

import importlib.util
import logging
from functools import lru_cache
from types import ModuleType
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from xquant.model_io import graph_inputs, load_model, run_batch

from .errors import BadInput
from .paths import agent_path

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def agent_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("xqhil_device_agent", agent_path())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def input_layout(model_path: str, names: Sequence[str]) -> List[Optional[int]]:
    """Per name in ``names``: the axis where the model stacks samples (xquant.model_io.graph_inputs: 1 for a
    recurrent state [layers, N, hidden]), None when the input has no batch axis (a scalar, a fixed state).
    The one layout the PC and the board both feed (request inputs.batch_axes)."""
    axes = {gi.name: gi.batch_axis for gi in graph_inputs(load_model(model_path, load_external_data=False))}
    missing = [n for n in names if n not in axes]
    if missing:
        raise BadInput(f"config input(s) {missing} are not inputs of '{model_path}' (it has {sorted(axes)}).",
                       "Name calibration_parameters.input_parametres after the model's inputs.")
    return [axes[n] for n in names]


def run_on_pc(model_path: str, what: str, names: Sequence[str], arrays: Sequence[np.ndarray],
              batch_size: int, threads: int = 0,
              batch_axes: Optional[Sequence[Optional[int]]] = None) -> Tuple[List[np.ndarray], List[str]]:
    """Outputs of ``model_path`` on every sample (``arrays`` samples-first, laid out per ``batch_axes``);
    a model the PC cannot run is bad input (exit 2)."""
    agent = agent_module()
    np_mod, ort = agent.import_runtime()
    try:
        session = agent.load_model(ort, model_path, ["CPUExecutionProvider"], threads)
        outputs, _ = agent.run_accuracy(np_mod, session, list(names), list(arrays), batch_size,
                                        None if batch_axes is None else list(batch_axes))
    except Exception as exc:  # onnxruntime raises its own types
        raise BadInput(f"the PC's onnxruntime cannot run the {what} '{model_path}': {agent.error_text(exc)}.",
                       "Fix the model (or the config's input_parametres) before verifying on a board.") from exc
    return outputs, [o.name for o in session.get_outputs()]


def static_classes(model_path: str) -> Optional[int]:
    """Values per sample of the model's first output (the classes top-1 picks from) when its declared shape
    fixes them; None when it does not (the PC's FP32 outputs tell, before the board run)."""
    from xquant.model_io import graph_outputs

    model = load_model(model_path, load_external_data=False)
    inputs, outputs = graph_inputs(model), graph_outputs(model)
    if not inputs or not outputs:
        return None
    dims = list(outputs[0].shape)
    first = next((gi for gi in inputs if gi.batch_axis is not None), None)
    axis = agent_module().declared_batch_axis(dims, 1 if first is None else first.shape[first.batch_axis])
    if axis == agent_module().UNKNOWN:
        return None
    rest = [d for i, d in enumerate(dims) if i != axis]
    return int(np.prod(rest)) if all(isinstance(d, int) and d > 0 for d in rest) else None


def leading_dims(model_path: str) -> Dict[str, Optional[int]]:
    """Per graph input: the fixed size of axis 0, or None when it is free (symbolic or unknown)."""
    dims: Dict[str, Optional[int]] = {}
    for gi in graph_inputs(load_model(model_path, load_external_data=False)):
        first = gi.shape[0] if gi.shape else None
        dims[gi.name] = first if isinstance(first, int) and first > 0 else None
    return dims


def choose_batch(fp32_path: str, int8_path: str, requested: Optional[int]) -> Tuple[int, bool]:
    """Accuracy-mode batch size and whether the model fixes it: the model's fixed batch (1 when an input has
    no batch axis: xquant.model_io.run_batch), else the request, else 16."""
    fixed = {run_batch(load_model(p, load_external_data=False), 0) for p in (fp32_path, int8_path)} - {0}
    if len(fixed) > 1:
        raise BadInput(f"the FP32 and INT8 models fix different batch sizes {sorted(fixed)}.")
    if fixed:
        size = fixed.pop()
        if requested and requested != size:
            log.warning("verify_parameters.batch_size %d ignored: the model fixes batch size %d", requested, size)
        return size, True
    return requested or 16, False
