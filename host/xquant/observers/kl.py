"""kl: the threshold whose quantized distribution is closest (KL divergence) to the observed one.

The entropy calibration of TensorRT, made asymmetric: each side of zero is searched on its own
histogram (|x| of the negative values, x of the positive ones) with the levels that side gets,
256 for a non-negative tensor and 128 per side for a signed one."""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..calibration.stats import NUM_BINS, TensorStats
from .registry import ObserverOptions, register, with_zero

ABS_BINS = 2048


def side_histogram(stats: TensorStats, positive: bool) -> Tuple[np.ndarray, float]:
    half = NUM_BINS // 2
    side = stats.hist[half:] if positive else stats.hist[:half][::-1]
    factor = max(1, side.size // ABS_BINS)
    hist = side.reshape(-1, factor).sum(axis=1).astype(np.float64)
    width = stats.bin_width * factor
    last = int(np.nonzero(hist)[0].max()) + 1 if hist.any() else 1
    return hist[:last], width


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q = q / max(q.sum(), 1e-30)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))


def quantize_hist(ref: np.ndarray, levels: int) -> np.ndarray:
    """Spread ref (length i) over `levels` buckets, then expand back over its non-empty bins."""
    i = ref.size
    edges = np.linspace(0, i, levels + 1).astype(int)
    out = np.zeros(i)
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        chunk = ref[a:b]
        nonzero = chunk > 0
        if nonzero.any():
            out[a:b][nonzero] = chunk.sum() / nonzero.sum()
    return out


def threshold(hist: np.ndarray, levels: int) -> int:
    best, best_i = np.inf, hist.size
    start = min(levels, hist.size)
    for i in range(start, hist.size + 1, max(1, (hist.size - start) // 128 or 1)):
        ref = hist[:i].copy()
        ref[-1] += hist[i:].sum()
        q = quantize_hist(hist[:i], levels)
        div = kl_divergence(ref, q)
        if div < best:
            best, best_i = div, i
    return best_i


def side_threshold(stats: TensorStats, positive: bool, levels: int) -> float:
    hist, width = side_histogram(stats, positive)
    if hist.size > 1:
        hist[0] = hist[1]  # zeros (ReLU, padding) are exact in INT8: their spike must not steer the search
    return threshold(hist, levels) * width if hist.any() else 0.0


@register("kl")
def kl(stats: TensorStats, options: ObserverOptions) -> Tuple[float, float]:
    signed = stats.min < 0 and stats.max > 0
    levels = options.levels // 2 if signed else options.levels
    hi = min(stats.max, side_threshold(stats, True, levels)) if stats.max > 0 else stats.max
    lo = max(stats.min, -side_threshold(stats, False, levels)) if stats.min < 0 else stats.min
    return with_zero(lo, hi)
