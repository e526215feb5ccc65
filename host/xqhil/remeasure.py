"""Latency only: time the FP32 and INT8 models on a board again (interleaved), for the history's
confirmation of a suspected latency regression (re-runs, and an A/B against the baseline's runtime).

A :class:`LatencyProbe` holds what one verify run timed (models, the batch it timed, threads, providers,
runtime options) and repeats that measurement, on the board's own interpreter or on another one of the
same board (``python``: e.g. an environment with an older onnxruntime).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .boards.spec import BoardSpec, split_python
from .compare import latency_summary
from .protocol import PERF_GROUP, Task
from .session import BoardRun, BoardSession
from .transport import Deadlines


def board_latency(run: BoardRun, threads: int, emulated: bool) -> dict:
    """The latency section of a board run; ``interleaved`` when the agent timed FP32 and INT8 in alternation."""
    fp32, int8 = run.task("fp32-performance"), run.task("int8-performance")
    latency = latency_summary(fp32.get("latency"), int8.get("latency"), threads, emulated)
    latency["interleaved"] = "fp32-performance" in (int8.get("interleaved") or [])
    return latency


@dataclass
class LatencyProbe:
    """One verify run's latency measurement, repeatable."""

    board: BoardSpec
    models: Dict[str, str]  # "fp32"/"int8" -> path
    input_names: List[str]
    inputs: List[np.ndarray]  # the batch the performance tasks time
    warmup: int
    repeat: int
    threads: int
    min_time_s: float = 0.0
    providers: Optional[Sequence[str]] = None
    runtime_options: tuple = ({}, {})
    batch_axes: Optional[List[Optional[int]]] = None
    deadlines: Deadlines = field(default_factory=Deadlines)
    retries: int = 2

    def measure(self, python: Optional[str] = None) -> Dict[str, Any]:
        """``{"device", "latency"}`` of one more interleaved FP32+INT8 timing on the board (with ``python``
        as its interpreter when given); raises HilError (exit 3) when the board fails."""
        spec = self.board if python is None else replace(self.board, python=split_python(python, "python"))
        batch = int(self.inputs[0].shape[0]) if self.inputs and self.inputs[0].ndim else 1
        tasks = [Task(f"{m}-performance", m, "performance", batch, self.warmup, self.repeat, PERF_GROUP,
                      self.min_time_s) for m in ("fp32", "int8")]
        run = BoardSession(spec, self.deadlines, self.retries).run(
            self.models, self.input_names, self.inputs, tasks, self.providers, self.threads,
            *self.runtime_options, batch_axes=self.batch_axes)
        emulated = bool(spec.emulated) if spec.emulated is not None else bool(run.device.get("emulated"))
        return {"device": dict(run.device, emulated=emulated), "latency": board_latency(run, self.threads, emulated)}
