"""Running a model (an ONNX proto) on the board and on the PC, one sample per run, counting board visits.

Every board run is one visit of the existing session (deploy, run the agent, fetch): the agent's accuracy
task already returns every output of whatever model it is given, so exposing tensors needs no new task kind.
Model ids start with ``int8`` (the board sees an INT8 model).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from xquant.model_io import graph_inputs

from ..boards.spec import BoardSpec
from ..protocol import Task
from ..reference import run_on_pc
from ..session import BoardSession
from ..transport import Deadlines

Outputs = Dict[str, np.ndarray]  # tensor name -> [N, ...]


@dataclass
class Board:
    spec: BoardSpec
    deadlines: Deadlines = field(default_factory=Deadlines)
    retries: int = 2
    providers: Optional[Sequence[str]] = None
    threads: int = 0
    environment: Dict[str, str] = field(default_factory=dict)  # set on the board before onnxruntime loads
    provider_options: Dict[str, Dict[str, str]] = field(default_factory=dict)
    runs: int = 0
    device: dict = field(default_factory=dict)
    provider: str = ""

    def run(self, model: onnx.ModelProto, model_id: str, names: Sequence[str],
            arrays: Sequence[np.ndarray]) -> Tuple[Optional[Outputs], str]:
        """The model's outputs by name on every sample, or (None, the runtime's error)."""
        with tempfile.TemporaryDirectory(prefix="xqhil-localize-") as scratch:
            path = os.path.join(scratch, f"{model_id}.onnx")
            onnx.save(model, path)
            task = Task(model_id, model_id, "accuracy", 1)
            run = BoardSession(self.spec, self.deadlines, self.retries).run(
                {model_id: path}, list(names), list(arrays), [task], self.providers, self.threads,
                self.environment, self.provider_options, batch_axes(model, names, arrays))
        self.runs += 1
        self.device = run.device or self.device
        entry, result = run.model(model_id), run.task(model_id)
        if entry.get("ok"):
            self.provider = (entry.get("providers") or [self.provider])[0]
        if not entry.get("ok"):
            return None, f"load failed: {entry.get('error')}"
        if not result.get("ok"):
            return None, f"run failed: {result.get('error')}"
        return dict(zip(run.output_names[model_id], run.outputs[model_id])), ""


def run_pc(model: onnx.ModelProto, what: str, names: Sequence[str], arrays: Sequence[np.ndarray],
           threads: int = 0) -> Outputs:
    """The model's outputs by name on the PC's CPU provider, batched as on the board."""
    with tempfile.TemporaryDirectory(prefix="xqhil-localize-") as scratch:
        path = os.path.join(scratch, "model.onnx")
        onnx.save(model, path)
        outputs, out_names = run_on_pc(path, what, names, arrays, 1, threads, batch_axes(model, names, arrays))
    return dict(zip(out_names, outputs))


def batch_axes(model: onnx.ModelProto, names: Sequence[str], arrays: Sequence[np.ndarray]) -> List[Optional[int]]:
    """Where each input of ``model`` stacks this run's samples (``arrays`` are samples-first): none where a
    value has one axis more than the input declares (a tensor without a sample axis, such as a detector's
    anchor grid computed from shapes, which the agent stacked per sample), else the input's own batch axis
    (xquant.model_io.graph_inputs, the one inspection helper)."""
    declared = {gi.name: gi for gi in graph_inputs(model)}
    axes: List[Optional[int]] = []
    for name, value in zip(names, arrays):
        gi = declared.get(name)
        if gi is not None and value.ndim == len(gi.shape) + 1:
            axes.append(None)
        else:
            axes.append(gi.batch_axis if gi is not None and gi.batch_axis is not None else 0)
    return axes


def feed(model: onnx.ModelProto, values: Dict[str, np.ndarray]) -> Tuple[List[str], List[np.ndarray]]:
    """The model's input names and their arrays taken from ``values``."""
    inits = {i.name for i in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in inits]
    return names, [np.ascontiguousarray(values[n]) for n in names]
