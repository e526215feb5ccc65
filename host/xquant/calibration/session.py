"""onnxruntime sessions for calibration and checks (the same runtime family the chip uses)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import ModelError
from ..model_io import graph_inputs, model_feeds


def providers_for(device: str) -> List[str]:
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


# samples run side by side by ModelSession.run_each, each run on CORES // RUN_WORKERS threads: a batch-1 run of
# a small model does not keep two cores busy (ppocr_v4_rec, 16 crops on 2 cores: 0.62 s one after the other on
# onnxruntime's default threads, 0.34 s two at a time on one thread each; ppocr_v6_det at 640 px 1.39 -> 1.32 s)
CORES = max(1, os.cpu_count() or 1)
RUN_WORKERS = min(4, CORES)


class ModelSession:
    """An onnxruntime session fed with samples on axis 0 (as calibration data holds them): each model
    input gets them on its own batch axis (``model_io.GraphInput.to_model``); ``constants`` are fed as
    they are. ``workers``: how many runs ``run_each`` makes at once."""

    def __init__(self, session: ort.InferenceSession, model: onnx.ModelProto, workers: int = 1) -> None:
        self.session, self.workers = session, workers
        self.inputs = graph_inputs(model)

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, names: Optional[Sequence[str]], batch: Dict[str, np.ndarray],
            constants: Optional[Dict[str, np.ndarray]] = None, quiet: bool = False) -> List[np.ndarray]:
        """``quiet``: a failure is expected and handled; onnxruntime does not log it."""
        feeds = model_feeds(self.inputs, batch)
        options = ort.RunOptions()
        if quiet:
            options.log_severity_level = 4
        return self.session.run(None if names is None else list(names), {**feeds, **(constants or {})}, options)

    def run_each(self, batches: Iterable[Dict[str, np.ndarray]],
                 constants: Optional[Dict[str, np.ndarray]] = None) -> Iterator[List[np.ndarray]]:
        """Every output of each batch, in order, ``workers`` batches at a time (onnxruntime runs them in
        parallel); a caller that stops reading leaves the batches after the current ``workers`` unrun."""
        batches = list(batches)
        if self.workers <= 1:
            for batch in batches:
                yield self.run(None, batch, constants)
            return
        with ThreadPoolExecutor(self.workers) as pool:
            for start in range(0, len(batches), self.workers):
                yield from pool.map(lambda b: self.run(None, b, constants), batches[start:start + self.workers])


def session_options(optimize: bool = False, threads: int = 0) -> ort.SessionOptions:
    """Every graph optimisation (fused, blocked-layout float kernels: 2-3x the throughput of the basic level
    on CNNs). Unless ``optimize``, QDQ fusion is off, so a QDQ model still computes what its
    QuantizeLinear/DequantizeLinear nodes say (fake quantization, weights' DequantizeLinear folded once)
    instead of onnxruntime's integer kernels; ``optimize`` lets it run as a deployed model would."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    if not optimize:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return options


def make_session(model: onnx.ModelProto, device: str = "cpu", what: str = "model",
                 optimize: bool = False, parallel: bool = False) -> ModelSession:
    """``parallel``: for ``run_each`` over many batch-1 samples: RUN_WORKERS runs at once on the CPU, each on
    its share of the cores (onnxruntime's default otherwise)."""
    workers = RUN_WORKERS if parallel and device != "cuda" else 1
    options = session_options(optimize, max(1, CORES // workers) if workers > 1 else 0)
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=providers_for(device))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"onnxruntime cannot load the {what}: {first}.") from exc
    return ModelSession(session, model, workers)


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the tensors ``names`` (intermediate tensors exposed)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in present:
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            present.add(name)
    return exposed
