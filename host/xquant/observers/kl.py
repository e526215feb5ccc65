"""kl: the threshold whose quantized distribution is closest (KL divergence) to the observed one.

Works on |x| (the entropy calibration of TensorRT): 128 levels per side for signed tensors, 256 for
non-negative ones; the range is then [-t, t] or [0, t], cut to the observed extremes."""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..calibration.stats import NUM_BINS, TensorStats
from .registry import ObserverOptions, register, with_zero

ABS_BINS = 2048


def abs_histogram(stats: TensorStats) -> Tuple[np.ndarray, float]:
    half = NUM_BINS // 2
    folded = stats.hist[half:] + stats.hist[:half][::-1]
    factor = max(1, folded.size // ABS_BINS)
    hist = folded.reshape(-1, factor).sum(axis=1).astype(np.float64)
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


@register("kl")
def kl(stats: TensorStats, options: ObserverOptions) -> Tuple[float, float]:
    hist, width = abs_histogram(stats)
    signed = stats.min < 0
    levels = options.levels // 2 if signed else options.levels
    t = threshold(hist, levels) * width
    lo = max(stats.min, -t) if signed else stats.min
    return with_zero(lo, min(stats.max, t))
