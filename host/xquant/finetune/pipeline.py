"""finetune_level -> passes, each kept only when it does not lower fidelity on held-out samples.

0  none.
1  empirical bias correction (numpy + onnxruntime).
2  cross-layer equalization (exact pairs only), weight clipping search, bias correction, then a
   least-squares refit of every layer's weights and bias to the FP32 layer output (closed form, torch).
   Equalization and clipping sit here, not at level 1: with per-channel INT8 weights they were never
   kept on a benchmark model and cost a sixth of level 1's time.
3  level 2, then learned rounding (AdaRound) layer by layer (level 2 until it took over 20 minutes on a
   224-px model), the output-aware range search, and block-wise reconstruction (BRECQ-style learned
   rounding of every layer of a block, with the block's activations quantized) (torch).
A pass's result replaces the current one only if it lowers the held-out score (worst output noise /
signal) by ACCEPT_GAIN at least, so a level never does worse than the one below on held-out data; levels
2 and 3 also keep, layer by layer or block by block, the better of old and new."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import onnx

from ..analysis.metrics import ratio_db
from ..calibration.collector import batch_size_for, collect_stats
from ..calibration.ranges import QParams, activation_params
from ..calibration.stats import TensorStats
from ..config.schema import XQuantConfig
from ..data.source import CalibrationData
from ..plan.planner import QuantPlan
from .bias import correct_biases
from .clipping import clip_weights
from .equalize import equalize
from .range_search import search_ranges
from .samples import Samples, Scorer, held_out_scorer, load_samples

log = logging.getLogger(__name__)
ACCEPT_GAIN = 0.02  # a pass must lower the held-out noise ratio by 2% (~0.09 dB): smaller gains are noise


@dataclass
class Tuned:
    model: onnx.ModelProto  # float model whose weights the writer quantizes
    stats: Dict[str, TensorStats]
    params: Dict[str, QParams]
    info: dict = field(default_factory=dict)


@dataclass
class _State:
    model: onnx.ModelProto
    stats: Dict[str, TensorStats]
    params: Dict[str, QParams]
    score: float


class _Context:
    def __init__(self, fp32: onnx.ModelProto, cfg: XQuantConfig, plan: QuantPlan, data: CalibrationData,
                 samples: Samples, held: Scorer, show_progress: Optional[bool],
                 means: Optional[Dict[str, np.ndarray]] = None) -> None:
        self.fp32, self.cfg, self.plan, self.data = fp32, cfg, plan, data
        self.samples, self.held, self.show_progress = samples, held, show_progress
        self.means = means  # FP32 per-sample channel means calibration took (bias.calibration_means)
        self.device = cfg.calibration.calibration_device


PassFn = Callable[[_Context, _State], Tuple[Optional[_State], str]]


def _equalization(ctx: _Context, state: _State) -> Tuple[Optional[_State], str]:
    model, changed, pairs = equalize(state.model, ctx.plan)
    if not pairs:
        return None, "no exact Conv-[Relu]-Conv pair"
    batch = batch_size_for(model, changed)
    fresh = collect_stats(model, changed, ctx.data, ctx.device, batch, False) if changed else {}
    stats = {**state.stats, **fresh}
    params = activation_params(ctx.plan, stats)
    return _State(model, stats, params, ctx.held.score(model, params)), f"{pairs} pair(s)"


def _weights(ctx: _Context, state: _State, model: onnx.ModelProto) -> _State:
    """``state`` with new float weights, scored."""
    return _State(model, state.stats, state.params, ctx.held.score(model, state.params))


def _clipping(ctx: _Context, state: _State) -> Tuple[Optional[_State], str]:
    model, channels = clip_weights(state.model, ctx.plan)
    return (_weights(ctx, state, model), f"{channels} channel(s)") if channels else (None, "no channel gains")


def _bias_correction(ctx: _Context, state: _State) -> Tuple[Optional[_State], str]:
    model, layers = correct_biases(ctx.fp32, state.model, ctx.plan, state.params, ctx.samples, ctx.device,
                                   ctx.means)
    return (_weights(ctx, state, model), f"{layers} layer(s)") if layers else (None, "no layer with a bias")


def _refit(ctx: _Context, state: _State) -> Tuple[Optional[_State], str]:
    from .refit import refit_layers

    model, detail = refit_layers(ctx.fp32, state.model, ctx.plan, state.params, ctx.samples, ctx.device)
    return (_weights(ctx, state, model), detail) if model is not state.model else (None, detail)


def _reconstruction(blocks: bool) -> PassFn:
    def run(ctx: _Context, state: _State) -> Tuple[Optional[_State], str]:
        from .reconstruct import reconstruct

        model, detail = reconstruct(ctx.fp32, state.model, ctx.plan, state.params, ctx.samples, ctx.device,
                                    blocks=blocks, show_progress=ctx.show_progress)
        return _weights(ctx, state, model), detail

    return run


def _ranges(ctx: _Context, state: _State) -> Tuple[Optional[_State], str]:
    params, detail = search_ranges(ctx.fp32, state.model, ctx.plan, state.params, ctx.samples, ctx.device)
    return _State(state.model, state.stats, params, ctx.held.score(state.model, params)), detail


PASSES: Tuple[Tuple[int, str, PassFn], ...] = (
    (2, "equalization", _equalization),  # never kept at level 1 on the benchmarks (per-channel weights)
    (2, "weight clipping", _clipping),
    (1, "bias correction", _bias_correction),
    (2, "least-squares refit", _refit),
    (3, "learned rounding (layer-wise)", _reconstruction(blocks=False)),  # >20 min on a 224-px model
    (3, "output-aware range search", _ranges),
    (3, "block reconstruction", _reconstruction(blocks=True)),
)


def fine_tune(model: onnx.ModelProto, cfg: XQuantConfig, plan: QuantPlan, stats: Dict[str, TensorStats],
              data: CalibrationData, show_progress: Optional[bool] = None,
              means: Optional[Dict[str, np.ndarray]] = None) -> Tuned:
    """Run the passes of ``cfg.quantization.finetune_level`` on ``model`` (never changed: copies).
    ``means``: bias correction's FP32 reference taken by calibration (``bias.calibration_means``)."""
    level = cfg.quantization.finetune_level
    params = activation_params(plan, stats)
    info: dict = {"level": level, "passes": []}
    if level == 0 or not plan.weights:
        return Tuned(model, stats, params, info)
    if level >= 2:
        from .torch_ops import require_torch

        require_torch(level)
    samples = load_samples(model, cfg, data)
    held = held_out_scorer(model, samples, plan, cfg.calibration.calibration_device)
    ctx = _Context(model, cfg, plan, data, samples, held, show_progress, means)
    state = _State(model, stats, params, held.score(model, params))
    info.update(held_out_samples=int(next(iter(samples.held.values())).shape[0]), fit_samples=samples.num_fit,
                start_snr=state.score)
    for pass_level, name, run in PASSES:
        if pass_level > level:
            continue
        mark = time.perf_counter()
        candidate, detail = run(ctx, state)
        keep = candidate is not None and candidate.score <= state.score * (1.0 - ACCEPT_GAIN)
        info["passes"].append({"pass": name, "level": pass_level, "detail": detail, "accepted": keep,
                               "snr_before": state.score, "snr_after": candidate.score if candidate else None,
                               "seconds": time.perf_counter() - mark})
        log.info("fine-tune %s: %s, held-out SNR %.2f -> %s dB (%s)", name, detail, ratio_db(state.score),
                 f"{ratio_db(candidate.score):.2f}" if candidate else "-", "kept" if keep else "dropped")
        if keep and candidate is not None:
            state = candidate
    info["end_snr"] = state.score
    return Tuned(state.model, state.stats, state.params, info)
