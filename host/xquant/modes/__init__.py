"""The modes beside INT8 (precision_level 0-2): 3 dynamic quantization, 4 FP16, 100 simplify only."""
from __future__ import annotations

MODES = {3: "dynq", 4: "fp16", 100: "simplify"}
LABELS = {"int8": "INT8", "dynq": "DYNQ", "fp16": "FP16", "simplify": "FP32 (simplified)"}


def mode_of(precision_level: int) -> str:
    """'int8', 'dynq', 'fp16' or 'simplify'."""
    return MODES.get(precision_level, "int8")
