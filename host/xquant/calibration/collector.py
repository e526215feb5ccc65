"""Stream calibration batches through the FP32 model and reduce every wanted tensor to statistics.

Only one batch of activations lives in memory at a time; statistics have a fixed size per tensor."""
from __future__ import annotations

import logging
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import onnx

from ..data.source import CalibrationData
from ..errors import ModelError
from ..model_io import run_batch
from .session import make_session, with_outputs
from .stats import TensorStats, channel_means

log = logging.getLogger(__name__)
BATCH_MEMORY_BYTES = 256 * 1024 * 1024
MAX_BATCH = 32


def batch_size_for(model: onnx.ModelProto, tensors: Sequence[str]) -> int:
    """The model's own batch when it is fixed (1 when an input has no batch axis); otherwise as many
    samples as fit a memory budget."""
    sizes = {}
    for value in model.graph.value_info:
        shape = value.type.tensor_type.shape.dim
        if value.name in tensors and shape:
            sizes[value.name] = int(np.prod([d.dim_value if d.dim_value > 0 else 1 for d in shape[1:]]))
    per_sample = 4 * (sum(sizes.values()) + 1024 * max(0, len(tensors) - len(sizes)))
    return run_batch(model, int(max(1, min(MAX_BATCH, BATCH_MEMORY_BYTES // max(per_sample, 1)))))


def progress(iterable: Iterable, total: int, desc: str, enabled: Optional[bool] = None):
    enabled = sys.stderr.isatty() if enabled is None else enabled
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False)


def collect_stats(model: onnx.ModelProto, tensors: Sequence[str], data: CalibrationData, device: str,
                  batch_size: int, show_progress: Optional[bool] = None,
                  means: Optional[Dict[str, List[np.ndarray]]] = None) -> Dict[str, TensorStats]:
    """Statistics of ``tensors`` over the calibration data. A batch's histograms are updated in a second
    thread while onnxruntime runs the next batch (numpy releases the GIL): two batches live at most.
    ``means``: {tensor: []} to which each batch's per-sample channel means ([samples, channels]) of that
    tensor are appended (bias correction's FP32 reference, taken in the same pass); a tensor whose axis 0 is
    not the batch's samples (a transformer's [T*N, C] projection) is dropped from ``means``, so bias
    correction takes its reference from an FP32 pass of its own."""
    means = {} if means is None else means
    session = make_session(with_outputs(model, list(tensors) + list(means)), device, "FP32 model for calibration")
    names = [o.name for o in session.get_outputs()]
    wanted = set(tensors)
    stats = {name: TensorStats() for name in tensors}
    folded: set = set()

    def update(values: list, samples: int) -> None:
        for name, value in zip(names, values):
            if not isinstance(value, np.ndarray) or value.dtype != np.float32:
                continue
            if name in wanted:
                stats[name].update(value, samples)
            if name in means and value.ndim >= 2:
                if value.shape[0] == samples:
                    means[name].append(channel_means([value]))
                else:
                    folded.add(name)

    total = -(-data.num_samples // batch_size)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: Optional[Future] = None
        batches = data.model_batches(model, batch_size)
        for batch in progress(batches, total, "calibrating", show_progress):
            values = _run(session, names, batch)
            if pending is not None:
                pending.result()
            pending = pool.submit(update, values, int(next(iter(batch.values())).shape[0]))
        if pending is not None:
            pending.result()
    for name in folded:
        means.pop(name, None)
    return {name: s for name, s in stats.items() if s.count > 0}


def _run(session, names: List[str], batch: Dict[str, np.ndarray]) -> list:
    try:
        return session.run(names, batch)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"onnxruntime failed to run the FP32 model on calibration data: {first}.",
                         "Check input_shape, mean/std and the data files.") from exc
