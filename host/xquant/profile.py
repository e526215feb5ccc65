"""Where a quantization run's time went: one row per stage (``python -m xquant --profile``, the report)."""
from __future__ import annotations

import resource
import sys
from typing import List, Tuple

STAGES = (("prepare_s", "import + model preparation"), ("calibrate_s", "calibration"),
          ("convert_s", "conversion (FP16, dynamic quantization)"),
          ("finetune_s", "fine-tuning"), ("write_s", "writing + validation"), ("analysis_s", "analysis report"),
          ("summary_s", "fidelity summary"))


def stage_rows(timings: dict, finetune: dict) -> List[Tuple[str, float]]:
    """[(stage, seconds)], fine-tuning split into its setup (samples, held-out reference) and each pass."""
    rows: List[Tuple[str, float]] = []
    for key, label in STAGES:
        if key not in timings:
            continue
        rows.append((label, timings[key]))
        passes = finetune.get("passes", []) if key == "finetune_s" else []
        if passes:
            spent = sum(p["seconds"] for p in passes)
            rows.append(("  setup (samples, held-out reference)", max(timings[key] - spent, 0.0)))
            rows.extend((f"  {p['pass']} ({'kept' if p['accepted'] else 'dropped'})", p["seconds"]) for p in passes)
    if "total_s" in timings:
        rows.append(("total", timings["total_s"]))
    return rows


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def format_profile(timings: dict, finetune: dict) -> str:
    rows = stage_rows(timings, finetune)
    total = timings.get("total_s") or sum(s for label, s in rows if not label.startswith(" ")) or 1.0
    lines = ["time by stage:"]
    lines += [f"  {label:44s} {seconds:8.2f} s {100 * seconds / total:5.1f}%" for label, seconds in rows]
    lines.append(f"  {'peak memory':44s} {peak_rss_mib():8.0f} MiB")
    return "\n".join(lines)
