"""Localisation of chip-runtime bugs to the first divergent op, and replayable repro bundles (issue 14).

pick samples -> expose boundaries -> compare in topological order -> confirm on a cut subgraph ->
bisect when exposure is refused -> write bundle (see core.py, bundle.py; docs/localize.md).
"""
from .bundle import read_bundle, replay, write_bundle
from .compare import tolerance_for
from .core import Localisation, first_divergence, localize
from .entry import localize_config, localize_after_verify
from .runs import Board

__all__ = ["Board", "Localisation", "first_divergence", "localize", "localize_after_verify", "localize_config",
           "read_bundle", "replay", "tolerance_for", "write_bundle"]
