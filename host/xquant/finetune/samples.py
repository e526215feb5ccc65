"""Calibration samples held in memory for fine-tuning: a fit part and a held-out part, and the score
every pass must not make worse (the worst output's noise power / signal power on the held-out part)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx

from ..analysis.judge import OutputJudge, worst_ratio
from ..calibration.ranges import QParams
from ..calibration.session import make_session, with_outputs
from ..config.schema import XQuantConfig
from ..data.source import CalibrationData, held_back_files, load_input_batch
from ..export.qdq_writer import write_qdq
from ..model_io import fixed_batch
from ..plan.planner import QuantPlan

MAX_SAMPLES = 256  # calibration samples kept in memory to fit on
MAX_HELD_OUT = 128  # held-out samples every pass is judged on
MIN_SPARE = 32  # listed files calibration did not use, needed to hold them out instead of calibration samples
HELD_OUT_EVERY = 4  # otherwise every 4th calibration sample is held out: fine-tuning never fits on it
RUN_BATCH = 32


@dataclass
class Samples:
    fit: Dict[str, np.ndarray]
    held: Dict[str, np.ndarray]
    fixed_batch: int  # 0 when the model's batch dimension is free
    real_fit: int = 0  # fit samples before a fixed batch's fill (the fill repeats the first ones at the end)
    fit_index: Optional[np.ndarray] = None  # each fit sample's index among the calibration samples

    @property
    def num_fit(self) -> int:
        return int(next(iter(self.fit.values())).shape[0])


def stack(batches) -> Dict[str, np.ndarray]:
    """Batches ({input: array}, samples on axis 0) as one feed of all their samples."""
    parts: Dict[str, List[np.ndarray]] = {}
    for batch in batches:
        for name, value in batch.items():
            parts.setdefault(name, []).append(value)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _first(data: CalibrationData, limit: int) -> Dict[str, np.ndarray]:
    chosen, count = [], 0
    for batch in data.batches(64):
        chosen.append(batch)
        count += int(next(iter(batch.values())).shape[0])
        if count >= limit:
            break
    return {k: v[:limit] for k, v in stack(chosen).items()}


def _fill(n: int, batch: int) -> np.ndarray:
    """Indices of ``n`` samples in whole batches of a fixed-batch model: a short last batch is filled up
    with the first samples again (as calibration fills it), never cut: a fixed-batch model fits on the
    same samples as its free-batch twin (16 samples at batch 8 used to fit on 8 of the 12)."""
    return np.arange(n if batch <= 1 or n % batch == 0 else -(-n // batch) * batch) % max(n, 1)


def _whole_batches(feeds: Dict[str, np.ndarray], batch: int) -> Dict[str, np.ndarray]:
    n = int(next(iter(feeds.values())).shape[0])
    if batch <= 1 or n % batch == 0:
        return feeds
    index = _fill(n, batch)
    return {k: v[index] for k, v in feeds.items()}


def load_samples(model: onnx.ModelProto, cfg: XQuantConfig, data: CalibrationData) -> Samples:
    """Fit on the calibration samples; hold out listed files calibration did not use (calibration_step
    below the list length), else every 4th calibration sample."""
    batch = fixed_batch(model)
    fit = _first(data, MAX_SAMPLES)
    index = np.arange(int(next(iter(fit.values())).shape[0]))  # calibration sample of each fit sample
    spare = held_back_files(cfg, MAX_HELD_OUT)
    if len(next(iter(spare.values()), [])) >= MIN_SPARE:
        held = {name: load_input_batch(data.params[name], files) for name, files in spare.items()}
    else:
        n = int(next(iter(fit.values())).shape[0])
        mask = np.arange(n) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
        if n < 2 * max(batch, 1) or not mask.any():
            held = fit
        else:
            fit, held = {k: v[~mask] for k, v in fit.items()}, {k: v[mask] for k, v in fit.items()}
            index = index[~mask]
    real = int(next(iter(fit.values())).shape[0])
    return Samples(_whole_batches(fit, batch), _whole_batches(held, batch), batch, real, index[_fill(real, batch)])


def run_session(sess, feeds: Dict[str, np.ndarray], names: Sequence[str], batch: int,
                constants: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, np.ndarray]:
    """``names`` from ``sess`` over all samples of ``feeds`` in batches, concatenated; ``constants`` are
    fed whole with every batch."""
    total = int(next(iter(feeds.values())).shape[0])
    step = batch or RUN_BATCH
    parts: Dict[str, List[np.ndarray]] = {n: [] for n in names}
    for start in range(0, total, step):
        chunk = {k: v[start:start + step] for k, v in feeds.items()}
        for name, value in zip(names, sess.run(list(names), chunk, constants)):
            parts[name].append(value)
    return {n: v[0] if len(v) == 1 else np.concatenate(v) for n, v in parts.items()}


def run_tensors(model: onnx.ModelProto, feeds: Dict[str, np.ndarray], names: Sequence[str], batch: int,
                device: str = "cpu") -> Dict[str, np.ndarray]:
    """``names`` of ``model`` (exposed when intermediate) over all samples of ``feeds``, concatenated."""
    sess = make_session(with_outputs(model, names), device, "model for fine-tuning")
    return run_session(sess, feeds, names, batch)


class Scorer:
    """Scores candidate (float model, params) pairs on fixed samples against the FP32 outputs."""

    def __init__(self, fp32: onnx.ModelProto, feeds: Dict[str, np.ndarray], plan: QuantPlan, batch: int,
                 device: str) -> None:
        total, step = int(next(iter(feeds.values())).shape[0]), batch or RUN_BATCH
        chunks = [{k: v[i:i + step] for k, v in feeds.items()} for i in range(0, total, step)]
        self.plan, self.judge = plan, OutputJudge(fp32, chunks, device)

    def score(self, model: onnx.ModelProto, params: Dict[str, QParams]) -> float:
        """Worst output noise ratio (XQuant SNR, lower is better) of the QDQ model written from ``model``."""
        return worst_ratio(self.judge.errors(write_qdq(model, self.plan, params)))


def held_out_scorer(fp32: onnx.ModelProto, samples: Samples, plan: QuantPlan, device: str) -> Scorer:
    return Scorer(fp32, samples.held, plan, samples.fixed_batch, device)
