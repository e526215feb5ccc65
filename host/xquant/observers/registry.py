"""Observers turn a tensor's streamed statistics into a clipping range (lo, hi) with lo <= 0 <= hi.

One module per calibration_type registers itself here; duplicates and unknown names are refused."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

from ..calibration.stats import TensorStats
from ..errors import ConfigError
from ..suggest import did_you_mean


@dataclass(frozen=True)
class ObserverOptions:
    max_percentile: float = 0.9999
    levels: int = 256  # INT8


Observer = Callable[[TensorStats, ObserverOptions], Tuple[float, float]]
_REGISTRY: Dict[str, Observer] = {}


def register(name: str) -> Callable[[Observer], Observer]:
    def wrap(func: Observer) -> Observer:
        if name in _REGISTRY:
            raise ValueError(f"observer '{name}' is registered twice")
        _REGISTRY[name] = func
        return func

    return wrap


def get_observer(name: str) -> Observer:
    if name not in _REGISTRY:
        close = did_you_mean(name, list(_REGISTRY))
        hint = f" Did you mean '{close}'?" if close else ""
        raise ConfigError(f"calibration_type {name} not implemented yet.",
                          f"Supported: {', '.join(sorted(_REGISTRY))}.{hint}")
    return _REGISTRY[name]


def names() -> Tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def with_zero(lo: float, hi: float) -> Tuple[float, float]:
    """Ranges always hold 0 exactly (zero padding, ReLU outputs)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-12:
        hi = lo + 1e-6
    return lo, hi
