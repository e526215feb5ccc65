"""Pure functions that compare PC and chip results and return dicts (rendering lives in report.py)."""
from .accuracy import accuracy_summary, top1
from .fidelity import fidelity_summary, tensor_metrics
from .latency import latency_summary
from .verdict import Thresholds, decide

__all__ = ["accuracy_summary", "top1", "fidelity_summary", "tensor_metrics", "latency_summary", "Thresholds",
           "decide"]
