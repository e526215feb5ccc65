"""Calibration observers, one module per calibration_type, and the registry that finds them.

``default`` is an alias of the method that measured best on bench/quant.py (see docs/calibration.md)."""
from . import kl, minmax, mse, percentile  # noqa: F401  (modules register themselves)
from .registry import ObserverOptions, get_observer, names, register

DEFAULT_METHOD = "mse"
register("default")(get_observer(DEFAULT_METHOD))

__all__ = ["ObserverOptions", "get_observer", "names", "register", "DEFAULT_METHOD"]
