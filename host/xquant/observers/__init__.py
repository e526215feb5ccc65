"""Calibration observers, one module per calibration_type, and the registry that finds them.

``default`` (observers/mse.py) is mse where clipping divides the modelled error by CLIP_GAIN, else minmax
(see docs/quantizer.md)."""
from . import kl, minmax, mse, percentile  # noqa: F401  (modules register themselves)
from .registry import ObserverOptions, get_observer, names, register

__all__ = ["ObserverOptions", "get_observer", "names", "register"]
