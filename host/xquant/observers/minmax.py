"""minmax: the observed extremes."""
from __future__ import annotations

from typing import Tuple

from ..calibration.stats import TensorStats
from .registry import ObserverOptions, register, with_zero


@register("minmax")
def minmax(stats: TensorStats, options: ObserverOptions) -> Tuple[float, float]:
    return with_zero(stats.min, stats.max)
