"""From statistics to INT8 parameters: one observer call per scale group."""
from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import Dict, Tuple

import numpy as np

from ..observers import ObserverOptions, get_observer
from ..plan.planner import QuantPlan
from .stats import TensorStats

QMIN, QMAX = -128, 127


@dataclass(frozen=True)
class QParams:
    scale: float
    zero_point: int
    lo: float
    hi: float


def qparams(lo: float, hi: float) -> QParams:
    scale = max((hi - lo) / (QMAX - QMIN), 1e-12)
    zero_point = int(np.clip(round(QMIN - lo / scale), QMIN, QMAX))
    return QParams(float(np.float32(scale)), zero_point, lo, hi)


def group_range(plan: QuantPlan, stats: Dict[str, TensorStats], root: str, members) -> Tuple[float, float]:
    spec = plan.activations[root]
    merged = reduce(lambda a, b: a.merge(b), [stats[m] for m in members if m in stats])
    options = ObserverOptions(max_percentile=spec.max_percentile)
    return get_observer(spec.method)(merged, options)


def activation_params(plan: QuantPlan, stats: Dict[str, TensorStats]) -> Dict[str, QParams]:
    """INT8 parameters for every planned activation that calibration saw."""
    params: Dict[str, QParams] = {}
    for root, members in plan.groups().items():
        if not any(m in stats for m in members):
            continue
        p = qparams(*group_range(plan, stats, root, members))
        for member in members:
            params[member] = p
    return params
