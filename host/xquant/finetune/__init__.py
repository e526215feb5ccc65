"""Optional fine-tuning passes selected by ``finetune_level`` (torch is imported only in here, lazily).

``fine_tune(model, cfg, plan, stats, data)`` returns the float model whose weights the QDQ writer
quantizes, the activation statistics and parameters to use, and what each pass did (docs/finetune.md).
``measure_level(config, level, eval_inputs)`` quantizes at one level and reports fidelity and time."""
from .measure import measure_level
from .pipeline import Tuned, fine_tune

__all__ = ["Tuned", "fine_tune", "measure_level"]
