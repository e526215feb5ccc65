"""Pure functions that compare PC and chip results and return dicts (rendering lives in report.py)."""
from .accuracy import accuracy_summary, top1
from .fidelity import fidelity_summary, tensor_metrics
from .integrity import nonfinite_reasons, nonfinite_summary, shape_problems
from .latency import latency_summary
from .runtime import RuntimeLimits, runtime_summary
from .verdict import Thresholds, decide, judge, verdict_of

__all__ = ["accuracy_summary", "top1", "fidelity_summary", "tensor_metrics", "latency_summary", "Thresholds",
           "decide", "judge", "verdict_of", "nonfinite_reasons", "nonfinite_summary", "shape_problems",
           "RuntimeLimits", "runtime_summary"]
