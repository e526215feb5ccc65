"""percentile: clip each side at the max_percentile quantile of the values (e.g. 0.9999)."""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..calibration.stats import TensorStats
from .registry import ObserverOptions, register, with_zero


def quantile(stats: TensorStats, q: float) -> float:
    cdf = np.cumsum(stats.hist) / max(stats.count, 1)
    idx = int(np.searchsorted(cdf, q))
    idx = min(idx, cdf.size - 1)
    edge = -stats.radius + (idx + 1) * stats.bin_width
    return float(np.clip(edge, stats.min, stats.max))


@register("percentile")
def percentile(stats: TensorStats, options: ObserverOptions) -> Tuple[float, float]:
    p = options.max_percentile
    hi = quantile(stats, p) if stats.max > 0 else stats.max
    lo = quantile(stats, 1.0 - p) if stats.min < 0 else stats.min
    return with_zero(lo, hi)
